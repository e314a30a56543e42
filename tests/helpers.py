"""Shared test helpers: the ``dgconv`` command in this process (no start-up cost) or in a real one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # one thread: see tests/conftest.py

#: How long a test waits for a process or a state before it fails: a safety net against a hung process, never a
#: measurement (a loaded 2-core machine runs the slowest process of the suite ~40x slower than a quiet one).
#: DGCONV_TEST_TIMEOUT overrides it.
PATIENCE = float(os.environ.get("DGCONV_TEST_TIMEOUT", "1800"))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Result:
    """``dgconv ARGS`` in this process: exit status and captured output (signal handlers restored afterwards)."""
    from dgconv.cli import main

    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors and --version
                code = e.code if isinstance(e.code, int) else 2
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return Result(code, out.getvalue(), err.getvalue())


def dgconv(*args: str, env: dict | None = None, timeout: float = PATIENCE, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``dgconv ARGS`` in a new process."""
    return subprocess.run([sys.executable, "-m", "dgconv", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout, cwd=cwd)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def strip_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def wait_until(ready: Callable[[], bool], what: str, timeout: float = PATIENCE, proc: subprocess.Popen | None = None) -> None:
    """Poll ``ready()`` until it holds; fail naming ``what`` after ``timeout`` seconds, or at once when ``proc``
    ended first (with its standard error)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)


def catches(pid: int, sig: int, mask: str = "SigCgt") -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (Linux: the SigCgt mask in /proc/PID/status;
    ``mask="SigIgn"``: whether it ignores ``sig``)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(mask + ":"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except FileNotFoundError:
        return False
    return False


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


def wait_for_handlers(proc: subprocess.Popen) -> None:
    """Wait until ``dgconv`` in ``proc`` routes signals to its clean stop (:func:`dgconv.train.interrupts.install` is the
    first thing ``main`` does; before it, SIGTERM is not caught). An observable state, not a delay."""
    if not os.path.exists(f"/proc/{proc.pid}/status"):
        import pytest

        pytest.skip("needs /proc to see when the signal handlers are installed")
    wait_until(lambda: catches(proc.pid, signal.SIGTERM), "dgconv's signal handlers", proc=proc)
