"""``groupify``: the group convolutions of any ConvNet (ours, torchvision's, timm's, yours) become DGConv layers
that compute exactly what they computed and can then learn their groups. The way back is :mod:`dgconv.convert.deploy`."""

from __future__ import annotations

import copy
import fnmatch
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, overload

from torch import nn

from ..layer.conv import GATE_INIT, DGConv2d

__all__ = ["groupify", "GroupifyReport", "Selector", "set_module"]

_logger = logging.getLogger(__name__)


Selector = str | Sequence[str] | Callable[[str, nn.Conv2d], bool]


def _selected(include: Selector) -> Callable[[str, nn.Module], bool]:
    if callable(include):
        return lambda name, m: isinstance(m, nn.Conv2d) and bool(include(name, m))
    if include == "grouped":
        return lambda name, m: isinstance(m, nn.Conv2d) and m.groups > 1 and max(m.kernel_size) > 1
    if include == "3x3":
        return lambda name, m: isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3)
    if include == "all":
        return lambda name, m: isinstance(m, nn.Conv2d)
    if isinstance(include, str):
        raise ValueError(f"include must be 'grouped', '3x3', 'all', a list of name patterns or a callable, got {include!r}")
    patterns = list(include)
    return lambda name, m: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@dataclass(frozen=True)
class GroupifyReport:
    """What :func:`groupify` did: the layers it converted, and the selected ones it left as they were (and why)."""

    converted: list[str]
    skipped: dict[str, str]


@overload
def groupify(model: nn.Module, include: Selector = ..., impl: str = ..., *, fill: str = ..., gate_magnitude: float = ...,
             strict: bool = ..., report: Literal[False] = False) -> nn.Module: ...
@overload
def groupify(model: nn.Module, include: Selector = ..., impl: str = ..., *, fill: str = ..., gate_magnitude: float = ...,
             strict: bool = ..., report: Literal[True]) -> tuple[nn.Module, GroupifyReport]: ...


def groupify(model: nn.Module, include: Selector = "grouped", impl: str = "auto", *, fill: str = "init",
             gate_magnitude: float = GATE_INIT, strict: bool = False, report: bool = False
             ) -> nn.Module | tuple[nn.Module, GroupifyReport]:
    """A copy of ``model`` whose selected ``nn.Conv2d`` layers are :class:`DGConv2d` (``from_conv``).

    The copy computes exactly the same function at conversion time (each DGConv starts at its conv's
    grouping, weights in the block diagonal) and can then learn its groups.

    Only plain ``nn.Conv2d`` modules whose groups can be learned are converted: a selected convolution with
    ``gcd(in, out) = 1`` (a 3-channel stem) could only ever have one group, so it stays as it is (listed in the report
    with the reason). A selected *subclass* of ``nn.Conv2d`` (timm's ``Conv2dSame``
    pads in its own ``forward``, for instance) could compute something a DGConv2d would not reproduce, so it is
    left as it was and listed: in a logged warning, in the report, and as an error with ``strict=True``.

    Args:
        model: any module (left untouched).
        include: which convolutions: ``"grouped"`` (default: k x k convolutions with ``groups > 1``, e.g. every
            ResNeXt 3x3 and depthwise convolution), ``"3x3"`` (all 3x3 convolutions), ``"all"``, a list of
            module-name patterns (``["layer*.conv2"]``), or a callable ``(name, conv) -> bool``.
        impl: the DGConv implementation for the new layers.
        fill, gate_magnitude: the start of the out-of-group weights and the gates' confidence
            (:meth:`DGConv2d.load_conv`).
        strict: raise instead of skipping layers that cannot be converted.
        report: also return a :class:`GroupifyReport`.

    Raises:
        TypeError: a name pattern selects something that is not an ``nn.Conv2d`` (a transposed or 1-D/3-D
            convolution, a linear layer); DGConv is a 2-D convolution. With ``strict``, also a subclass.
        ValueError: nothing was selected, or nothing selected has groups to learn.

    Example::

        >>> from dgconv.models import create_model
        >>> g = groupify(create_model("resnext29_32x4d", num_classes=10))
        >>> sum(isinstance(m, DGConv2d) for m in g.modules())
        9
    """
    pick = _selected(include)
    out = copy.deepcopy(model)
    chosen = [(n, m) for n, m in out.named_modules() if n and pick(n, m)]
    for name, m in chosen:
        if not isinstance(m, nn.Conv2d) or isinstance(m, DGConv2d):
            kind = type(m).__name__
            raise TypeError(f"groupify: {name} is a {kind}, not an nn.Conv2d; DGConv replaces 2-D convolutions only")
    if not chosen:
        raise ValueError(f"groupify: include={include!r} selects no nn.Conv2d in {type(model).__name__}")
    skipped = {name: f"{type(m).__module__}.{type(m).__name__} is a subclass of nn.Conv2d with its own forward"
               for name, m in chosen if type(m) is not nn.Conv2d and not isinstance(m, nn.ConvTranspose2d)}
    if skipped:
        listing = "; ".join(f"{n} ({r.split(' is ')[0]})" for n, r in list(skipped.items())[:5])
        if strict:
            raise TypeError(f"groupify: {len(skipped)} selected layer(s) cannot be converted exactly: {listing}")
        _logger.warning("groupify left %d selected layer(s) as they were (not plain nn.Conv2d): %s%s", len(skipped),
                        listing, " ..." if len(skipped) > 5 else "")
    for name, m in chosen:  # gcd(in, out) = 1 (a 3-channel stem): the only grouping is 1, there is nothing to learn
        if name not in skipped and math.gcd(m.in_channels, m.out_channels) == 1:
            skipped[name] = f"gcd({m.in_channels}, {m.out_channels}) = 1: no gate, groups can only be 1"
    converted = [name for name, _ in chosen if name not in skipped]
    if not converted:
        raise ValueError(f"groupify: include={include!r} selects no convolution whose groups can be learned in "
                         f"{type(model).__name__} (skipped: {'; '.join(f'{n}: {r}' for n, r in list(skipped.items())[:3])})")
    for name, m in chosen:
        if name not in skipped:
            set_module(out, name, DGConv2d.from_conv(m, impl=impl, fill=fill, gate_magnitude=gate_magnitude))
    names = getattr(out, "group_conv_names", None)
    if isinstance(names, list):
        order = [n for n, _ in out.named_modules()]
        out.group_conv_names = sorted(set(names) | set(converted), key=order.index)
    return (out, GroupifyReport(converted, skipped)) if report else out
