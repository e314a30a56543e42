"""Conversions between plain convolutions and DGConv: ``groupify`` (nn.Conv2d -> DGConv2d), ``deploy``
(DGConv2d -> nn.Conv2d(groups=G)), and the architecture spec that rebuilds a deployed model.

Deploying a learned grouping
----------------------------
A DGConv layer at binary gates is a group convolution up to channel permutations: with ``P_in``/``P_out``
sorting the channels by group (:class:`dgconv.grouping.Grouping`),
``y = conv_G(x[:, P_in])[:, P_out^-1]`` where ``conv_G`` holds only the in-group weights
(``C_out * C_in / G * k * k`` parameters). :func:`deploy` folds the permutations into the neighbours where
the graph allows -- in a bottleneck ``conv1 -> bn1 -> relu -> DGConv -> bn2 -> relu -> conv3`` it permutes
the output channels of ``conv1`` and ``bn1`` and the input channels of ``conv3`` after permuting ``bn2`` --
so a deployed G-ResNeXt is a standard ResNeXt with per-layer groups and no runtime shuffle. Elsewhere it
inserts a :class:`ChannelPermutation` module and says so in the summary.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from .constraint import dgconv_layers, learned_groups
from .layers import DGConv2d
from .models.registry import create_model, model_info

__all__ = [
    "groupify",
    "deploy",
    "DeploySummary",
    "LayerDeployment",
    "ChannelPermutation",
    "architecture_spec",
    "save_deployed",
    "load_deployed",
    "learned_groups",
]

SPEC_FORMAT = "dgconv.deployed/1"


class ChannelPermutation(nn.Module):
    """``x[:, index]``: reorders channels. Only inserted by :func:`deploy` where no fold is possible."""

    def __init__(self, index: Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index.clone().long())

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.index)


# ------------------------------------------------------------------------------------------------ groupify
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


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def groupify(model: nn.Module, include: Selector = "grouped", impl: str = "auto") -> nn.Module:
    """A copy of ``model`` whose selected ``nn.Conv2d`` layers are :class:`DGConv2d` (``from_conv``).

    The copy computes exactly the same function at conversion time (each DGConv starts at its conv's
    grouping, weights in the block diagonal) and can then learn its groups.

    Args:
        model: any module (left untouched).
        include: which convolutions: ``"grouped"`` (default: k x k convolutions with ``groups > 1``, e.g. every
            ResNeXt 3x3), ``"3x3"`` (all 3x3 convolutions), ``"all"``, a list of module-name patterns
            (``["layer*.conv2"]``), or a callable ``(name, conv) -> bool``.
        impl: the DGConv implementation for the new layers.

    Raises:
        TypeError: a name pattern selects something that is not an ``nn.Conv2d`` (a transposed or 1-D/3-D
            convolution, a linear layer); DGConv is a 2-D convolution.
        ValueError: nothing was selected.

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
    for name, m in chosen:
        _set_module(out, name, DGConv2d.from_conv(m, impl=impl))
    names = getattr(out, "group_conv_names", None)
    if isinstance(names, list):
        order = [n for n, _ in out.named_modules()]
        out.group_conv_names = sorted(set(names) | {n for n, _ in chosen}, key=order.index)
    return out


# ------------------------------------------------------------------------------------------------ deploy
@dataclass(frozen=True)
class LayerDeployment:
    """What :func:`deploy` did to one DGConv layer."""

    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    groups: int
    params_before: int  # dense weight + bias + gates
    params_after: int
    macs_before_per_pixel: int  # dense masked convolution, per output pixel
    macs_after_per_pixel: int
    input_permutation: str  # "none", "folded" or "inserted"
    output_permutation: str


@dataclass(frozen=True)
class DeploySummary:
    layers: list[LayerDeployment]

    @property
    def inserted(self) -> list[str]:
        """Layers that needed a runtime :class:`ChannelPermutation` (empty for G-ResNeXt)."""
        return [lp.name for lp in self.layers if "inserted" in (lp.input_permutation, lp.output_permutation)]

    def table(self) -> str:
        head = f"{'layer':<20} {'in':>5} {'out':>5} {'groups':>6} {'params before -> after':>26} {'MACs/pixel before -> after':>30}  perm in/out"
        lines = [head, "-" * len(head)]
        for lp in self.layers:
            lines.append(
                f"{lp.name:<20} {lp.in_channels:>5} {lp.out_channels:>5} {lp.groups:>6} "
                f"{lp.params_before:>12,} -> {lp.params_after:<10,} {lp.macs_before_per_pixel:>14,} -> {lp.macs_after_per_pixel:<12,}"
                f"  {lp.input_permutation}/{lp.output_permutation}"
            )
        pb, pa = sum(lp.params_before for lp in self.layers), sum(lp.params_after for lp in self.layers)
        lines.append(f"{'total':<20} {'':>5} {'':>5} {'':>6} {pb:>12,} -> {pa:<10,}")
        if self.inserted:
            lines.append(f"note: no fold was possible for {', '.join(self.inserted)}: ChannelPermutation modules inserted")
        return "\n".join(lines)


