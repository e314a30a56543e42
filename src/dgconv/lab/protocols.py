"""Named experiment protocols (``dgconv sweep --protocol NAME``) as data: what runs, with which options and seeds.

A protocol is a list of *arms*; an arm is one configuration trained with one or more seeds:

* ``plain`` -- the plain network with ``value`` groups in every group convolution (the ResNeXt baseline);
* ``g`` -- the G-network learning its groups under budget ``b = value`` in cost ``cost``;
* ``star`` -- ResNeXt*: the plain network built from the groups a ``g`` arm learned (same budget, cost and seed),
  trained from scratch (phase 2 of the sweep);
* ``struct`` -- the structure a ``g`` arm deploys to, its groups *and* its channel order, trained from scratch
  (phase 2; ``dgconv train --structure-from``).

A learned arm (``g``, ``star``, ``struct``) may name its own G-network (``model``) and then carries a ``tag`` that
prefixes its run names (``mix-g-macs-b16``), so that one sweep can learn groups in several networks.

Runs are named by :class:`dgconv.lab.names.RunName` (``resnext-g32``, ``g-b32``, ``g-macs-b32-s1``, ``star-b96``).
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
from ..train.runs import groups_document
from .names import RunName
from .arms import HAND_RULES, Arm, Protocol, arms_of, check_macs, plain_of

__all__ = ["PlannedRun", "PROTOCOLS", "planned_runs", "common_options"]


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


# cpu-fair (issue 28): the fair comparison of gpu-fair, sized to the machine we always have -- 2 CPU cores, one run at
# a time on ONE thread (so that other work on the second core leaves its timings alone), committed run by run.
#
# Schedule, fixed from measurements made before any run of it (2026-12-06, the 2-core AMD EPYC guest, torch 2.13 CPU,
# one thread, batch 256; seconds for 8,192 training images plus 1,000 test images in one epoch, start-up excluded):
#   fastnet G=16 30 s (58.9 s for 16,384), fastnet_shuffle G=16 47.9 s, g_fastnet learning under MACs 47.6 s, dense
#   fastnet 92.9 s, fastnet_mix (64/256/256) G=16 61.1 s, its G-network 83.6 s, fastnet_const (128 x 3) G=16 29.1 s,
#   its G-network 65.2 s. Two threads were 1.6x faster than one on a quiet machine (19.5 s vs 28.1 s for 8,192 + 2,000
#   at batch 512), and batch 1,024 was 1.6x slower per image than 512 (cache); batches 128-512 cost the same.
#   The mixing control's 1x1 layers at widths 64/256/256 cost 2.0x the plain net per step (a step micro-benchmark),
#   at 64/128/128 1.16x (its G-network 1.5x): the control uses 64/128/128 (block 1 as in FastNet).
# Chosen: 4 epochs of the first 10,240 training images (40 steps of 256 each: 160 steps, as many as the GPU recipe's
# first 4 epochs at batch 1,024 make 192), the first 5,000 test images without TTA, gpu-fast's recipe otherwise
# (triangle schedule with 0.8 warm-up epochs, label smoothing 0.2, lookahead 5, Nesterov 0.85, decay 1.3e-3, crop
# padding 2). Learning rate 1.2: of 0.4 / 0.8 / 1.2 / 1.6 on the contiguous G=16 arm (seed 0, one run each), the
# final training loss was 1.750 / 1.650 / 1.623 / 1.611 (test 50.5 / 57.1 / 58.6 / 58.6 %); 1.2 is the middle of the
# flat part. A contiguous run then takes about 150 s (37 s an epoch); the whole sweep (see seconds_per_run) about 5.5
# hours. The G arms search, then train (--freeze-groups-at 0.3: after epoch 1 of 4), as the product recommends.
# Hand-set rules written here before any run: contiguous G; G with a channel shuffle (fastnet_shuffle); the constant
# group width rule "width" (constant_width_groups). b = 4 compares the learned groups with BOTH the shuffle and the
# width rule (the strongest hand-set arm is whichever of them is more accurate at b = 4).
_SEEDS4, _SEEDS2 = (0, 1, 2, 3), (0, 1)
PROTOCOLS["cpu-fair"] = Protocol(
    name="cpu-fair",
    label="2 CPU cores, one thread a run, FastNet (4 short epochs): learned groups against the strongest hand-set "
          "groups at equal MACs, with a mixing and a depth control",
    model="g_fastnet",
    plain="fastnet",
    family="fastnet",
    epochs=4,
    batch_size=256,
    lr=1.2,
    weight_decay=1.3e-3,
    warmup_epochs=0.8,
    device="cpu",
    parallel=1,
    limit_train=10240,
    limit_test=5000,
    extra=("--momentum", "0.85", "--nesterov", "--schedule", "triangle", "--label-smoothing", "0.2",
           "--lookahead", "5", "--crop-padding", "2", "--threads", "1"),
    g_extra=("--freeze-groups-at", "0.3"),
    costs=("macs", "connections"),
    equal_macs=True,
    budget_hours=6.0,
    arms=(
        # b = 16: learned against every hand-set arm, 8 seeds each
        Arm("plain", 16, seeds=_SEEDS8),                                  # contiguous G = 16 (8 in the first layer)
        Arm("plain", 16, seeds=_SEEDS8, model="fastnet_shuffle"),         # G = 16 + channel shuffle
        Arm("plain", 16, seeds=_SEEDS8, rule="width"),                    # constant group width, <= G = 16's MACs
        Arm("g", 16, "macs", _SEEDS8),                                    # learned under a MAC budget
        # the mixing control: a dense 1x1 after every group convolution (every arm equally connected)
        Arm("plain", 16, seeds=_SEEDS8, model="fastnet_mix"),
        Arm("plain", 16, seeds=_SEEDS8, model="fastnet_mix", rule="width"),
        Arm("g", 16, "macs", _SEEDS8, model="g_fastnet_mix", tag="mix"),
        # b = 4: learned against the shuffle and the width rule
        Arm("plain", 4, seeds=_SEEDS4, model="fastnet_shuffle"),
        Arm("plain", 4, seeds=_SEEDS4, rule="width"),
        Arm("g", 4, "macs", _SEEDS4),
        # the depth control: one width (128) in every block, learned under connections and under MACs
        Arm("g", 16, "connections", _SEEDS4, model="g_fastnet_const", tag="depth"),
        Arm("g", 16, "macs", _SEEDS4, model="g_fastnet_const", tag="depth"),
        Arm("plain", 1, seeds=_SEEDS2),                                   # dense: the ceiling
        # phase 2: what the MAC-learned b = 16 nets learned, trained from scratch
        Arm("star", 16, "macs", _SEEDS8),                                 # their group numbers, contiguous
        Arm("struct", 16, "macs", _SEEDS8),                               # their groups with their channel order
    ),
    # Measured (one thread, quiet) seconds per run of each arm, for the estimate the sweep prints before it starts;
    # finished runs replace them as they come.
    seconds_per_run={
        "fastnet-g16": 155, "fastnet_shuffle-g16": 245, "fastnet_width-g16": 150, "g-macs-b16": 235,
        "fastnet_mix-g16": 180, "fastnet_mix_width-g16": 175, "mix-g-macs-b16": 230, "fastnet_shuffle-g4": 270,
        "fastnet_width-g4": 175, "g-macs-b4": 260, "depth-g-b16": 240, "depth-g-macs-b16": 240, "fastnet-g1": 470,
        "star-macs-b16": 150, "struct-macs-b16": 230,
    },
)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its name, its phase (2: needs phase 1's learned groups) and its ``dgconv train`` options
    as typed :class:`~dgconv.train.config.TrainConfig` values (``{sweep}`` in a path stands for the sweep directory)."""

    name: RunName
    phase: int
    options: dict[str, Any]
    files: dict[str, Any] = field(default_factory=dict)  # JSON documents the sweep writes into its directory first


def common_options(p: Protocol) -> dict[str, Any]:
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
    (the ``star`` and ``struct`` arms, built from phase 1's learned groups).

    Raises:
        ConfigError: with ``p.equal_macs``, an arm whose MACs exceed those of the uniform arm it is compared with
            (:func:`check_macs`).
    """
    if p.equal_macs:
        check_macs(p)
    common = common_options(p)
    g_extra = parse_flags(p.g_extra)
    first: list[PlannedRun] = []
    later: list[PlannedRun] = []
    phase2: list[PlannedRun] = []
    for arm in arms_of(p):
        g_model = arm.model if arm.kind != "plain" and arm.model else p.model
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
                options = {"model": g_model, "budget": float(arm.value), **cost, "seed": name.seed, **common, **g_extra}
            else:
                source = f"{{sweep}}/{name.source}/groups.json"
                if arm.kind == "star":
                    options = {"model": plain_of(g_model, p), "budget": None, "groups_from": source}
                else:
                    options = {"model": g_model, "budget": None, "structure_from": source}
                phase2.append(PlannedRun(name, 2, {**options, "seed": name.seed, **common}))
                continue
            (first if name.seed == arm.seeds[0] else later).append(PlannedRun(name, 1, options, files))
    return first + later + phase2
