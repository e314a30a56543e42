"""The ``dgconv`` command line: ``dgconv train | models | profile`` (and ``python -m dgconv ...``)."""

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgconv", description="Dynamic Grouping Convolution: train, inspect and deploy G-ResNeXt.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_models(sub)
    _add_profile(sub)
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
    except (ValueError, DataError, CheckpointError, TrainingError) as e:
        print(f"dgconv {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dgconv {args.command}: interrupted", file=sys.stderr)
        return 130
