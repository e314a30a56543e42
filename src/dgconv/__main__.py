"""``python -m dgconv ...`` (and ``torchrun ... -m dgconv train ...``)."""

import logging
import os
import sys

from .cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A torchrun worker ends here without the interpreter's teardown: destroying gloo's objects at exit can abort a
    # rank after a finished run ("terminate called without an active exception", SIGABRT: 1 of 10 runs beside four
    # busy processes), and torchrun then reports the whole job failed. Everything is written and flushed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
