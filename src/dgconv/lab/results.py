r"""Render the results document of one or more sweeps from their run directories (``dgconv results``).

The output is a pure function of the files in the sweep directories (``sweep.json`` and each run's files, read
through :mod:`dgconv.train.rundir`) and of the model definitions, so ``docs/results.md`` can be regenerated and checked
against the runs it came from. A run that did not finish every epoch is *missing*: it is listed, never counted.

Statistics (:mod:`dgconv.lab.stats`): each arm's top-1 accuracy over its seeds as mean, standard deviation and 95 %
t interval; each claim's difference with its 95 % Welch interval and the seeds on each side. Verdicts are read
from the intervals, never from point estimates, and only with at least 2 seeds on each side ("not enough seeds"
otherwise):

1. *G-ResNeXt (b = 32) is at least as accurate as ResNeXt with fewer GConv MACs* (per budget cost): agrees when
   the interval of (G-ResNeXt - ResNeXt) lies above 0 and the GConv MACs are below the baseline's; disagrees when
   it lies below 0, or when there is no GConv saving; otherwise not resolved at this n.
2. *Comparable accuracy at about 0.27x GConv MACs (b = 96)*: comparable means not worse by more than 1 point
   (the interval lies above -1 point); agrees when comparable at no more than 0.5x the GConv MACs, "partly" when
   comparable at a smaller saving; disagrees when the interval lies below -1 point.
3. *Lower layers learn fewer groups*: the Spearman correlation between layer depth and learned groups, over all
   G-ResNeXt runs (mean over runs, 95 % t interval clipped to [-1, 1]); agrees when the interval lies above 0,
   disagrees when below 0.
4. *ResNeXt\* from the learned groups performs comparably to G-ResNeXt and above the ResNeXt baseline* (per budget
   and cost): two interval tests (within 1 point of G-ResNeXt; at least the baseline); agrees when both agree,
   "partly" when one does, disagrees when either disagrees and neither agrees.

When one side of a comparison has a single run, its interval uses the other side's seed spread (assuming equal
variances; the document says so); with a single run on both sides there is no interval and no verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..train.progress import plural
from .arms import Arm, Protocol
from .protocols import PROTOCOLS
from .answer import answer
from .fair import fair_section
from .sweepdata import ArmResult, SweepResult, load_sweep
from .stats import NOT_ENOUGH, Difference, Summary, Verdict, points, side_of_zero, verdict, welch

__all__ = ["render_results"]


# ------------------------------------------------------------------------------------------------ formatting
def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.2f}"


def _ci(s: Summary | None) -> str:
    if s is None or s.ci is None:
        return "-"
    return f"[{_pct(s.ci[0])}, {_pct(s.ci[1])}]"


def _sd(s: Summary | None) -> str:
    return "-" if s is None or s.sd is None else f"{100 * s.sd:.2f}"




_NAMES = {"resnext": ("ResNeXt", "G-ResNeXt", "ResNeXt*"), "fastnet": ("FastNet", "G-FastNet", "FastNet*")}


def _names(p: Protocol) -> tuple[str, str, str]:
    """Display names of the plain network, the G-network and the retrained learned architecture."""
    return _NAMES.get(p.family, (p.plain, p.model, f"{p.plain}*"))


def _setting(arm: Arm, p: Protocol) -> tuple[str, str]:
    plain, g, star = _names(p)
    if arm.kind == "plain" and arm.rule:
        return plain, f"rule '{arm.rule}' (hand-set per layer) at <= the MACs of {int(arm.value)} groups"
    if arm.kind == "plain":
        net = arm.model or plain
        return net, ("dense" if arm.value == 1 else f"{int(arm.value)} groups")
    what = f"b = {arm.value:g}" if arm.kind == "g" else f"learned by b = {arm.value:g}"
    return (g if arm.kind == "g" else star), what


def _ratio(a: ArmResult, base: ArmResult) -> str:
    if not a.rows or not base.rows:
        return "n/a"
    return f"{a.mean_of('gconv_macs') / base.mean_of('gconv_macs'):.2f}x"


def _commits(rows: list) -> str:
    """The commits the runs ran at (short, as a reader would check them out)."""
    def short(sha: str) -> str:
        return sha[:7] + ("+dirty" if sha.endswith("+dirty") else "")

    shas = sorted({short(str(r.run.environment.get("commit"))) for r in rows if r.run.environment.get("commit")})
    unrecorded = sum(1 for r in rows if not r.run.environment.get("commit"))
    named = [f"`{c}`" for c in shas] + ([f"not recorded by {plural(unrecorded, 'run')}"] if unrecorded else [])
    return f"{'runs at commit' if len(shas) == 1 else 'runs at commits'} {', '.join(named)}"


# ------------------------------------------------------------------------------------------------ sections
def _header(s: SweepResult) -> list[str]:
    p, meta = s.protocol, s.meta
    rows = s.rows()
    any_run = rows[0].run
    env, used = any_run.environment, any_run.config
    warm = f" after {plural(used['warmup_epochs'], 'warm-up epoch')}" if used.get("warmup_epochs") else ""
    base = PROTOCOLS.get(p.name)
    flags = "".join(
        f" {flag} {getattr(p, key)}" for key, flag in (("epochs", "--epochs"), ("parallel", "--parallel"),
                                                       ("limit_train", "--limit-train"), ("limit_test", "--limit-test"),
                                                       ("batch_size", "--batch-size"), ("device", "--device"),
                                                       ("max_seeds", "--max-seeds"), ("model", "--model"),
                                                       ("plain", "--plain-model"))
        if getattr(p, key) is not None and (base is None or getattr(p, key) != getattr(base, key))
    )
    resumed = f", resumed {', '.join(meta['resumed'])}" if meta.get("resumed") else ""
    modes = [f"`{' '.join(p.g_extra)}` for the runs that learn groups"] if p.g_extra else []
    modes += [f"`{' '.join(p.extra)}` for all runs"] if p.extra else []
    test_images = any_run.extra.get("test_images")
    train_images = any_run.extra.get("train_images_per_epoch")
    out = [
        _heading(s),
        "",
        f"- Hardware: {env.get('device_name', '?')} (`{env.get('device', '?')}`), torch {env.get('torch', '?')}, "
        f"{env.get('cpu_count', '?')} CPU cores; sweep started {meta.get('started', '?')}{resumed}; "
        f"{_commits(rows)}.",
        f"- Schedule: {plural(used['epochs'], 'epoch')}, batch {used['batch_size']}, SGD momentum {used.get('momentum', 0.9):g}"
        f"{' (Nesterov)' if used.get('nesterov') else ''}, lr {used['lr']} {used.get('schedule', 'cosine')}{warm}, "
        f"weight decay {p.weight_decay} (not on gates), alpha -0.02, budget projection at epoch ends; "
        f"{'bf16 autocast, ' if p.amp else ''}{'channels_last, ' if p.channels_last else ''}{plural(p.parallel, 'run at a time', 'runs at a time')}.",
        (f"- Networks: {', '.join(f'`{m}`' for m in dict.fromkeys((a.arm.model or (p.plain if a.arm.kind == 'plain' else p.model)) for a in s.arms))} "
         f"(each arm's in the table below). "
         if p.equal_macs else
         f"- Models: `{p.model}` ({_names(p)[1]}, learned groups) and `{p.plain}` ({_names(p)[0]}, the same number of "
         f"groups in every group convolution: {', '.join(str(int(a.arm.value)) for a in s.arms if a.arm.kind == 'plain')}). ")
        +
        f"Accuracy is top-1 on {f'{test_images:,}' if isinstance(test_images, int) else 'the'} test images "
        f"after the last epoch; {f'{train_images:,}' if isinstance(train_images, int) else 'all'} training images per epoch.",
        f"- Reproduce: `dgconv sweep --protocol {p.name}{flags} --data-dir DATA --out DIR`, then "
        f"`dgconv results DIR --out docs/results.md`.",
        *([f"- Training options beyond the schedule: {'; '.join(modes)}."] if modes else []),
        f"- Data: {_data_line(meta)}",
        "",
    ]
    return out


def _data_line(meta: dict[str, Any]) -> str:
    data = meta.get("data")
    parts = []
    if isinstance(data, dict):
        if data.get("official"):
            parts.append("the official CIFAR-10 python files (MD5 of all seven files match the published ones).")
        else:
            parts.append("not the official CIFAR-10 files (their MD5 differ from the published ones)"
                         + (f"; the folder's readme says: \"{data['readme']}\"" if data.get("readme") else "") + ".")
    else:
        parts.append("provenance not recorded by this sweep (it predates the checksum record).")
    note = (data or {}).get("note") if isinstance(data, dict) else None
    note = note or meta.get("data_note")
    if note:
        parts.append(f"Note recorded with the sweep: {note}")
    return " ".join(parts)


def _table3(s: SweepResult) -> list[str]:
    p, base = s.protocol, s.baseline
    out = ["### Table 3 analogue: complexity vs accuracy", "",
           "Accuracy over seeds: mean, standard deviation and 95 % interval (t) of the mean. MACs for one 32x32 image; "
           "GConv MACs count the group-convolution layers only.", "",
           "| network | setting | budget cost | seeds | top-1 % mean | sd | 95 % CI | GConv MACs | x baseline | MACs | params (deployed) | zeta/o |",
           "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for a in s.arms:
        if a.arm.kind == "star" or not a.rows:
            continue
        net, setting = _setting(a.arm, p)
        cost = "-" if a.arm.kind == "plain" else a.arm.cost
        z = [r.zeta_over_o for r in a.rows if r.zeta_over_o is not None]
        out.append(
            f"| {net} | {setting} | {cost} | {len(a.rows)} | {_pct(a.acc.mean)} | {_sd(a.acc)} | {_ci(a.acc)} | "  # type: ignore[union-attr]
            f"{round(a.mean_of('gconv_macs')):,} | {_ratio(a, base)} | {round(a.mean_of('macs')):,} | "
            f"{round(a.mean_of('params')):,} | {f'{statistics.fmean(z):.3f}' if z else '-'} |"
        )
    return out + [""]


def _table5(s: SweepResult) -> list[str]:
    out: list[str] = []
    for a in s.arms:
        if a.arm.kind != "g" or len(a.arm.seeds) < 2 or not a.rows:
            continue
        base = s.baseline
        out += [f"### Table 5 analogue: b = {a.arm.value:g} ({a.arm.cost}) with {len(a.rows)} seeds", "",
                "| seed | top-1 % | GConv MACs x baseline | learned groups, input to output |", "|---:|---:|---:|---|"]
        for r in a.rows:
            ratio = f"{r.gconv_macs / base.mean_of('gconv_macs'):.2f}x" if base.rows else "n/a"
            out.append(f"| {r.name.seed} | {_pct(r.acc)} | {ratio} | {' '.join(str(g) for g in r.run.groups.values())} |")
        out += ["", f"Mean {_pct(a.acc.mean)} %, standard deviation {_sd(a.acc)} points, 95 % interval {_ci(a.acc)}."]  # type: ignore[union-attr]
        if len(a.rows) > 1:
            layers = list(a.rows[0].run.groups)
            same = sum(len({r.run.groups.get(n) for r in a.rows}) == 1 for n in layers)
            logs = [abs(math.log2(x.run.groups[n] / y.run.groups[n])) for i, x in enumerate(a.rows)
                    for y in a.rows[i + 1:] for n in layers]
            out.append(f"The seeds learn the same group number in {same} of {len(layers)} layers; two seeds differ by "
                       f"a factor of {2 ** statistics.fmean(logs):.2f} per layer on average (geometric mean).")
        out.append("")
    return out


def _table6(s: SweepResult) -> list[str]:
    p, base = s.protocol, s.baseline
    out = [f"### Table 6 analogue: {_names(p)[2]} with learned groups, trained from scratch", "",
           "| network | setting | budget cost | seeds | top-1 % mean | 95 % CI | GConv MACs x baseline |", "|---|---|---|---:|---:|---|---:|"]
    if base.rows:
        net, setting = _setting(base.arm, p)
        out.append(f"| {net} | {setting} | - | {len(base.rows)} | {_pct(base.acc.mean)} | {_ci(base.acc)} | 1.00x |")  # type: ignore[union-attr]
    for star in (a for a in s.arms if a.arm.kind == "star"):
        for a in (s.arm("g", star.arm.value, star.arm.cost), star):
            if a is not None and a.rows:
                net, setting = _setting(a.arm, p)
                out.append(f"| {net} | {setting} | {a.arm.cost} | {len(a.rows)} | {_pct(a.acc.mean)} | {_ci(a.acc)} | "  # type: ignore[union-attr]
                           f"{_ratio(a, base)} |")
    return out + [""]


def _claim1(s: SweepResult, cost: str, n: int) -> str | None:
    b0 = s.protocol.budgets[0]
    g, base = s.arm("g", b0, cost), s.baseline
    if g is None or not g.rows or not base.rows:
        return None
    d = welch(g.accs, base.accs)
    ratio = g.mean_of("gconv_macs") / base.mean_of("gconv_macs")
    v = verdict(d, scale=100, unit=" points")
    word, reason = ("disagrees", "no GConv saving") if ratio >= 1 and v.word != NOT_ENOUGH else (v.word, v.reason)
    return (f"- **Claim {n}** [{cost}] G-ResNeXt at b = {b0:g} vs ResNeXt: {points(d)} at {ratio:.2f}x the GConv MACs "
            f"(paper, ImageNet: +0.5 points at 0.83x). Verdict: **{word}** ({reason}).")


def _claim2(s: SweepResult, cost: str, n: int) -> str | None:
    g, base = s.arm("g", 96, cost), s.baseline
    if g is None or not g.rows or not base.rows:
        return None
    d = welch(g.accs, base.accs)
    ratio = g.mean_of("gconv_macs") / base.mean_of("gconv_macs")
    v = verdict(d, margin=0.01, scale=100, unit=" points")
    word = v.word
    if v.word == "agrees" and ratio > 0.5:
        word = "partly (comparable accuracy, but a much smaller GConv saving than the paper's)"
    return (f"- **Claim {n}** [{cost}] G-ResNeXt at b = 96 vs ResNeXt: {points(d)} at {ratio:.2f}x the GConv MACs (paper: +0.1 "
            f"points at 0.27x; comparable = not worse by more than 1 point). Verdict: **{word}** ({v.reason}).")


def _claim3(s: SweepResult, n: int) -> str | None:
    rhos = [r.depth_rho for a in s.arms if a.arm.kind == "g" for r in a.rows if r.depth_rho is not None]
    if not rhos:
        return None
    z, ci, side = side_of_zero(rhos)
    mean = z.mean
    word, reason = {
        "single": (NOT_ENOUGH, "a single run"),
        "constant": ("not resolved at this n", f"all {z.n} runs gave the same value, so no interval"),
        "above": ("agrees", "the 95 % interval lies above 0"),
        "below": ("disagrees", "the 95 % interval lies below 0"),
        "contains": ("not resolved at this n", "the 95 % interval contains 0"),
    }[side]
    ci_text = "" if ci is None else f", 95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return (f"- **Claim {n}** Lower layers learn fewer groups: Spearman correlation between depth and learned groups "
            f"{mean:+.2f} on average over {z.n} G-ResNeXt runs (range {min(rhos):+.2f} to {max(rhos):+.2f}"
            f"{ci_text}). Verdict: **{word}** ({reason}).")


def _claim4(s: SweepResult, star: ArmResult, n: int) -> str | None:
    g, base = s.arm("g", star.arm.value, star.arm.cost), s.baseline
    if g is None or not g.rows or not star.rows:
        return None
    d_g = welch(star.accs, g.accs)
    tests: list[tuple[str, Verdict, Difference]] = [
        ("vs G-ResNeXt, within 1 point", verdict(d_g, margin=0.01, scale=100, unit=" points"), d_g)]
    if base.rows:
        d = welch(star.accs, base.accs)
        tests.append(("vs ResNeXt, at least as accurate", verdict(d, scale=100, unit=" points"), d))
    words = [v.word for _, v, _ in tests]
    if all(w == "agrees" for w in words):
        word = "agrees"
    elif "agrees" in words:
        word = "partly (" + "; ".join(f"{label}: {v.word}" for label, v, _ in tests) + ")"
    elif "disagrees" in words:
        word = "disagrees"
    elif NOT_ENOUGH in words:
        word = NOT_ENOUGH
    else:
        word = "not resolved at this n"
    detail = "; ".join(f"{label}: {points(d)}" for label, _, d in tests)
    return (f"- **Claim {n}** [{star.arm.cost}] ResNeXt* learned by b = {star.arm.value:g}: {_pct(star.acc.mean)} % ({detail}; "  # type: ignore[union-attr]
            f"paper, ImageNet: comparable to G-ResNeXt, above the baseline). Verdict: **{word}**.")


def _claims(s: SweepResult) -> list[str]:
    out = ["### The paper's claims, measured here", ""]
    lines: list[str | None] = []
    costs = list(dict.fromkeys(a.arm.cost for a in s.arms if a.arm.kind == "g"))
    n = 1
    for claim in (_claim1, _claim2):
        for cost in costs:
            line = claim(s, cost, n)
            if line:
                lines.append(line)
        n += 1
    lines.append(_claim3(s, n))
    n += 1
    for star in (a for a in s.arms if a.arm.kind == "star"):
        lines.append(_claim4(s, star, n))
    judged = [ln for ln in lines if ln]
    out += judged or ["None of the claims can be judged yet: each needs a finished run of G-ResNeXt and of the network "
                      "it is compared with (see the missing runs below)."]
    return out + [""]


def _fast_claims(s: SweepResult) -> list[str]:
    """At equal cost, do learned groups beat fixed uniform groups? (protocols with explicit fixed-G arms)"""
    plain_name, g_name, star_name = _names(s.protocol)
    out = ["### At equal cost: learned groups against fixed uniform groups", ""]
    dense = s.arm("plain", 1)
    if dense is not None and dense.rows:
        out.append(f"- Dense {plain_name} (groups = 1): {_pct(dense.acc.mean)} % over {len(dense.rows)} seeds, 95 % "  # type: ignore[union-attr]
                   f"interval {_ci(dense.acc)}.")
    for b in s.protocol.budgets:
        fixed = s.arm("plain", b)
        if fixed is None or not fixed.rows:
            continue
        fixed_macs = fixed.mean_of("macs")
        # the hand-set arms at this cost: contiguous groups, plus the channel shuffle and the non-uniform rule where
        # the protocol has them; learned arms are compared with the strongest of them (the highest mean), too
        hand = [(f"fixed G = {b:g}", fixed)]
        for a in s.arms:
            if a.arm.kind == "plain" and a.arm.value == b and (a.arm.model or a.arm.rule) and a.rows:
                net, setting = _setting(a.arm, s.protocol)
                hand.append((f"{net}, {setting}", a))
        strongest_label, strongest = max(hand, key=lambda h: h[1].acc.mean)  # type: ignore[union-attr]
        for label, arm in hand[1:]:
            d = welch(arm.accs, fixed.accs)
            out.append(f"- Hand-set {label} vs fixed G = {b:g}: {points(d)} at {arm.mean_of('macs') / fixed_macs:.2f}x "
                       f"its MACs ({len(arm.rows)} vs {len(fixed.rows)} seeds).")
        contenders = [(f"{g_name} learned under a {cost} budget b = {b:g}", s.arm("g", b, cost)) for cost in ("macs", "connections")]
        contenders.append((f"{star_name}: the groups learned under the MAC budget, retrained as fixed groups", s.arm("star", b, "macs")))
        for label, arm in contenders:
            if arm is None or not arm.rows:
                continue
            for ref_label, ref in ([(f"fixed G = {b:g}", fixed)] + ([(strongest_label, strongest)] if strongest is not fixed else [])):
                d = welch(arm.accs, ref.accs)
                v = verdict(d, scale=100, unit=" points")
                what = "the strongest hand-set arm, " if ref is strongest and len(hand) > 1 else ""
                out.append(f"- {label} vs {what}{ref_label}: {points(d)} at {arm.mean_of('macs') / ref.mean_of('macs'):.2f}x "
                           f"its MACs. Learned at least as accurate: **{v.word}** ({v.reason}).")
    return out + [""]


def _missing(s: SweepResult) -> list[str]:
    missing = [m for a in s.arms for m in a.missing]
    return [f"Missing runs (planned, not finished; not in any table or statistic): {', '.join(missing)}.", ""] if missing else []


def _figure(s: SweepResult, figures: Path | None) -> list[str]:
    """Learned groups by depth, one line per budget and cost (mean of log2 groups over seeds, range shaded)."""
    arms = [a for a in s.arms if a.arm.kind == "g" and a.rows]
    if figures is None or not arms:
        return []
    from .report import pyplot

    plt = pyplot()
    layers = list(arms[0].rows[0].run.groups)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.5 * len(layers) + 3) + 2.5, 4.2))  # + the legend
    styles = ["o-", "s--", "^-.", "D:", "v-", "P--", "X-.", "*:"]
    for i, a in enumerate(arms):  # markers, dashes and a small offset keep coinciding lines apart
        logs = np.array([[math.log2(r.run.groups[n]) for n in layers] for r in a.rows])
        x = np.arange(len(layers)) + 0.08 * (i - (len(arms) - 1) / 2)
        line = ax.plot(x, 2 ** logs.mean(0), styles[i % len(styles)], lw=1.5, ms=5, alpha=0.9, label=f"b = {a.arm.value:g}, {a.arm.cost} ({plural(len(a.rows), 'seed')})")[0]
        if len(a.rows) > 1:
            ax.fill_between(x, 2 ** logs.min(0), 2 ** logs.max(0), color=line.get_color(), alpha=0.12)
    for a in s.arms:
        if a.arm.kind == "plain" and a.arm.value > 1:
            ax.axhline(a.arm.value, color="gray", ls="--", lw=1)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([n.replace(".conv", ".c") for n in layers], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("learned groups (geometric mean; range shaded)")
    ax.set_title(f"Protocol {s.protocol.name} ({s.path.name}/): learned groups by depth (dashed: fixed-groups arms)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # outside the data
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    name = f"groups_{s.path.name}.png"  # by sweep directory: two sweeps of one protocol get two figures
    fig.savefig(figures / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [f"![Learned groups by depth, protocol {s.protocol.name}]({figures.name}/{name})", ""]


def _heading(s: SweepResult) -> str:
    where = f" (runs in `{s.path.name}/`)" if s.path.name != s.protocol.name else ""  # two sweeps of one protocol
    return f"## Protocol `{s.protocol.name}`{where}: {s.protocol.label}"


def _section(s: SweepResult, figures: Path | None = None) -> list[str]:
    if not s.rows():
        return [_heading(s), "", "No run has finished yet.", ""] + _missing(s)
    if s.protocol.equal_macs:
        return _header(s) + fair_section(s, figures) + _missing(s)
    claims = _claims(s) if s.protocol.family == "resnext" else _fast_claims(s)
    return _header(s) + _table3(s) + _table5(s) + _table6(s) + claims + _figure(s, figures) + _missing(s)


def render_results(sweeps: Iterable[str | Path], figures: str | Path | None = None) -> str:
    """The markdown results document for the given sweep directories.

    ``figures``: also draw each sweep's learned-groups-by-depth figure into this folder and link it as
    ``<folder name>/groups_<protocol>.png`` (so the document belongs in the folder's parent: docs/results.md with
    docs/figures)."""
    lines = [
        "# Results: the paper's CIFAR-size experiments",
        "",
        "Generated by `dgconv results` from the run directories below; every number is read from their "
        "`metrics.jsonl`, `groups.json` and `config.json` (MACs, GConv MACs and parameters are counted by "
        "`dgconv.profile` for one 32x32 image; MACs are multiply-accumulates). A run counts only when it finished every "
        "epoch; verdicts are read from 95 % intervals (rules: `dgconv/lab/stats.py`).",
        "",
    ]
    loaded = [load_sweep(Path(s)) for s in sweeps]
    lines += answer(loaded)
    for s in loaded:
        lines += _section(s, Path(figures) if figures is not None else None)
    return "\n".join(lines).rstrip() + "\n"
