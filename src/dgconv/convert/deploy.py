"""Deploying: DGConv2d -> nn.Conv2d(groups=G) (``deploy``, ``deploy_in_place``, registered fold rules). The
architecture spec that rebuilds a deployed model is :mod:`dgconv.convert.spec`; the other direction,
nn.Conv2d -> DGConv2d, :mod:`dgconv.convert.groupify`.

Deploying a learned grouping
----------------------------
A DGConv layer at binary gates is a group convolution up to channel permutations: with ``P_in``/``P_out``
sorting the channels by group (:class:`dgconv.layer.grouping.Grouping`),
``y = conv_G(x[:, P_in])[:, P_out^-1]`` where ``conv_G`` holds only the in-group weights
(``C_out * C_in / G * k * k`` parameters). :func:`deploy` folds the permutations into the neighbours where
the graph allows -- in a bottleneck ``conv1 -> bn1 -> relu -> DGConv -> bn2 -> relu -> conv3`` it permutes
the output channels of ``conv1`` and ``bn1`` and the input channels of ``conv3`` after permuting ``bn2`` --
so a deployed G-ResNeXt is a standard ResNeXt with per-layer groups and no runtime shuffle. Elsewhere it
inserts :class:`~dgconv.convert.orders.ChannelPermutation` modules, merges and folds them where the neighbouring
layers can absorb them (:mod:`dgconv.convert.orders`) and says in the summary which remain.
"""

from __future__ import annotations

import dataclasses

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from ..layer.gathers import gather_pairs, memory_format_of
from .groupify import set_module
from .orders import ChannelPermutation, fold_orders
from ..layer.conv import DGConv2d, dgconv_layers
from ..models.registry import model_info

__all__ = [
    "ORDERS",
    "deploy_in_place",
    "deploy",
    "register_fold_rule",
    "FoldSites",
    "DeploySummary",
    "LayerDeployment",
]


_logger = logging.getLogger(__name__)


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


def _grouped_conv(layer: DGConv2d) -> tuple[nn.Conv2d, Tensor, Tensor, Tensor]:
    """The plain grouped convolution of a DGConv layer, in sorted channel order; the permutations; and the flat
    index of its weight rows in the dense weight (``Grouping.weight_index``)."""
    plan = layer.grouping()
    G = plan.groups
    w = layer.weight.detach()
    out_perm, in_perm = plan.out_perm.to(w.device), plan.in_perm.to(w.device)
    index = plan.weight_index.to(w.device)
    weight = gather_pairs(w, index, w.shape[0])
    padding: Any = layer.padding
    conv = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, padding, layer.dilation,
        groups=G, bias=layer.bias is not None, padding_mode=layer.padding_mode, device=w.device, dtype=w.dtype,
    )
    with torch.no_grad():
        conv.weight.data = weight.contiguous(memory_format=memory_format_of(w))
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.detach().index_select(0, out_perm))
    return conv, in_perm, out_perm, index


def _is_identity(p: Tensor) -> bool:
    return bool(torch.equal(p, torch.arange(len(p), device=p.device)))


