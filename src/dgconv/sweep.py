"""``dgconv sweep``: the paper's CIFAR-size experiments as named protocols, each run in its own directory.

A protocol trains, on CIFAR-10:

* Table 3 analogue: G-ResNeXt at ``b`` in {32, 64, 96, 128} and the ResNeXt baseline of the same topology
  with 32 groups everywhere (``b = 32`` is that baseline's GConv size);
* Table 5 analogue: the ``b = 32`` run repeated with seeds 1 and 2;
* Table 6 analogue: ResNeXt* built from the groups learned at ``b = 32`` and ``b = 96``, trained from scratch.

Protocols:

* ``cpu`` -- ``g_resnext_cifar_tiny`` for a few epochs, sequentially; about an hour on 2 CPU cores. Its
  numbers are a smoke test of the pipeline, not evidence about the paper's claims.
* ``gpu`` -- ``g_resnext29_32x4d`` (ResNeXt-29 class), whole dataset on the GPU, GPU augmentation, bf16
  autocast, channels_last, one run at a time (several processes time-sharing one GPU measured slower in total).

The sweep is resumable: finished runs are skipped, interrupted ones continue from their checkpoint. When all
runs are done it renders ``results.md`` (:mod:`dgconv.results`) from the run directories.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Protocol", "PROTOCOLS", "planned_runs", "run_sweep", "SweepError"]


class SweepError(RuntimeError):
    """Some runs of a sweep failed."""


@dataclass(frozen=True)
class Protocol:
    name: str
    label: str
    model: str
    plain: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    baseline_groups: int = 32
    budgets: tuple[float, ...] = (32, 64, 96, 128)
    seeds: tuple[int, ...] = (0, 1, 2)
    star_budgets: tuple[float, ...] = (32, 96)
    amp: bool = False
    channels_last: bool = False
    device: str | None = None
    parallel: int = 1
    limit_train: int | None = None
    limit_test: int | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


PROTOCOLS: dict[str, Protocol] = {
    "cpu": Protocol(
        name="cpu",
        label="smoke test (2 CPU cores, few epochs): checks the pipeline, not the paper's claims",
        model="g_resnext_cifar_tiny",
        plain="resnext_cifar_tiny",
        # Measured on 2 CPU cores (results/cpu, run with --epochs 4): ~60 s per epoch for the ResNeXt runs,
        # ~170 s for G-ResNeXt at its learned groups; 3 epochs of all nine runs take about an hour.
        epochs=3,
        batch_size=128,
        lr=0.1,
        device="cpu",
        parallel=1,
    ),
    "gpu": Protocol(
        name="gpu",
        label="one H200, ResNeXt-29 32x4d class, a short schedule (about ten minutes)",
        model="g_resnext29_32x4d",
        plain="resnext29_32x4d",
        # Measured on one H200 (results/gpu): ~59 s per epoch of all nine runs, plus ~16 s first-epoch warm-up
        # and ~5 s start-up per run: 7 epochs take about ten minutes.
        epochs=7,
        batch_size=256,
        lr=0.2,
        warmup_epochs=1.0,
        amp=True,
        channels_last=True,
        device="cuda",
        parallel=1,  # measured on an H200: 7 runs at once had less total throughput than one alone
    ),
}


@dataclass(frozen=True)
class PlannedRun:
    name: str
    phase: int
    args: tuple[str, ...]


def planned_runs(p: Protocol) -> list[PlannedRun]:
    """The runs of a protocol in order: phase 1 (baseline, budgets, seeds), phase 2 (ResNeXt* from phase 1)."""
    warmup = min(p.warmup_epochs, p.epochs / 5)  # at most a fifth of the schedule (short smoke runs too)
    common = ["--dataset", "cifar10", "--epochs", str(p.epochs), "--batch-size", str(p.batch_size), "--lr", str(p.lr),
              "--weight-decay", str(p.weight_decay), "--warmup-epochs", f"{warmup:g}", "--no-progress"]
    if p.amp:
        common.append("--amp")
    if p.channels_last:
        common.append("--channels-last")
    if p.device:
        common += ["--device", p.device]
    if p.limit_train:
        common += ["--limit-train", str(p.limit_train)]
    if p.limit_test:
        common += ["--limit-test", str(p.limit_test)]
    common += list(p.extra)
    runs = [PlannedRun(f"resnext-g{p.baseline_groups}", 1,
                       ("--model", p.plain, "--budget", "none", "--groups", str(p.baseline_groups), "--seed", "0", *common))]
    for b in p.budgets:
        runs.append(PlannedRun(f"g-b{b:g}", 1, ("--model", p.model, "--budget", f"{b:g}", "--seed", "0", *common)))
    for s in p.seeds:
        if s != 0:
            runs.append(PlannedRun(f"g-b{p.budgets[0]:g}-s{s}", 1,
                                   ("--model", p.model, "--budget", f"{p.budgets[0]:g}", "--seed", str(s), *common)))
    for b in p.star_budgets:
        runs.append(PlannedRun(f"star-b{b:g}", 2, ("--model", p.plain, "--budget", "none", "--groups-from",
                                                      f"{{sweep}}/g-b{b:g}/groups.json", "--seed", "0", *common)))
    return runs


def _finished(run_dir: Path, epochs: int) -> bool:
    m = run_dir / "metrics.jsonl"
    return m.exists() and len([ln for ln in m.read_text().splitlines() if ln.strip()]) >= epochs


def run_sweep(
    protocol: str | Protocol,
    out: str | Path,
    data_dir: str | Path,
    data_note: str | None = None,
    results: str | Path | None = None,
    log=print,  # type: ignore[no-untyped-def]
    **overrides: Any,
) -> Path:
    """Run (or finish) a protocol's runs under ``out`` and render ``out/results.md``; return its path.

    Raises :class:`SweepError` after rendering if any run failed (its ``train.log`` says why).

    ``overrides`` replace protocol fields (``epochs=1, limit_train=512`` for a smoke run); they are recorded in
    ``sweep.json``.
    """
    if isinstance(protocol, str) and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose from {sorted(PROTOCOLS)}")
    p = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
    from .data import find_cifar_dir

    find_cifar_dir("cifar10", data_dir)  # fail now, not in nine subprocesses
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta = {"protocol": dataclasses.asdict(p), "data_dir": str(data_dir), "data_note": data_note,
            "started": now, "argv": sys.argv}
    previous = out / "sweep.json"
    if previous.exists():  # a resumed sweep keeps its start date and records when it was resumed
        old = json.loads(previous.read_text())
        if old.get("protocol") == json.loads(json.dumps(meta["protocol"])):  # tuples are lists in JSON
            meta["started"] = old.get("started", now)
            meta["resumed"] = [*old.get("resumed", []), now]
    (out / "sweep.json").write_text(json.dumps(meta, indent=2) + "\n")
    runs = planned_runs(p)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // max(1, p.parallel))))
    failed: list[str] = []
    for phase in (1, 2):
        pending = [r for r in runs if r.phase == phase and not _finished(out / r.name, p.epochs)]
        running: list[tuple[PlannedRun, subprocess.Popen, Any]] = []
        while pending or running:
            while pending and len(running) < p.parallel:
                r = pending.pop(0)
                rd = out / r.name
                args = [a.replace("{sweep}", str(out)) for a in r.args]
                cmd = [sys.executable, "-m", "dgconv", "train", *args, "--data-dir", str(data_dir), "--out", str(rd)]
                if (rd / "last.pt").exists():
                    cmd = [sys.executable, "-m", "dgconv", "train", "--resume", str(rd), "--no-progress"]
                rd.mkdir(parents=True, exist_ok=True)
                logf = open(rd / "train.log", "a")
                log(f"[sweep {p.name}] start {r.name}: {' '.join(cmd[3:])}")
                running.append((r, subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env), logf))
            time.sleep(1.0)
            for item in list(running):
                r, proc, logf = item
                if proc.poll() is not None:
                    logf.close()
                    running.remove(item)
                    status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {out / r.name / 'train.log'})"
                    if proc.returncode:
                        failed.append(r.name)
                    log(f"[sweep {p.name}] {r.name} {status}")
    from .results import render_results

    text = render_results([out])
    (out / "results.md").write_text(text)
    if results is not None:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        Path(results).write_text(text)
    if failed:
        raise SweepError(f"{len(failed)} run(s) failed: {', '.join(failed)}; see their train.log (results.md has the rest)")
    return out / "results.md"
