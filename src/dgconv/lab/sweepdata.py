"""A sweep directory read into typed rows: one :class:`RunRow` per finished run (accuracy, MACs, parameters,
learned groups, the depth correlation), grouped into the arms of its protocol (:class:`ArmResult`) and the sweep
(:class:`SweepResult`). :mod:`dgconv.lab.results` renders them; nothing here formats text."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import read_json
from ..train.runs import SWEEP, Run, is_run, load_run, read_groups
from .names import RunName
from .arms import Arm, Protocol, arms_of, protocol_from_dict
from .protocols import planned_runs
from .report import plain_model
from .stats import Summary, summarize

__all__ = ["RunRow", "ArmResult", "SweepResult", "spearman", "load_sweep"]


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
    if c.get("groups_from"):
        src = Path(c["groups_from"])
        local = sweep / src.parent.name / src.name  # the source run inside this sweep directory
        return read_groups(local if local.exists() else src)
    return c.get("groups")


def _row(name: RunName, run: Run, sweep: Path) -> RunRow:
    from ..profile import profile

    prof = profile(*plain_model(run, _architecture(run, sweep)))
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
    protocol = protocol_from_dict(meta["protocol"])
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