def _grouped_conv(layer: DGConv2d) -> tuple[nn.Conv2d, Tensor, Tensor]:
    """The plain grouped convolution of a DGConv layer, in sorted channel order, and the permutations."""
    plan = layer.grouping()
    G = plan.groups
    w = layer.weight.detach()
    out_perm, in_perm = plan.out_perm.to(w.device), plan.in_perm.to(w.device)
    cols = plan.in_group_inputs.to(w.device)  # (out, in/G): input channels of each sorted row's group
    weight = w.index_select(0, out_perm).gather(1, cols[:, :, None, None].expand(-1, -1, *w.shape[2:]))
    padding: Any = layer.padding
    conv = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, padding, layer.dilation,
        groups=G, bias=layer.bias is not None, padding_mode=layer.padding_mode, device=w.device, dtype=w.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.detach().index_select(0, out_perm))
    return conv, in_perm, out_perm


def _is_identity(p: Tensor) -> bool:
    return bool(torch.equal(p, torch.arange(len(p), device=p.device)))


def _permute_rows_(conv: nn.Conv2d, perm: Tensor) -> None:
    with torch.no_grad():
        conv.weight.copy_(conv.weight.index_select(0, perm))
        if conv.bias is not None:
            conv.bias.copy_(conv.bias.index_select(0, perm))


def _permute_cols_(conv: nn.Conv2d, perm: Tensor) -> None:
    with torch.no_grad():
        conv.weight.copy_(conv.weight.index_select(1, perm))


def _permute_bn_(bn: nn.BatchNorm2d, perm: Tensor) -> None:
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            if t is not None:
                t.copy_(t.index_select(0, perm))


def _bottleneck_parent(root: nn.Module, name: str) -> nn.Module | None:
    """The block around a DGConv at ``<block>.conv2`` if its forward is known: conv1-bn1-relu-conv2-bn2-relu-conv3."""
    parent_name, _, child = name.rpartition(".")
    if child != "conv2":
        return None
    parent = root.get_submodule(parent_name) if parent_name else root
    known: list[type] = []
    from .models.resnet import Bottleneck

    known.append(Bottleneck)
    try:  # torchvision's Bottleneck has the same forward
        from torchvision.models.resnet import Bottleneck as TVBottleneck

        known.append(TVBottleneck)
    except Exception:  # noqa: BLE001 - torchvision is optional and may not match the torch build
        pass
    if not isinstance(parent, tuple(known)):
        return None
    if not all(isinstance(getattr(parent, a, None), nn.BatchNorm2d) for a in ("bn1", "bn2")):
        return None
    return parent


def _plain_dense(m: Any) -> bool:
    return type(m) is nn.Conv2d and m.groups == 1


@overload
def deploy(model: nn.Module, *, summary: Literal[False] = False) -> nn.Module: ...
@overload
def deploy(model: nn.Module, *, summary: Literal[True]) -> tuple[nn.Module, DeploySummary]: ...