class _StateEdit:
    """Edits parameters and buffers in place and keeps an optimizer's per-parameter state in step with them (SGD
    momentum, Adam moments: every state tensor shaped like its parameter). Without an optimizer it only edits."""

    def __init__(self, optimizer: torch.optim.Optimizer | None) -> None:
        self.opt = optimizer

    def _states(self, t: Tensor) -> list[Tensor]:
        if self.opt is None:
            return []
        return [v for v in self.opt.state.get(t, {}).values() if isinstance(v, Tensor) and v.shape == t.shape]

    @torch.no_grad()
    def permute(self, t: Tensor | None, dim: int, perm: Tensor) -> None:
        if t is None:
            return
        for v in [t, *self._states(t)]:
            v.copy_(v.index_select(dim, perm))

    @torch.no_grad()
    def gather(self, t: Tensor, dim: int, index: Tensor) -> None:
        """``torch.gather(t, dim, index)`` in place, the optimizer's state alike (a reorder within rows)."""
        for v in [t, *self._states(t)]:
            v.copy_(torch.gather(v, dim, index))

    @torch.no_grad()
    def replace(self, old: Tensor, new: Tensor, gather: Callable[[Tensor], Tensor]) -> None:
        """Put ``new`` where ``old`` was in the optimizer, its state being ``gather(old's state)``."""
        if self.opt is None:
            return
        for group in self.opt.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        state = self.opt.state.pop(old, None)
        if state is not None:
            self.opt.state[new] = {k: gather(v).contiguous(memory_format=memory_format_of(new)).to(v.dtype)
                                   if isinstance(v, Tensor) and v.shape == old.shape else v for k, v in state.items()}

    def drop(self, p: Tensor) -> None:
        if self.opt is None:
            return
        for group in self.opt.param_groups:
            group["params"] = [q for q in group["params"] if q is not p]
        self.opt.state.pop(p, None)


# ------------------------------------------------------------------------------------------------ fold rules
@dataclass(frozen=True)
class FoldSites:
    """Where a DGConv layer's channel permutations can be folded instead of run.

    ``producer``/``producer_norm``: the convolution (and the norm after it) that produce the layer's input through
    channel-wise operations only; their output channels take the input permutation. ``norm``/``consumer``: the
    norm right after the layer and the convolution consuming its output (through channel-wise operations only);
    the norm takes the output permutation and the consumer's input channels take it too. Any field may be
    ``None`` when that side cannot be folded.
    """

    producer: nn.Conv2d | None = None
    producer_norm: nn.Module | None = None
    norm: nn.Module | None = None
    consumer: nn.Conv2d | None = None


#: A rule maps (the block holding the DGConv layer, the attribute name of the layer) to its fold sites, or None.
FoldRule = Callable[[nn.Module, str], "FoldSites | None"]

_FOLD_RULES: dict[type, FoldRule] = {}
_BUILTIN_RULES_LOADED = False


def register_fold_rule(block_type: type, rule: FoldRule) -> None:
    """Teach :func:`deploy` and :func:`dgconv.freeze_groups` where the permutations of a DGConv layer inside blocks
    of ``block_type`` can be folded (in the spirit of Torch-Pruning's ``register_customized_layer``).

    Example::

        >>> class MyBlock(nn.Module): ...
        >>> register_fold_rule(MyBlock, lambda block, child: FoldSites(block.conv_a, block.bn_a, block.bn_b, block.conv_b)
        ...                    if child == "dg" else None)
    """
    if not isinstance(block_type, type):
        raise TypeError(f"register_fold_rule needs a class, got {block_type!r}")
    _FOLD_RULES[block_type] = rule


def _plain_dense(m: Any) -> bool:
    return type(m) is nn.Conv2d and m.groups == 1


def _bn(m: Any) -> bool:
    return isinstance(m, nn.BatchNorm2d)


def _bottleneck_rule(block: nn.Module, child: str) -> FoldSites | None:
    """conv1 -> bn1 -> ReLU -> conv2 (DGConv) -> bn2 -> ReLU -> conv3: our ``Bottleneck`` and torchvision's."""
    if child != "conv2":
        return None
    conv1, bn1, bn2, conv3 = (getattr(block, a, None) for a in ("conv1", "bn1", "bn2", "conv3"))
    input_ok = _plain_dense(conv1) and _bn(bn1)
    output_ok = _bn(bn2) and _plain_dense(conv3)
    return FoldSites(conv1 if input_ok else None, bn1 if input_ok else None, bn2 if output_ok else None,
                     conv3 if output_ok else None)


