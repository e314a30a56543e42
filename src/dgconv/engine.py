"""The training engine behind ``dgconv train``: one process or ``torchrun`` DDP, checkpoints, metrics, resume.

The loop knows nothing of DGConv beyond "multiply the loss by the resource constraint" and "log the learned
groups". Everything a run writes goes to its output directory:

* ``config.json`` -- the exact configuration used (defaults resolved), with versions and the command line;
* ``metrics.jsonl`` -- one JSON object per epoch: losses, accuracies, ``zeta``, ``o``, ``zeta/o``, learned
  groups and gate values per layer, learning rate, time;
* ``groups.json`` -- the learned group number and channels of every DGConv layer (``"groups"`` is exactly
  :func:`dgconv.learned_groups`; ``create_model(name, groups=...)`` and ``--groups-from`` read it);
* ``last.pt`` / ``best.pt`` -- checkpoints (atomic writes; ``best`` by test accuracy); the model is
  ``create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **ckpt["model_kwargs"])``.

A run killed at any moment resumes with ``--resume RUN_DIR`` from its last completed epoch; batch order and
augmentation are functions of ``(seed, epoch, rank)``, so on the CPU the resumed run ends bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .checkpoint import FORMAT, CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .constraint import ResourceConstraint, dgconv_layers, learned_groups, parameter_groups
from .data import DataError, TensorDataset, TensorLoader, load_cifar, load_digits
from .distributed import DistEnv, all_reduce_sum, init_distributed, shutdown
from .layers import cached_gates
from .models import create_model, model_info

__all__ = ["TrainConfig", "train", "evaluate", "DATASET_DEFAULTS", "TrainingError", "read_groups", "write_groups"]

#: Defaults that depend on the dataset (anything left ``None`` in :class:`TrainConfig`).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"model": "g_resnext_digits", "epochs": 30, "batch_size": 64, "lr": 0.1},
    "cifar10": {"model": "g_resnext_cifar_tiny", "epochs": 30, "batch_size": 128, "lr": 0.1},
    "cifar100": {"model": "g_resnext_cifar_tiny", "epochs": 30, "batch_size": 128, "lr": 0.1},
    "imagefolder": {"model": "g_resnext50", "epochs": 100, "batch_size": 256, "lr": 0.1},
}

GROUPS_FORMAT = "dgconv.groups/1"


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why and what was kept."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` fields take the dataset's defaults.

    ``budget``: ``"default"`` takes the model's registered budget (``dgconv models`` lists it), a number sets
    ``b``, ``None`` trains unconstrained. ``batch_size`` is the global batch, split over processes.
    """

    model: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    budget: float | str | None = "default"
    alpha: float = -0.02
    enforce_budget: bool = True
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    workers: int = 4
    device: str | None = None
    out: str | None = None
    resume: str | None = None
    groups: int | None = None
    groups_from: str | None = None
    zero_init_residual: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    deterministic: bool = False
    tensorboard: bool = False
    progress: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with dataset defaults filled in and every field checked (raises ``ValueError``)."""
        if self.dataset not in DATASET_DEFAULTS:
            raise ValueError(f"unknown dataset {self.dataset!r}: choose from {sorted(DATASET_DEFAULTS)}")
        cfg = dataclasses.replace(self)
        for key, value in DATASET_DEFAULTS[self.dataset].items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        info = model_info(cfg.model)  # raises UnknownModelError with close matches
        if cfg.budget == "default":
            cfg.budget = info.budget
        if isinstance(cfg.budget, str):
            raise ValueError(f"budget must be a number, 'default' or None, got {cfg.budget!r}")
        if cfg.budget is not None:
            if not (cfg.budget > 0 and math.isfinite(cfg.budget)):
                raise ValueError(f"budget must be positive, got {cfg.budget}")
            if not info.dgconv:
                raise ValueError(f"model {cfg.model!r} has no DGConv layers: a budget needs a g_* model (or --budget none)")
        if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {cfg.epochs!r}")
        if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {cfg.batch_size!r}")
        if not cfg.lr > 0:
            raise ValueError(f"learning rate must be positive, got {cfg.lr}")
        if not cfg.alpha < 0:
            raise ValueError(f"alpha must be negative, got {cfg.alpha}")
        if cfg.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {cfg.schedule!r}")
        if not 0 <= cfg.warmup_epochs < cfg.epochs:
            raise ValueError(f"warmup epochs must be in [0, epochs), got {cfg.warmup_epochs}")
        if cfg.groups is not None and cfg.groups_from:
            raise ValueError("give --groups or --groups-from, not both")
        for name in ("limit_train", "limit_test", "groups"):
            v = getattr(cfg, name)
            if v is not None and v < 1:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {v}")
        if cfg.dataset in ("cifar10", "cifar100", "imagefolder") and not cfg.data_dir:
            raise ValueError(f"--dataset {cfg.dataset} needs --data-dir")
        return cfg


# ------------------------------------------------------------------------------------------ groups files
def write_groups(model: nn.Module, path: str | Path, model_name: str | None = None) -> dict[str, Any]:
    """Write ``groups.json``: ``{"format", "model", "groups": {name: G}, "channels": {name: [in, out]}}``."""
    layers = dgconv_layers(model)
    doc = {
        "format": GROUPS_FORMAT,
        "model": model_name,
        "groups": learned_groups(model),
        "channels": {n: [m.in_channels, m.out_channels] for n, m in layers},
    }
    _atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")
    return doc


def read_groups(path: str | Path) -> dict[str, int]:
    """Read a group spec: a ``groups.json`` written by a run (or a run directory holding one), or a plain JSON
    mapping ``{module name: groups}``. Raises ``ValueError`` on anything else."""
    p = Path(path)
    if p.is_dir():
        p = p / "groups.json"
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"no group spec at {p}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not JSON: {e}") from None
    spec = doc.get("groups", doc) if isinstance(doc, dict) else None
    if not isinstance(spec, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in spec.items()):
        raise ValueError(f"{p} is not a group spec: expected {{module name: groups}} or a groups.json with a 'groups' mapping")
    return spec


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


# ------------------------------------------------------------------------------------------ helpers
def _lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    t = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))
    return cfg.lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))  # step: x0.1 at 50% and 75%


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise (the engine prints a line per epoch)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self._last > 0.1:
            sys.stderr.write("\r" + text[: os.get_terminal_size(sys.stderr.fileno()).columns - 1].ljust(60))
            sys.stderr.flush()
            self._last = now

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


def _load_dataset(cfg: TrainConfig) -> TensorDataset:
    if cfg.dataset == "digits":
        ds = load_digits()
    elif cfg.dataset in ("cifar10", "cifar100"):
        ds = load_cifar(cfg.dataset, cfg.data_dir)  # type: ignore[arg-type]
    else:
        raise DataError("imagefolder data is streamed, not loaded in memory")  # handled by _loaders
    if cfg.limit_train or cfg.limit_test:
        ds = ds.subset(cfg.limit_train, cfg.limit_test)
    return ds


def _loaders(cfg: TrainConfig, env: DistEnv):
    """(train_loader, test_loader, num_classes, input_size) for the dataset."""
    per_rank = cfg.batch_size // env.world_size
    if cfg.dataset == "imagefolder":
        from .data_folder import folder_loaders

        return folder_loaders(cfg, env, per_rank)
    ds = _load_dataset(cfg)
    train = TensorLoader(ds, True, per_rank, env.device, cfg.seed, env.rank, env.world_size, cfg.channels_last)
    test = TensorLoader(ds, False, per_rank, env.device, cfg.seed, env.rank, env.world_size, cfg.channels_last)
    if len(train) == 0:
        raise DataError(f"{len(ds.train_x)} training examples make no full batch of {per_rank} per process")
    return train, test, ds.num_classes, ds.input_size


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, amp: bool = False) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` over a loader's test split, summed over all processes."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    try:
        for x, y in loader.epoch(0):
            with cached_gates(model), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            sums[0] += F.cross_entropy(out.float(), y, reduction="sum")
            sums[1] += (out.argmax(1) == y).sum()
            sums[2] += len(y)
    finally:
        model.train(was)
    all_reduce_sum(sums)
    n = max(1.0, sums[2].item())
    return sums[0].item() / n, sums[1].item() / n


def _gate_sync_ok(model: nn.Module, env: DistEnv) -> bool:
    """All ranks hold the same gates (checked by an all-reduce of the gate vector)."""
    layers = dgconv_layers(model)
    if not env.distributed or not layers:
        return True
    g = torch.cat([m.gate.detach().double().flatten() for _, m in layers])
    total = all_reduce_sum(g.clone())
    return bool(torch.equal(total, g * env.world_size))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(env: DistEnv) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dgconv": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(env.device),
        "device_name": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "world_size": env.world_size,
        "argv": sys.argv,
    }


def _default_out(cfg: TrainConfig) -> str:
    return str(Path("runs") / f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")


def _resume_source(path: str) -> Path:
    p = Path(path)
    return p / "last.pt" if p.is_dir() else p


# Fields a resumed run may change; every other field comes from the checkpoint.
RESUMABLE_OVERRIDES = ("epochs", "workers", "progress", "tensorboard", "device", "resume", "out")


def _merge_resume(cfg: TrainConfig, ckpt: dict[str, Any], explicit: set[str]) -> TrainConfig:
    """The checkpoint's configuration, with the few fields a resumed run may change taken from ``cfg``."""
    saved = ckpt["config"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    conflicts = [
        f"{k}: checkpoint {saved.get(k)!r} vs given {getattr(cfg, k)!r}"
        for k in sorted(explicit & fields - set(RESUMABLE_OVERRIDES))
        if saved.get(k) != getattr(cfg, k)
    ]
    if conflicts:
        raise TrainingError("--resume continues the saved configuration; these options differ from it: " + "; ".join(conflicts))
    merged = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    for k in RESUMABLE_OVERRIDES:
        if k in explicit:
            setattr(merged, k, getattr(cfg, k))
    merged.resume = cfg.resume
    return merged


# ------------------------------------------------------------------------------------------ train
def train(cfg: TrainConfig, explicit: set[str] | None = None) -> dict[str, Any]:
    """Run a training job; returns the final summary (also printed by rank 0).

    ``explicit`` names the fields the user set (the CLI passes them) so that ``--resume`` can refuse
    conflicting options instead of silently ignoring them.
    """
    explicit = set() if explicit is None else explicit
    ckpt = None
    if cfg.resume:
        ckpt = load_checkpoint(_resume_source(cfg.resume))
        cfg = _merge_resume(cfg, ckpt, explicit)
    cfg = cfg.resolved()
    if cfg.out is None:
        cfg.out = _default_out(cfg)
    out = Path(cfg.out)
    env = init_distributed(cfg.device)
    try:
        return _train(cfg, env, out, ckpt)
    finally:
        shutdown()


@dataclass
class _Run:
    """The live objects of one training run (built by :func:`_setup`)."""

    cfg: TrainConfig
    env: DistEnv
    out: Path
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    constraint: ResourceConstraint
    train_loader: Any
    test_loader: Any
    num_classes: int
    input_size: tuple[int, ...]
    model_kwargs: dict[str, Any]
    start_epoch: int = 0
    step: int = 0
    best_acc: float = 0.0


def _setup(cfg: TrainConfig, env: DistEnv, out: Path, ckpt: dict[str, Any] | None) -> _Run:
    if cfg.batch_size % env.world_size:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by the {env.world_size} processes")
    if ckpt is None and (out / "last.pt").exists():
        raise TrainingError(f"{out} already holds a run (last.pt); pass --resume {out} or choose another --out")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)

    train_loader, test_loader, num_classes, input_size = _loaders(cfg, env)
    spec: int | dict[str, int] | None = cfg.groups
    if cfg.groups_from:
        try:
            spec = read_groups(cfg.groups_from)
        except ValueError as e:
            raise TrainingError(f"--groups-from: {e}") from None
    model_kwargs: dict[str, Any] = {"in_chans": input_size[0], **({"groups": spec} if spec else {})}
    model = create_model(cfg.model, num_classes=num_classes, zero_init_residual=cfg.zero_init_residual, **model_kwargs)
    if ckpt is not None:
        if ckpt["num_classes"] != num_classes:
            raise TrainingError(
                f"class count mismatch: the checkpoint has {ckpt['num_classes']} classes, the data has {num_classes}"
            )
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"the checkpoint does not fit {cfg.model}: {e}") from None
    model.to(env.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    constraint = ResourceConstraint(model, budget=cfg.budget, alpha=cfg.alpha)
    if cfg.budget is not None and constraint.minimum_zeta() > constraint.target:
        raise ValueError(
            f"budget b={cfg.budget} is unreachable for {cfg.model}: even with every DGConv layer at its maximum groups "
            f"zeta = {constraint.minimum_zeta()} > o = {constraint.target:.0f}; use a smaller b"
        )
    opt = torch.optim.SGD(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    run = _Run(cfg, env, out, model, model, opt, constraint, train_loader, test_loader, num_classes, input_size, model_kwargs)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        run.start_epoch, run.step, run.best_acc = int(ckpt["epoch"]), int(ckpt["step"]), float(ckpt["best_acc"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if env.device.type == "cuda" and ckpt["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    if env.distributed:
        run.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None, broadcast_buffers=True
        )
    return run


def _kept(run: _Run, epoch: int) -> str:
    """What a run stopped during ``epoch`` (0-based) leaves behind, for the error message."""
    last = run.out / "last.pt"
    return f"the last good checkpoint {last} (end of epoch {epoch})" if last.exists() else "no checkpoint (none was written yet)"


def _train_epoch(run: _Run, epoch: int, progress: _Progress) -> tuple[float, torch.Tensor]:
    """One pass over the training data; returns the last learning rate and the (unreduced) sums of task loss,
    constrained loss, correct predictions and examples."""
    cfg, env = run.cfg, run.env
    steps = len(run.train_loader)
    run.net.train()
    sums = torch.zeros(4, dtype=torch.float64, device=env.device)
    lr = cfg.lr
    for i, (x, y) in enumerate(run.train_loader.epoch(epoch)):
        lr = _lr_at(cfg, run.step, steps)
        for group in run.opt.param_groups:
            group["lr"] = lr
        with cached_gates(run.model), torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            logits = run.net(x)  # one host read of all gates, not one sync per DGConv layer
        task = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        loss = run.constraint(task)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.step += 1
        n = torch.tensor(len(y), device=env.device)
        sums += torch.stack([task.detach() * len(y), loss.detach() * len(y), (logits.argmax(1) == y).sum(), n]).double()
        if i % 25 == 0 or i == steps - 1:  # checked every few steps: each check is a device sync
            if not torch.isfinite(task):
                raise TrainingError(
                    f"the loss became {task.item()} at epoch {epoch + 1}, step {run.step}; stopping. Kept {_kept(run, epoch)}."
                )
            progress.update(f"epoch {epoch + 1}/{cfg.epochs} [{i + 1}/{steps}] loss {task.item():.4f} lr {lr:.4g}")
    progress.close()
    return lr, sums


def _finish_epoch(run: _Run, epoch: int, lr: float, sums: torch.Tensor, started: float) -> tuple[dict[str, Any], bool]:
    """Evaluate, enforce the budget, check the gates across processes; returns the metrics record and whether
    this epoch has the best test accuracy so far."""
    all_reduce_sum(sums)
    train_loss, train_closs, train_acc = (sums[:3] / sums[3]).tolist()
    test_loss, test_acc = evaluate(run.net, run.test_loader, run.cfg.amp)
    if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
        raise TrainingError(f"non-finite loss at the end of epoch {epoch + 1}; stopping. Kept {_kept(run, epoch)}.")
    zeta_before = float(run.constraint.zeta().detach())
    closed = run.constraint.project() if run.cfg.enforce_budget else []
    layers = dict(dgconv_layers(run.model))
    for name, k in closed:  # a reflected gate starts without the momentum that carried it open
        buf = run.opt.state.get(layers[name].gate, {}).get("momentum_buffer")
        if buf is not None:
            buf[k] = 0
    in_sync = _gate_sync_ok(run.model, run.env)
    if not in_sync:
        raise TrainingError("DGConv gates differ between processes; this is a bug, please report it")
    state = run.constraint.summary()
    best = test_acc > run.best_acc
    run.best_acc = max(run.best_acc, test_acc)
    record = {
        "epoch": epoch + 1, "step": run.step, "lr": lr, "train_loss": train_loss, "train_loss_constrained": train_closs,
        "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc, "best_acc": run.best_acc,
        "zeta": state["zeta"], "o": state["o"], "zeta_over_o": state["zeta_over_o"], "zeta_before_projection": zeta_before,
        "gates_closed_by_projection": [[n, k] for n, k in closed], "groups": state["groups"],
        "gates": state["gates"], "gates_in_sync": in_sync, "time": time.time() - started,
    }
    return record, best


def _write_epoch(run: _Run, record: dict[str, Any], best: bool, writer: Any) -> None:
    """Rank 0: the metrics line first, then the checkpoints (so a resumed run can drop lines past its checkpoint),
    groups.json, TensorBoard scalars and the console line."""
    cfg, env, out = run.cfg, run.env, run.out
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    ckpt_doc = {
        "format": FORMAT, "model_name": cfg.model, "num_classes": run.num_classes, "model_kwargs": run.model_kwargs,
        "input_size": list(run.input_size), "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
        "epoch": record["epoch"], "step": run.step, "best_acc": run.best_acc,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if env.device.type == "cuda" else []},
        "config": dataclasses.asdict(cfg),
    }
    save_checkpoint(ckpt_doc, out / "last.pt")
    if best:
        save_checkpoint(ckpt_doc, out / "best.pt")
    if dgconv_layers(run.model):
        write_groups(run.model, out / "groups.json", cfg.model)
    if writer is not None:
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "zeta"):
            writer.add_scalar(k, record[k], record["epoch"])
        if record["zeta_over_o"] is not None:
            writer.add_scalar("zeta_over_o", record["zeta_over_o"], record["epoch"])
    ratio = f" zeta/o {record['zeta_over_o']:.3f}" if record["zeta_over_o"] is not None else ""
    groups = f" groups {list(record['groups'].values())}" if record["groups"] else ""
    print(
        f"epoch {record['epoch']:>3}/{cfg.epochs} loss {record['train_loss']:.4f} train_acc {record['train_acc']:.4f} "
        f"test_acc {record['test_acc']:.4f}{ratio}{groups} lr {record['lr']:.4g} {record['time']:.1f}s",
        flush=True,
    )


def _train(cfg: TrainConfig, env: DistEnv, out: Path, ckpt: dict[str, Any] | None) -> dict[str, Any]:
    run = _setup(cfg, env, out, ckpt)
    main = env.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        config_doc = {
            "config": dataclasses.asdict(cfg), "environment": _environment(env), "num_classes": run.num_classes,
            "input_size": list(run.input_size), "o": run.constraint.target if cfg.budget else None,
            "train_images_per_epoch": len(run.train_loader) * cfg.batch_size,
            "test_images": getattr(run.test_loader, "size", None),
        }
        _atomic_write_text(out / "config.json", json.dumps(config_doc, indent=2) + "\n")
        _truncate_metrics(out / "metrics.jsonl", run.start_epoch)
        print(
            f"dgconv train: {cfg.model} on {cfg.dataset} ({len(run.train_loader) * cfg.batch_size} train images/epoch), "
            f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, budget b={cfg.budget}, "
            f"device {env.device} x{env.world_size}, out {out}",
            flush=True,
        )
        if run.start_epoch:
            print(f"resumed from epoch {run.start_epoch} (step {run.step})", flush=True)
    writer = _tensorboard(cfg, out) if main else None
    progress = _Progress(cfg.progress and main)
    record: dict[str, Any] = {}
    for epoch in range(run.start_epoch, cfg.epochs):
        started = time.time()
        lr, sums = _train_epoch(run, epoch, progress)
        record, best = _finish_epoch(run, epoch, lr, sums, started)
        if main:
            _write_epoch(run, record, best, writer)
    if writer is not None:
        writer.close()
    if main and record:
        _print_groups(run.model, run.constraint, record)
    return record


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Keep the lines of epochs <= ``epoch`` (a resumed run rewrites what followed its checkpoint)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epoch]
    _atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _tensorboard(cfg: TrainConfig, out: Path):  # type: ignore[no-untyped-def]
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("--tensorboard: the tensorboard package is not installed; skipping TensorBoard logs", file=sys.stderr)
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _print_groups(model: nn.Module, constraint: ResourceConstraint, record: dict[str, Any]) -> None:
    print(f"\ntest accuracy {record['test_acc']:.4f} (best {record['best_acc']:.4f})")
    layers = dgconv_layers(model)
    if not layers:
        return
    if constraint.budget is not None:
        print(f"zeta {record['zeta']:.0f} / o {record['o']:.0f} = {record['zeta_over_o']:.3f} (budget b={constraint.budget})")
    print(f"{'DGConv layer':<20} {'in':>5} {'out':>5} {'groups':>7}  gates (1 = factor connected)")
    for name, m in layers:
        bits = "".join("1" if b else "0" for b in m.binary_gates())
        print(f"{name:<20} {m.in_channels:>5} {m.out_channels:>5} {m.groups:>7}  {bits} (factors {list(m.factors)})")
