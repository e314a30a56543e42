"""Fault injection for the reliability tests: kill this process at a named point of a file write.

``DGCONV_FAULT=<point>#<n>`` makes the process SIGKILL itself the n-th time it reaches ``<point>`` (``n`` defaults
to 1). The points are where a crash could leave files inconsistent: ``write:<file name>`` (a temporary is written,
not yet renamed over the file), ``commit:last`` (``last.pt`` written, ``best.pt`` not), ``commit:torn`` (half of a
metrics line appended), ``commit:metrics`` (the metrics line written, ``groups.json`` not). Unset, it costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault", "armed"]

_seen: dict[str, int] = {}


def armed(point: str) -> bool:
    """Count a visit of ``point``; True when ``DGCONV_FAULT`` names it and this is its n-th visit."""
    spec = os.environ.get("DGCONV_FAULT")
    if not spec:
        return False
    name, _, nth = spec.partition("#")
    if name != point:
        return False
    _seen[point] = _seen.get(point, 0) + 1
    return _seen[point] == int(nth or 1)


def kill() -> None:
    """SIGKILL this process (no cleanup, no flush: a crash)."""
    os.kill(os.getpid(), signal.SIGKILL)


def fault(point: str) -> None:
    """SIGKILL this process if ``DGCONV_FAULT`` names ``point`` and this is its n-th visit."""
    if armed(point):
        kill()
