"""Setting up a training run: the data, the model (pretrained weights, a resumed checkpoint, a frozen grouping),
the constraint and its latency table, the optimizer, lookahead and the DDP / ``torch.compile`` wrappers -- the
live objects :mod:`dgconv.train.engine` trains (:class:`RunState`)."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..budget.constraint import ResourceConstraint
from ..budget.optimizer import configure_optimizer
from ..errors import ConfigError, DGConvError, RunDirError, TrainingError
from ..convert.freeze import freeze_groups, freeze_structure, restore_grouping
from ..layer.conv import set_gate_batch_fraction
from ..models import create_model, model_info
from .checkpoint import CheckpointError, Contents, restore_rng
from .config import TrainConfig
from .data.loaders import Loaders, make_loaders
from .distributed import DistEnv
from .rundir import RunWriter
from .runs import checkpoint_path, read_groups, read_structure

__all__ = ["RunState", "Lookahead", "setup", "wrap", "take_skipped"]

_logger = logging.getLogger("dgconv.train.engine")  # one voice for the trainer's console lines


def freeze_norm_scales(model: nn.Module, fill: bool = True) -> None:
    """Batch-norm scales fixed at 1 and not trained (the fast recipe's); ``fill=False`` keeps their values (a resumed
    run's come from its checkpoint)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            if fill:
                with torch.no_grad():
                    m.weight.fill_(1.0)
            m.weight.requires_grad_(False)


class Lookahead:
    """Lookahead over a model's parameters: every K steps the slow weights move ``alpha`` of the way to the fast
    ones, and the fast weights restart from them (Zhang et al. 2019; the fast recipe uses it as an EMA).

    ``buffers``: average the floating buffers (batch-norm running means and variances) with the weights.

    ``ramp``: the fraction moved starts at 1 (no averaging) and falls to ``alpha`` as ``1 - (1 - alpha) * t**3``
    over training progress ``t`` in [0, 1] (the published fast recipe's EMA schedule): a constant ``alpha = 0.5``
    halves every early step's progress.

    Example::

        >>> net = nn.Linear(1, 1, bias=False)
        >>> la = Lookahead(net, alpha=0.25, ramp=True)
        >>> round(la.fraction(0.0), 3), round(la.fraction(0.5), 3), round(la.fraction(1.0), 3)
        (1.0, 0.906, 0.25)
    """

    def __init__(self, model: nn.Module, alpha: float, ramp: bool = False, buffers: bool = False) -> None:
        self.params = dict(model.named_parameters())
        if buffers:  # floating buffers too (batch-norm running statistics), as the fast recipe's EMA covers them
            self.params.update({n: b for n, b in model.named_buffers() if b.is_floating_point()})
        self.alpha = alpha
        self.ramp = ramp
        self.slow = {n: p.detach().clone() for n, p in self.params.items()}

    def fraction(self, progress: float) -> float:
        """How far the slow weights move at ``progress`` (0: start of training, 1: end)."""
        t = min(max(progress, 0.0), 1.0)
        return 1 - (1 - self.alpha) * t**3 if self.ramp else self.alpha

    @torch.no_grad()
    def step(self, progress: float = 1.0) -> None:
        alpha = self.fraction(progress)
        for n, p in self.params.items():
            slow = self.slow[n]
            slow.add_(p.detach() - slow, alpha=alpha)
            p.copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.slow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n, t in state.items():
            if n in self.slow:
                self.slow[n].copy_(t)



@dataclass
class RunState:
    """The live objects of one training run (built by :func:`setup`)."""

    cfg: TrainConfig
    env: DistEnv
    out: Path
    writer: RunWriter | None  # the main process's handle on the run directory; None on other ranks
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    constraint: ResourceConstraint
    train_loader: Any
    test_loader: Any
    num_classes: int
    input_size: tuple[int, ...]
    model_kwargs: dict[str, Any]
    data: Loaders
    lookahead: Lookahead | None = None
    start_epoch: int = 0
    step: int = 0
    best_acc: float = 0.0
    best_epoch: int = 0
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)  # the epochs this process trained

    def eta(self, epoch: int) -> float:
        """Seconds left after ``epoch`` (1-based) epochs: the median epoch of this process times those to go."""
        if not self.epoch_seconds:
            return math.nan
        return sorted(self.epoch_seconds)[len(self.epoch_seconds) // 2] * (self.cfg.epochs - epoch)


def setup(cfg: TrainConfig, env: DistEnv, out: Path, writer: RunWriter | None, ckpt: Contents | None) -> RunState:
    if isinstance(cfg.batch_size, int) and cfg.batch_size % env.world_size:
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by the {env.world_size} processes")
    if writer is not None:
        if ckpt is None:
            writer.check_fresh()
        for note in writer.recover(ckpt, checkpoint_path(cfg.resume) if cfg.resume else None):
            _logger.info("%s: %s", out, note)
    if cfg.deterministic or torch.are_deterministic_algorithms_enabled():  # reset too: sweeps reuse processes
        torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)  # (its first call imports the compiler)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    torch.manual_seed(cfg.seed)

    data = make_loaders(cfg, env, model_info(cfg.model).input_size)
    train_loader, test_loader, num_classes, input_size = data.train, data.test, data.num_classes, data.input_size
    if cfg.batch_size == "auto":  # chosen from the data; recorded like a given value (a resume reuses it)
        cfg.batch_size = train_loader.batch_size * env.world_size
    _check_input_size(cfg.model, input_size)
    spec: int | dict[str, int] | None = cfg.groups
    if cfg.groups_from:
        try:
            spec = read_groups(cfg.groups_from)
        except RunDirError as e:
            raise ConfigError(f"--groups-from: {e}") from None
    model_kwargs: dict[str, Any] = {"in_chans": input_size[0], **({"groups": spec} if spec else {})}
    for key in ("min_group_width", "max_groups"):
        if getattr(cfg, key) is not None:
            model_kwargs[key] = getattr(cfg, key)
    try:
        model = create_model(cfg.model, num_classes=num_classes, zero_init_residual=cfg.zero_init_residual, **model_kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, DGConvError):
            raise
        raise ConfigError(f"cannot build {cfg.model}: {e}") from None
    if cfg.init_from and ckpt is None:
        from .pretrained import GATE_INIT_PRETRAINED, load_pretrained

        for note in load_pretrained(model, cfg.init_from, cfg.gate_init or GATE_INIT_PRETRAINED):
            if env.is_main:
                _logger.info("%s", note)
    if ckpt is not None and ckpt.num_classes != num_classes:
        raise TrainingError(
            f"class count mismatch: the checkpoint has {ckpt.num_classes} classes, the data has {num_classes}"
        )
    model.to(env.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    constraint = ResourceConstraint(
        model, budget=cfg.budget, alpha=cfg.alpha, cost=cfg.cost, target=cfg.target, input_size=input_size,
        latency_table=_latency_table(cfg), objective=cfg.objective, dual_lr=cfg.dual_lr,
    )  # bad costs, tables and unreachable budgets are ConfigErrors, before any training
    if cfg.freeze_norm_scale:
        freeze_norm_scales(model, fill=ckpt is None)
    opt = configure_optimizer(model, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov,
                              norm_bias_lr_scale=cfg.norm_bias_lr_scale)
    if ckpt is None and hasattr(model, "initialize_from_data"):  # e.g. FastNet's whitening layer, from training images
        model.initialize_from_data(_initial_images(train_loader))
    if cfg.structure_from and ckpt is None:  # (a resumed run rebuilds it from the checkpoint's frozen record below)
        _learned_structure(cfg, model, constraint, opt)
    set_gate_batch_fraction(model, cfg.gate_batch_fraction)
    run = RunState(cfg, env, out, writer, model, model, opt, constraint, train_loader, test_loader, num_classes, input_size,
               model_kwargs, data)
    if ckpt is not None:
        _resume(run, ckpt)
    if cfg.lookahead:
        run.lookahead = Lookahead(model, cfg.lookahead_alpha, cfg.lookahead_ramp, cfg.lookahead_buffers)
        if ckpt is not None and ckpt.lookahead:
            run.lookahead.load_state_dict(ckpt.lookahead)
    run.net = wrap(model, cfg, env)
    return run


def _resume(run: RunState, ckpt: Contents) -> None:
    """Put a freshly built run where its checkpoint left it: the frozen structure (if any), the weights, the
    optimizer, the counters, the constraint's state and the random generators."""
    model, opt, constraint = run.model, run.opt, run.constraint
    if ckpt.frozen:  # the groups were frozen before this checkpoint: rebuild that structure first
        try:
            restore_grouping(model, ckpt.frozen)
        except ValueError as e:
            raise CheckpointError(f"the checkpoint's frozen grouping does not fit {run.cfg.model}: {e}") from None
        constraint.freeze()
        freeze_groups(model, opt, run.cfg.orders)
    try:
        model.load_state_dict(ckpt.model)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint does not fit {run.cfg.model}: {e}") from None
    try:
        opt.load_state_dict(ckpt.optimizer)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"the checkpoint's optimizer state does not fit: {e}") from None
    run.start_epoch, run.step, run.best_acc = ckpt.epoch, ckpt.step, float(ckpt.best_acc)
    run.best_epoch = ckpt.best_epoch or 0
    constraint.load_state_dict(ckpt.constraint)
    restore_rng(ckpt, run.env.device.type == "cuda")


