"""The subcommands that look at a network: ``profile`` (parameters and MACs per layer), ``latency`` (a measured
latency table) and ``deploy`` (DGConv -> group convolutions, saved). Each one's arguments (``add_*``) and what it
does (``_cmd_*``); :mod:`dgconv.cli.commands` lists them with the others."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from ..train.config import Choices
from .console import positive_int

__all__ = ["add_profile", "add_latency", "add_deploy", "default_classes"]


def add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="parameters and MACs of a model, per layer (DGConv at its current groups)")
    p.add_argument("model", help="registered model name, a run directory (its model, classes, input size and learned "
                   "groups), or a deployed model file (`dgconv deploy --out FILE`)")
    p.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"), help="default: the run's, else the model's")
    p.add_argument("--num-classes", type=positive_int, help="default: the run's, else 1000 for ImageNet-sized models "
                   "and 10 for small ones")
    p.add_argument("--groups", type=positive_int, help="set every group / DGConv layer to this many groups")
    p.add_argument("--groups-from", help="groups.json (or run directory): per-layer groups")
    p.add_argument("--latency-table", help="also show the predicted latency from this table (dgconv latency)")
    p.add_argument("--no-layers", dest="layers", action="store_false", help="totals only")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_profile)


def _build(name: str, **kwargs: object):  # type: ignore[no-untyped-def]
    """``create_model`` with a bad argument (a group count the layer cannot take, ...) as a ConfigError."""
    from ..errors import ConfigError, DGConvError
    from ..models import create_model

    try:
        return create_model(name, **kwargs)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        if isinstance(e, DGConvError):
            raise
        raise ConfigError(f"cannot build {name}: {e}") from None


def _cmd_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..models import model_info
    from ..train.runs import is_run, load_run, read_groups

    deployed = _deployed_model(args.model)
    if deployed is not None:  # the file `dgconv deploy` (or save_deployed) wrote
        model, spec = deployed
        size = tuple(args.input_size) if args.input_size else model_info(spec["model"]).input_size
        _print_profile(args, f"{args.model} ({spec['model']}, deployed)", model, size, spec["num_classes"], "")
        return 0
    name, classes, size, groups = args.model, args.num_classes, args.input_size, None
    run_source = args.model if is_run(args.model) else (args.groups_from if args.groups_from and is_run(args.groups_from) else None)
    if run_source is not None:  # a run knows its model, classes and input size
        run = load_run(run_source)
        if run_source == args.model:
            name = run.config["model"]
            groups = run.groups or None
        classes = classes or run.num_classes or None
        size = size or (list(run.input_size) if run.input_size else None)
    elif Path(args.model).exists():
        from ..errors import ConfigError

        raise ConfigError(f"{args.model} is not a run directory (no config.json) and not a model name; `dgconv models` lists the names")
    info = model_info(name)
    if args.groups_from:
        groups = read_groups(args.groups_from)
    elif args.groups:
        groups = args.groups
    size = tuple(size) if size else info.input_size
    classes = classes or default_classes(info.input_size)
    model = _build(name, num_classes=classes, in_chans=size[0], groups=groups)
    note = ""
    if info.dgconv and groups is None:
        note = ("DGConv layers at their random starting groups (a fresh G-network): give a run directory or "
                "--groups-from for learned groups, --groups N for N everywhere")
    _print_profile(args, name, model, size, classes, note)
    return 0


def default_classes(input_size: tuple[int, ...]) -> int:
    """The classifier a model is profiled with when neither a run nor --num-classes says: ImageNet's 1000 for
    ImageNet-sized models, 10 (CIFAR-10, digits) for the small ones."""
    return 1000 if input_size[-1] >= 64 else 10


def _print_profile(args: argparse.Namespace, name: str, model: Any, size: tuple[int, ...], classes: int, note: str) -> None:
    from ..convert.profile import profile

    prof = profile(model, size)
    costs = _costs(model, size, args.latency_table)
    if args.json:
        print(json.dumps({**prof.to_dict(), "costs": costs, "num_classes": classes, **({"note": note} if note else {})},
                         indent=2))
        return
    print(f"{name} at {'x'.join(map(str, size))}, {classes} classes (MACs = multiply-accumulates; FLOPs = 2 x MACs)")
    if note:
        print(note)
    print(prof.table(layers=args.layers))
    if costs:
        print("budget costs of the DGConv layers at their current groups (what `--cost` counts):")
        for cost, value in costs.items():
            print(f"  {cost:<12} {value['zeta']:>16,.6g} {value['unit']}" + (
                f"   (whole network: {value['network']:,.6g} {value['unit']})" if value.get("network") is not None else ""))


def _deployed_model(path: str) -> tuple[Any, dict[str, Any]] | None:
    """A deployed model and its spec when ``path`` is a file :func:`dgconv.save_deployed` wrote (or its ``.json``)."""
    from pathlib import Path

    from ..convert.spec import load_deployed
    from ..errors import ConfigError

    p = Path(path)
    spec = p if p.suffix == ".json" else p.with_name(p.name + ".json")
    if not (p.is_file() and spec.is_file()):
        return None
    try:
        doc = json.loads(spec.read_text())
        return load_deployed(p), doc
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as e:
        raise ConfigError(f"{path}: not a deployed model dgconv can rebuild ({str(e).splitlines()[0][:160]})") from None


def _costs(model, size, table_path):  # type: ignore[no-untyped-def]
    """zeta of the DGConv layers in every cost that can be computed (latency only with a table)."""
    from ..budget.constraint import ResourceConstraint
    from ..layer.conv import dgconv_layers

    if not dgconv_layers(model):
        return {}
    out = {}
    for cost in ("connections", "macs", "latency"):
        if cost == "latency" and not table_path:
            continue
        c = ResourceConstraint(model, budget=None, cost=cost, input_size=size, latency_table=table_path)
        network = c.current() + c.cost.fixed if cost != "connections" else None
        out[cost] = {"zeta": c.current(), "unit": c.cost.unit, "network": network}
    return out


def add_latency(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="measure a latency table: every DGConv layer at every group number it can reach",
        description="Time the deployed form (nn.Conv2d(groups=G)) of every DGConv layer of MODEL at every reachable G, "
        "on this device, dtype, batch and input size, plus the rest of the network; write a JSON table for "
        "`dgconv train --cost latency --latency-table FILE` (usable on any machine).",
    )
    p.add_argument("model", help="registered G-model name")
    p.add_argument("--out", required=True, help="where to write the table (JSON)")
    p.add_argument("--device", default="cpu", help="device to time on (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=Choices("dgconv.budget.latency", "DTYPES"))
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"), help="default: the model's")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (part of the measured rest)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--reps", type=positive_int, default=15, help="timed rounds per layer shape (medians are kept)")
    p.add_argument("--min-group-width", type=int, help="the hardware limits training will use (checked as "
                   "`dgconv train` checks them)")
    p.add_argument("--max-groups", type=int)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_cmd_latency)


def _cmd_latency(args: argparse.Namespace) -> int:
    import time

    from ..budget.latency import LatencyTable
    from ..models import model_info
    from ..train.progress import Progress

    info = model_info(args.model)
    size = tuple(args.input_size) if args.input_size else info.input_size
    from ..layer.conv import check_group_limits

    check_group_limits(args.min_group_width, args.max_groups, learnable=info.dgconv)
    limits = {k: getattr(args, k) for k in ("min_group_width", "max_groups") if getattr(args, k) is not None}
    model = _build(args.model, num_classes=args.num_classes, in_chans=size[0], **limits)
    from ..train.progress import duration

    started = time.time()
    bars = Progress(args.progress)
    with bars.phase("timing", 1) as update:
        def progress(done: int, total: int, what: str) -> None:
            spent = time.time() - started
            left = duration(spent / done * (total - done)) if done else "?"
            update(0, layer=what, done=f"{done}/{total}", left=left)
            if not bars.enabled:  # a log or a pipe: one line per shape
                print(f"timed {done}/{total} ({what}), about {left} left", flush=True)

        table = LatencyTable.measure(model, size, args.batch, args.device, args.dtype, args.channels_last, args.reps,
                                     model_name=args.model, progress=progress)
    table.save(args.out)
    n = sum(len(s["ms"]) for s in table.shapes.values())
    print(f"{args.model} at {'x'.join(map(str, size))}, batch {args.batch}, {table.dtype} on {table.device_name}: "
          f"{len(table.layers)} DGConv layers, {len(table.shapes)} distinct shapes, {n} timings, rest of the network "
          f"{table.base_ms:.3f} ms; {time.time() - started:.1f} s")
    print(f"wrote {args.out}")
    suspicious = table.suspicious()
    if suspicious:
        logging.getLogger("dgconv").warning(
            "%d timing(s) look contaminated (something else ran, or the machine changed speed); `dgconv train --cost "
            "latency` refuses this table unless --trust-latency-table. Measure again on a quiet machine, or with more "
            "--reps:\n  %s", len(suspicious), "\n  ".join(suspicious))
    return 0


def add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="turn a trained G-ResNeXt into a plain ResNeXt with its learned groups",
        description="Load a run's checkpoint, replace every DGConv2d by nn.Conv2d(groups=G) at its learned G (channel "
        "permutations folded into neighbours), and write FILE (state_dict) plus FILE.json (architecture spec for "
        "dgconv.load_deployed / create_model).",
    )
    p.add_argument("source", help="run directory (uses last.pt, or best.pt with --best) or a checkpoint file")
    p.add_argument("--out", required=True, help="output state_dict path; the spec goes to OUT.json")
    p.add_argument("--best", action="store_true", help="deploy best.pt of a run directory instead of last.pt")
    p.add_argument("--torchscript", help="also save a TorchScript module here")
    p.set_defaults(func=_cmd_deploy)


def _cmd_deploy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..convert.deploy import deploy
    from ..convert.spec import save_deployed
    from ..models import model_info
    from ..convert.profile import profile
    from ..train.checkpoint import contents, load_checkpoint, model_from_checkpoint
    from ..train.runs import checkpoint_path

    src = checkpoint_path(args.source, best=args.best)
    if args.best and not Path(args.source).is_dir():
        from ..errors import ConfigError

        raise ConfigError("--best picks a run directory's best checkpoint; give the run directory, not a file")
    ckpt = load_checkpoint(src)
    model = model_from_checkpoint(ckpt).eval()
    fields = contents(ckpt)
    size = fields.input_size or model_info(fields.model_name).input_size
    deployed, summary = deploy(model, summary=True)
    before, after = profile(model, size), profile(deployed, size)
    macs_after = {lp.name: lp.macs for lp in after.layers}
    print(f"{fields.model_name} ({src}) at input {'x'.join(map(str, size))}; MACs = multiply-accumulates")
    head = f"{'layer':<20} {'in':>5} {'out':>5} {'groups':>6} {'params: stored -> deployed':>28} {'MACs: dense masked -> grouped':>32}"
    print(head + "\n" + "-" * len(head))
    for lp, prof in zip(summary.layers, [p for p in before.layers if p.kind == "DGConv2d"]):
        dense = prof.macs * lp.groups
        after_macs = macs_after.get(lp.name, macs_after.get(lp.name + ".1", macs_after.get(lp.name + ".0", 0)))
        print(f"{lp.name:<20} {lp.in_channels:>5} {lp.out_channels:>5} {lp.groups:>6} {lp.params_before:>13,} -> {lp.params_after:<11,}"
              f" {dense:>15,} -> {after_macs:<13,}")
    dense_total = before.macs + sum(p.macs * (p.groups - 1) for p in before.layers if p.kind == "DGConv2d")
    print(f"{'model total':<39} {before.params:>13,} -> {after.params:<11,} {dense_total:>15,} -> {after.macs:<13,}")
    if summary.inserted:
        print(f"note: channel permutations could not be folded for {', '.join(summary.inserted)}; ChannelPermutation inserted")
    weights, spec = save_deployed(deployed, args.out)
    print(f"wrote {weights} and {spec}")
    if args.torchscript:
        import torch

        from .._files import atomic_write

        scripted = torch.jit.script(deployed)
        atomic_write(args.torchscript, lambda f: torch.jit.save(scripted, f))
        print(f"wrote {args.torchscript} (TorchScript)")
    return 0