def deploy(model: nn.Module, *, summary: bool = False) -> nn.Module | tuple[nn.Module, DeploySummary]:
    """A copy of ``model`` in which every :class:`DGConv2d` is an ``nn.Conv2d(groups=G)`` at its learned ``G``.

    The copy keeps only the in-group weights (``C_in C_out k^2 / G``), drops the gates, and folds the channel
    permutations of non-adjacent groupings into neighbouring layers where the graph allows (bottleneck blocks
    of :mod:`dgconv.models` and torchvision); elsewhere it inserts :class:`ChannelPermutation` modules. In eval
    mode the copy computes what ``model`` computes, to float rounding. ``model`` is left untouched.

    Args:
        model: a model with DGConv layers (inside DDP or ``torch.compile`` wrappers too).
        summary: also return a :class:`DeploySummary` (per-layer groups, parameters, permutations).

    Example::

        >>> from dgconv.models import create_model
        >>> g = create_model("g_resnext_digits", num_classes=10)
        >>> plain = deploy(g)
        >>> any(isinstance(m, DGConv2d) for m in plain.modules())
        False
    """
    source = getattr(model, "module", model)
    source = getattr(source, "_orig_mod", source)
    out = copy.deepcopy(source)
    records = []
    for name, layer in dgconv_layers(out):
        conv, in_perm, out_perm = _grouped_conv(layer)
        kh, kw = layer.kernel_size
        G = conv.groups
        in_state = "none" if _is_identity(in_perm) else "inserted"
        out_state = "none" if _is_identity(out_perm) else "inserted"
        block = _bottleneck_parent(out, name)
        new: nn.Module = conv
        if block is not None and in_state == "inserted" and _plain_dense(block.conv1):
            _permute_rows_(block.conv1, in_perm)
            _permute_bn_(block.bn1, in_perm)
            in_state = "folded"
        if block is not None and out_state == "inserted" and _plain_dense(getattr(block, "conv3", None)):
            _permute_bn_(block.bn2, out_perm)
            _permute_cols_(block.conv3, out_perm)
            out_state = "folded"
        if in_state == "inserted" or out_state == "inserted":
            parts: list[nn.Module] = []
            if in_state == "inserted":
                parts.append(ChannelPermutation(in_perm))
            parts.append(conv)
            if out_state == "inserted":
                parts.append(ChannelPermutation(torch.argsort(out_perm)))
            new = nn.Sequential(*parts)
        _set_module(out, name, new)
        records.append(
            LayerDeployment(
                name, layer.in_channels, layer.out_channels, (kh, kw), G,
                sum(p.numel() for p in layer.parameters()), sum(p.numel() for p in conv.parameters()),
                layer.in_channels * layer.out_channels * kh * kw, layer.in_channels * layer.out_channels * kh * kw // G,
                in_state, out_state,
            )
        )
    cfg = getattr(out, "dgconv_cfg", None)
    if isinstance(cfg, dict):  # the copy now is (an instance of) the plain architecture
        plain = model_info(cfg["name"]).plain
        out.dgconv_cfg = {**cfg, "name": plain, "kwargs": {**cfg["kwargs"], "groups": {r.name: r.groups for r in records}}}
    return (out, DeploySummary(records)) if summary else out


# ------------------------------------------------------------------------------------------------ spec
def architecture_spec(model: nn.Module) -> dict[str, Any]:
    """The JSON architecture spec of a model built by :func:`dgconv.create_model` (G-ResNeXt or deployed).

    ``{"format", "model": plain ResNeXt name, "num_classes", "kwargs": {..., "groups": {name: G}}}``: the
    deployed network is ``create_model(spec["model"], num_classes=spec["num_classes"], **spec["kwargs"])``.
    """
    cfg = getattr(model, "dgconv_cfg", None)
    if not isinstance(cfg, dict):
        raise ValueError("architecture_spec needs a model built by dgconv.create_model (it records how it was built)")
    name = cfg["name"]
    kwargs = dict(cfg["kwargs"])
    groups = learned_groups(model)
    if groups:  # a G-ResNeXt: the plain architecture with its learned groups
        name = model_info(name).plain
        kwargs["groups"] = groups
    kwargs.pop("dgconv_impl", None)
    spec = {"format": SPEC_FORMAT, "model": name, "num_classes": cfg["num_classes"], "kwargs": kwargs}
    json.dumps(spec)  # must be plain JSON
    return spec


def save_deployed(model: nn.Module, path: str | Path) -> tuple[Path, Path]:
    """Save a deployed model as ``PATH`` (its ``state_dict``) and ``PATH.json`` (its architecture spec).

    Returns the two paths. :func:`load_deployed` rebuilds it with ``create_model``; no training code needed.
    """
    if any(isinstance(m, DGConv2d) for m in model.modules()):
        raise ValueError("save_deployed expects a deployed model: call dgconv.deploy(model) first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = architecture_spec(model)
    torch.save(model.state_dict(), path)
    spec_path = path.with_name(path.name + ".json")
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    return path, spec_path


def load_deployed(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_deployed` (``PATH`` or ``PATH.json``): plain ``torch.nn`` modules."""
    path = Path(path)
    if path.suffix == ".json":
        spec_path, weights = path, path.with_suffix("")
    else:
        spec_path, weights = path.with_name(path.name + ".json"), path
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"{spec_path} is not a dgconv deployed-model spec")
    model = create_model(spec["model"], num_classes=spec["num_classes"], **spec["kwargs"])
    model.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
    return model.eval()
