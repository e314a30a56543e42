"""Learned groups against the strongest hand-set groups at equal cost (protocols whose arms are checked at equal
MACs, ``Protocol.equal_macs``: cpu-fair): the comparisons, their verdicts, the controls, measured latency and wall
time, and the figures.

For each learned arm (``g``, ``star``, ``struct``) the hand-set arms are the plain arms of the same network and value
-- contiguous groups, the same groups with a channel shuffle (``<network>_shuffle``), a hand-set rule -- and the
strongest is the one with the highest mean accuracy among those with at least 2 finished seeds. The difference is
learned minus strongest, with its 95 % Welch interval; the verdict reads the interval (:func:`dgconv.lab.stats.verdict`).
At equal measured time the same is done per batch size among the hand-set arms not measured slower than the learned
arm (their fastest pass no slower than its slowest). The depth control's arms are the learned arms without hand-set
arms (one width in every block).

Measured CPU inference time is read from the sweep's ``latency.json`` (this module owns that file: written by
:func:`write_latency`, from ``experiments/cpu_fair_latency.py``); the sweep's own wall time per run from its
``walls.jsonl`` (:func:`dgconv.lab.sweep.wall_seconds`'s file). A pure function of the sweep directory otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import read_json, write_json
from .arms import Arm, Protocol, plain_of
from .stats import Difference, correlation_reading, points, summarize, verdict, welch
from .sweepdata import ArmResult, SweepResult, wall_seconds

__all__ = ["Comparison", "comparisons", "fair_answer", "fair_section", "LATENCY", "read_latency", "write_latency",
           "arm_key"]

#: The sweep's measured inference times (``{"machine": ..., "arms": {arm key: {"b1": ratio, "b64": ratio}}}``).
LATENCY = "latency.json"
LATENCY_FORMAT = "dgconv.arm-latency/1"
#: The batch sizes ``latency.json`` times, as (key, words).
BATCHES = (("b1", "batch 1"), ("b64", "batch 64"))


def arm_key(arm: Arm, p: Protocol) -> str:
    """An arm's name in tables and ``latency.json``: its runs' name without the seed (``fastnet_shuffle-g16``)."""
    return str(arm.names(p.family)[0])


def write_latency(sweep: str | Path, doc: dict[str, Any]) -> Path:
    """Write a sweep's ``latency.json`` (``doc``: ``machine``, ``command``, ``commit``, ``arms``)."""
    path = Path(sweep) / LATENCY
    write_json(path, {"format": LATENCY_FORMAT, **doc})
    return path


def read_latency(sweep: str | Path) -> dict[str, Any] | None:
    """A sweep's ``latency.json``, or ``None`` when it has none (not measured yet)."""
    path = Path(sweep) / LATENCY
    if not path.is_file():
        return None
    doc = read_json(path, LATENCY)
    return doc if isinstance(doc, dict) and doc.get("format") == LATENCY_FORMAT else None


def _network(arm: Arm, p: Protocol) -> str:
    """The plain network an arm is about: a plain arm's own (a shuffle's is the network it rewires), a learned
    arm's deployed network."""
    if arm.kind == "plain":
        model = arm.model or p.plain
        return model[: -len("_shuffle")] if model.endswith("_shuffle") else model
    return plain_of(arm.model or p.model, p)


@dataclass(frozen=True)
class Comparison:
    """A learned arm against the strongest hand-set arm of its network and value."""

    learned: ArmResult
    strongest: ArmResult | None
    hand: list[ArmResult]
    diff: Difference | None


def _hand(s: SweepResult, a: ArmResult) -> list[ArmResult]:
    """The hand-set arms a learned arm is compared with: the grouped plain arms of its network and value."""
    p, net = s.protocol, _network(a.arm, s.protocol)
    return [h for h in s.arms if h.arm.kind == "plain" and h.arm.value == a.arm.value and h.arm.value > 1
            and _network(h.arm, p) == net]


def comparisons(s: SweepResult) -> list[Comparison]:
    """Every learned arm with finished runs, against the hand-set arms of its network and value. The strongest of
    those is chosen, and a difference taken, only when the learned arm and every one of them have at least 2 seeds
    (a hand-set arm still running could be the strongest)."""
    out = []
    for a in s.arms:
        if a.arm.kind == "plain" or not a.rows:
            continue
        hand = _hand(s, a)
        if not hand:  # a control without hand-set arms (the depth control): read elsewhere
            continue
        ready = len(a.rows) >= 2 and all(len(h.rows) >= 2 for h in hand)
        strongest = max(hand, key=lambda h: h.acc.mean) if ready else None  # type: ignore[union-attr]
        diff = welch(a.accs, strongest.accs) if strongest is not None else None
        out.append(Comparison(a, strongest, hand, diff))
    return out


