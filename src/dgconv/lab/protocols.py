"""Named experiment protocols (``dgconv sweep --protocol NAME``) as data: what runs, with which options and seeds.

A protocol is a list of *arms*; an arm is one configuration trained with one or more seeds:

* ``plain`` -- the plain network with ``value`` groups in every group convolution (the ResNeXt baseline);
* ``g`` -- the G-network learning its groups under budget ``b = value`` in cost ``cost``;
* ``star`` -- ResNeXt*: the plain network built from the groups a ``g`` arm learned (same budget, cost and seed),
  trained from scratch (phase 2 of the sweep).

Runs are named by :class:`dgconv.train.rundir.RunName` (``resnext-g32``, ``g-b32``, ``g-macs-b32-s1``, ``star-b96``).
Nothing here touches files; :mod:`dgconv.lab.sweep` runs a protocol and :mod:`dgconv.lab.results` renders it.

Example::

    >>> [str(r.name) for r in planned_runs(PROTOCOLS["cpu"])][:3]
    ['resnext-g32', 'g-b32', 'g-b64']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..train.options import parse_flags
from ..train.runs import RunName, groups_document

__all__ = ["Arm", "Protocol", "PlannedRun", "PROTOCOLS", "HAND_RULES", "arms_of", "planned_runs", "protocol_from_dict",
           "constant_width_groups"]


def constant_width_groups(model: str, b: float, input_size: tuple[int, int, int] = (3, 32, 32)) -> dict[str, int]:
    """The hand-set non-uniform rule ``"width"`` (written down before any run of it): one group width ``w`` (input
    channels per group) for every group convolution -- fewer groups where a layer has few channels, as ResNeXt's
    stages keep their cardinality while widening -- each layer taking the largest divisor of ``gcd(C_in, C_out)``
    not above ``C_in / w``, and ``w`` the widest power of two whose group-convolution MACs do not exceed those of
    ``b`` groups everywhere (clipped the same way). Equal or lower MACs than the uniform arm it is compared with.

    Example::

        >>> constant_width_groups("fastnet", 16)
        {'block1.conv1': 4, 'block1.conv2': 16, 'block2.conv1': 16, 'block2.conv2': 64, 'block3.conv1': 64, 'block3.conv2': 64}
    """
    import math

    from ..models import create_model
    from ..profile import profile

    net = create_model(model, num_classes=10)
    shapes = {n: (net.get_submodule(n).in_channels, net.get_submodule(n).out_channels) for n in net.group_conv_names}
    target = profile(create_model(model, num_classes=10, groups=int(b)), input_size).gconv_macs

    def spec(width: int) -> dict[str, int]:
        out = {}
        for n, (cin, cout) in shapes.items():
            limit, d = max(1, cin // width), math.gcd(cin, cout)
            out[n] = max(g for g in range(1, d + 1) if d % g == 0 and g <= limit)
        return out

    width = max(cin for cin, _ in shapes.values())
    width = 1 << (width.bit_length() - 1)
    while width > 1 and profile(create_model(model, num_classes=10, groups=spec(width)), input_size).gconv_macs > target:
        width //= 2
    return spec(width)


#: Hand-set group rules a plain arm may name (``Arm(rule=...)``): model name and b -> groups per layer.
HAND_RULES = {"width": constant_width_groups}


@dataclass(frozen=True)
class Arm:
    """One configuration of a protocol, trained once per seed (see the module docstring)."""

    kind: str
    value: float
    cost: str = "connections"
    seeds: tuple[int, ...] = (0,)
    model: str | None = None  # plain arms: another plain network than the protocol's (e.g. fastnet_shuffle)
    rule: str | None = None  # plain arms: groups per layer by a hand-set rule at the MACs of `value` groups (HAND_RULES)

    def family(self, family: str) -> str:
        """The name a plain arm's runs carry: the protocol's family, or the arm's model, plus its rule."""
        base = self.model or family
        return f"{base}_{self.rule}" if self.rule else base

    def names(self, family: str) -> list[RunName]:
        return [RunName(self.kind, self.value, self.cost, s, self.family(family) if self.kind == "plain" else family)
                for s in self.seeds]


