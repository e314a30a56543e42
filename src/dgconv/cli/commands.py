"""The subcommands of ``dgconv``: each one's arguments (``_add_*``) and what it does (``_cmd_*``). ``train``'s
options come from :class:`~dgconv.train.config.TrainConfig` (:mod:`dgconv.train.options`)."""

from __future__ import annotations

import argparse
import json
import logging
import math

from .console import run_train

__all__ = ["COMMANDS"]


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}")
    return v


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a (G-)ResNeXt under a complexity budget",
        description="Train a (G-)ResNeXt and report the learned groups. With no arguments: G-ResNeXt on scikit-learn's "
        "digits (bundled, no download), under a minute on 2 CPU cores. Under torchrun, DDP (gloo on CPU, NCCL on GPU).",
        argument_default=argparse.SUPPRESS,
    )
    from ..train.options import add_arguments

    p.add_argument("--config", metavar="FILE",
                   help="read options from a YAML, TOML or JSON file (a run's config.json repeats that run); flags "
                        "given beside it override its values")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved options (a JSON file --config reads back) and exit without training")
    add_arguments(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train.config import TrainConfig
    from ..train.options import merge_given, read_config_file

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config", "print_config")}
    values = merge_given(read_config_file(args.config) if getattr(args, "config", None) else {}, given)
    cfg = TrainConfig(**values)
    if getattr(args, "print_config", False):
        import dataclasses

        from ..train.engine import resumed_config

        resolved = resumed_config(cfg, set(values))[0] if cfg.resume is not None else cfg.resolved()
        print(json.dumps(dataclasses.asdict(resolved), indent=2))
        return 0
    from ..train.engine import train

    train(cfg, explicit=set(values))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", help="shell wildcard, e.g. 'g_*'")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        raise ConfigError(f"no registered model matches {args.pattern!r}; `dgconv models` lists all {len(list_models())}")
    print(f"{'name':<22} {'input':<10} {'DGConv':<7} {'budget':<7} description")
    for n in names:
        i = model_info(n)
        print(f"{n:<22} {'x'.join(map(str, i.input_size)):<10} {'yes' if i.dgconv else 'no':<7} {str(i.budget or '-'):<7} {i.doc}")
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="parameters and MACs of a model, per layer (DGConv at its current groups)")
    p.add_argument("model", help="registered model name, or a run directory (its model, classes, input size and learned groups)")
    p.add_argument("--input-size", type=_positive_int, nargs=3, metavar=("C", "H", "W"), help="default: the run's, else the model's")
    p.add_argument("--num-classes", type=_positive_int, help="default: the run's, else 1000")
    p.add_argument("--groups", type=_positive_int, help="set every group / DGConv layer to this many groups")
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
    from ..convert.profile import profile
    from ..train.runs import is_run, load_run, read_groups

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
    model = _build(name, num_classes=classes or 1000, in_chans=size[0], groups=groups)
    prof = profile(model, size)
    costs = _costs(model, size, args.latency_table)
    if args.json:
        print(json.dumps({**prof.to_dict(), "costs": costs}, indent=2))
    else:
        print(f"{name} at {'x'.join(map(str, size))}, {classes or 1000} classes (MACs = multiply-accumulates; FLOPs = 2 x MACs)")
        print(prof.table(layers=args.layers))
        if costs:
            print("budget costs of the DGConv layers at their current groups (what `--cost` counts):")
            for cost, value in costs.items():
                print(f"  {cost:<12} {value['zeta']:>16,.6g} {value['unit']}" + (
                    f"   (whole network: {value['network']:,.6g} {value['unit']})" if value.get("network") is not None else ""))
    return 0


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