def _what(arm: Arm, p: Protocol) -> str:
    if arm.kind == "plain":
        model = arm.model or p.plain
        if arm.rule:
            return f"{model} with groups by the rule '{arm.rule}' (<= the MACs of G = {arm.value:g})"
        if model.endswith("_shuffle"):
            return f"G = {arm.value:g} with a channel shuffle"
        return f"{model}, contiguous G = {arm.value:g}" if arm.value > 1 else f"{model}, dense"
    net = "" if not arm.tag else f" ({arm.model})"
    what = {"g": "learned", "star": "learned group numbers retrained (contiguous)",
            "struct": "learned structure retrained with its channel order"}[arm.kind]
    return f"{what} under a {arm.cost} budget b = {arm.value:g}{net}"


def _reading(d: Difference) -> str:
    v = verdict(d, scale=100, unit=" points")
    word = {"agrees": "learned groups are more accurate", "disagrees": "learned groups are LESS accurate",
            "not resolved at this n": "no difference resolved at this n"}.get(v.word, v.word)
    return f"**{word}** ({v.reason})"


def _timed(lat: dict[str, Any] | None, arm: Arm, p: Protocol) -> dict[str, Any]:
    """An arm's entry in the sweep's latency document (empty when the arm, or the sweep, was not measured)."""
    return ((lat or {}).get("arms") or {}).get(arm_key(arm, p)) or {}


def _span(la: dict[str, Any], key: str) -> tuple[float, float]:
    """An arm's measured ratio as the range of its passes (one value when the file recorded no passes)."""
    lo_hi = la.get(f"range_{key}")
    return (float(lo_hi[0]), float(lo_hi[1])) if isinstance(lo_hi, list) and len(lo_hi) == 2 else (la[key], la[key])


def _latency_cell(la: dict[str, Any], key: str) -> str:
    if la.get(key) is None:
        return "-"
    lo, hi = _span(la, key)
    return f"{la[key]:.2f}x" + (f" ({lo:.2f}-{hi:.2f})" if lo != hi else "")


def _latency_note(c: Comparison, lat: dict[str, Any] | None, p: Protocol) -> str:
    """Learned against the strongest hand-set arm in measured time: slower or faster only when the two arms' ranges
    over the measurement's passes do not overlap (the passes' spread is the measurement's own noise)."""
    assert c.strongest is not None
    mine, theirs = _timed(lat, c.learned.arm, p), _timed(lat, c.strongest.arm, p)
    if not mine or not theirs:
        return " Measured latency: not measured yet."
    parts = []
    for key, label in BATCHES:
        if key in mine and key in theirs:
            (m_lo, m_hi), (t_lo, t_hi) = _span(mine, key), _span(theirs, key)
            reading = ("**slower**" if m_lo > t_hi else "**faster**" if m_hi < t_lo
                       else "not told apart: the passes overlap")
            parts.append(f"{label} {mine[key]:.2f}x vs {theirs[key]:.2f}x the uniform arm ({reading})")
    return (" Measured CPU inference time: " + "; ".join(parts) + "." if parts else "") + _at_equal_time(c, lat, p)


def _at_equal_time(c: Comparison, lat: dict[str, Any] | None, p: Protocol) -> str:
    """Learned against the strongest hand-set arm *at equal or lower measured time*, per batch size: among the
    hand-set arms not measured slower than the learned arm (their fastest pass no slower than its slowest), the most
    accurate one, with its Welch interval. Said only when every hand-set arm was measured at that batch size (one
    not measured could be the strongest)."""
    mine = _timed(lat, c.learned.arm, p)
    theirs = [(h, _timed(lat, h.arm, p)) for h in c.hand]
    parts = []
    for key, label in BATCHES:
        if key not in mine or any(key not in la for _, la in theirs):
            continue
        slowest = _span(mine, key)[1]
        as_fast = [h for h, la in theirs if _span(la, key)[0] <= slowest]
        if not as_fast:
            parts.append(f"{label}: every hand-set arm is slower, so none is at equal time")
            continue
        best = max(as_fast, key=lambda h: h.acc.mean)  # type: ignore[union-attr]  # every one has 2+ seeds
        if best is c.strongest:
            parts.append(f"{label}: the same arm and difference (it is not measured slower)")
            continue
        d = welch(c.learned.accs, best.accs)
        parts.append(f"{label}: vs {_what(best.arm, p)} (the strongest not measured slower): {points(d)}: "
                     f"{_reading(d)}")
    if not parts:
        return ""
    return " At equal or lower measured time, " + "; ".join(parts) + "."


def _wall(s: SweepResult) -> dict[str, float]:
    return wall_seconds(s.path)


