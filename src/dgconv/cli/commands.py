"""The subcommands of ``dgconv``: each one's arguments (``_add_*``) and what it does (``_cmd_*``). ``train``'s
options come from :class:`~dgconv.train.config.TrainConfig` (:mod:`dgconv.train.options`)."""

from __future__ import annotations

import argparse
import json

from .console import positive_float, positive_int, run_train
from .networks import add_deploy, add_latency, add_profile

__all__ = ["COMMANDS"]


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
    p.add_argument("--epochs", type=positive_int, help="override the protocol's epochs")
    p.add_argument("--parallel", type=positive_int, help="override how many runs train at once")
    p.add_argument("--limit-train", type=positive_int, help="override: first N training images only")
    p.add_argument("--limit-test", type=positive_int, help="override: first N test images only")
    p.add_argument("--batch-size", type=positive_int, help="override the protocol's batch size")
    p.add_argument("--device", help="override the protocol's device (e.g. cpu, to rehearse a GPU protocol)")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="override: no bf16 autocast")
    p.add_argument("--max-seeds", type=positive_int, help="override: only the first N seeds of every arm (a rehearsal)")
    p.add_argument("--model", help="override the G-network (a rehearsal with a smaller one)")
    p.add_argument("--plain-model", help="override the plain network (with --model)")
    p.add_argument("--deadline", type=positive_float, metavar="SECONDS",
                   help="start no run that would not finish within SECONDS; stop running ones then (they resume next time)")
    g = p.add_argument_group("cluster", "where the runs execute (docs/guide.md, 'Sweeps on a Slurm cluster')")
    g.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: a pool of --parallel worker processes (default); submitit: one Slurm job per run, "
                        "--parallel at a time (pip install submitit)")
    g.add_argument("--cluster", choices=("slurm", "local"),
                   help="submitit: slurm, or local subprocesses (default: Slurm where sbatch is found, else local)")
    g.add_argument("--slurm-partition", help="submitit: the Slurm partition")
    g.add_argument("--timeout-min", type=positive_int, help="submitit: each job's time limit in minutes")
    g.add_argument("--gpus-per-run", type=positive_int, help="submitit: GPUs per job")
    g.add_argument("--cpus-per-run", type=positive_int, help="submitit: CPU cores per job")
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
COMMANDS = (_add_train, _add_models, add_profile, add_deploy, add_latency, _add_report, _add_sweep, _add_results)
