"""What ``dgconv train`` says at the end of a run: the accuracy, the budget and what it means, each learned layer's
groups and gates and what they mean, and the commands to go on with."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from ..budget.constraint import ResourceConstraint
from ..convert.freeze import structure_record
from .runs import read_metrics
from .setup import RunState

__all__ = ["final_summary", "budget_text", "command"]

_logger = logging.getLogger("dgconv.train.engine")  # one voice for the trainer's console lines


def command(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in ("dgconv", *args))


def budget_text(c: ResourceConstraint) -> str:
    if not c.constrained:
        return "no budget"
    what = f"budget b={c.budget:g}" if c.target is None else f"target {c.target:,.6g} {c.cost.unit}"
    return f"{what} in {c.cost.name}" + (", lagrangian" if c.objective == "lagrangian" else "")


def _explain_gates(run: RunState) -> None:
    """What the gates column means, and how often the budget's projection changed the groups."""
    _logger.info("  (a layer has one gate per prime factor of its channels; gate 0 splits the channels that factor "
                 "spans into groups, so a layer's groups are the product of its factors whose gate is 0)")
    rows = read_metrics(run.out) if run.writer is not None else []
    closed = sum(1 for r in rows if r.get("gates_closed_by_projection"))
    frozen = next((r["epoch"] for r in rows if r.get("frozen")), None)
    if closed:
        _logger.info("  the budget's projection closed gates at %d of %d epoch ends (zeta above o after the epoch's "
                     "steps); each epoch's groups and gates are in %s", closed, len(rows), Path(run.out) / "metrics.jsonl")
    if frozen is not None:
        _logger.info("  the groups were frozen before epoch %d (--freeze-groups-at): from there on a plain group "
                     "convolution network trained", frozen)


def final_summary(run: RunState, record: dict[str, Any]) -> None:
    log = _logger.info
    log("")
    log("test accuracy %.4f (best %.4f at epoch %d)", record["test_acc"], record["best_acc"], run.best_epoch)
    layers = run.constraint.layers
    structure = structure_record(run.model) if layers else {}
    if layers:
        if run.constraint.constrained:
            log("zeta %.6g / o %.6g = %.3f (%s)", record["zeta"], record["o"], record["zeta_over_o"], budget_text(run.constraint))
            log("  (zeta: what the learned groups cost in %s; o: the budget%s; zeta/o <= 1 keeps within it)",
                run.constraint.cost.name, f", what {run.constraint.budget:g} groups in every layer cost"
                if run.constraint.budget is not None else "")
        if record.get("macs") is not None:
            log("MACs %s per input (DGConv layers %s)", f"{record['macs']:,.0f}", f"{record['dgconv_macs']:,.0f}")
        log("%-20s %5s %5s %7s  gates (1 = factor connected)", "DGConv layer", "in", "out", "groups")
        channels = run.constraint.summary()["channels"]
        for name, s in structure.items():
            bits = "".join("1" if b else "0" for b in s["gates"])
            (cin, cout), groups = channels[name], record["groups"][name]
            log("%-20s %5d %5d %7d  %s (factors %s)", name, cin, cout, groups, bits, s["factors"])
        _explain_gates(run)
    out = str(run.out)
    log("")
    log("run directory: %s", out)
    log("next: %s", command("report", out, "--out", str(Path(out) / "report")))
    if layers:
        log("      %s", command("deploy", out, "--best", "--out", str(Path(out) / "deployed.pt")))