def fair_answer(s: SweepResult) -> list[str]:
    """The verdict lines of one equal-MACs sweep for "When does learning groups pay?", headline first."""
    p, lat = s.protocol, read_latency(s.path)
    lines, controls = [], []
    for c in comparisons(s):
        if c.strongest is None or c.diff is None:
            continue
        ratio = c.learned.mean_of("macs") / c.strongest.mean_of("macs")
        line = (f"- **{s.path.name}, {_what(c.learned.arm, p)}** vs the strongest hand-set arm, "
                f"{_what(c.strongest.arm, p)}: {points(c.diff)} at {ratio:.2f}x its MACs: {_reading(c.diff)}."
                + _latency_note(c, lat, p))
        (controls if c.learned.arm.tag else lines).append(line)
    depth = _depth_lines(s)
    wall = _wall_line(s)
    out = []
    done = sum(len(a.rows) for a in s.arms)
    planned = done + sum(len(a.missing) for a in s.arms)
    if done < planned:
        waiting = [c.learned.arm for c in comparisons(s) if c.diff is None]
        out += [f"**{s.path.name} ({p.label})**: {done} of {planned} runs finished so far; the verdicts below are "
                f"read from the seeds finished" + (f"; no verdict yet for {len(waiting)} learned arm(s), whose arm or "
                f"hand-set arms lack the 2 seeds a verdict needs" if waiting else "") + ". Every finished run is in "
                "the table below.", ""]
    headline = _headline(s)
    if headline:
        out += [headline, ""]
    if lines:
        out += [f"**At equal or lower MACs ({s.path.name}, {p.label})**", "", *lines, ""]
    if controls:
        out += ["**The mixing control** (a dense 1x1 convolution after every group convolution: every arm equally "
                "connected, so what differs is how the groups are allocated across layers)", "", *controls, ""]
    if depth:
        out += ["**The depth control** (one width in every block: do lower layers still learn fewer groups?)", "",
                *depth, ""]
    if wall:
        out += [wall, ""]
    return out


def _headline(s: SweepResult) -> str:
    """The first learned arm of the protocol's own network against the strongest hand-set arm, in plain words."""
    main = next((c for c in comparisons(s) if c.learned.arm.kind == "g" and c.learned.arm.tag is None
                 and c.diff is not None and c.strongest is not None), None)
    if main is None:
        return ""
    assert main.diff is not None and main.strongest is not None
    v = verdict(main.diff, scale=100, unit=" points")
    p = s.protocol
    against = _what(main.strongest.arm, p)
    text = {"agrees": f"learning the groups beats the strongest hand-set groups ({against})",
            "disagrees": f"learning the groups LOSES to the strongest hand-set groups ({against})",
            }.get(v.word, f"learning the groups and the strongest hand-set groups ({against}) are not told apart at "
                          f"this n")
    return (f"**Headline ({s.path.name}, b = {main.learned.arm.value:g}, equal or lower MACs): {text}**: "
            f"{points(main.diff)}; {v.reason}.")


def _depth_lines(s: SweepResult) -> list[str]:
    """The depth control's arms (learned arms without hand-set arms: one width in every block) first; then, for
    contrast, the other learned arms, whose networks widen with depth."""
    control, contrast = [], []
    for a in s.arms:
        if a.arm.kind != "g":
            continue
        rhos = [r.depth_rho for r in a.rows if r.depth_rho is not None]
        if len(rhos) < 2:
            continue
        hand = _hand(s, a)
        (contrast if hand else control).append(
            f"- {'For contrast (widths grow with depth): ' if hand else ''}**{s.path.name}, {_what(a.arm, s.protocol)}**: "
            f"more groups higher up? Spearman(depth, log groups) {correlation_reading(rhos)}.")
    return control + contrast if control else []


def _wall_line(s: SweepResult) -> str:
    walls = _wall(s)
    p = s.protocol
    base = next((a for a in s.arms if a.arm.kind == "plain" and not a.arm.model and not a.arm.rule and a.arm.value > 1), None)
    learned = next((a for a in s.arms if a.arm.kind == "g" and a.arm.tag is None and a.arm.value == (base.arm.value if base else None)), None)
    if base is None or learned is None:
        return ""
    b, g = walls.get(arm_key(base.arm, p)), walls.get(arm_key(learned.arm, p))
    if not b or not g:
        return ""
    return (f"**Wall time** ({s.path.name}; the sweep's own, per run, median over finished seeds, start-up included): "
            f"search, then train ({_what(learned.arm, p)}) {g / 60:.1f} min against {b / 60:.1f} min for "
            f"{_what(base.arm, p)}: **{g / b:.2f}x** (the product aims at 1.10x or less). These are the costs of the "
            f"code the runs ran at; `benchmarks/fair_wall.py` replays a run at another commit (docs/performance.md).")


