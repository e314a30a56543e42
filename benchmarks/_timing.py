"""Timing helpers shared by the benchmark scripts: interleaved repetitions, medians, ratios in one run.

Machines (and VMs especially) drift; timing candidates one after another makes a slow minute look like a
slow candidate. So every benchmark runs all of its candidates round-robin, ``reps`` rounds after warm-up,
and reports the median of each plus ratios of medians taken from the same rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(cands: dict[str, Callable[[], object]], reps: int = 15, warmup: int = 2, device: str = "cpu") -> dict[str, float]:
    """Median seconds per call of each candidate, timed round-robin."""
    return {k: statistics.median(v) for k, v in interleaved_rounds(cands, reps, warmup, device).items()}


def round_ratio(rounds: dict[str, list[float]], num: str, den: str) -> float:
    """The median over rounds of ``num / den`` measured in the same round (steadier than a ratio of medians when the
    machine's speed drifts between rounds)."""
    return statistics.median(a / b for a, b in zip(rounds[num], rounds[den]))


def interleaved_rounds(cands: dict[str, Callable[[], object]], reps: int = 15, warmup: int = 2,
                       device: str = "cpu") -> dict[str, list[float]]:
    """Seconds of each call of each candidate, ``reps`` rounds timed round-robin after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in cands.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(reps):
        for k, fn in cands.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return times


def environment() -> str:
    import platform

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else (platform.processor() or platform.machine())
    return f"torch {torch.__version__}, {dev}, {torch.get_num_threads()} threads, python {platform.python_version()}"
