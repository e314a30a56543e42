"""A sweep directory read into typed rows: one :class:`RunRow` per finished run (accuracy, MACs, parameters,
learned groups, the depth correlation), grouped into the arms of its protocol (:class:`ArmResult`) and the sweep
(:class:`SweepResult`). :mod:`dgconv.lab.results` renders them; nothing here formats text."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import read_json
from ..errors import ConfigError
from ..train.runs import SWEEP, Run, is_run, load_run, read_groups
from .names import RunName
from .arms import Arm, Protocol, arm_label, arms_of, protocol_from_dict
from .protocols import planned_runs
from .report import plain_model
from .stats import Summary, summarize

__all__ = ["RunRow", "ArmResult", "SweepResult", "spearman", "load_sweep", "WALLS", "run_walls", "wall_seconds"]

#: The sweep's own wall time of every run invocation, one JSON line each (written by :mod:`dgconv.lab.sweep`).
WALLS = "walls.jsonl"


@dataclass(frozen=True)
class RunRow:
    """One finished run of a sweep, with what the tables need."""

    name: RunName
    run: Run
    acc: float
    best: float
    gconv_macs: int
    macs: int
    params: int
    minutes: float
    zeta_over_o: float | None
    depth_rho: float | None  # Spearman(depth, log groups) for runs that learned groups


@dataclass
class ArmResult:
    """One arm: its finished runs and the planned runs that have not finished."""

    arm: Arm
    rows: list[RunRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def accs(self) -> list[float]:
        return [r.acc for r in self.rows]

    @property
    def acc(self) -> Summary | None:
        return summarize(self.accs) if self.rows else None

    def mean_of(self, attr: str) -> float:
        return statistics.fmean(getattr(r, attr) for r in self.rows)


@dataclass
class SweepResult:
    """A sweep directory, parsed: its record, its protocol and its arms (the baseline first)."""

    path: Path
    meta: dict[str, Any]
    protocol: Protocol
    arms: list[ArmResult]

    @property
    def baseline(self) -> ArmResult:
        return self.arms[0]

    def arm(self, kind: str, value: float, cost: str = "connections", model: str | None = None,
            rule: str | None = None) -> ArmResult | None:
        """The arm of this kind, value and cost (a plain arm: of this ``model`` and ``rule``; None: the protocol's)."""
        for a in self.arms:
            if (a.arm.kind, a.arm.value, a.arm.cost, a.arm.model, a.arm.rule) == (kind, value, cost, model, rule):
                return a
        return None

    def rows(self) -> list[RunRow]:
        return [r for a in self.arms for r in a.rows]


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties; 0 when either side is constant)."""

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else 0.0


def _architecture(run: Run, sweep: Path) -> Any:
    c = run.config
    if run.groups and run.config.get("budget") is not None:
        return dict(run.groups)
    source = c.get("groups_from") or c.get("structure_from")  # a learned structure costs what its groups cost
    if source:
        src = Path(source)
        local = sweep / src.parent.name / src.name  # the source run inside this sweep directory
        return read_groups(local if local.exists() else src)
    return c.get("groups")


_PROFILES: dict[str, Any] = {}  # one profile per architecture: a sweep has many seeds of few architectures


def _profile(run: Run, architecture: Any) -> Any:
    from ..convert.profile import profile

    key = json.dumps([run.config["model"], architecture, run.num_classes, run.input_size], sort_keys=True, default=str)
    if key not in _PROFILES:
        _PROFILES[key] = profile(*plain_model(run, architecture))
    return _PROFILES[key]


def _row(name: RunName, run: Run, sweep: Path) -> RunRow:
    prof = _profile(run, _architecture(run, sweep))
    f = run.final
    rho = None
    if run.groups and run.config.get("budget") is not None:
        rho = spearman(list(range(len(run.groups))), [math.log2(g) for g in run.groups.values()])
    return RunRow(name, run, float(f.get("test_acc", math.nan)), float(f.get("best_acc", math.nan)), prof.gconv_macs,
                  prof.macs, prof.params, run.train_seconds / 60, f.get("zeta_over_o"), rho)


def load_sweep(path: str | Path) -> SweepResult:
    """Parse a sweep directory: ``sweep.json``, the protocol it ran, and every planned run (finished or missing)."""
    path = Path(path)
    meta = read_json(path / SWEEP, SWEEP)
    if not isinstance(meta, dict):
        raise ConfigError(f"{path / SWEEP} is not a sweep record (a JSON object with its protocol)")
    try:
        protocol = protocol_from_dict(meta.get("protocol"))
    except ConfigError as e:
        raise ConfigError(f"{path / SWEEP}: {e}") from None
    arms = [ArmResult(a) for a in arms_of(protocol)]
    by_name = {str(n): arm for arm in arms for n in arm.arm.names(protocol.family)}
    for planned in planned_runs(protocol):
        key = str(planned.name)
        arm, run = by_name[key], (load_run(path / key) if is_run(path / key) else None)
        if run is not None and run.finished:
            arm.rows.append(_row(planned.name, run, path))
        else:
            done = f"{len(run.metrics)}/{run.epochs} epochs" if run is not None else "not started"
            arm.missing.append(f"{key} ({done})")
    return SweepResult(path, meta, protocol, arms)


def run_walls(out: Path) -> dict[str, float]:
    """Wall seconds each run has taken so far in this sweep (``walls.jsonl``, summed over its invocations)."""
    total: dict[str, float] = {}
    for row in _read_walls(out):
        total[row["run"]] = total.get(row["run"], 0.0) + float(row["seconds"])
    return total


def _read_walls(out: Path) -> list[dict[str, Any]]:
    path = out / WALLS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and isinstance(row.get("run"), str) and isinstance(row.get("seconds"), (int, float)):
            rows.append(row)
    return rows


def wall_seconds(out: str | Path) -> dict[str, float]:
    """The median wall time of the finished runs of each arm (:func:`~dgconv.lab.protocols.arm_label`), from the
    sweep's ``walls.jsonl``: what the sweep itself measured, start-up and every resumption included."""
    out = Path(out)
    finished = {row["run"] for row in _read_walls(out) if row.get("exit") == 0}
    by_arm: dict[str, list[float]] = {}
    for run, seconds in run_walls(out).items():
        name = RunName.parse(run)
        if run in finished and name is not None and is_run(out / run) and load_run(out / run).finished:
            by_arm.setdefault(arm_label(name), []).append(seconds)
    return {arm: statistics.median(v) for arm, v in by_arm.items()}