def fair_section(s: SweepResult, figures: Path | None = None) -> list[str]:
    """Every arm of an equal-MACs sweep: accuracy, MACs, measured latency and wall time; the figures."""
    p, walls = s.protocol, _wall(s)
    lat = read_latency(s.path)
    out = ["### Every arm", "",
           "Accuracy over seeds: mean and 95 % interval (t) of the mean. MACs for one 32x32 image, every layer. Latency: "
           "deployed network, CPU inference, median of per-round ratios against the uniform arm of its network, median over "
           "the measurement's passes (in brackets: its lowest and highest pass)"
           + (f" ({lat.get('machine', '?')}; `{lat.get('command', '?')}` at `{str(lat.get('commit') or '?')[:7]}`, "
              f"{lat.get('measured', '?')})" if lat else " (not measured yet)") + ". Wall: "
           "the sweep's own wall time per run (median).", "",
           "| arm | what | seeds | top-1 % | 95 % CI | MACs | latency b1 | latency b64 | wall min |",
           "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for a in s.arms:
        key = arm_key(a.arm, p)
        if not a.rows:
            out.append(f"| `{key}` | {_what(a.arm, p)} | 0 | - | - | - | - | - | - |")
            continue
        z = summarize([100 * x for x in a.accs])
        ci = "-" if z.ci is None else f"[{z.ci[0]:.2f}, {z.ci[1]:.2f}]"
        la = (lat or {}).get("arms", {}).get(key, {})
        wall = walls.get(key)
        out.append(f"| `{key}` | {_what(a.arm, p)} | {len(a.rows)} | {z.mean:.2f} | {ci} | {a.mean_of('macs'):,.0f} | "
                   f"{_latency_cell(la, 'b1')} | {_latency_cell(la, 'b64')} | {'-' if wall is None else f'{wall / 60:.1f}'} |")
    out.append("")
    if figures is not None:
        out += _figures(s, figures, lat)
    return out


def _figures(s: SweepResult, figures: Path, lat: dict[str, Any] | None) -> list[str]:
    from .report import pyplot

    plt = pyplot()
    p = s.protocol
    arms = [a for a in s.arms if a.rows]
    if not arms:
        return []
    figures.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(arms) + 1.2))
    for i, a in enumerate(arms):
        accs = [100 * x for x in a.accs]
        ax.plot(accs, [i] * len(accs), "o", color="tab:blue" if a.arm.kind == "plain" else "tab:red", alpha=0.5, ms=4)
        z = summarize(accs)
        if z.ci is not None:
            ax.errorbar([z.mean], [i], xerr=[[z.mean - z.ci[0]], [z.ci[1] - z.mean]], fmt="|k", capsize=3)
    ax.set_yticks(range(len(arms)), [arm_key(a.arm, p) for a in arms], fontsize=8)
    ax.invert_yaxis()  # the table's order, top down
    ax.set_xlabel("top-1 accuracy % (dots: seeds; bars: 95 % interval of the mean)")
    ax.set_title(f"{s.path.name}: every arm (red: learned)")
    ax.grid(axis="x", alpha=0.3)
    name = f"arms_{s.path.name}.png"
    fig.savefig(figures / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    out = [f"![Accuracy of every arm, {s.path.name}]({figures.name}/{name})", ""]
    if lat:
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        against = list(dict.fromkeys(la.get("against", "?") for la in lat.get("arms", {}).values()))
        colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(against)}
        for a in arms:
            la = lat.get("arms", {}).get(arm_key(a.arm, p), {})
            if "b64" in la:
                z = summarize([100 * x for x in a.accs])
                lo, hi = _span(la, "b64")
                ax.errorbar([la["b64"]], [z.mean], yerr=None if z.ci is None else [[z.mean - z.ci[0]], [z.ci[1] - z.mean]],
                            xerr=[[la["b64"] - lo], [hi - la["b64"]]], fmt="o" if a.arm.kind == "plain" else "s",
                            capsize=3, color=colours.get(la.get("against", "?")))
                ax.annotate(arm_key(a.arm, p), (la["b64"], z.mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
        for name, colour in colours.items():
            ax.plot([], [], "o", color=colour, label=f"x {name}")
        ax.legend(fontsize=7, title="time against", title_fontsize=7)
        ax.set_xscale("log")
        ax.set_xticks([0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 2.5], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xticklabels(["0.8x", "0.9x", "1x", "1.2x", "1.5x", "2x", "2.5x"])
        ax.set_xlabel("CPU inference time, batch 64, x the uniform arm of its network (log; bars: passes' range)")
        ax.set_ylabel("top-1 accuracy % (95 % interval; squares: learned)")
        ax.grid(alpha=0.3)
        name = f"latency_{s.path.name}.png"
        fig.savefig(figures / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        out += [f"![Accuracy against measured latency, {s.path.name}]({figures.name}/{name})", ""]
    return out