@dataclass(frozen=True)
class Protocol:
    """A named experiment. Unless ``arms`` lists them, the arms are derived from the fields: the plain baseline
    (``baseline_groups``, ``baseline_seeds``); for every cost in ``costs`` a ``g`` arm per budget (the first budget
    with ``seeds``, the others with seed 0) and a ``star`` arm per ``star_budgets``."""

    name: str
    label: str
    model: str
    plain: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    baseline_groups: int = 32
    budgets: tuple[float, ...] = (32, 64, 96, 128)
    seeds: tuple[int, ...] = (0, 1, 2)
    star_budgets: tuple[float, ...] = (32, 96)
    amp: bool = False
    channels_last: bool = False
    device: str | None = None
    parallel: int = 1
    limit_train: int | None = None
    limit_test: int | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)
    g_extra: tuple[str, ...] = field(default_factory=tuple)  # options of the runs that learn groups only
    costs: tuple[str, ...] = ("connections",)
    budgets_by_cost: dict[str, tuple[float, ...]] = field(default_factory=dict)  # a cost's own budgets (else budgets)
    baseline_seeds: tuple[int, ...] = (0,)
    family: str = "resnext"
    arms: tuple[Arm, ...] = ()
    max_seeds: int | None = None  # keep only the first N seeds of every arm (a rehearsal)


PROTOCOLS: dict[str, Protocol] = {
    "cpu": Protocol(
        name="cpu",
        label="smoke test (2 CPU cores, few epochs): checks the pipeline, not the paper's claims",
        model="g_resnext_cifar_tiny",
        plain="resnext_cifar_tiny",
        # Measured on 2 CPU cores (results/cpu, run with --epochs 4): ~60 s per epoch for the ResNeXt runs,
        # ~170 s for G-ResNeXt at its learned groups; 3 epochs of all nine runs take about an hour.
        epochs=3,
        batch_size=128,
        lr=0.1,
        device="cpu",
        parallel=1,
        costs=("connections", "macs"),
        # In MACs the tiny model's first DGConv layer (64 channels, at most 64 groups) holds a third of the compute, so
        # a MAC budget above b = 109 is unreachable (every layer at its most groups still costs more).
        budgets_by_cost={"macs": (32, 64, 96)},
        baseline_seeds=(0, 1, 2),
    ),
    "gpu": Protocol(
        name="gpu",
        label="one H200, ResNeXt-29 32x4d class, 30 epochs, search then train (split over several GPU sessions)",
        model="g_resnext29_32x4d",
        plain="resnext29_32x4d",
        # Measured on one H200 in 0.1 (3-epoch runs): ~4 s per ResNeXt-29 epoch and ~7.5 s per exact G-ResNeXt-29
        # epoch. With the groups frozen after 30 % of the schedule a G run costs about 2.5 minutes, the 19 runs
        # about 45 minutes: several sessions, each resuming from the run directories the last brought back.
        epochs=30,
        batch_size=256,
        lr=0.2,
        warmup_epochs=1.0,
        amp=True,
        channels_last=True,
        device="cuda",
        parallel=1,  # measured on an H200: 7 runs at once had less total throughput than one alone
        extra=("--label-smoothing", "0.1"),
        g_extra=("--freeze-groups-at", "0.3"),
        costs=("connections", "macs"),
        baseline_seeds=(0, 1, 2),
    ),
    # The fast-recipe arm: at equal cost, do learned groups beat fixed uniform groups? A small VGG-like net
    # (dgconv.models.fastnet) trained 10 epochs with a fast recipe; key arms with 8 seeds, the others with 3.
    "gpu-fast": Protocol(
        name="gpu-fast",
        label="one H200, FastNet with a fast recipe (10 epochs): learned vs fixed uniform groups at equal cost",
        model="g_fastnet",
        plain="fastnet",
        family="fastnet",
        epochs=10,
        batch_size=1024,
        lr=1.5,
        # The published recipe's decay (0.0153 per kilo-step, sum-reduced loss, lr 11.5 per kilo-step, momentum 0.85)
        # is 1.3e-3 in our mean-loss units at lr 1.5. 5e-5 (first H200 session, results/gpu-fast-wd5e-5) left a
        # 5-point gap between training and test accuracy and a dense net at 87.8 %; 1.3e-3 gave 87.4 % (train 89 %), so
        # decay is not what keeps the dense net below the 92.5 % aimed for. Not yet ported from the published recipe
        # (next GPU session): batch-norm scales frozen at 1 with biases at 64x the learning rate, the whitening
        # layer's bias trained for the first epochs, partly identity (Dirac) initialisation, its warm-up/decay shape,
        # and its lookahead schedule: ours moves the slow weights half way from the first step (halving early
        # progress; the dense runs underfit, train accuracy 89 %), the published one ramps the averaging in as t^3
        # (`--lookahead-ramp`, not yet measured on a GPU).
        weight_decay=1.3e-3,
        warmup_epochs=2.0,
        baseline_groups=1,
        budgets=(4, 16),
        star_budgets=(4, 16),
        amp=True,
        channels_last=True,
        device="cuda",
        # A small net leaves an H200 mostly idle: several runs at once. Measured 2026-11-29: the 42 runs took 242 s with 4
        # at once (one H200, 16 CPU cores); one at a time was not measured.
        parallel=4,
        extra=("--momentum", "0.85", "--nesterov", "--schedule", "triangle", "--label-smoothing", "0.2",
               "--lookahead", "5", "--tta", "flip", "--crop-padding", "2"),
        costs=("macs", "connections"),
        arms=(
            Arm("plain", 1, seeds=tuple(range(8))),      # dense
            Arm("plain", 16, seeds=tuple(range(8))),     # fixed G = 16 everywhere (8 in the first convolution)
            Arm("g", 16, "macs", tuple(range(8))),       # learned under a MAC budget as expensive as G = 16
            Arm("plain", 4, seeds=(0, 1, 2)),
            Arm("g", 4, "macs", (0, 1, 2)),
            Arm("g", 4, "connections", (0, 1, 2)),
            Arm("g", 16, "connections", (0, 1, 2)),
            Arm("star", 4, "macs", (0, 1, 2)),           # the groups learned under MACs, retrained as fixed groups
            Arm("star", 16, "macs", (0, 1, 2)),
        ),
    ),
}


