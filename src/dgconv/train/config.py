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

from ..errors import ConfigError, short

__all__ = ["TrainConfig", "DATASET_DEFAULTS", "EXCLUSIVE", "LEGACY", "RESUMABLE_OVERRIDES", "GROUPS", "CROP_PADDING", "merge_resume", "check_type",
           "Choices"]

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


#: What a run recorded before an option existed ran with (a checkpoint's or config.json's missing fields).
LEGACY = {"orders": "gather"}

#: Options that exclude each other: a flag given for one drops a config file's value of the other.
EXCLUSIVE = (("budget", "target"), ("groups", "groups_from"), ("groups", "structure_from"),
             ("groups_from", "structure_from"))

#: Zero padding of the random crop of in-memory datasets, in pixels (CIFAR's recipe).
CROP_PADDING = 4

#: The option groups of ``dgconv train --help``, in order: field metadata ``group`` -> title.
GROUPS = {
    "model": "model and budget",
    "groups": "learning the groups, faster",
    "data": "data",
    "optimisation": "optimisation",
    "run": "the run",
}


class Choices:
    """The values an option accepts, kept in the module that acts on them (``Choices("dgconv.budget.costs",
    "COSTS")``) and read from there the first time they are needed, so that the command line builds its parser
    without importing torch. Iterable, sized and testable with ``in`` like the tuple it stands for."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def values(self) -> tuple[str, ...]:
        import importlib

        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __iter__(self) -> Any:
        return iter(self.values())

    def __len__(self) -> int:
        return len(self.values())

    def __contains__(self, value: object) -> bool:
        return value in self.values()

    def __repr__(self) -> str:
        return f"Choices({self.module}.{self.name})"


def _opt(default: Any, group: str, help: str, **cli: Any) -> Any:
    """A :class:`TrainConfig` field declared once: its default, option group and help, plus what the command line
    needs beyond the field's type (``choices``, ``metavar``, ``nargs``, ``parse``: a named parser such as
    ``"budget"``; ``type``: the type given on the command line when the field's type admits more)."""
    return dataclasses.field(default=default, metadata={"group": group, "help": help, **cli})


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` fields take the dataset's defaults.

    ``budget``: ``"default"`` takes the model's registered budget (``dgconv models`` lists it), a number sets
    ``b``, ``None`` trains unconstrained; ``target`` (an absolute cap in the cost's units) replaces it. ``cost``:
    ``"connections"`` (the paper's), ``"macs"`` or ``"latency"`` (with ``latency_table``). ``objective``: ``"paper"``
    or ``"lagrangian"`` (:mod:`dgconv.budget.constraint`). ``batch_size`` is the global batch, split over processes.
    ``freeze_groups_at``: search, then train -- an epoch number (``"5"``) or a fraction of the schedule (``"0.3"``)
    after which every DGConv layer becomes its group convolution (:func:`dgconv.freeze_groups`).
    ``gate_batch_fraction`` / ``gate_every``: cheaper gate gradients (sub-batch estimate / every K steps).
    """

    # model and budget
    model: str | None = _opt(None, "model", "registered model name (default per dataset: g_resnext_digits, "
                             "g_resnext_cifar_tiny, g_resnext50)")
    budget: float | str | None = _opt("default", "model", "complexity scale b: o = sum C_in C_out / b; 'default' (the "
                                      "model's), or 'none'", parse="budget")
    alpha: float = _opt(-0.02, "model", "exponent of (o/zeta) while over budget (default -0.02)")
    enforce_budget: bool = _opt(True, "model", "do not project onto zeta <= o at epoch ends (the paper's soft "
                                "objective alone)")
    cost: str = _opt("connections", "model", "what the budget counts: the paper's connections (default), MACs, or "
                     "measured latency (--latency-table)", choices=Choices("dgconv.budget.costs", "COSTS"))
    target: float | None = _opt(None, "model", "absolute cap on the network's cost in the cost's units (MACs per "
                                "input, or ms), instead of --budget")
    latency_table: str | None = _opt(None, "model", "latency table JSON for --cost latency (from `dgconv latency`)")
    trust_latency_table: bool = _opt(False, "model", "train on a latency table even though some of its timings look "
                                     "contaminated (`dgconv latency` names them)")
    objective: str = _opt("paper", "model", "paper: L*(o/zeta)^a (default); lagrangian: L + lambda*(zeta/o - 1), "
                          "lambda by dual ascent", choices=Choices("dgconv.budget.constraint", "OBJECTIVES"))
    dual_lr: float = _opt(0.05, "model", "dual ascent step of --objective lagrangian (default 0.05)")
    min_group_width: int | None = _opt(None, "model", "no group narrower than this many channels (hardware-friendly "
                                       "groups)")
    max_groups: int | None = _opt(None, "model", "at most this many groups in any DGConv layer")
    groups: int | None = _opt(None, "model", "every group convolution with this many groups: a plain network's "
                              "fixed groups (a ResNeXt baseline), or a G-network's starting grouping")
    groups_from: str | None = _opt(None, "model", "groups.json (or run directory) of learned groups: build ResNeXt* "
                                   "from them")
    structure_from: str | None = _opt(None, "model", "groups.json (or run directory) of a learned G-network: train "
                                      "its deployed structure (the learned groups with their channel order) from "
                                      "scratch, no gates; a g_* model with --budget none")
    init_from: str | None = _opt(None, "model", "start from these weights: a dgconv checkpoint, or a torchvision/timm "
                                 "ResNet/ResNeXt state_dict (group convolutions become DGConv layers at their own "
                                 "grouping)")
    gate_init: float | None = _opt(None, "model", "|g~| of gates converted by --init-from (default 1.0: keep the "
                                   "pretrained grouping until the loss says otherwise)")
    zero_init_residual: bool = _opt(False, "model", "zero-initialise the last batch norm of every residual block")
    # learning the groups, faster
    freeze_groups_at: str | int | float | None = _opt(None, "groups", "search, then train: after epoch X (or the fraction X of the "
                                        "schedule, e.g. 0.3) every DGConv layer becomes its group convolution and "
                                        "training goes on as ResNeXt* (optimizer state kept)", metavar="X")
    gate_batch_fraction: float = _opt(1.0, "groups", "compute the gate gradients on this random fraction of each batch "
                                      "(unbiased; default 1: exact)")
    gate_every: int = _opt(1, "groups", "gate gradients on every K-th step only (default 1: every step)", metavar="K")
    orders: str = _opt("fold", "groups", "how a frozen network runs the learned channel orders no fold rule takes: fold "
                       "(merge them per junction, fold what the group convolutions can absorb, gather the rest in the "
                       "tensor's own layout; default) or gather (dgconv 0.2's index_select of each, what runs recorded "
                       "before 0.3 trained with)", choices=Choices("dgconv.convert.deploy", "ORDERS"))
    # data
    dataset: str = _opt("digits", "data", "default: digits", choices=Choices("dgconv.train.config", "DATASET_DEFAULTS"))
    data_dir: str | None = _opt(None, "data", "CIFAR: folder holding (or being) cifar-10-batches-py / "
                                "cifar-100-python; imagefolder: DIR with train/ and val/")
    download: bool = _opt(False, "data", "CIFAR-10/100: download the official archive into --data-dir if it is not "
                          "there (MD5 checked)")
    image_size: int | None = _opt(None, "data", "train and evaluate at this size, every dataset (default: CIFAR and "
                                  "digits at their own size; image folders of small images at their native size, "
                                  "larger ones at the model's input size)")
    resize: str = _opt("auto", "data", "image folders: pad (pad-and-crop at the size, CIFAR recipe), crop (random-"
                       "resized crop, ImageNet recipe), stretch (resize to the size); auto (default) picks pad for "
                       "images up to 64 px, crop above", choices=Choices("dgconv.train.data.folder", "RESIZE_POLICIES"))
    mean: list[float] | None = _opt(None, "data", "per-channel normalisation mean in [0, 1] (default: computed from "
                                    "the data)", nargs="+")
    std: list[float] | None = _opt(None, "data", "per-channel normalisation std (default: computed from the data)",
                                   nargs="+")
    hflip: str = _opt("auto", "data", "random horizontal flips (auto: for colour images only)",
                      choices=Choices("dgconv.train.data.folder", "HFLIP_MODES"))
    crop_padding: int = _opt(CROP_PADDING, "data", f"CIFAR: zero padding of the random crop (default {CROP_PADDING})")
    crop_scale: float = _opt(0.35, "data", "image folders, crop policy: the smallest area fraction a random-resized "
                             "crop keeps (default 0.35; ImageNet recipes use 0.08 over 90+ epochs)")
    limit_train: int | None = _opt(None, "data", "use only the first N training images", metavar="N")
    limit_test: int | None = _opt(None, "data", "use only the first N test images", metavar="N")
    workers: int | None = _opt(None, "data", "data-loading workers (imagefolder; default: the CPU cores less one, at "
                               "most 8)")
    # optimisation
    epochs: int | None = _opt(None, "optimisation", "training epochs (default per dataset: 30 digits and CIFAR, 100 "
                              "folders)")
    batch_size: int | str | None = _opt(None, "optimisation", "global batch size, split over processes (default: 64 "
                                        "digits, 128 CIFAR; folders: a power of two in 32-256 giving about 100 steps "
                                        "per epoch)", type=int)
    lr: float | None = _opt(None, "optimisation", "peak learning rate (default 0.1)")
    momentum: float = _opt(0.9, "optimisation", "SGD momentum (default 0.9)")
    nesterov: bool = _opt(False, "optimisation", "Nesterov momentum")
    weight_decay: float = _opt(1e-4, "optimisation", "weight decay of all parameters but the gates (default 1e-4)")
    schedule: str = _opt("cosine", "optimisation", "default: cosine; triangle: 0.2x -> 1x at the end of warm-up -> 0, "
                         "linearly", choices=Choices("dgconv.train.schedule", "SCHEDULES"))
    warmup_epochs: float = _opt(0.0, "optimisation", "linear warm-up epochs (default 0)")
    label_smoothing: float = _opt(0.0, "optimisation", "label smoothing of the cross-entropy (default 0)")
    lookahead: int = _opt(0, "optimisation", "lookahead every K steps (0: off)", metavar="K")
    lookahead_alpha: float = _opt(0.5, "optimisation", "how far the slow weights move each time (default 0.5)")
    lookahead_ramp: bool = _opt(False, "optimisation", "start with no averaging and ramp to --lookahead-alpha by the "
                                "end (1 - (1 - alpha) t^3, the fast recipe's)")
    lookahead_buffers: bool = _opt(False, "optimisation", "lookahead averages the batch-norm running statistics too "
                                   "(the fast recipe's EMA covers them)")
    norm_bias_lr_scale: float = _opt(1.0, "optimisation", "learning rate of the normalisation biases, times the "
                                     "schedule's (the fast recipe: 64; their decay is divided by it; default 1)")
    freeze_norm_scale: bool = _opt(False, "optimisation", "batch-norm scales fixed at 1, not trained (the fast recipe)")
    tta: str = _opt("none", "optimisation", "test-time augmentation: flip averages with the mirror image; flip-shift "
                    "also with 1-pixel translations of both (6 views); default none", choices=Choices("dgconv.train.tta", "TTA_MODES"))
    seed: int = _opt(0, "optimisation", "random seed of the weights, the batch order and the augmentation (default 0)")
    # the run
    out: str | None = _opt(None, "run", "run directory (default runs/<model>-<dataset>-<time>)")
    resume: str | None = _opt(None, "run", "continue the run in this directory (or from this checkpoint)")
    device: str | None = _opt(None, "run", "default: cuda when available", choices=("cpu", "cuda"))
    amp: bool = _opt(False, "run", "bfloat16 autocast")
    channels_last: bool = _opt(False, "run", "convert the model and the batches to channels_last (NHWC); for GPUs. "
                               "On CPU the crop-augmented batches are NHWC already, and channels_last weights slow "
                               "torch's fused SGD step")
    compile: bool = _opt(False, "run", "torch.compile the network (DGConv layers run as one opaque op each)")
    deterministic: bool = _opt(False, "run", "deterministic algorithms (slower)")
    threads: int | None = _opt(None, "run", "CPU threads of torch's operators (default: chosen for the machine and "
                               "the model -- 1 for images under 32x32, else one per core no other process is "
                               "using); recorded, so a replay uses the same number")
    tensorboard: bool = _opt(False, "run", "also write TensorBoard logs (needs the tensorboard package)")
    progress: bool = _opt(True, "run", "no progress bar")

    def resolved(self) -> TrainConfig:
        """A copy with dataset defaults filled in and every field checked (raises :class:`ConfigError`).

        This is the one place that validates a run's options: the command line, config files and sweeps only
        parse. Each field's type, its choices and the finiteness of every number are checked for all fields alike;
        then one small check per option group (:data:`CHECKS`, next to nothing else) looks at the rules between
        fields. Rules the Python API shares -- a budget and a target (:func:`dgconv.budget.constraint.check_budget`),
        the hardware limits (:func:`dgconv.layer.conv.check_group_limits`) -- are the API's own functions, so both
        refuse the same things with the same words."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check_type(f.name, value)
            if isinstance(value, float) and not math.isfinite(value) and f.name not in ("budget", "target"):
                raise ConfigError(f"--{_flag(f.name)} must be a finite number, got {value}")
            choices = f.metadata.get("choices")
            if choices is not None and value is not None and value not in choices:
                raise ConfigError(f"--{_flag(f.name)} must be one of {', '.join(map(repr, choices))}, got {value!r:.80}")
        cfg = dataclasses.replace(self)
        for key, value in DATASET_DEFAULTS[self.dataset].items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        from ..models import model_info  # here: the command line builds its parser from this module without torch

        info = model_info(cfg.model)  # raises UnknownModelError (a ConfigError) with close matches
        for check in CHECKS.values():
            check(cfg, info)
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
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(f"--freeze-groups-at takes an epoch number or a fraction of the schedule, got {x!r}")
        if any(c in text for c in ".eE") or isinstance(x, float):
            if not 0 < value <= 1:
                raise ConfigError(f"--freeze-groups-at {x}: a fraction of the schedule must be in (0, 1]")
            return max(1, round(value * int(self.epochs or 0)))
        epoch = int(value)
        if not 1 <= epoch <= int(self.epochs or 0):
            raise ConfigError(f"--freeze-groups-at {x} is outside the schedule: give an epoch in [1, {self.epochs}] or a fraction")
        return epoch


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _positive_int(cfg: TrainConfig, *names: str, zero: bool = False) -> None:
    for name in names:
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero else 1)):
            raise ConfigError(f"--{_flag(name)} must be {'0 or more' if zero else 'a positive integer'}, got {v!r}")


def _check_model(cfg: TrainConfig, info: Any) -> None:
    """model and budget: the budget (or target) and the model that has to learn under it."""
    from ..budget.constraint import check_budget
    from ..layer.conv import check_group_limits

    if cfg.budget == "default":
        cfg.budget = None if cfg.target is not None else info.budget
    if isinstance(cfg.budget, str):
        raise ConfigError(f"budget must be a number, 'default' or None, got {cfg.budget!r}")
    check_budget(cfg.budget, cfg.target)
    if (cfg.budget is not None or cfg.target is not None) and not info.dgconv:
        raise ConfigError(f"model {cfg.model!r} has no DGConv layers: a budget or target needs a g_* model (or --budget none)")
    check_group_limits(cfg.min_group_width, cfg.max_groups, learnable=info.dgconv)
    if not cfg.alpha < 0:
        raise ConfigError(f"alpha must be negative, got {cfg.alpha}")
    if not cfg.dual_lr > 0:
        raise ConfigError(f"dual learning rate must be positive, got {cfg.dual_lr}")
    if cfg.cost == "latency" and not cfg.latency_table:
        raise ConfigError("--cost latency needs --latency-table FILE (measure one with `dgconv latency MODEL --out FILE`)")
    if (cfg.trust_latency_table or cfg.latency_table) and cfg.cost != "latency":
        raise ConfigError(f"--latency-table and --trust-latency-table apply to --cost latency (the cost is {cfg.cost!r})")
    if cfg.groups is not None and cfg.groups_from:
        raise ConfigError("give --groups or --groups-from, not both")
    _positive_int(cfg, "groups")
    if cfg.structure_from is not None:
        if not info.dgconv:
            raise ConfigError(f"--structure-from rebuilds a learned G-network's structure: model {cfg.model!r} has "
                              f"no DGConv layers (give the g_* model the structure was learned with)")
        if cfg.groups is not None or cfg.groups_from or cfg.budget is not None or cfg.freeze_groups_at is not None:
            raise ConfigError("--structure-from fixes every layer's groups and channel order: give it with "
                              "--budget none and without --groups, --groups-from or --freeze-groups-at")
    if cfg.gate_init is not None and not cfg.gate_init > 0:
        raise ConfigError(f"--gate-init must be positive, got {cfg.gate_init}")


def _check_groups(cfg: TrainConfig, info: Any) -> None:
    """learning the groups, faster: options that only a network learning its groups takes."""
    gate_options = cfg.freeze_groups_at is not None or cfg.gate_batch_fraction != 1.0 or cfg.gate_every != 1
    if gate_options and not info.dgconv:
        raise ConfigError(f"model {cfg.model!r} has no DGConv layers: --freeze-groups-at, --gate-batch-fraction and "
                          f"--gate-every apply to learned groups (a g_* model)")
    if not 0 < cfg.gate_batch_fraction <= 1:
        raise ConfigError(f"gate batch fraction must be in (0, 1], got {cfg.gate_batch_fraction}")
    if isinstance(cfg.gate_every, bool) or cfg.gate_every < 1:
        raise ConfigError(f"gate-every must be a positive integer (1: every step), got {cfg.gate_every!r}")


def _check_data(cfg: TrainConfig, info: Any) -> None:
    """data: where the images come from and how they are read."""
    _positive_int(cfg, "limit_train", "limit_test", "image_size")
    _positive_int(cfg, "workers", "crop_padding", zero=True)
    if not 0 < cfg.crop_scale <= 1:
        raise ConfigError(f"--crop-scale must be in (0, 1], got {cfg.crop_scale!r}")
    if (cfg.mean is None) != (cfg.std is None):
        raise ConfigError("give --mean and --std together (one value per image channel each)")
    if cfg.mean is not None and (len(cfg.mean) != len(cfg.std) or any(not s > 0 for s in cfg.std)):  # type: ignore[arg-type]
        raise ConfigError(f"--mean and --std need the same number of values (one per channel), std positive; got "
                          f"{cfg.mean} and {cfg.std}")
    if cfg.download and cfg.dataset not in ("cifar10", "cifar100"):
        raise ConfigError(f"--download fetches CIFAR-10/100; {cfg.dataset} is not downloadable")
    if cfg.dataset != "digits" and not cfg.data_dir:
        raise ConfigError(f"--dataset {cfg.dataset} needs --data-dir")


def _check_optimisation(cfg: TrainConfig, info: Any) -> None:
    """optimisation: the schedule and the optimizer."""
    _positive_int(cfg, "epochs")
    if cfg.epochs is None:
        raise ConfigError("epochs must be a positive integer, got None")
    auto = cfg.batch_size == "auto" and cfg.dataset == "imagefolder"
    if not auto and (not isinstance(cfg.batch_size, int) or isinstance(cfg.batch_size, bool) or cfg.batch_size < 1):
        raise ConfigError(f"batch size must be a positive integer, got {cfg.batch_size!r}")
    for name, ok, rule in (("lr", cfg.lr is not None and cfg.lr > 0, "positive"),
                           ("momentum", 0 <= cfg.momentum < 1, "in [0, 1)"),
                           ("weight_decay", cfg.weight_decay >= 0, "0 or more"),
                           ("warmup_epochs", 0 <= cfg.warmup_epochs < cfg.epochs, "in [0, epochs)"),
                           ("label_smoothing", 0 <= cfg.label_smoothing < 1, "in [0, 1)"),
                           ("lookahead_alpha", 0 < cfg.lookahead_alpha <= 1, "in (0, 1]"),
                           ("norm_bias_lr_scale", cfg.norm_bias_lr_scale > 0, "positive"),
                           ("seed", 0 <= cfg.seed < 2**63, "in [0, 2^63)")):
        if not ok:
            raise ConfigError(f"--{_flag(name)} must be {rule}, got {getattr(cfg, name)}")
    if cfg.nesterov and not cfg.momentum > 0:
        raise ConfigError("--nesterov needs a positive --momentum")
    _positive_int(cfg, "lookahead", zero=True)
    if cfg.lookahead_ramp and not cfg.lookahead:
        raise ConfigError("--lookahead-ramp needs --lookahead K")
    cfg.freeze_epoch()  # validates --freeze-groups-at against the schedule


def _check_run(cfg: TrainConfig, info: Any) -> None:
    """the run: where and how it executes."""
    _positive_int(cfg, "threads")


#: The checks of :meth:`TrainConfig.resolved` after the per-field ones, one per option group (:data:`GROUPS`).
CHECKS = {"model": _check_model, "groups": _check_groups, "data": _check_data, "optimisation": _check_optimisation,
          "run": _check_run}


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
    saved = {**LEGACY, **saved}  # fields a run recorded before they existed: what it ran with
    merged = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    merged.download = False  # a checkpoint (a file anyone can craft) never chooses to fetch anything, or where to
    for k in RESUMABLE_OVERRIDES:
        if k in explicit:
            setattr(merged, k, getattr(cfg, k))
    merged.resume = cfg.resume
    return merged


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}


def check_type(name: str, value: Any, source: str = "") -> None:
    """Raise :class:`ConfigError` unless ``value`` has the declared type of the :class:`TrainConfig` field ``name``
    (an int is a float too; a bool is never a number). ``source`` names where the value came from (a file)."""
    where = f" in {source}" if source else ""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if name not in fields:
        import difflib

        close = difflib.get_close_matches(name, list(fields), n=1)
        raise ConfigError(f"unknown option {name!r}{where}" + (f"; did you mean {close[0]!r}?" if close else ""))
    declared = str(fields[name].type)
    for alternative in (t.strip() for t in declared.split("|")):
        if alternative.startswith("list["):
            inner = _TYPES[alternative[5:-1]]
            if isinstance(value, list) and all(_is(v, inner) for v in value):
                return
        elif _is(value, _TYPES[alternative]):
            return
    raise ConfigError(f"option {name!r}{where} must be {declared.replace('None', 'null')}, got {short(value)} "
                      f"({type(value).__name__})")


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
