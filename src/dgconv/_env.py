"""What machine this is, for the records runs, benchmarks and latency tables keep."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

__all__ = ["cpu_name", "source_commit", "auto_threads", "busy_cores"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit() -> str | None:
    """The git commit the imported dgconv package comes from (``"<sha>+dirty"`` when its tracked files differ from
    that commit), or ``None`` when the package is not in a git checkout (an installed wheel) or git is missing."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None


def busy_cores() -> int:
    """How many other processes are running on the CPUs right now (``/proc/loadavg``'s runnable count, this process
    excluded; 0 where it cannot be read)."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def auto_threads(input_size: tuple[int, ...], cores: int | None = None, busy: int | None = None) -> int:
    """The CPU threads a training run takes when ``--threads`` is not given, chosen for the machine and the model.

    OpenMP threads wait for each other at every operator, so a thread the OS deschedules stalls all of them: on a
    2-core machine beside one other busy process the digits job took 33.7 s with 2 threads and 12.9 s with 1. Images
    smaller than 32x32 make operators too small to share (1 thread); otherwise one thread per core that no other
    process is using, at least 1.

    >>> auto_threads((1, 8, 8), cores=8, busy=0), auto_threads((3, 32, 32), cores=8, busy=3), auto_threads((3, 32, 32), 2, 5)
    (1, 5, 1)
    """
    import os

    cores = cores if cores is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if len(input_size) < 2 or input_size[-1] * input_size[-2] < 32 * 32:
        return 1
    return max(1, cores - (busy_cores() if busy is None else busy))
