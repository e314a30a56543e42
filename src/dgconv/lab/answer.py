"""The top of the results document: "When does learning groups pay?", answered from the sweeps' intervals.

One bullet per question a user asks, each with its verdict, its interval and n, the arm it was compared with, and
what is still unresolved. Verdicts follow :func:`dgconv.lab.stats.verdict` (at least 2 seeds on each side; the 95 %
interval of the difference above 0, below 0, or containing it), never point estimates. A pure function of the loaded
sweeps (:mod:`dgconv.lab.sweepdata`); :mod:`dgconv.lab.results` puts it first.
"""

from __future__ import annotations

from .arms import Arm
from .stats import correlation_reading, points, verdict, welch
from .fair import fair_answer
from .sweepdata import ArmResult, SweepResult

__all__ = ["answer"]


def _hand_set(s: SweepResult, b: float) -> list[tuple[str, ArmResult]]:
    """The hand-set arms of a sweep at cost b (uniform contiguous, shuffled, rule-set), with results."""
    out = []
    for a in s.arms:
        if a.arm.kind == "plain" and a.arm.value == b and a.rows:
            out.append((_label(a.arm), a))
    return out


def _label(arm: Arm) -> str:
    if arm.rule:
        return f"groups per layer by the rule '{arm.rule}' at <= the MACs of G = {arm.value:g}"
    if arm.model:
        return f"G = {arm.value:g} with a channel shuffle ({arm.model})" if "shuffle" in arm.model else f"{arm.model}, G = {arm.value:g}"
    return f"contiguous G = {arm.value:g}"


def _fast(s: SweepResult) -> list[str]:
    out = []
    for b in s.protocol.budgets:
        hand = _hand_set(s, b)
        learned = s.arm("g", b, "macs")
        if not hand or learned is None or not learned.rows:
            continue
        label, best = max(hand, key=lambda h: h[1].acc.mean)  # type: ignore[union-attr]
        d = welch(learned.accs, best.accs)
        v = verdict(d, scale=100, unit=" points")
        kinds = ", ".join(lbl for lbl, _ in hand)
        missing = [] if any(a.arm.model for _, a in hand) and any(a.arm.rule for _, a in hand) else [
            "the channel-shuffle and per-layer-rule arms (protocol gpu-fair) have not run" if len(hand) == 1 else
            "not every hand-set arm of gpu-fair has run"]
        out.append(
            f"- **{s.path.name}, b = {b:g}**: learned under a MAC budget ({learned.mean_of('gconv_macs') / best.mean_of('gconv_macs'):.2f}x "
            f"the group-conv MACs) vs the strongest hand-set arm here, {label}: {points(d)}. Learned at least as "
            f"accurate: **{v.word}** ({v.reason}). Hand-set arms compared: {kinds}."
            + (f" Unresolved: {'; '.join(missing)}." if missing else ""))
    return out


def _resnext(s: SweepResult, thin: list[str]) -> list[str]:
    """G vs plain at each budget with at least 2 seeds on both sides; the others are named in ``thin``."""
    out = []
    base = s.baseline
    for cost in dict.fromkeys(a.arm.cost for a in s.arms if a.arm.kind == "g"):
        for b in s.protocol.budgets_by_cost.get(cost, s.protocol.budgets):
            g = s.arm("g", b, cost)
            if g is None:
                continue
            if len(g.rows) < 2 or len(base.rows) < 2:
                thin.append(f"{s.path.name} {cost} b = {b:g} ({len(g.rows)} vs {len(base.rows)})")
                continue
            d = welch(g.accs, base.accs)
            v = verdict(d, scale=100, unit=" points")
            ratio = g.mean_of("gconv_macs") / base.mean_of("gconv_macs")
            out.append(f"- **{s.path.name}, {cost} b = {b:g}**: G-network vs the plain network with "
                       f"{base.arm.value:g} groups: {points(d)} at {ratio:.2f}x its group-conv MACs. At least as accurate: "
                       f"**{v.word}** ({v.reason}).")
    return out


def _depth(s: SweepResult) -> list[str]:
    out = []
    for cost in dict.fromkeys(a.arm.cost for a in s.arms if a.arm.kind == "g"):
        rhos = [r.depth_rho for a in s.arms if a.arm.kind == "g" and a.arm.cost == cost for r in a.rows
                if r.depth_rho is not None]
        if len(rhos) < 2:
            continue
        out.append(f"- **{s.path.name}, {cost} cost**: do lower layers learn fewer groups? Spearman(depth, "
                   f"groups) {correlation_reading(rhos)}.")
    return out


def answer(sweeps: list[SweepResult]) -> list[str]:
    """The "When does learning groups pay?" section for these sweeps (empty when none has a comparison): the
    equal-MACs protocols (cpu-fair) first, then each other protocol at its own scale."""
    fair = [line for s in sweeps if s.protocol.equal_macs for line in fair_answer(s)]
    fast = [line for s in sweeps if s.protocol.family != "resnext" and not s.protocol.equal_macs for line in _fast(s)]
    thin: list[str] = []
    resnext = [line for s in sweeps if s.protocol.family == "resnext" for line in _resnext(s, thin)]
    if thin:
        resnext.append(f"- No verdict yet (fewer than 2 seeds on a side, G vs plain): {', '.join(thin)}.")
    depth = [line for s in sweeps if not s.protocol.equal_macs for line in _depth(s)]
    if not (fair or fast or resnext or depth):
        return []
    out = ["## When does learning groups pay?", "",
           "Each line: the difference in top-1 accuracy (learned minus the arm named), its 95 % Welch interval and the "
           "seeds on each side; the verdict comes from the interval. Details and every arm follow below. Each protocol "
           "is its own scale: its numbers are never pooled with another's.", ""]
    out += fair
    if fast:
        out += ["**Against the strongest hand-set groups at equal MACs (GPU protocols, their own scale)**", "", *fast, ""]
    if resnext:
        out += ["**G-ResNeXt against ResNeXt (group convolutions with uniform groups)**", "", *resnext, ""]
    if depth:
        control = any(a.arm.tag for s in sweeps if s.protocol.equal_macs for a in s.arms if a.rows)
        out += ["**Where the groups go (depth pattern, per cost; the protocols above the GPU scale)**", "", *depth,
                "- Caveat: widths grow with depth in these networks, so a pattern under one cost may come from what "
                "that cost charges each layer rather than from what the layer needs"
                + ("; the depth control above keeps one width in every block." if control else
                   "; a constant-width control has not run yet."), ""]
    missing = sum(len(a.missing) for s in sweeps for a in s.arms)
    if missing:
        out += [f"Unresolved everywhere above: {missing} planned runs have not finished (listed under each protocol).", ""]
    return out
