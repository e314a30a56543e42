"""Progress bars for training and evaluation: throughput (images/s), ETA, the loss -- on a terminal only.

Built on ``tqdm``. When standard error is not a terminal (a log file, CI, a pipe) the bars are off and the
trainer's one line per epoch is all that is printed.

Example::

    >>> bar = Progress(enabled=False)          # what a non-terminal gets: every call is a no-op
    >>> with bar.phase("train", total=10, unit_scale=64) as update:
    ...     update(1, loss=0.5)
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Progress", "duration", "plural"]


class Progress:
    """Per-phase progress bars (``train``, ``eval``) on standard error.

    Args:
        enabled: show bars at all (``dgconv train --no-progress`` turns them off); even when enabled they appear
            only if standard error is a terminal.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled) and sys.stderr.isatty()

    @contextmanager
    def phase(self, desc: str, total: int, unit_scale: int = 1) -> Iterator[Callable[..., None]]:
        """A bar of ``total`` steps of ``unit_scale`` images each; yields ``update(steps, **postfix)``."""
        if not self.enabled:
            yield _noop
            return
        from tqdm import tqdm

        try:  # a terminal that reports no size (a bare pseudo-terminal) gets a fixed width
            sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
        except OSError:
            sized = False
        bar = tqdm(total=total * unit_scale, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=sized,
                   ncols=None if sized else 100, nrows=None if sized else 50, file=sys.stderr, smoothing=0.1)

        def update(steps: int = 1, **postfix: Any) -> None:
            bar.update(steps * unit_scale)
            if postfix:
                bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}, refresh=False)

        try:
            yield update
        finally:
            bar.close()


def _noop(steps: int = 1, **postfix: Any) -> None:
    return None


def duration(seconds: float) -> str:
    """A time left as people read one (``?`` when unknown).

    >>> duration(42.4), duration(185), duration(7620), duration(float("nan"))
    ('42 s', '3 min 05 s', '2 h 07 min', '?')
    """
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def plural(n: float, word: str, words: str | None = None) -> str:
    """``1 epoch``, ``3 epochs``, ``0.5 warm-up epochs``: a count with its noun in the right number.

    >>> plural(1, "epoch"), plural(3, "seed"), plural(1.5, "warm-up epoch"), plural(2, "run", "runs at a time")
    ('1 epoch', '3 seeds', '1.5 warm-up epochs', '2 runs at a time')
    """
    return f"{n:g} {word if n == 1 else (words or word + 's')}"
