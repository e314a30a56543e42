"""``dgconv sweep``: run a named protocol (:mod:`dgconv.lab.protocols`), one run directory per run, then render results.

The sweep is resumable: finished runs are skipped, interrupted ones continue from their checkpoint (a run whose
directory another process holds is reported, not started twice). Runs train in ``parallel`` worker processes that
import torch once and run ``dgconv train`` after ``dgconv train``, each run's console output in its ``train.log``;
a worker that dies fails only its run. Stopping the sweep (Ctrl-C, SIGTERM) stops the runs at checkpoint-safe points. When the runs are done it renders
``results.md`` (:mod:`dgconv.lab.results`) from the run directories -- whatever finished; the rest shows as missing.

A sweep directory holds one protocol: continuing it with other settings (a changed protocol definition, another
``--epochs``) is refused once runs are recorded, so one results table never mixes two settings.

``sweep.json`` records the protocol as run, the data's provenance (MD5 of every CIFAR file and whether they are
the official ones, plus any ``--data-note``), when the sweep started and every resumption.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._files import (
    LockHeld,
    md5_file,
    read_json,
    release_lock,
    take_lock,
    write_json,
    write_text,
)
from ..errors import ConfigError, DGConvError, RunInUseError
from ..train.options import to_flags
from ..train.progress import duration, plural
from ..train.runs import (
    LAST,
    LOG,
    RESULTS,
    SWEEP,
    finished_epochs,
    is_run,
    load_run,
    read_metrics,
    set_aside_unresumable,
)
from .launchers import LocalPool, make_launcher, orphaned, stop
from .arms import Protocol, estimate_seconds, protocol_from_dict
from .protocols import PROTOCOLS, PlannedRun, planned_runs
from .results import render_results
from .sweepdata import WALLS, run_walls, wall_seconds

__all__ = ["run_sweep", "SweepError", "data_provenance", "OFFICIAL_MD5"]

_logger = logging.getLogger(__name__)


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


def data_provenance(dataset: str, data_dir: str | Path, note: str | None = None) -> dict[str, Any]:
    """What a sweep records about its data: the MD5 of each file, whether all match the official release, the
    first line of a ``readme.txt`` beside them (if any), and the user's ``note``."""
    from ..train.data.cifar import find_cifar_dir

    folder = find_cifar_dir(dataset, data_dir)
    official = OFFICIAL_MD5.get(dataset, {})
    md5 = {name: md5_file(folder / name) for name in sorted(official)}
    readme = folder / "readme.txt"
    first = readme.read_text(errors="replace").strip().splitlines()[0] if readme.is_file() and readme.stat().st_size else None
    return {"dataset": dataset, "md5": md5, "official": bool(official) and md5 == official, "readme": first, "note": note}


def _options(run: PlannedRun, out: Path, data_dir: str | Path, epochs: int) -> dict[str, Any]:
    """The ``dgconv train`` options of a run (typed values): a fresh start, or a resume where a checkpoint exists."""
    rd = out / str(run.name)
    if (rd / LAST).exists():
        return {"resume": str(rd), "epochs": epochs, "progress": False}
    options = {k: v.replace("{sweep}", str(out)) if isinstance(v, str) else v for k, v in run.options.items()}
    return {**options, "data_dir": str(data_dir), "out": str(rd)}


def run_sweep(
    protocol: str | Protocol,
    out: str | Path,
    data_dir: str | Path,
    data_note: str | None = None,
    results: str | Path | None = None,
    deadline: float | None = None,
    runner: Callable[[dict[str, Any]], int] | None = None,
    launcher: str | Callable[[int], Any] = "local",
    **overrides: Any,
) -> Path:
    """Run (or finish) a protocol's runs under ``out`` and render ``out/results.md``; return its path.

    ``runner`` trains one run from its options (typed :class:`~dgconv.train.config.TrainConfig` values) and returns
    its exit status, in a worker process (so it must be a module-level function): ``dgconv sweep`` passes
    :func:`dgconv.cli.run_train`, which is ``dgconv train`` with those options. The lab never imports the command line.

    Raises :class:`SweepError` after rendering if any run failed (its ``train.log`` says why).

    ``launcher``: where the runs execute: ``"local"`` (a pool of worker processes), ``"submitit"`` (Slurm jobs, with
    their files under ``out/.submitit``), or a factory from :func:`dgconv.lab.launchers.make_launcher` (with
    cluster parameters).

    ``overrides`` replace protocol fields (``epochs=1, limit_train=512`` for a smoke run); they are recorded in
    ``sweep.json``. Progress goes to the ``dgconv.lab.sweep`` logger.

    ``deadline``: seconds from now. Runs that would not finish in time (judged from the wall time of finished runs of
    their kind) are not started, and runs still going at the deadline stop at their last checkpoint; the next
    invocation continues them.
    """
    started = time.time()
    if isinstance(protocol, str) and protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}: choose from {sorted(PROTOCOLS)}")
    p = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(out).resolve()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(launcher, str):
        launcher = make_launcher(launcher, out / SUBMITIT_FOLDER)
    lock = _lock_sweep(out)  # one sweep at a time per directory: a second one would start the same runs
    try:
        return _sweep(p, out, data_dir, data_note, results, started, deadline, runner, launcher)
    finally:
        release_lock(lock, out / SWEEP_LOCK)
        if created:
            try:
                out.rmdir()  # only if the sweep stopped before writing anything
            except OSError:
                pass


