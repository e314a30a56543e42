"""Progress bars for training and evaluation: throughput (images/s), ETA, the loss -- on a terminal only.

Built on ``tqdm``. When standard error is not a terminal (a log file, CI, a pipe) there is no bar: a plain line
(images done, images per second, the loss) every :data:`PLAIN_EVERY` seconds of a long phase takes its place, so
``dgconv train ... | tee log`` shows progress within an epoch too.

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

__all__ = ["Progress", "duration", "plural", "PLAIN_EVERY"]

#: Seconds between the plain progress lines of a phase when standard error is not a terminal.
PLAIN_EVERY = 30.0


class Progress:
    """Per-phase progress bars (``train``, ``eval``) on standard error.

    Args:
        enabled: show bars at all (``dgconv train --no-progress`` turns them off); even when enabled they appear
            only if standard error is a terminal.
    """

    def __init__(self, enabled: bool = True, every: float = PLAIN_EVERY) -> None:
        self.enabled = bool(enabled) and sys.stderr.isatty()
        self.plain = bool(enabled) and not self.enabled
        self.every = every

    @contextmanager
    def phase(self, desc: str, total: int, unit_scale: int = 1, images: int | None = None
              ) -> Iterator[Callable[..., None]]:
        """A bar of ``total`` steps of ``unit_scale`` images each (``images``: the exact count, when the last batch
        is smaller); yields ``update(steps, images=None, **postfix)``."""
        if self.plain:
            yield _plain_lines(desc, images or total * unit_scale, unit_scale, self.every)
            return
        if not self.enabled:
            yield _noop
            return
        from tqdm import tqdm

        try:  # a terminal that reports no size (a bare pseudo-terminal) gets a fixed width
            sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
        except OSError:
            sized = False
        bar = tqdm(total=images or total * unit_scale, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=sized,
                   ncols=None if sized else 100, nrows=None if sized else 50, file=sys.stderr, smoothing=0.1)

        def update(steps: int = 1, images: int | None = None, **postfix: Any) -> None:
            bar.update(images if images is not None else steps * unit_scale)
            if postfix:
                bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}, refresh=False)

        try:
            yield update
        finally:
            bar.close()


def _noop(steps: int = 1, images: int | None = None, **postfix: Any) -> None:
    return None


def _plain_lines(desc: str, total: int, unit_scale: int, every: float) -> Callable[..., None]:
    """``update`` for a non-terminal: one line on standard error each ``every`` seconds of the phase."""
    import time

    start = last = time.monotonic()
    state = {"done": 0, "loss": None}

    def update(steps: int = 1, images: int | None = None, **postfix: Any) -> None:
        nonlocal last
        state["done"] += images if images is not None else steps * unit_scale
        if "loss" in postfix:
            state["loss"] = postfix["loss"]
        now = time.monotonic()
        if now - last >= every:
            last = now
            rate = state["done"] / max(now - start, 1e-9)
            loss = f", loss {state['loss']:.4g}" if isinstance(state["loss"], float) else ""
            print(f"  {desc}: {state['done']:,}/{total:,} images, {rate:,.0f} img/s{loss}", file=sys.stderr, flush=True)

    return update


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
