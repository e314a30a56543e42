"""``python -m dgconv ...`` (and ``torchrun ... -m dgconv train ...``)."""

from .cli import main

raise SystemExit(main())