def _lock_sweep(out: Path) -> int:
    """Hold ``out/.sweep.lock`` (an OS file lock, released when the process ends); a second sweep gets an error."""
    try:
        return take_lock(out / SWEEP_LOCK)
    except LockHeld as e:
        raise RunInUseError(f"{out} is in use by another dgconv sweep (PID {e.holder}): let it finish (it runs every "
                            f"run of the protocol), or choose another --out") from None


def _sweep(p: Protocol, out: Path, data_dir: str | Path, data_note: str | None, results: str | Path | None,
           started: float, deadline: float | None, runner: Callable[[dict[str, Any]], int] | None,
           launcher: Callable[[int], Any]) -> Path:
    previous = out / SWEEP
    old = read_json(previous, SWEEP) if previous.exists() else None
    changes = _protocol_changes(old, p) if isinstance(old, dict) else []
    if changes and any(finished_epochs(out / str(r.name)) for r in planned_runs(p)):
        raise ConfigError(
            f"{out} holds runs of a sweep with other settings ({'; '.join(changes)}); continuing would mix the two in "
            f"one results table. Choose another --out, or pass the recorded settings as overrides"
        )
    provenance = data_provenance("cifar10", data_dir, data_note)  # fails now, not in every subprocess
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta = {"protocol": dataclasses.asdict(p), "data_dir": str(data_dir), "data_note": data_note, "data": provenance,
            "started": now, "argv": sys.argv}
    if isinstance(old, dict) and not changes:  # a resumed sweep keeps its start date and records when it was resumed
        meta["started"] = old.get("started", now)
        meta["resumed"] = [*old.get("resumed", []), now]
    write_json(out / SWEEP, meta)
    todo = [r for r in planned_runs(p) if finished_epochs(out / str(r.name)) < p.epochs]
    if todo and runner is None:
        raise ConfigError("run_sweep needs runner= to train runs (dgconv.cli.run_train, what `dgconv sweep` passes)")
    _say_estimate(p, out, todo)
    failed, deferred = _run_all(p, planned_runs(p), out, data_dir, None if deadline is None else started + deadline,
                                runner, launcher)
    if deferred:
        _logger.info("[sweep %s] not run before the deadline (the next invocation continues): %s", p.name, ", ".join(deferred))
    text = render_results([out])
    write_text(out / RESULTS, text)
    if results is not None:
        write_text(results, text)
    if failed:
        raise SweepError(f"{len(failed)} run(s) failed: {', '.join(failed)}; see their train.log (results.md has the rest)")
    return out / RESULTS


def _say_estimate(p: Protocol, out: Path, todo: list[PlannedRun]) -> None:
    """Before starting: how long the runs left should take (measured seconds per arm: finished runs of this sweep,
    else the protocol's own measurements), and whether the whole sweep exceeds the protocol's stated budget."""
    if not todo or p.budget_hours is None:
        return
    measured = wall_seconds(out)
    left = estimate_seconds(p, todo, measured)
    if left is None:
        _logger.info("[sweep %s] %d runs to go; no measured time for some of their arms, so no estimate", p.name, len(todo))
        return
    spent = sum(run_walls(out).values())
    whole = (spent + left) / 3600
    _logger.info("[sweep %s] %d runs to go, about %s one at a time (%s spent so far); the protocol's budget is %g h%s",
                 p.name, len(todo), duration(left / max(1, p.parallel)), duration(spent), p.budget_hours,
                 f": THE ESTIMATE OF {whole:.1f} h EXCEEDS IT" if whole > p.budget_hours else "")