def _add_latency(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--input-size", type=_positive_int, nargs=3, metavar=("C", "H", "W"), help="default: the model's")
    p.add_argument("--num-classes", type=_positive_int, default=1000, help="classifier outputs (part of the measured rest)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--reps", type=_positive_int, default=15, help="timed rounds per layer shape (medians are kept)")
    p.add_argument("--min-group-width", type=_positive_int, help="the hardware limits training will use")
    p.add_argument("--max-groups", type=_positive_int)
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


def _add_deploy(sub: argparse._SubParsersAction) -> None:
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

    from ..convert.deploy import deploy, save_deployed
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


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="figures and a markdown summary from run directories")
    p.add_argument("runs", nargs="+", help="run directories (config.json, metrics.jsonl, groups.json)")
    p.add_argument("--out", default="report", help="output directory (default: report)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..lab.report import write_report

    for path in write_report(args.runs, args.out):
        print(f"wrote {path}")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run the paper's CIFAR experiments (Tables 3, 5, 6 analogues) as a named protocol",
        description="Protocols: 'cpu' (g_resnext_cifar_tiny, 3 epochs on 2 CPU cores; a smoke test), 'gpu' "
        "(g_resnext29_32x4d, 30 epochs on one H200, over several sessions) and 'gpu-fast' (g_fastnet, a fast recipe, "
        "many seeds). Resumable: finished runs are skipped; a directory holding runs of other settings is refused.",
    )
    from ..lab.protocols import PROTOCOLS

    p.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    p.add_argument("--data-dir", required=True, help="folder holding (or being) cifar-10-batches-py")
    p.add_argument("--out", required=True, help="sweep directory: one run directory per run, plus results.md")
    p.add_argument("--results", help="also write the rendered results here (e.g. docs/results.md)")
    p.add_argument("--data-note", help="a sentence about the data, recorded in the results")
    p.add_argument("--epochs", type=_positive_int, help="override the protocol's epochs")
    p.add_argument("--parallel", type=_positive_int, help="override how many runs train at once")
    p.add_argument("--limit-train", type=_positive_int, help="override: first N training images only")
    p.add_argument("--limit-test", type=_positive_int, help="override: first N test images only")
    p.add_argument("--batch-size", type=_positive_int, help="override the protocol's batch size")
    p.add_argument("--device", help="override the protocol's device (e.g. cpu, to rehearse a GPU protocol)")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="override: no bf16 autocast")
    p.add_argument("--max-seeds", type=_positive_int, help="override: only the first N seeds of every arm (a rehearsal)")
    p.add_argument("--model", help="override the G-network (a rehearsal with a smaller one)")
    p.add_argument("--plain-model", help="override the plain network (with --model)")
    p.add_argument("--deadline", type=_positive_float, metavar="SECONDS",
                   help="start no run that would not finish within SECONDS; stop running ones then (they resume next time)")
    g = p.add_argument_group("cluster", "where the runs execute (docs/guide.md, 'Sweeps on a Slurm cluster')")
    g.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: a pool of --parallel worker processes (default); submitit: one Slurm job per run, "
                        "--parallel at a time (pip install submitit)")
    g.add_argument("--cluster", choices=("slurm", "local"),
                   help="submitit: slurm, or local subprocesses (default: Slurm where sbatch is found, else local)")
    g.add_argument("--slurm-partition", help="submitit: the Slurm partition")
    g.add_argument("--timeout-min", type=_positive_int, help="submitit: each job's time limit in minutes")
    g.add_argument("--gpus-per-run", type=_positive_int, help="submitit: GPUs per job")
    g.add_argument("--cpus-per-run", type=_positive_int, help="submitit: CPU cores per job")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="submitit: any other sbatch option, e.g. account=abc or qos=high (repeatable)")
    p.set_defaults(func=_cmd_sweep)


def _launcher(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The sweep's launcher from the cluster flags (``"local"`` unless --launcher submitit)."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..lab.launchers import make_launcher
    from ..lab.sweep import SUBMITIT_FOLDER

    params = {k: v for k, v in (("slurm_partition", args.slurm_partition), ("timeout_min", args.timeout_min),
                                ("gpus_per_node", args.gpus_per_run), ("cpus_per_task", args.cpus_per_run)) if v}
    extra = {}
    for item in args.slurm_option:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--slurm-option takes KEY=VALUE (an sbatch option without its dashes), got {item!r}")
        extra[key.strip().replace("-", "_")] = value
    if extra:
        params["slurm_additional_parameters"] = extra
    if args.launcher == "local":
        if params or args.cluster:
            raise ConfigError("--cluster, --slurm-*, --timeout-min, --gpus-per-run and --cpus-per-run need --launcher submitit")
        return "local"
    return make_launcher("submitit", Path(args.out).resolve() / SUBMITIT_FOLDER, args.cluster, params)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..lab.sweep import run_sweep

    path = run_sweep(args.protocol, args.out, args.data_dir, data_note=args.data_note, results=args.results,
                     deadline=args.deadline, epochs=args.epochs, parallel=args.parallel, limit_train=args.limit_train,
                     limit_test=args.limit_test, batch_size=args.batch_size, device=args.device, amp=args.amp,
                     max_seeds=args.max_seeds, model=args.model, plain=args.plain_model, runner=run_train,
                     launcher=_launcher(args))
    print(f"wrote {path}" + (f" and {args.results}" if args.results else ""))
    return 0


def _add_results(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="render the results document from sweep directories")
    p.add_argument("sweeps", nargs="+", help="sweep directories (with sweep.json)")
    p.add_argument("--out", help="write here instead of printing")
    p.add_argument("--figures", help="also draw the learned-groups figures into this folder (beside --out, e.g. docs/figures)")
    p.set_defaults(func=_cmd_results)


def _cmd_results(args: argparse.Namespace) -> int:

    from ..errors import ConfigError
    from ..lab.results import render_results
    from .._files import write_text
    from ..train.runs import SWEEP, is_sweep

    for s in args.sweeps:
        if not is_sweep(s):
            raise ConfigError(f"{s} is not a sweep directory (no {SWEEP})")
    text = render_results(args.sweeps, args.figures)
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0




#: The subcommands, in the order ``dgconv --help`` lists them.
COMMANDS = (_add_train, _add_models, _add_profile, _add_deploy, _add_latency, _add_report, _add_sweep, _add_results)