def _learned_structure(cfg: TrainConfig, model: nn.Module, constraint: ResourceConstraint, opt: Any) -> None:
    """``--structure-from``: the learned groups and channel order of another run, trained from scratch."""
    try:
        source_model, record = read_structure(cfg.structure_from)  # type: ignore[arg-type]
    except RunDirError as e:
        raise ConfigError(f"--structure-from: {e}") from None
    if source_model is not None and source_model != cfg.model:
        raise ConfigError(f"--structure-from {cfg.structure_from}: the structure was learned by {source_model}, "
                          f"not {cfg.model}; give --model {source_model}")
    try:
        restore_grouping(model, record)
    except ValueError as e:
        raise ConfigError(f"--structure-from {cfg.structure_from}: {e}") from None
    constraint.freeze()
    freeze_structure(model, record, opt, cfg.orders)


def _latency_table(cfg: TrainConfig) -> Any:
    """The latency table of ``--cost latency``, refused when its timings look contaminated (unless trusted)."""
    if cfg.latency_table is None:
        return None
    from ..budget.latency import LatencyTable

    table = LatencyTable.load(cfg.latency_table)
    suspicious = table.suspicious()
    if suspicious and not cfg.trust_latency_table:
        raise ConfigError(
            f"{cfg.latency_table}: {len(suspicious)} timing(s) look contaminated, e.g. {suspicious[0]}; measure the "
            f"table again on a quiet machine (`dgconv latency`), or pass --trust-latency-table to train on it anyway"
        )
    return table