# gpu-fair (issue 20): gpu-fast's recipe and network, with the hand-set arms a practitioner would set instead of
# learning, at equal or lower MACs: contiguous groups (gpu-fast's fixed arm: disconnected towers), the same groups
# with a channel shuffle after every group convolution (fastnet_shuffle, ShuffleNet's answer to connectivity), and the
# non-uniform rule "width" (constant_width_groups: one group width for every layer, so fewer groups where a layer has
# few channels). The rules were written here before any run of this protocol. A new sweep directory: results/gpu-fast
# keeps the runs of its own arms.
_SEEDS8, _SEEDS3 = tuple(range(8)), (0, 1, 2)
PROTOCOLS["gpu-fair"] = dataclasses.replace(
    PROTOCOLS["gpu-fast"],
    name="gpu-fair",
    label="one H200, FastNet (10 epochs): learned groups against the strongest hand-set groups at equal MACs",
    arms=(
        Arm("plain", 1, seeds=_SEEDS8),                                  # dense
        Arm("plain", 16, seeds=_SEEDS8),                                 # contiguous G = 16 (8 in the first layer)
        Arm("plain", 16, seeds=_SEEDS8, model="fastnet_shuffle"),        # G = 16 + channel shuffle
        Arm("plain", 16, seeds=_SEEDS8, rule="width"),                   # hand-set non-uniform, <= G = 16's MACs
        Arm("g", 16, "macs", _SEEDS8),                                   # learned under a MAC budget
        Arm("g", 16, "connections", _SEEDS3),                            # learned under the paper's connection cost
        Arm("plain", 4, seeds=_SEEDS3),
        Arm("plain", 4, seeds=_SEEDS3, model="fastnet_shuffle"),
        Arm("plain", 4, seeds=_SEEDS3, rule="width"),
        Arm("g", 4, "macs", _SEEDS3),
        Arm("g", 4, "connections", _SEEDS3),
        Arm("star", 16, "macs", _SEEDS3),                                # learned group numbers, contiguous, retrained
        Arm("star", 4, "macs", _SEEDS3),
    ),
)


