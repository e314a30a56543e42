"""``dgconv sweep``: run a named protocol (:mod:`dgconv.protocols`), one run directory per run, then render results.

The sweep is resumable: finished runs are skipped, interrupted ones continue from their checkpoint (a run whose
directory another process holds is reported, not started twice). When the runs are done it renders
``results.md`` (:mod:`dgconv.results`) from the run directories -- whatever finished; the rest shows as missing.

``sweep.json`` records the protocol as run, the data's provenance (MD5 of every CIFAR file and whether they are
the official ones, plus any ``--data-note``), when the sweep started and every resumption.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, DGConvError
from .protocols import PROTOCOLS, PlannedRun, Protocol, planned_runs
from .results import render_results
from .rundir import LAST, LOG, finished_epochs, read_json, write_json, write_text

__all__ = ["run_sweep", "SweepError", "data_provenance", "OFFICIAL_MD5"]

_logger = logging.getLogger(__name__)

SWEEP = "sweep.json"

#: MD5 of the official CIFAR python files (https://www.cs.toronto.edu/~kriz/cifar.html; the values torchvision checks).
OFFICIAL_MD5 = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
}


class SweepError(DGConvError, RuntimeError):
    """Some runs of a sweep failed."""


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_provenance(dataset: str, data_dir: str | Path, note: str | None = None) -> dict[str, Any]:
    """What a sweep records about its data: the MD5 of each file, whether all match the official release, the
    first line of a ``readme.txt`` beside them (if any), and the user's ``note``."""
    from .data import find_cifar_dir

    folder = find_cifar_dir(dataset, data_dir)
    official = OFFICIAL_MD5.get(dataset, {})
    md5 = {name: _md5(folder / name) for name in sorted(official)}
    readme = folder / "readme.txt"
    first = readme.read_text(errors="replace").strip().splitlines()[0] if readme.is_file() and readme.stat().st_size else None
    return {"dataset": dataset, "md5": md5, "official": bool(official) and md5 == official, "readme": first, "note": note}


def _command(run: PlannedRun, out: Path, data_dir: str | Path) -> list[str]:
    rd = out / str(run.name)
    if (rd / LAST).exists():
        return [sys.executable, "-m", "dgconv", "train", "--resume", str(rd), "--no-progress"]
    args = [a.replace("{sweep}", str(out)) for a in run.args]
    return [sys.executable, "-m", "dgconv", "train", *args, "--data-dir", str(data_dir), "--out", str(rd)]


def run_sweep(
    protocol: str | Protocol,
    out: str | Path,
    data_dir: str | Path,
    data_note: str | None = None,
    results: str | Path | None = None,
    **overrides: Any,
) -> Path:
    """Run (or finish) a protocol's runs under ``out`` and render ``out/results.md``; return its path.

    Raises :class:`SweepError` after rendering if any run failed (its ``train.log`` says why).

    ``overrides`` replace protocol fields (``epochs=1, limit_train=512`` for a smoke run); they are recorded in
    ``sweep.json``. Progress goes to the ``dgconv.sweep`` logger.
    """
    if isinstance(protocol, str) and protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}: choose from {sorted(PROTOCOLS)}")
    p = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
    provenance = data_provenance("cifar10", data_dir, data_note)  # fails now, not in every subprocess
    out = Path(out).resolve()
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta = {"protocol": dataclasses.asdict(p), "data_dir": str(data_dir), "data_note": data_note, "data": provenance,
            "started": now, "argv": sys.argv}
    previous = out / SWEEP
    if previous.exists():  # a resumed sweep keeps its start date and records when it was resumed
        old = read_json(previous, SWEEP)
        if isinstance(old, dict) and old.get("protocol") == json.loads(json.dumps(meta["protocol"])):  # tuples are lists in JSON
            meta["started"] = old.get("started", now)
            meta["resumed"] = [*old.get("resumed", []), now]
    write_json(out / SWEEP, meta)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // max(1, p.parallel))))
    failed: list[str] = []
    runs = planned_runs(p)
    running: list[tuple[PlannedRun, subprocess.Popen, IO[Any]]] = []
    try:
        _run_phases(p, runs, out, data_dir, env, running, failed)
    finally:  # stopped (Ctrl-C, SIGTERM, an error): stop the runs too; each keeps its last checkpoint
        for _, proc, logf in running:
            proc.terminate()
        for _, proc, logf in running:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()
    text = render_results([out])
    write_text(out / "results.md", text)
    if results is not None:
        write_text(results, text)
    if failed:
        raise SweepError(f"{len(failed)} run(s) failed: {', '.join(failed)}; see their train.log (results.md has the rest)")
    return out / "results.md"


def _run_phases(p: Protocol, runs: list[PlannedRun], out: Path, data_dir: str | Path, env: dict[str, str],
                running: list[tuple[PlannedRun, subprocess.Popen, IO[Any]]], failed: list[str]) -> None:
    for phase in (1, 2):
        pending = [r for r in runs if r.phase == phase and finished_epochs(out / str(r.name)) < p.epochs]
        while pending or running:
            while pending and len(running) < p.parallel:
                r = pending.pop(0)
                rd = out / str(r.name)
                cmd = _command(r, out, data_dir)
                rd.mkdir(parents=True, exist_ok=True)
                logf = open(rd / LOG, "a")
                _logger.info("[sweep %s] start %s: %s", p.name, r.name, " ".join(cmd[3:]))
                running.append((r, subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env), logf))
            time.sleep(0.5)
            for item in list(running):
                r, proc, logf = item
                if proc.poll() is not None:
                    logf.close()
                    running.remove(item)
                    if proc.returncode:
                        failed.append(str(r.name))
                        _logger.info("[sweep %s] %s FAILED (exit %d; see %s)", p.name, r.name, proc.returncode, out / str(r.name) / LOG)
                    else:
                        _logger.info("[sweep %s] %s done", p.name, r.name)
