"""What defines a training run: :class:`TrainConfig`, its dataset defaults, its validation and the resume rules.

One place decides which options exist, what they default to and which combinations are refused, so the trainer,
the command line and the run directory agree. Every refusal is a :class:`~dgconv.errors.ConfigError` raised before
any training starts.

Example::

    >>> from dgconv.train.config import TrainConfig
    >>> cfg = TrainConfig(epochs=3).resolved()
    >>> cfg.model, cfg.batch_size, cfg.budget
    ('g_resnext_digits', 64, 8)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..models import model_info

__all__ = ["TrainConfig", "DATASET_DEFAULTS", "RESUMABLE_OVERRIDES", "merge_resume"]

#: Defaults that depend on the dataset (anything left ``None`` in :class:`TrainConfig`).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"model": "g_resnext_digits", "epochs": 30, "batch_size": 64, "lr": 0.1},
    "cifar10": {"model": "g_resnext_cifar_tiny", "epochs": 30, "batch_size": 128, "lr": 0.1},
    "cifar100": {"model": "g_resnext_cifar_tiny", "epochs": 30, "batch_size": 128, "lr": 0.1},
    # batch "auto": chosen from the folder's size (dgconv.train.data.folder.default_batch_size)
    "imagefolder": {"model": "g_resnext50", "epochs": 100, "batch_size": "auto", "lr": 0.1},
}

#: Fields a resumed run may change; every other field comes from the checkpoint.
RESUMABLE_OVERRIDES = ("epochs", "workers", "progress", "tensorboard", "device", "resume", "download",
                       "trust_latency_table")


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` fields take the dataset's defaults.

    ``budget``: ``"default"`` takes the model's registered budget (``dgconv models`` lists it), a number sets
    ``b``, ``None`` trains unconstrained; ``target`` (an absolute cap in the cost's units) replaces it. ``cost``:
    ``"connections"`` (the paper's), ``"macs"`` or ``"latency"`` (with ``latency_table``). ``objective``: ``"paper"``
    or ``"lagrangian"`` (:mod:`dgconv.constraint`). ``batch_size`` is the global batch, split over processes.
    ``freeze_groups_at``: search, then train -- an epoch number (``"5"``) or a fraction of the schedule (``"0.3"``)
    after which every DGConv layer becomes its group convolution (:func:`dgconv.freeze_groups`).
    ``gate_batch_fraction`` / ``gate_every``: cheaper gate gradients (sub-batch estimate / every K steps).
    """

    model: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    budget: float | str | None = "default"
    alpha: float = -0.02
    enforce_budget: bool = True
    cost: str = "connections"
    target: float | None = None
    latency_table: str | None = None
    trust_latency_table: bool = False
    objective: str = "paper"
    dual_lr: float = 0.05
    min_group_width: int | None = None
    max_groups: int | None = None
    image_size: int | None = None
    resize: str = "auto"
    mean: list[float] | None = None
    std: list[float] | None = None
    hflip: str = "auto"
    download: bool = False
    init_from: str | None = None
    gate_init: float | None = None
    freeze_groups_at: str | None = None
    gate_batch_fraction: float = 1.0
    gate_every: int = 1
    compile: bool = False
    epochs: int | None = None
    batch_size: int | str | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    nesterov: bool = False
    lookahead: int = 0
    lookahead_alpha: float = 0.5
    lookahead_ramp: bool = False
    tta: str = "none"
    crop_padding: int = 4
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    workers: int | None = None
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
        """A copy with dataset defaults filled in and every field checked (raises :class:`ConfigError`)."""
        if self.dataset not in DATASET_DEFAULTS:
            raise ConfigError(f"unknown dataset {self.dataset!r}: choose from {sorted(DATASET_DEFAULTS)}")
        cfg = dataclasses.replace(self)
        for key, value in DATASET_DEFAULTS[self.dataset].items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        info = model_info(cfg.model)  # raises UnknownModelError (a ConfigError) with close matches
        if cfg.target is not None:
            if cfg.budget not in ("default", None):
                raise ConfigError("give --budget or --target, not both (a target is an absolute cap in the cost's units)")
            if isinstance(cfg.target, bool) or not (cfg.target > 0 and math.isfinite(cfg.target)):
                raise ConfigError(f"target must be a positive number, got {cfg.target}")
            if not info.dgconv:
                raise ConfigError(f"model {cfg.model!r} has no DGConv layers: a target needs a g_* model")
            cfg.budget = None
        if cfg.budget == "default":
            cfg.budget = info.budget
        if isinstance(cfg.budget, str):
            raise ConfigError(f"budget must be a number, 'default' or None, got {cfg.budget!r}")
        if cfg.budget is not None:
            if isinstance(cfg.budget, bool) or not (cfg.budget > 0 and math.isfinite(cfg.budget)):
                raise ConfigError(f"budget must be positive, got {cfg.budget}")
            if not info.dgconv:
                raise ConfigError(f"model {cfg.model!r} has no DGConv layers: a budget needs a g_* model (or --budget none)")
        if not isinstance(cfg.epochs, int) or isinstance(cfg.epochs, bool) or cfg.epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {cfg.epochs!r}")
        auto = cfg.batch_size == "auto" and cfg.dataset == "imagefolder"
        if not auto and (not isinstance(cfg.batch_size, int) or isinstance(cfg.batch_size, bool) or cfg.batch_size < 1):
            raise ConfigError(f"batch size must be a positive integer, got {cfg.batch_size!r}")
        if not cfg.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {cfg.lr}")
        if not cfg.alpha < 0:
            raise ConfigError(f"alpha must be negative, got {cfg.alpha}")
        from ..constraint import OBJECTIVES
        from ..costs import COSTS

        if cfg.cost not in COSTS:
            raise ConfigError(f"unknown cost {cfg.cost!r}: choose from {list(COSTS)}")
        if cfg.cost == "latency" and not cfg.latency_table:
            raise ConfigError("--cost latency needs --latency-table FILE (measure one with `dgconv latency MODEL --out FILE`)")
        if cfg.trust_latency_table and cfg.cost != "latency":
            raise ConfigError("--trust-latency-table applies to --cost latency")
        if cfg.latency_table and cfg.cost != "latency":
            raise ConfigError(f"--latency-table is read only with --cost latency (the cost is {cfg.cost!r})")
        if cfg.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {cfg.objective!r}: choose from {list(OBJECTIVES)}")
        if not cfg.dual_lr > 0:
            raise ConfigError(f"dual learning rate must be positive, got {cfg.dual_lr}")
        for name in ("min_group_width", "max_groups"):
            v = getattr(cfg, name)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}")
                if not info.dgconv:
                    raise ConfigError(f"--{name.replace('_', '-')} limits learned groups: model {cfg.model!r} has no DGConv layers")
        if cfg.schedule not in ("cosine", "step", "constant", "triangle"):
            raise ConfigError(f"schedule must be 'cosine', 'step', 'constant' or 'triangle', got {cfg.schedule!r}")
        if cfg.nesterov and not cfg.momentum > 0:
            raise ConfigError("--nesterov needs a positive --momentum")
        if isinstance(cfg.lookahead, bool) or not isinstance(cfg.lookahead, int) or cfg.lookahead < 0:
            raise ConfigError(f"--lookahead takes a step count (0: off), got {cfg.lookahead!r}")
        if not 0 < cfg.lookahead_alpha <= 1:
            raise ConfigError(f"--lookahead-alpha must be in (0, 1], got {cfg.lookahead_alpha}")
        if cfg.lookahead_ramp and not cfg.lookahead:
            raise ConfigError("--lookahead-ramp needs --lookahead K")
        if cfg.tta not in ("none", "flip"):
            raise ConfigError(f"--tta must be 'none' or 'flip', got {cfg.tta!r}")
        if isinstance(cfg.crop_padding, bool) or not isinstance(cfg.crop_padding, int) or cfg.crop_padding < 0:
            raise ConfigError(f"--crop-padding must be 0 or more pixels, got {cfg.crop_padding!r}")
        if not 0 <= cfg.warmup_epochs < cfg.epochs:
            raise ConfigError(f"warmup epochs must be in [0, epochs), got {cfg.warmup_epochs}")
        if not 0 <= cfg.label_smoothing < 1:
            raise ConfigError(f"label smoothing must be in [0, 1), got {cfg.label_smoothing}")
        if cfg.groups is not None and cfg.groups_from:
            raise ConfigError("give --groups or --groups-from, not both")
        for name in ("limit_train", "limit_test", "groups"):
            v = getattr(cfg, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {v}")
        gate_options = cfg.freeze_groups_at is not None or cfg.gate_batch_fraction != 1.0 or cfg.gate_every != 1
        if gate_options and not info.dgconv:
            raise ConfigError(f"model {cfg.model!r} has no DGConv layers: --freeze-groups-at, --gate-batch-fraction and "
                              f"--gate-every apply to learned groups (a g_* model)")
        if isinstance(cfg.gate_batch_fraction, bool) or not 0 < cfg.gate_batch_fraction <= 1:
            raise ConfigError(f"gate batch fraction must be in (0, 1], got {cfg.gate_batch_fraction}")
        if isinstance(cfg.gate_every, bool) or not isinstance(cfg.gate_every, int) or cfg.gate_every < 1:
            raise ConfigError(f"gate-every must be a positive integer (1: every step), got {cfg.gate_every!r}")
        cfg.freeze_epoch()  # validates
        if cfg.image_size is not None and (isinstance(cfg.image_size, bool) or cfg.image_size < 1):
            raise ConfigError(f"image size must be a positive integer, got {cfg.image_size!r}")
        from .data.folder import RESIZE_POLICIES

        if cfg.resize not in RESIZE_POLICIES:
            raise ConfigError(f"--resize must be one of {list(RESIZE_POLICIES)}, got {cfg.resize!r}")
        if cfg.hflip not in ("auto", "on", "off"):
            raise ConfigError(f"--hflip must be 'auto', 'on' or 'off', got {cfg.hflip!r}")
        if (cfg.mean is None) != (cfg.std is None):
            raise ConfigError("give --mean and --std together (one value per image channel each)")
        if cfg.mean is not None and (len(cfg.mean) != len(cfg.std) or any(not s > 0 for s in cfg.std)):  # type: ignore[arg-type]
            raise ConfigError(f"--mean and --std need the same number of values (one per channel), std positive; got "
                              f"{cfg.mean} and {cfg.std}")
        if cfg.download and cfg.dataset not in ("cifar10", "cifar100"):
            raise ConfigError(f"--download fetches CIFAR-10/100; {cfg.dataset} is not downloadable")
        if cfg.gate_init is not None and not cfg.gate_init > 0:
            raise ConfigError(f"--gate-init must be positive, got {cfg.gate_init}")
        if cfg.workers is not None and cfg.workers < 0:
            raise ConfigError(f"workers must be 0 or more, got {cfg.workers}")
        if cfg.dataset in ("cifar10", "cifar100", "imagefolder") and not cfg.data_dir:
            raise ConfigError(f"--dataset {cfg.dataset} needs --data-dir")
        return cfg

    def freeze_epoch(self) -> int | None:
        """After how many epochs the groups freeze (``freeze_groups_at`` resolved against ``epochs``), or None.

        An integer is an epoch number in ``[1, epochs]``; a number with a decimal point is a fraction of the schedule
        in ``(0, 1]`` (``"0.3"`` of 30 epochs: after epoch 9; at least 1).
        """
        x = self.freeze_groups_at
        if x is None:
            return None
        text = str(x).strip()
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--freeze-groups-at takes an epoch number or a fraction of the schedule, got {x!r}") from None
        if any(c in text for c in ".eE") or isinstance(x, float):
            if not 0 < value <= 1:
                raise ConfigError(f"--freeze-groups-at {x}: a fraction of the schedule must be in (0, 1]")
            return max(1, round(value * int(self.epochs or 0)))
        epoch = int(value)
        if not 1 <= epoch <= int(self.epochs or 0):
            raise ConfigError(f"--freeze-groups-at {x} is outside the schedule: give an epoch in [1, {self.epochs}] or a fraction")
        return epoch


def merge_resume(cfg: TrainConfig, saved: dict[str, Any], explicit: set[str]) -> TrainConfig:
    """The saved configuration of a run being resumed, with the few fields a resumed run may change
    (:data:`RESUMABLE_OVERRIDES`) taken from ``cfg``. Any other option the user gave (``explicit``) that differs
    from the saved value is refused, naming each difference."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    allowed = set(RESUMABLE_OVERRIDES) | {"out"}
    conflicts = [
        f"{k}: checkpoint {saved.get(k)!r} vs given {getattr(cfg, k)!r}"
        for k in sorted(explicit & fields - allowed)
        if saved.get(k, getattr(TrainConfig, k, None)) != getattr(cfg, k)
    ]
    if conflicts:
        raise ConfigError("--resume continues the saved configuration; these options differ from it: " + "; ".join(conflicts))
    merged = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    for k in RESUMABLE_OVERRIDES:
        if k in explicit:
            setattr(merged, k, getattr(cfg, k))
    merged.resume = cfg.resume
    return merged