def _record_wall(out: Path, run: str, seconds: float, code: int | None) -> None:
    """Append one invocation of a run to ``walls.jsonl`` (``exit`` None: stopped at the deadline, to be continued)."""
    row = {"run": run, "seconds": round(seconds, 3), "exit": code, "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with open(out / WALLS, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


SWEEP_LOCK = ".sweep.lock"
SUBMITIT_FOLDER = ".submitit"  # the submitit launcher's job files (pickles, each job's stdout and stderr)
_HARMLESS = ("parallel", "label", "equal_macs", "budget_hours", "seconds_per_run")  # fields that change no run


def _protocol_changes(old_meta: dict[str, Any], p: Protocol) -> list[str]:
    """``field: recorded -> now`` for every protocol field (except :data:`_HARMLESS`) that differs from the sweep
    recorded in ``old_meta`` (fields the record predates take their defaults)."""
    try:
        old = protocol_from_dict(old_meta.get("protocol") or {})
    except (TypeError, ValueError) as e:
        return [f"the recorded protocol cannot be read ({e})"]
    a, b = (json.loads(json.dumps(dataclasses.asdict(x))) for x in (old, p))  # tuples and lists alike
    return [f"{k}: {a.get(k)!r} -> {b[k]!r}" for k in b if k not in _HARMLESS and a.get(k) != b[k]]


def _train_in_worker(runner: Callable[[dict[str, Any]], int], options: dict[str, Any], log: str) -> int:
    """One ``dgconv train`` (``runner(options)``) in a worker process (torch imported once per worker, not once per
    run), its console output appended to ``log``. Returns the exit status."""
    import signal
    import traceback

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        return runner(options)
    except Exception:  # noqa: BLE001 - a bug in one run: its traceback goes to its log, the sweep goes on
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)
        for sig in (signal.SIGINT, signal.SIGTERM):  # between runs a signal ends the idle worker
            signal.signal(sig, signal.SIG_DFL)
        if orphaned():  # the sweep died (SIGKILL): its death signal stopped this run; nobody will send another task
            os._exit(3)


def _estimate(out: Path, run: PlannedRun, runs: list[PlannedRun]) -> float | None:
    """Seconds a run will take: the mean wall time of finished runs of the same kind (plain or learning groups)."""
    kind = run.name.arm == "g"
    times = []
    for r in runs:
        if (r.name.arm == "g") == kind and is_run(out / str(r.name)):
            rows = read_metrics(out / str(r.name))
            if rows and len(rows) >= int(load_run(out / str(r.name)).epochs):
                times.append(sum(m.get("time", 0.0) for m in rows))
    return 1.15 * statistics.fmean(times) + 15.0 if times else None


def _time_left(p: Protocol, runs: list[PlannedRun], out: Path, took: list[float], pending: list[PlannedRun],
               running: dict[float, PlannedRun], phase: int, width: int) -> str:
    """``; about 12 min left`` for every unfinished run of this and later phases (``running``: start time -> run),
    from the runs finished so far (nothing until the first one of a kind ends)."""
    def guess(r: PlannedRun) -> float | None:
        return _estimate(out, r, runs) or (statistics.fmean(took) if took else None)

    now = time.time()
    later = [r for r in runs if r.phase > phase and finished_epochs(out / str(r.name)) < p.epochs]
    parts = [guess(r) for r in pending + later]
    for t0, r in running.items():
        g = guess(r)
        parts.append(None if g is None else max(0.0, g - (now - t0)))
    if not parts or any(g is None for g in parts):
        return ""
    return f"; about {duration(sum(parts) / width)} left"  # type: ignore[arg-type]


def _source_ready(p: Protocol, r: PlannedRun, out: Path, failed: list[str], deferred: list[str]) -> bool:
    """Whether a phase-2 run's source search finished; if not, the run is listed as failed (its source failed) or
    deferred: its groups would come from an unfinished search, and it never starts from those."""
    if finished_epochs(out / str(r.name.source)) >= p.epochs:
        return True
    source_failed = str(r.name.source) in failed
    (failed if source_failed else deferred).append(str(r.name))
    _logger.info("[sweep %s] %s not started: its source run %s %s", p.name, r.name, r.name.source,
                 "failed" if source_failed else f"has not finished its {plural(p.epochs, 'epoch')}")
    return False