def protocol_from_dict(d: dict[str, Any]) -> Protocol:
    """The :class:`Protocol` a ``sweep.json`` recorded (lists back to tuples; fields it predates take their defaults)."""
    names = {f.name for f in dataclasses.fields(Protocol)}
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k not in names:
            continue
        if k == "arms":
            v = tuple(Arm(a["kind"], a["value"], a.get("cost", "connections"), tuple(a.get("seeds", (0,))),
                          a.get("model"), a.get("rule")) for a in v)
        elif k == "budgets_by_cost":
            v = {cost: tuple(b) for cost, b in v.items()}
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return Protocol(**kw)


def arms_of(p: Protocol) -> list[Arm]:
    """The arms of a protocol, baseline first (each cut to ``p.max_seeds`` seeds when that is set)."""
    arms = list(p.arms) if p.arms else _derived_arms(p)
    if p.max_seeds:
        arms = [dataclasses.replace(a, seeds=a.seeds[: p.max_seeds]) for a in arms]
    return arms


def _derived_arms(p: Protocol) -> list[Arm]:
    arms = [Arm("plain", p.baseline_groups, seeds=tuple(p.baseline_seeds))]
    for cost in p.costs:
        for i, b in enumerate(p.budgets_by_cost.get(cost, p.budgets)):
            arms.append(Arm("g", b, cost, tuple(p.seeds) if i == 0 else (0,)))
    for cost in p.costs:
        for b in p.star_budgets:
            arms.append(Arm("star", b, cost))
    return arms


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its name, its phase (2: needs phase 1's learned groups) and its ``dgconv train`` options
    as typed :class:`~dgconv.train.config.TrainConfig` values (``{sweep}`` in a path stands for the sweep directory)."""

    name: RunName
    phase: int
    options: dict[str, Any]
    files: dict[str, Any] = field(default_factory=dict)  # JSON documents the sweep writes into its directory first


def _common(p: Protocol) -> dict[str, Any]:
    warmup = min(p.warmup_epochs, p.epochs / 5)  # at most a fifth of the schedule (short smoke runs too)
    common: dict[str, Any] = {"dataset": "cifar10", "epochs": p.epochs, "batch_size": p.batch_size, "lr": float(p.lr),
                              "weight_decay": float(p.weight_decay), "warmup_epochs": float(warmup), "progress": False}
    if p.amp:
        common["amp"] = True
    if p.channels_last:
        common["channels_last"] = True
    if p.device:
        common["device"] = p.device
    if p.limit_train:
        common["limit_train"] = p.limit_train
    if p.limit_test:
        common["limit_test"] = p.limit_test
    return {**common, **parse_flags(p.extra)}  # recorded as flags (sweep.json), passed as values


def planned_runs(p: Protocol) -> list[PlannedRun]:
    """The runs of a protocol in order: phase 1 (seed 0 of every plain and ``g`` arm, then the other seeds), phase 2
    (the ``star`` arms, built from phase 1's learned groups)."""
    common = _common(p)
    g_extra = parse_flags(p.g_extra)
    first: list[PlannedRun] = []
    later: list[PlannedRun] = []
    phase2: list[PlannedRun] = []
    for arm in arms_of(p):
        for name in arm.names(p.family):
            files: dict[str, Any] = {}
            if arm.kind == "plain" and arm.rule:
                model = arm.model or p.plain
                spec_file = f"{name.family}-g{int(arm.value)}.groups.json"  # one per arm, shared by its seeds
                files[spec_file] = groups_document(HAND_RULES[arm.rule](model, arm.value), {}, model)
                options = {"model": model, "budget": None, "groups_from": f"{{sweep}}/{spec_file}", "seed": name.seed,
                           **common}
            elif arm.kind == "plain":
                options = {"model": arm.model or p.plain, "budget": None, "groups": int(arm.value), "seed": name.seed,
                           **common}
            elif arm.kind == "g":
                cost = {} if arm.cost == "connections" else {"cost": arm.cost}
                options = {"model": p.model, "budget": float(arm.value), **cost, "seed": name.seed, **common, **g_extra}
            else:
                source = f"{{sweep}}/{name.source}/groups.json"
                phase2.append(PlannedRun(name, 2, {"model": p.plain, "budget": None, "groups_from": source,
                                                    "seed": name.seed, **common}))
                continue
            (first if name.seed == arm.seeds[0] else later).append(PlannedRun(name, 1, options, files))
    return first + later + phase2
