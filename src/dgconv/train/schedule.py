"""The learning-rate schedules (``--schedule``, ``--warmup-epochs``): the rate at a step, and the names they answer to.

Example::

    >>> [round(lr_at("triangle", 1.0, 4, 1.0, step, 10), 2) for step in (0, 5, 10, 25, 40)]
    [0.2, 0.6, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_at"]

#: What ``--schedule`` accepts: after a linear warm-up, ``cosine`` decays to 0 along a half cosine, ``step``
#: multiplies by 0.1 at 50 % and 75 % of the schedule, ``constant`` stays, ``triangle`` (the fast recipe's) starts
#: warm-up at 0.2x, peaks at its end and falls linearly to 0.
SCHEDULES = ("cosine", "step", "constant", "triangle")


def lr_at(schedule: str, lr: float, epochs: int, warmup_epochs: float, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimizer step ``step`` (0-based) of a run of ``epochs`` epochs."""
    total = epochs * steps_per_epoch
    warm = int(warmup_epochs * steps_per_epoch)
    if schedule == "triangle":  # 0.2 -> 1 (peak at the end of warm-up) -> 0, linearly
        if step < warm:
            return lr * (0.2 + 0.8 * step / warm)
        return lr * max(0.0, (total - step) / max(1, total - warm))
    if step < warm:
        return lr * (step + 1) / warm
    if schedule == "constant":
        return lr
    t = (step - warm) / max(1, total - warm)
    if schedule == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * t))
    if schedule == "step":
        return lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
