"""The ``dgconv`` command line: ``dgconv train | models | profile | deploy | report | sweep | results``
(and ``python -m dgconv ...``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


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


def _budget(s: str) -> float | str | None:
    if s.lower() == "none":
        return None
    if s.lower() == "default":
        return "default"
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, 'default' or 'none', got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, 'default' or 'none', got {s!r}")
    return v


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a (G-)ResNeXt under a complexity budget",
        description="Train a (G-)ResNeXt and report the learned groups. With no arguments: G-ResNeXt on scikit-learn's "
        "digits (bundled, no download), about a minute on 2 CPU cores. Under torchrun, DDP (gloo on CPU, NCCL on GPU).",
        argument_default=argparse.SUPPRESS,
    )
    a = p.add_argument
    a("--model", help="registered model name (default per dataset: g_resnext_digits, g_resnext_cifar_tiny, g_resnext50)")
    a("--dataset", choices=["digits", "cifar10", "cifar100", "imagefolder"], help="default: digits")
    a("--data-dir", help="CIFAR: folder holding (or being) cifar-10-batches-py / cifar-100-python; imagefolder: DIR with train/ and val/")
    a("--budget", type=_budget, help="complexity scale b: o = sum C_in C_out / b; 'default' (the model's), or 'none'")
    a("--alpha", type=float, help="exponent of (o/zeta) while over budget (default -0.02)")
    a("--no-enforce-budget", dest="enforce_budget", action="store_false",
      help="do not project onto zeta <= o at epoch ends (the paper's soft objective alone)")
    a("--epochs", type=_positive_int)
    a("--batch-size", type=_positive_int, help="global batch size, split over processes")
    a("--lr", type=_positive_float, help="peak learning rate")
    a("--momentum", type=float, help="SGD momentum (default 0.9)")
    a("--weight-decay", type=float, help="weight decay of all parameters but the gates (default 1e-4)")
    a("--schedule", choices=["cosine", "step", "constant"], help="default: cosine")
    a("--warmup-epochs", type=float, help="linear warm-up epochs (default 0)")
    a("--label-smoothing", type=float)
    a("--seed", type=int)
    a("--amp", action="store_true", help="bfloat16 autocast")
    a("--channels-last", action="store_true")
    a("--workers", type=int, help="data-loading workers (imagefolder)")
    a("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    a("--out", help="run directory (default runs/<model>-<dataset>-<time>)")
    a("--resume", help="continue the run in this directory (or from this checkpoint)")
    a("--groups", type=_positive_int, help="uniform group number of every group convolution (a ResNeXt baseline)")
    a("--groups-from", help="groups.json (or run directory) of learned groups: build ResNeXt* from them")
    a("--zero-init-residual", action="store_true")
    a("--limit-train", type=_positive_int, help="use only the first N training images")
    a("--limit-test", type=_positive_int, help="use only the first N test images")
    a("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    a("--tensorboard", action="store_true", help="also write TensorBoard logs (needs the tensorboard package)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine import TrainConfig, train

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    train(TrainConfig(**given), explicit=set(given))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", help="shell wildcard, e.g. 'g_*'")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_info

    print(f"{'name':<22} {'input':<10} {'DGConv':<7} {'budget':<7} description")
    for n in list_models(args.pattern):
        i = model_info(n)
        print(f"{n:<22} {'x'.join(map(str, i.input_size)):<10} {'yes' if i.dgconv else 'no':<7} {str(i.budget or '-'):<7} {i.doc}")
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="parameters and MACs of a model, per layer (DGConv at its current groups)")
    p.add_argument("model", help="registered model name")
    p.add_argument("--input-size", type=_positive_int, nargs=3, metavar=("C", "H", "W"), help="default: the model's")
    p.add_argument("--num-classes", type=_positive_int, default=1000)
    p.add_argument("--groups", type=_positive_int, help="set every group / DGConv layer to this many groups")
    p.add_argument("--groups-from", help="groups.json (or run directory): per-layer groups")
    p.add_argument("--no-layers", dest="layers", action="store_false", help="totals only")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from .engine import read_groups
    from .models import create_model, model_info
    from .profile import profile

    info = model_info(args.model)
    groups = read_groups(args.groups_from) if args.groups_from else args.groups
    model = create_model(args.model, num_classes=args.num_classes, groups=groups)
    size = tuple(args.input_size) if args.input_size else info.input_size
    prof = profile(model, size)
    if args.json:
        print(json.dumps(prof.to_dict(), indent=2))
    else:
        print(f"{args.model} at {'x'.join(map(str, size))} (MACs = multiply-accumulates; FLOPs = 2 x MACs)")
        print(prof.table(layers=args.layers))
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

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .convert import deploy, save_deployed
    from .models import model_info
    from .profile import profile

    src = Path(args.source)
    if src.is_dir():
        src = src / ("best.pt" if args.best else "last.pt")
    ckpt = load_checkpoint(src)
    model = model_from_checkpoint(ckpt).eval()
    size = tuple(ckpt.get("input_size") or model_info(ckpt["model_name"]).input_size)
    deployed, summary = deploy(model, summary=True)
    before, after = profile(model, size), profile(deployed, size)
    macs_after = {lp.name: lp.macs for lp in after.layers}
    print(f"{ckpt['model_name']} ({src}) at input {'x'.join(map(str, size))}; MACs = multiply-accumulates")
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

        torch.jit.script(deployed).save(args.torchscript)
        print(f"wrote {args.torchscript} (TorchScript)")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="figures and a markdown summary from run directories")
    p.add_argument("runs", nargs="+", help="run directories (config.json, metrics.jsonl, groups.json)")
    p.add_argument("--out", default="report", help="output directory (default: report)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    for path in write_report(args.runs, args.out):
        print(f"wrote {path}")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run the paper's CIFAR experiments (Tables 3, 5, 6 analogues) as a named protocol",
        description="Protocols: 'cpu' (g_resnext_cifar_tiny, about an hour on 2 CPU cores; a smoke test) and 'gpu' "
        "(g_resnext29_32x4d, about ten minutes on one H200). Resumable: finished runs are skipped.",
    )
    from .sweep import PROTOCOLS

    p.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    p.add_argument("--data-dir", required=True, help="folder holding (or being) cifar-10-batches-py")
    p.add_argument("--out", required=True, help="sweep directory: one run directory per run, plus results.md")
    p.add_argument("--results", help="also write the rendered results here (e.g. docs/results.md)")
    p.add_argument("--data-note", help="a sentence about the data, recorded in the results")
    p.add_argument("--epochs", type=_positive_int, help="override the protocol's epochs")
    p.add_argument("--parallel", type=_positive_int, help="override how many runs train at once")
    p.add_argument("--limit-train", type=_positive_int, help="override: first N training images only")
    p.add_argument("--limit-test", type=_positive_int, help="override: first N test images only")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import run_sweep

    path = run_sweep(args.protocol, args.out, args.data_dir, data_note=args.data_note, results=args.results,
                     epochs=args.epochs, parallel=args.parallel, limit_train=args.limit_train, limit_test=args.limit_test)
    print(f"wrote {path}" + (f" and {args.results}" if args.results else ""))
    return 0


def _add_results(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="render the results document from sweep directories")
    p.add_argument("sweeps", nargs="+", help="sweep directories (with sweep.json)")
    p.add_argument("--out", help="write here instead of printing")
    p.set_defaults(func=_cmd_results)


def _cmd_results(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .results import render_results

    for s in args.sweeps:
        if not (Path(s) / "sweep.json").exists():
            raise ValueError(f"{s} is not a sweep directory (no sweep.json)")
    text = render_results(args.sweeps)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgconv", description="Dynamic Grouping Convolution: train, inspect and deploy G-ResNeXt.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_models(sub)
    _add_profile(sub)
    _add_deploy(sub)
    _add_report(sub)
    _add_sweep(sub)
    _add_results(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dgconv`` command. Returns the process exit code."""
    from .checkpoint import CheckpointError
    from .data import DataError
    from .engine import TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, RuntimeError, DataError, CheckpointError, TrainingError) as e:
        print(f"dgconv {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dgconv {args.command}: interrupted", file=sys.stderr)
        return 130