def _timm_bottleneck_rule(block: nn.Module, child: str) -> FoldSites | None:
    """timm's ResNet ``Bottleneck``: conv1 -> bn1 -> act1 -> conv2 -> bn2 -> drop_block -> act2 -> aa -> conv3; the
    activations and anti-aliasing are channel-wise; a DropBlock is not, so it blocks the output fold."""
    sites = _bottleneck_rule(block, child)
    if sites is None:
        return None
    drop = getattr(block, "drop_block", None)
    if drop is not None and not isinstance(drop, nn.Identity):
        return FoldSites(sites.producer, sites.producer_norm)
    return sites


def _load_builtin_rules() -> None:
    global _BUILTIN_RULES_LOADED
    if _BUILTIN_RULES_LOADED:
        return
    _BUILTIN_RULES_LOADED = True
    from ..models.resnet import Bottleneck

    _FOLD_RULES.setdefault(Bottleneck, _bottleneck_rule)
    try:  # torchvision's Bottleneck has the same forward (optional; may not match the torch build)
        from torchvision.models.resnet import Bottleneck as TVBottleneck

        _FOLD_RULES.setdefault(TVBottleneck, _bottleneck_rule)
    except Exception:  # noqa: BLE001
        pass
    try:  # timm's (optional)
        from timm.models.resnet import Bottleneck as TimmBottleneck

        _FOLD_RULES.setdefault(TimmBottleneck, _timm_bottleneck_rule)
    except Exception:  # noqa: BLE001
        pass


def _fold_sites(root: nn.Module, name: str) -> FoldSites:
    _load_builtin_rules()
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    for klass in type(parent).__mro__:
        rule = _FOLD_RULES.get(klass)
        if rule is not None:
            return rule(parent, child) or FoldSites()
    return FoldSites()


#: How a deployed network runs the channel orders no fold rule takes: ``"fold"`` merges and folds them
#: (:func:`dgconv.convert.orders.fold_orders`) and gathers the rest in the tensor's own layout; ``"gather"`` is
#: dgconv 0.2's ``index_select`` of every order (what runs recorded before 0.3 trained with).
ORDERS = ("fold", "gather")


def deploy_in_place(root: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    orders: str = "fold") -> list[LayerDeployment]:
    """Replace every DGConv layer of ``root`` *in place* by its grouped ``nn.Conv2d`` (what :func:`deploy` does to a
    copy), folding permutations by the fold rules (else inserting :class:`ChannelPermutation`, merged and folded
    further by :func:`~dgconv.convert.orders.fold_orders` unless ``orders="gather"``), and carry ``optimizer``'s
    state of every surviving weight (:func:`dgconv.freeze_groups` trains on from there). Returns one record per
    converted layer."""
    if orders not in ORDERS:
        raise ValueError(f"orders must be one of {ORDERS}, got {orders!r}")
    edit = _StateEdit(optimizer)
    records = []
    for name, layer in dgconv_layers(root):
        conv, in_perm, out_perm, index = _grouped_conv(layer)
        kh, kw = layer.kernel_size
        o, i = layer.out_channels, layer.in_channels
        G = conv.groups
        in_state = "none" if _is_identity(in_perm) else "inserted"
        out_state = "none" if _is_identity(out_perm) else "inserted"
        sites = _fold_sites(root, name)
        if in_state == "inserted" and sites.producer is not None:
            edit.permute(sites.producer.weight, 0, in_perm)
            edit.permute(sites.producer.bias, 0, in_perm)
            for t in _norm_tensors(sites.producer_norm):
                edit.permute(t, 0, in_perm)
            in_state = "folded"
        if out_state == "inserted" and sites.consumer is not None:
            for t in _norm_tensors(sites.norm):
                edit.permute(t, 0, out_perm)
            edit.permute(sites.consumer.weight, 1, out_perm)
            out_state = "folded"
        edit.replace(layer.weight, conv.weight, lambda v: gather_pairs(v, index, o))
        if layer.bias is not None:
            edit.replace(layer.bias, conv.bias, lambda v: v.index_select(0, out_perm))
        edit.drop(layer.gate)
        new: nn.Module = conv
        if in_state == "inserted" or out_state == "inserted":
            parts: list[nn.Module] = []
            if in_state == "inserted":
                parts.append(ChannelPermutation(in_perm, orders == "fold", f"{name} (input)", conv.in_channels))
            parts.append(conv)
            if out_state == "inserted":
                parts.append(ChannelPermutation(torch.argsort(out_perm), orders == "fold", f"{name} (output)",
                                                conv.out_channels))
            new = nn.Sequential(*parts)
        set_module(root, name, new)
        records.append(
            LayerDeployment(
                name, i, o, (kh, kw), G, sum(p.numel() for p in layer.parameters()), sum(p.numel() for p in conv.parameters()),
                i * o * kh * kw, i * o * kh * kw // G, in_state, out_state,
            )
        )
    if orders == "fold" and any("inserted" in (r.input_permutation, r.output_permutation) for r in records):
        fold_orders(root, edit)
        records = [_after_folding(root, r) for r in records]
    cfg = getattr(root, "dgconv_cfg", None)
    if isinstance(cfg, dict) and records:  # the model now is (an instance of) the plain architecture
        plain = model_info(cfg["name"]).plain
        root.dgconv_cfg = {**cfg, "name": plain, "kwargs": _plain_kwargs(cfg["kwargs"], {r.name: r.groups for r in records})}
    return records