def take_skipped(loader: Any) -> list[str]:
    take = getattr(loader, "take_skipped", None)
    return take() if take is not None else []


def _initial_images(loader: Any, n: int = 5000) -> torch.Tensor:
    """Up to ``n`` training images as the model sees them (normalised), for data-dependent initialisation."""
    got, count = [], 0
    for x, _ in loader.epoch(0):
        got.append(x)
        count += len(x)
        if count >= n:
            break
    return torch.cat(got)[:n]


def _check_input_size(model: str, size: tuple[int, ...]) -> None:
    """Warn when the data is far from the size the model is designed for (its stem and strides assume that size)."""
    want = model_info(model).input_size
    ratio = max(size[-1], want[-1]) / max(1, min(size[-1], want[-1]))
    if ratio >= 2:
        _logger.warning(
            "%s is designed for %dx%d inputs and the data is %dx%d: its stem and strides %s. Pick a model made for "
            "this size (`dgconv models` lists the input size of each) or set --image-size %d.",
            model, want[-2], want[-1], size[-2], size[-1],
            "shrink these images to almost nothing" if size[-1] < want[-1] else "waste compute on them", want[-1],
        )


def wrap(model: nn.Module, cfg: TrainConfig, env: DistEnv) -> nn.Module:
    """The network the loop calls: the model, DDP around it with several processes, ``torch.compile`` on request."""
    net: nn.Module = model
    if env.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None, broadcast_buffers=True,
            find_unused_parameters=cfg.gate_every > 1,  # gate-less steps leave the gates without gradients
        )
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return net


