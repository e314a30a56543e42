"""The command line's console: log records to the terminal, every user error as one line and an exit status
(:func:`guarded`), and :func:`run_train` (``dgconv train`` from typed options, what sweeps run)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["guarded", "run_train", "configure_logging", "say", "prog", "positive_int", "positive_float"]


class _ConsoleHandler(logging.StreamHandler):
    """Log records to standard output (warnings and errors to standard error, prefixed). A closed pipe
    (``dgconv train | head -1``) silences the console instead of stopping the job."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.closed_pipe = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.closed_pipe:
            return
        self.stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            msg = self.format(record)
            if record.levelno >= logging.WARNING:
                msg = f"warning: {msg}"
            self.stream.write(msg + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.closed_pipe = True
            _silence(self.stream)
        except Exception:  # noqa: BLE001 - logging's own policy for a failing handler
            self.handleError(record)


def _silence(stream: object) -> None:
    """Point a closed stream's descriptor at /dev/null, so that later writes (and the flush at exit) succeed."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
    except (OSError, AttributeError, ValueError):
        pass


def configure_logging() -> None:
    logger = logging.getLogger("dgconv")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def run_train(options: dict[str, Any]) -> int:
    """``dgconv train`` with these options (typed :class:`~dgconv.train.config.TrainConfig` values, all counted as
    given) and its exit status: what ``dgconv sweep`` runs in its worker processes."""
    from ..train import interrupts

    interrupts.install()

    def run() -> int:
        configure_logging()
        from ..train.config import TrainConfig
        from ..train.engine import train

        train(TrainConfig(**options), explicit=set(options))
        return 0

    return guarded(run, {"command": "train"})


def guarded(run: Callable[[], int], state: dict[str, str]) -> int:
    """``run()``, with every error a user can cause as a one-line message and its exit status (see :func:`main`)."""
    from ..errors import DGConvError, Interrupted

    try:
        return run()
    except Interrupted as e:
        if not e.detail and state["command"] == "train":
            e.detail = "the run had not started; nothing was written"
        say(f"{prog(state['command'])}: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        say(f"{prog(state['command'])}: interrupted")
        return 130
    except DGConvError as e:
        say(f"{prog(state['command'])}: error: {e}")
        return 2
    except BrokenPipeError:
        _silence(sys.stdout)
        return 0
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        say(f"{prog(state['command'])}: error: {e.strerror or e}{where}")
        return 2  # a path the user gave, as train's run-directory errors (RunDirError) are
    except (RuntimeError, MemoryError) as e:
        if not _out_of_memory(e):
            raise
        say(f"{prog(state['command'])}: error: out of memory ({str(e).splitlines()[0][:200]}); try a smaller "
             f"--batch-size")
        return 1


def prog(command: str) -> str:
    return f"dgconv {command}" if command else "dgconv"


def say(message: str) -> None:
    try:
        print(message, file=sys.stderr, flush=True)
    except (BrokenPipeError, OSError):
        pass


def positive_int(s: str) -> int:
    """An argparse type: a positive integer (the message argparse shows otherwise)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def positive_float(s: str) -> float:
    """An argparse type: a positive, finite number."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}")
    return v
