"""``dgconv report``: figures and a markdown summary from run directories (their files only).

Reads each run through :func:`dgconv.train.rundir.load_run` (its ``config.json``, ``metrics.jsonl`` and ``groups.json``;
never a checkpoint). Writes PNGs
(matplotlib, an optional extra: ``pip install 'dgconv[report]'``) and ``summary.md``:

* ``groups.png`` -- learned groups of every DGConv layer, input to output, against its channel count, with
  ResNeXt's constant cardinality for comparison (the paper's Fig. 2 and Fig. 5); several runs overlaid;
* ``dynamics.png`` -- per run: group number of every layer over training, and the gate values ``g~`` (Fig. 6);
* ``macs.png`` -- MACs of every DGConv layer at its learned groups (one input), per run, against the same layer
  in the ResNeXt counterpart: where a budget spends its compute;
* ``training.png`` -- ``zeta/o`` in the run's budget cost, the network's MACs, loss and test accuracy over training;
* ``summary.md`` -- per run: configuration, budget cost, accuracy, ``zeta/o``, MACs and a per-layer table
  (channels, groups, MACs as a dense masked convolution, deployed, and in the ResNeXt counterpart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._files import write_text
from ..train.progress import plural
from ..train.runs import Run, load_run

__all__ = ["layer_table", "plain_model", "write_report", "pyplot"]


def plain_model(run: Run, groups: Any = None) -> tuple[Any, tuple[int, ...]]:
    """The run's plain ResNeXt counterpart built with ``groups`` (an int, a per-layer spec or ``None`` for its
    default), and the input size the run trained at. Raises ``UnknownModelError`` for an unregistered model."""
    from ..models import create_model, model_info

    info = model_info(run.config["model"])
    size = tuple(run.input_size or info.input_size)
    return create_model(info.plain, num_classes=max(run.num_classes, 1), in_chans=size[0], groups=groups), size


def _cardinality(run: Run) -> int | None:
    """The constant group number of the run's ResNeXt counterpart (e.g. 32 for 32x4d)."""
    try:
        plain, _ = plain_model(run)
    except Exception:  # noqa: BLE001 - an unregistered model: no reference line
        return None
    names = getattr(plain, "group_conv_names", [])
    mods = dict(plain.named_modules())
    gs = {mods[n].groups for n in names}
    return gs.pop() if len(gs) == 1 else None


def layer_table(run: Run) -> list[dict[str, Any]]:
    """Per DGConv layer: channels, learned groups, MACs as a dense masked conv, deployed, and in the ResNeXt
    counterpart at its own groups (one input)."""
    from ..convert.profile import profile

    if not run.groups:
        return []
    prof = profile(*plain_model(run, run.groups))
    reference = {lp.name: lp.macs for lp in profile(*plain_model(run)).layers}
    rows = []
    for lp in prof.layers:
        if lp.name in run.groups:
            rows.append({"name": lp.name, "in": lp.in_channels, "out": lp.out_channels, "groups": lp.groups,
                         "macs_dense": lp.macs * lp.groups, "macs_deployed": lp.macs,
                         "macs_reference": reference.get(lp.name)})
    return rows


def pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("dgconv report draws with matplotlib: pip install 'dgconv[report]'") from None
    return plt


