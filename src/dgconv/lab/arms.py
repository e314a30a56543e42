"""The parts of an experiment protocol (:mod:`dgconv.lab.protocols` holds the named ones): arms, the protocol
record, the hand-set group rules, and what an arm costs (its MACs, checked against the uniform arm, and its measured
wall time).

Example::

    >>> arm = Arm("plain", 16, seeds=(0, 1), model="fastnet_shuffle")
    >>> [str(n) for n in arm.names("fastnet")]
    ['fastnet_shuffle-g16', 'fastnet_shuffle-g16-s1']
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from .names import RunName

__all__ = ["Arm", "Protocol", "HAND_RULES", "constant_width_groups", "arms_of", "protocol_from_dict", "plain_of",
           "arm_macs", "check_macs", "arm_label", "estimate_seconds"]


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
    return dict(_constant_width_groups(model, float(b), tuple(input_size)))


@functools.lru_cache(maxsize=64)
def _constant_width_groups(model: str, b: float, input_size: tuple[int, ...]) -> tuple[tuple[str, int], ...]:
    import math

    from ..models import create_model
    from ..convert.profile import profile

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
    return tuple(spec(width).items())


#: Hand-set group rules a plain arm may name (``Arm(rule=...)``): model name and b -> groups per layer.
HAND_RULES = {"width": constant_width_groups}


@dataclass(frozen=True)
class Arm:
    """One configuration of a protocol, trained once per seed (see the module docstring)."""

    kind: str
    value: float
    cost: str = "connections"
    seeds: tuple[int, ...] = (0,)
    model: str | None = None  # plain arms: another plain network (fastnet_shuffle); learned arms: another G-network
    rule: str | None = None  # plain arms: groups per layer by a hand-set rule at the MACs of `value` groups (HAND_RULES)
    tag: str | None = None  # learned arms with their own model: the prefix of their run names

    def __post_init__(self) -> None:
        if self.kind not in ("plain", "g", "star", "struct"):
            raise ValueError(f"arm kind must be 'plain', 'g', 'star' or 'struct', got {self.kind!r}")
        if self.kind != "plain" and bool(self.model) != bool(self.tag):
            raise ValueError(f"a learned arm with its own model needs a tag (and a tag its model): {self}")
        if self.rule is not None and (self.kind != "plain" or self.rule not in HAND_RULES):
            raise ValueError(f"rule {self.rule!r}: plain arms take one of {sorted(HAND_RULES)}")

    def family(self, family: str) -> str:
        """The name a plain arm's runs carry: the protocol's family, or the arm's model, plus its rule."""
        base = self.model or family
        return f"{base}_{self.rule}" if self.rule else base

    def names(self, family: str) -> list[RunName]:
        return [RunName(self.kind, self.value, self.cost, s, self.family(family) if self.kind == "plain" else family,
                        None if self.kind == "plain" else self.tag)
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
    equal_macs: bool = False  # refuse an arm whose MACs exceed the uniform arm's of its network and value
    budget_hours: float | None = None  # the whole sweep's stated time budget (the sweep says so when over it)
    seconds_per_run: dict[str, float] = field(default_factory=dict)  # measured before the sweep, by model name


def protocol_from_dict(d: Any) -> Protocol:
    """The :class:`Protocol` a ``sweep.json`` recorded (lists back to tuples; fields it predates take their defaults).

    Raises:
        ConfigError: the record is not a protocol (a field of the wrong kind, an arm without its kind or value), named.
    """
    from ..errors import ConfigError

    if not isinstance(d, dict):
        raise ConfigError(f"the recorded protocol is a {type(d).__name__}, not a mapping of its fields")
    fields = {f.name: f for f in dataclasses.fields(Protocol)}
    missing = [k for k in ("name", "label", "model", "plain", "epochs", "batch_size", "lr") if k not in d]
    if missing:
        raise ConfigError(f"the recorded protocol lacks {', '.join(missing)}")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k not in fields:
            continue
        try:
            kw[k] = _field_value(k, v)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ConfigError(f"the recorded protocol's {k!r} is malformed ({str(e)[:120]})") from None
        kind = str(fields[k].type)
        ok = {"str": isinstance(kw[k], str), "int": isinstance(kw[k], int) and not isinstance(kw[k], bool),
              "float": isinstance(kw[k], (int, float)) and not isinstance(kw[k], bool)}.get(kind, True)
        if not ok:
            raise ConfigError(f"the recorded protocol's {k!r} must be a {kind}, got {kw[k]!r:.60}")
    return Protocol(**kw)


def _field_value(k: str, v: Any) -> Any:
    if k == "arms":
        return tuple(Arm(str(a["kind"]), _number(a["value"]), str(a.get("cost", "connections")),
                         tuple(int(x) for x in a.get("seeds", (0,))), a.get("model"), a.get("rule"), a.get("tag"))
                     for a in v)
    if k in ("budgets_by_cost", "seconds_per_run"):
        return {str(key): tuple(_number(x) for x in b) if isinstance(b, list) else _number(b) for key, b in v.items()}
    if k in ("budgets", "star_budgets", "costs", "seeds", "baseline_seeds", "extra", "g_extra"):
        if not isinstance(v, list):
            raise TypeError(f"a list, got {type(v).__name__}")
        return tuple(v)
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"a number, got {v!r:.40}")
    return v


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


