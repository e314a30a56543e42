"""How the runs of a sweep are named (:class:`RunName`): a run directory's name says which arm, budget, cost and seed
it is, so that a sweep directory can be read back without any other index."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RunName", "ARMS"]


_NAME = re.compile(
    r"^(?:(?P<family>[a-z][a-z0-9_]*)-g(?P<groups>\d+)"
    r"|(?:(?P<tag>[a-z][a-z0-9_]*)-)?(?P<arm>g|star|struct)(?:-(?P<cost>connections|macs|latency))?-b(?P<budget>[0-9.]+))"
    r"(?:-s(?P<seed>\d+))?$"
)

#: The kinds of run a sweep names (see :class:`RunName`).
ARMS = ("plain", "g", "star", "struct")


@dataclass(frozen=True)
class RunName:
    """The name of a run inside a sweep directory, and what it says about the run.

    ``arm``: ``"plain"`` (a network with ``value`` groups in every group convolution; named by its ``family``,
    e.g. ``resnext-g32``), ``"g"`` (groups learned under budget ``b = value``: ``g-b32``, ``g-macs-b32``),
    ``"star"`` (ResNeXt* -- a plain network built from the groups a ``"g"`` run learned, trained from scratch:
    ``star-b32``, ``star-macs-b32``) or ``"struct"`` (the structure a ``"g"`` run deploys to -- its groups *and*
    channel order -- trained from scratch: ``struct-macs-b16``). ``cost`` is the budget's cost measure (omitted from
    the name for the paper's ``connections``); a seed other than 0 is appended as ``-s<seed>``. ``tag`` prefixes
    the learned kinds when a sweep learns groups in more than one network (``mix-g-macs-b16``: the G-network of the
    mixing control); plain runs are told apart by their family already.

    Example::

        >>> str(RunName("g", 32, cost="macs", seed=1))
        'g-macs-b32-s1'
        >>> RunName.parse("resnext-g32")
        RunName(arm='plain', value=32, cost='connections', seed=0, family='resnext', tag=None)
        >>> str(RunName.parse("mix-struct-macs-b16-s2").source)
        'mix-g-macs-b16-s2'
    """

    arm: str
    value: float
    cost: str = "connections"
    seed: int = 0
    family: str = "resnext"
    tag: str | None = None

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"run arm must be one of {', '.join(map(repr, ARMS))}, got {self.arm!r}")
        if self.tag is not None and (self.arm == "plain" or not re.fullmatch(r"[a-z][a-z0-9_]*", self.tag)
                                     or self.tag in ARMS):
            raise ValueError(f"a run tag is a lower-case word for a learned arm, got {self.tag!r} on {self.arm!r}")

    def __str__(self) -> str:
        seed = f"-s{self.seed}" if self.seed else ""
        if self.arm == "plain":
            return f"{self.family}-g{int(self.value)}{seed}"
        cost = "" if self.cost == "connections" else f"-{self.cost}"
        tag = f"{self.tag}-" if self.tag else ""
        return f"{tag}{self.arm}{cost}-b{self.value:g}{seed}"

    @property
    def source(self) -> RunName:
        """For a ``"star"`` or ``"struct"`` run, the ``"g"`` run whose learned groups it trains (same budget, cost,
        seed and tag)."""
        return RunName("g", self.value, self.cost, self.seed, self.family, self.tag)

    @classmethod
    def parse(cls, name: str) -> RunName | None:
        """The :class:`RunName` a directory name spells, or ``None`` for any other name."""
        m = _NAME.match(name)
        if m is None:
            return None
        seed = int(m["seed"] or 0)
        if m["family"]:
            if m["family"] in ARMS:
                return None
            return cls("plain", int(m["groups"]), seed=seed, family=m["family"])
        try:
            value = float(m["budget"])
        except ValueError:
            return None
        value = int(value) if value.is_integer() else value
        if m["tag"] in ARMS:
            return None
        return cls(m["arm"], value, m["cost"] or "connections", seed, tag=m["tag"])