def _groups_figure(runs: list[Run], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * max(len(r.groups) for r in runs) + 3) + 3.5, 4.2))  # + the legend
    refs: dict[int, str] = {}
    for run in runs:
        g = [run.groups[n] for n in run.groups]
        ax.plot(range(len(g)), g, marker="o", lw=1.6, ms=5, label=run.label, zorder=3)
        card = _cardinality(run)
        if card and card not in refs:
            refs[card] = run.config["model"]
    for i, (card, model) in enumerate(sorted(refs.items())):
        ax.axhline(card, ls=(0, (4, 2 + i)), color="gray", lw=1.2, zorder=2,
                   label=f"ResNeXt counterpart of {model} (constant {card})")
    layouts = {tuple(tuple(r.channels.get(n, ["?"])) for n in r.groups) for r in runs}
    names = list(runs[0].groups)
    ax.set_xticks(range(len(names)))
    if len(layouts) == 1:  # same architecture: label each layer with its channels
        ax.set_xticklabels([str(runs[0].channels.get(n, ["?"])[0]) for n in names], fontsize=8)
        ax.set_xlabel("DGConv layers, input to output (label: channels)")
    else:
        ax.set_xlabel("DGConv layer index, input to output (runs differ in channels)")
    ax.set_ylabel("learned number of groups")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title("Learned groups per layer")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # outside the data
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def _macs_figure(runs: list[Run], tables: dict[Path, list[dict[str, Any]]], path: Path) -> None:
    plt = pyplot()
    n = max(len(tables[r.path]) for r in runs)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.5 * n + 3) + 3.5, 4.2))  # + the legend
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        rows = tables[run.path]
        ax.bar([j - 0.4 + width * (i + 0.5) for j in range(len(rows))], [r["macs_deployed"] for r in rows], width,
               label=f"{run.label} ({sum(r['macs_deployed'] for r in rows):,} in all)", zorder=3)
    ref = tables[runs[0].path]
    if all(r.get("macs_reference") for r in ref):
        ax.plot(range(len(ref)), [r["macs_reference"] for r in ref], "k_", ms=18, mew=2, zorder=4,
                label=f"ResNeXt counterpart ({sum(r['macs_reference'] for r in ref):,} in all)")
    ax.set_xticks(range(len(ref)))
    ax.set_xticklabels([r["name"].replace(".conv2", "") for r in ref], rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("MACs per input (deployed layer)")
    ax.set_title("MACs of each DGConv layer at its learned groups", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _integer_epochs(ax) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.ticker import MaxNLocator

    lo, hi = ax.dataLim.intervalx
    if hi - lo < 1:  # one epoch: a tick at it, not fractions of an epoch around it
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_xticks([round(lo)])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _dynamics_figure(runs: list[Run], path: Path) -> None:
    plt = pyplot()
    runs = [r for r in runs if r.metrics and r.metrics[0].get("groups")]
    if not runs:
        return
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.4 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        epochs = [m["epoch"] for m in run.metrics]
        mark = "o" if len(epochs) <= 5 else None  # a line of one point draws nothing without a marker
        names = list(run.metrics[-1]["groups"])
        cmap = plt.get_cmap("viridis")
        for j, n in enumerate(names):
            color = cmap(j / max(1, len(names) - 1))
            row[0].plot(epochs, [m["groups"][n] for m in run.metrics], color=color, lw=1.4, marker=mark, ms=4,
                        label=f"{n} ({run.channels.get(n, ['?'])[0]} ch)")
            gates = [m["gates"][n] for m in run.metrics]
            for k in range(len(gates[0])):
                row[1].plot(epochs, [g[k] for g in gates], color=color, lw=0.9, alpha=0.8, marker=mark, ms=3)
        row[0].set_yscale("log", base=2)
        row[0].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        row[0].set_xlabel("epoch")
        row[0].set_ylabel("groups")
        row[0].set_title(f"{run.label}: groups per layer", fontsize=9)
        row[0].grid(True, alpha=0.3)
        if len(names) <= 12:
            row[0].legend(fontsize=6, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        row[1].axhline(0, color="black", lw=0.8)
        row[1].set_xlabel("epoch")
        row[1].set_ylabel("gate value g~ (>= 0: connected)")
        row[1].set_title("gate values (colour: layer depth)", fontsize=9)
        row[1].grid(True, alpha=0.3)
        _integer_epochs(row[0])
        _integer_epochs(row[1])
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _training_figure(runs: list[Run], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for run in runs:
        ep = [m["epoch"] for m in run.metrics]
        if any(m.get("zeta_over_o") is not None for m in run.metrics):
            line = axes[0].plot(ep, [m.get("zeta_over_o") for m in run.metrics], marker=".", label=run.label)[0]
            if any(m.get("gates_closed_by_projection") for m in run.metrics):
                o = [m["o"] for m in run.metrics]
                before = [m.get("zeta_before_projection", m["zeta"]) / oo for m, oo in zip(run.metrics, o)]
                axes[0].plot(ep, before, ls=":", color=line.get_color(), alpha=0.7)
        if any(m.get("macs") is not None for m in run.metrics):
            axes[1].plot(ep, [m.get("macs") for m in run.metrics], marker=".", label=run.label)
        axes[2].plot(ep, [m["train_loss"] for m in run.metrics], marker=".", label=run.label)
        axes[3].plot(ep, [m["test_acc"] for m in run.metrics], marker=".", label=run.label)
    axes[0].axhline(1.0, ls="--", color="gray", lw=1)
    axes[0].set_title("zeta / o in the budget's cost (dotted: before projection)", fontsize=9)
    axes[1].set_title("network MACs per input at the learned groups", fontsize=9)
    axes[2].set_title("training loss (task)", fontsize=9)
    axes[3].set_title("test accuracy", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        _integer_epochs(ax)
    costs = sorted({str(r.config.get("cost", "connections")) for r in runs})
    axes[0].set_title(f"zeta / o in {', '.join(costs)} (dotted: before projection)", fontsize=9)
    handles, labels = axes[3].get_legend_handles_labels()  # one legend for the four panels, below them
    fig.tight_layout()
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(labels)))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _summary(runs: list[Run]) -> str:
    out = ["# dgconv report", ""]
    for run in runs:
        c, f = run.config, run.final
        out += [f"## {run.path.name}", ""]
        env = run.environment
        out.append(
            f"- model `{c['model']}` on `{c['dataset']}`, {len(run.metrics)} of {plural(c['epochs'], 'epoch')}, batch {c['batch_size']}, "
            f"lr {c['lr']}, budget b={c.get('budget')}, seed {c.get('seed')}"
        )
        out.append(f"- hardware: {env.get('device_name', '?')} ({env.get('device', '?')} x{env.get('world_size', 1)}), torch {env.get('torch', '?')}")
        if c.get("budget") is not None or c.get("target") is not None:
            what = f"budget b={c['budget']}" if c.get("budget") is not None else f"target {c['target']:,.6g}"
            out.append(f"- {what} in {c.get('cost', 'connections')}, objective {c.get('objective', 'paper')}")
        if f:
            ratio = f", zeta/o {f['zeta_over_o']:.3f}" if f.get("zeta_over_o") is not None else ""
            macs = f", {f['macs']:,.0f} MACs per input" if f.get("macs") is not None else ""
            out.append(f"- final test accuracy {f['test_acc']:.4f} (best {f['best_acc']:.4f}){ratio}{macs}")
        rows = layer_table(run)
        if rows:
            out += ["", "| layer | in | out | groups | MACs dense masked | MACs deployed | MACs in the ResNeXt counterpart |",
                    "|---|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                ref = f"{r['macs_reference']:,}" if r.get("macs_reference") is not None else "-"
                out.append(f"| {r['name']} | {r['in']} | {r['out']} | {r['groups']} | {r['macs_dense']:,} | {r['macs_deployed']:,} | {ref} |")
            td, tp = sum(r["macs_dense"] for r in rows), sum(r["macs_deployed"] for r in rows)
            tr = sum(r["macs_reference"] or 0 for r in rows)
            out.append(f"| total | | | | {td:,} | {tp:,} ({tp / td:.3f}x) | {tr:,} |")
        out.append("")
    return "\n".join(out)


def write_report(run_dirs: list[str | Path], out: str | Path) -> list[Path]:
    """Write the figures and ``summary.md`` for ``run_dirs`` into ``out``; return the files written. Everything is
    drawn in a temporary folder beside ``out`` and moved into it only when all of it succeeded, so a run the report
    cannot read (a malformed ``groups.json``, values no run writes) leaves no partial folder behind."""
    import shutil
    import tempfile

    from ..errors import ConfigError, RunDirError

    runs = [load_run(p) for p in run_dirs]
    if not runs:
        raise ConfigError("report needs at least one run directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"cannot write the report into {out}: a file of that name is in the way")
    tables = {r.path: _checked_table(r) for r in runs if r.groups}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        names = _draw(runs, tables, tmp)
        out.mkdir(exist_ok=True)
        for name in names:
            shutil.move(str(tmp / name), str(out / name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in names]


def _checked_table(run: Run) -> list[dict[str, Any]]:
    """The per-layer table of a run's learned groups, or a one-line error when ``groups.json`` cannot be its model's."""
    from ..errors import RunDirError

    try:
        return layer_table(run)
    except (ValueError, TypeError, KeyError) as e:
        raise RunDirError(f"{run.path / 'groups.json'} does not fit {run.config.get('model')}: {e}") from None


def _draw(runs: list[Run], tables: dict[Path, list[dict[str, Any]]], out: Path) -> list[str]:
    names = []
    with_groups = [r for r in runs if r.groups]
    if with_groups:
        _groups_figure(with_groups, out / "groups.png")
        _macs_figure(with_groups, tables, out / "macs.png")
        names += ["groups.png", "macs.png"]
        _dynamics_figure(with_groups, out / "dynamics.png")
        if (out / "dynamics.png").exists():
            names.append("dynamics.png")
    if any(r.metrics for r in runs):
        _training_figure([r for r in runs if r.metrics], out / "training.png")
        names.append("training.png")
    write_text(out / "summary.md", _summary(runs))
    return [*names, "summary.md"]
