"""SIGINT and SIGTERM as checkpoint-safe stops.

:func:`install` makes both signals raise :class:`dgconv.errors.Interrupted` in the main thread. Code that must not
be cut in half -- writing a checkpoint, appending a metrics line -- runs inside :func:`deferred`: a signal that
arrives there is held and raised when the block ends, so a run stopped by Ctrl-C or ``kill`` leaves whole files
behind (and the atomic writes of :mod:`dgconv.train.checkpoint` remove their temporaries on the way out).

The command line installs the handlers before it imports anything heavy; library users who want the same in their
own program call :func:`install` themselves (nothing is installed on import).

Example::

    >>> from dgconv.train import interrupts
    >>> with interrupts.deferred():
    ...     pass  # a signal arriving here would be raised after the block
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ..errors import Interrupted

__all__ = ["install", "deferred", "check"]

_depth = 0
_pending: int | None = None
_received: int | None = None  # the first stop signal, kept: a raise can be swallowed (a bare except in an import)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending, _received
    _received = _received or signum
    if _depth > 0:
        _pending = signum
        return
    raise Interrupted(signum)


def check() -> None:
    """Raise :class:`~dgconv.errors.Interrupted` if a stop signal arrived, even one whose exception some other code
    swallowed (the trainer calls this between steps)."""
    if _received is not None and _depth == 0:
        raise Interrupted(_received)


def install() -> None:
    """Route SIGINT and SIGTERM to :class:`~dgconv.errors.Interrupted` (main thread only; a no-op elsewhere)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        return
    _received = None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise :class:`~dgconv.errors.Interrupted` (if the block
    itself did not fail)."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        raise
    _depth -= 1
    if _depth == 0 and _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)