def _after_folding(root: nn.Module, r: LayerDeployment) -> LayerDeployment:
    """A record with the permutations :func:`fold_orders` turned into the identity marked "folded"."""
    site = root.get_submodule(r.name)
    if not isinstance(site, nn.Sequential):
        return r
    perms = [m for m in site if isinstance(m, ChannelPermutation)]
    states = []
    for state in (r.input_permutation, r.output_permutation):
        if state == "inserted":
            perm = perms.pop(0)
            state = "folded" if perm.identity else "inserted"
        states.append(state)
    return dataclasses.replace(r, input_permutation=states[0], output_permutation=states[1])


def _plain_kwargs(kwargs: dict[str, Any], groups: dict[str, int]) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in ("min_group_width", "max_groups", "dgconv_impl")}
    return {**out, "groups": groups}


def _norm_tensors(norm: nn.Module | None) -> list[Tensor | None]:
    if norm is None:
        return []
    return [getattr(norm, a, None) for a in ("weight", "bias", "running_mean", "running_var")]


@overload
def deploy(model: nn.Module, *, summary: Literal[False] = False, orders: str = "fold") -> nn.Module: ...
@overload
def deploy(model: nn.Module, *, summary: Literal[True], orders: str = "fold") -> tuple[nn.Module, DeploySummary]: ...


def deploy(model: nn.Module, *, summary: bool = False, orders: str = "fold") -> nn.Module | tuple[nn.Module, DeploySummary]:
    """A copy of ``model`` in which every :class:`DGConv2d` is an ``nn.Conv2d(groups=G)`` at its learned ``G``.

    The copy keeps only the in-group weights (``C_in C_out k^2 / G``), drops the gates, and folds the channel
    permutations of non-adjacent groupings into neighbouring layers where a fold rule says how (bottleneck blocks
    of :mod:`dgconv.models`, torchvision and timm; :func:`register_fold_rule` adds others); elsewhere it inserts
    :class:`ChannelPermutation` modules, which :func:`~dgconv.convert.orders.fold_orders` merges per junction and
    folds where the neighbouring layers can absorb them (``orders="gather"``: left as 0.2 ran them). In eval mode the
    copy computes what ``model`` computes, to float rounding. ``model`` is left untouched.

    Args:
        model: a model with DGConv layers (inside DDP or ``torch.compile`` wrappers too).
        summary: also return a :class:`DeploySummary` (per-layer groups, parameters, permutations).
        orders: ``"fold"`` (default) or ``"gather"`` (:data:`ORDERS`).

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
    records = deploy_in_place(out, orders=orders)
    return (out, DeploySummary(records)) if summary else out