def _submit(p: Protocol, r: PlannedRun, out: Path, data_dir: str | Path, executor: Any,
            runner: Callable[[dict[str, Any]], int] | None, position: int, todo: int) -> Any:
    """Start one run on ``executor``: its directory (a copy brought back without its checkpoint set aside), the
    files it reads, its options; returns the future of its exit status."""
    rd = out / str(r.name)
    aside = set_aside_unresumable(rd)
    if aside is not None:
        _logger.warning("[sweep %s] %s recorded %d epochs but has no checkpoint (brought back without "
                        "it?): moved to %s, starting it again", p.name, r.name, finished_epochs(aside), aside.name)
    for fname, doc in r.files.items():  # e.g. a hand-set arm's groups, written once per arm
        if not (out / fname).exists():
            write_json(out / fname, doc)
    options = _options(r, out, data_dir, p.epochs)
    rd.mkdir(parents=True, exist_ok=True)
    _logger.info("[sweep %s] start %s (%d/%d): %s", p.name, r.name, position, todo,
                 " ".join(["dgconv", "train", *to_flags(options)]))
    return executor.submit(_train_in_worker, runner, options, str(rd / LOG))


def _run_all(p: Protocol, runs: list[PlannedRun], out: Path, data_dir: str | Path, deadline: float | None = None,
             runner: Callable[[dict[str, Any]], int] | None = None,
             launcher: Callable[[int], Any] = LocalPool) -> tuple[list[str], list[str]]:
    """Train the unfinished runs, ``p.parallel`` at a time, phase by phase; return the failed runs and the runs not
    started because they would not have finished before ``deadline`` (a ``time.time()`` value)."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    failed: list[str] = []
    deferred: list[str] = []
    width = max(1, p.parallel)
    todo = sum(1 for r in runs if finished_epochs(out / str(r.name)) < p.epochs)
    ended = 0
    started_at: dict[Any, float] = {}
    took: list[float] = []  # wall seconds of the runs this invocation finished
    names: dict[Any, str] = {}

    def left(pending: list[PlannedRun], running: dict[Any, PlannedRun], phase: int) -> str:
        return _time_left(p, runs, out, took, pending, {started_at[f]: r for f, r in running.items()}, phase, width)

    executor = launcher(width)
    try:
        for phase in (1, 2):
            pending = [r for r in runs if r.phase == phase and finished_epochs(out / str(r.name)) < p.epochs]
            running: dict[Any, PlannedRun] = {}
            while pending or running:
                while pending and len(running) < width:
                    r = pending.pop(0)
                    if r.phase == 2 and not _source_ready(p, r, out, failed, deferred):
                        continue
                    guess = _estimate(out, r, runs)
                    if deadline is not None and (time.time() >= deadline or (guess and time.time() + guess > deadline)):
                        deferred.append(str(r.name))
                        continue
                    fut = _submit(p, r, out, data_dir, executor, runner, ended + len(running) + 1, todo)
                    running[fut], started_at[fut], names[fut] = r, time.time(), str(r.name)
                if deadline is not None and running and time.time() >= deadline:
                    _logger.info("[sweep %s] deadline: stopping %s at their last checkpoint", p.name,
                                 ", ".join(str(r.name) for r in running.values()))
                    deferred += [str(r.name) for r in running.values()]
                    stop(executor)
                    for f, r in running.items():
                        _record_wall(out, str(r.name), time.time() - started_at.pop(f), None)
                    executor = launcher(width)
                    running = {}
                    continue
                done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    r = running.pop(fut)
                    try:
                        code = fut.result()
                    except BrokenProcessPool:  # a worker died (killed, out of memory): that run failed, go on
                        code, broken = -1, True
                    ended += 1
                    seconds = time.time() - started_at.pop(fut)
                    _record_wall(out, str(r.name), seconds, code)
                    if code:
                        failed.append(str(r.name))
                        log = out / str(r.name) / LOG
                        where = f"see {log}" if log.exists() else f"its run directory {log.parent} is gone"
                        _logger.info("[sweep %s] %d/%d %s FAILED (exit %d; %s)%s", p.name, ended, todo, r.name, code,
                                     where, left(pending, running, phase))
                    else:
                        took.append(seconds)
                        _logger.info("[sweep %s] %d/%d %s done in %s%s", p.name, ended, todo, r.name, duration(seconds),
                                     left(pending, running, phase))
                if broken:  # the other runs of the dead pool start again (from their checkpoints)
                    pending = list(running.values()) + pending
                    running = {}
                    executor.shutdown(wait=False, cancel_futures=True)
                    executor = launcher(width)
    except BaseException:
        stop(executor)
        for fut, t0 in started_at.items():  # stopped mid-run: the part it ran counts (the next invocation adds the rest)
            _record_wall(out, names[fut], time.time() - t0, None)
        raise
    executor.shutdown(wait=True)
    return failed, deferred