def plain_of(g_model: str, p: Protocol) -> str:
    """The plain network a G-network of protocol ``p`` deploys to (the protocol's own, or the registered one)."""
    if g_model == p.model:
        return p.plain
    from ..models import model_info

    return model_info(g_model).plain


def arm_macs(p: Protocol, arm: Arm) -> float:
    """The MACs per image of an arm's network as deployed (:func:`dgconv.profile`, every layer): a plain arm's at
    its groups; a ``g`` arm's at most (its budget's ``o`` in MACs plus the layers that learn nothing); ``star`` and
    ``struct`` arms are their ``g`` arm's. ``nan`` for a budget in another cost (it bounds no MACs)."""
    return _arm_macs(p.model, p.plain, arm)


@functools.lru_cache(maxsize=256)
def _arm_macs(p_model: str, p_plain: str, arm: Arm) -> float:
    from ..budget.constraint import ResourceConstraint
    from ..models import create_model, model_info
    from ..convert.profile import profile

    size = model_info(p_model).input_size
    if arm.kind == "plain":
        model = arm.model or p_plain
        groups: Any = HAND_RULES[arm.rule](model, arm.value, size) if arm.rule else int(arm.value)
        return float(profile(create_model(model, num_classes=10, groups=groups), size).macs)
    if arm.cost != "macs":
        return math.nan
    net = create_model(arm.model or p_model, num_classes=10)
    report = profile(net, size)
    o = ResourceConstraint(net, budget=float(arm.value), cost="macs", input_size=size).o
    return float(report.macs - report.gconv_macs + o)


def check_macs(p: Protocol) -> None:
    """Refuse (``ConfigError``) an arm whose MACs (:func:`arm_macs`) exceed those of the uniform arm of its network
    and value -- that network with ``value`` groups in every group convolution -- naming the arm and both counts.
    Hand-set rules and learned budgets in MACs are compared; uniform arms are the reference (a channel shuffle adds
    no MACs to its network's), budgets in other costs bound no MACs, and ``star``/``struct`` arms cost what their
    ``g`` arm learned."""
    from ..errors import ConfigError

    for arm in arms_of(p):
        if arm.kind in ("star", "struct"):
            continue
        if arm.kind == "plain":
            if not arm.rule:
                continue  # a uniform arm of its own network (a shuffle adds no MACs to its network's)
            net = arm.model or p.plain
        else:
            net = plain_of(arm.model or p.model, p)
        base = Arm("plain", arm.value, model=net)
        mine, theirs = arm_macs(p, arm), arm_macs(p, base)
        if mine > theirs:
            raise ConfigError(f"protocol {p.name}: arm {arm_label(arm.names(p.family)[0])} costs {mine:,.0f} MACs, more "
                              f"than the uniform arm {arm_label(base.names(p.family)[0])} ({theirs:,.0f} MACs); arms "
                              f"are compared at equal or lower MACs")


def arm_label(name: RunName) -> str:
    """The arm a run belongs to, as its name without the seed (``g-macs-b16-s3`` -> ``g-macs-b16``): the key of
    :attr:`Protocol.seconds_per_run`."""
    return str(dataclasses.replace(name, seed=0))


def estimate_seconds(p: Protocol, runs: list[Any], measured: dict[str, float] | None = None) -> float | None:
    """The wall time of ``runs`` from seconds per run by arm (:func:`arm_label`): ``measured`` (from finished runs)
    where it knows the arm, else the protocol's ``seconds_per_run``; ``None`` when an arm has neither."""
    table = {**p.seconds_per_run, **(measured or {})}
    total = 0.0
    for r in runs:
        t = table.get(arm_label(r.name))
        if t is None:
            return None
        total += t
    return total
