"""Shared test helpers: the ``dgconv`` command in this process (no start-up cost) or in a real one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}


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


def dgconv(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``dgconv ARGS`` in a new process."""
    return subprocess.run([sys.executable, "-m", "dgconv", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout, cwd=cwd)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def strip_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]
