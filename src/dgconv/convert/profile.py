"""Parameter and MAC accounting, with DGConv layers counted at their *current* learned groups.

Units: **MACs** (multiply-accumulates) everywhere. One MAC is two FLOPs; the paper's "FLOPs" (Table 3) and
torchvision's "GFLOPS" are MAC counts in this sense, so ``resnext50_32x4d`` is about 4.23 GMACs at 224x224.

Convolutions and linear layers are counted analytically from their output shapes (a DGConv2d at its
current ``G``: ``H' W' out (in/G) kh kw``, not the dense weight it stores). Everything else that
:class:`torch.utils.flop_counter.FlopCounterMode` counts (matrix products outside those layers, attention)
is added from one instrumented forward pass. Element-wise work (BN, ReLU, pooling, additions) is not
counted, as in the paper and torchvision.
"""

from __future__ import annotations

import contextlib
import math
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..layer.conv import DGConv2d
from .orders import ChannelPermutation

__all__ = ["profile", "Profile", "LayerProfile", "is_group_conv"]


@dataclass(frozen=True)
class LayerProfile:
    """One convolution or linear layer: where it is, its shape, groups and MACs (batch 1)."""

    name: str
    kind: str  # "DGConv2d", "Conv2d" or "Linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    groups: int
    output_hw: tuple[int, int]
    macs: int
    params: int  # as stored (a DGConv2d stores the dense weight and its gates)
    deployed_params: int  # after dgconv.deploy: a DGConv2d keeps only its in-group weights, no gates
    group_conv: bool


@dataclass(frozen=True)
class Profile:
    """What :func:`profile` measures. All counts are for one input (batch size 1)."""

    input_size: tuple[int, ...]
    params: int
    deployed_params: int
    macs: int
    gconv_macs: int
    other_macs: int
    layers: list[LayerProfile] = field(default_factory=list)
    gathers: dict[str, int] = field(default_factory=dict)  # channel orders run as a gather: values moved per input

    @property
    def flops(self) -> int:
        """``2 * macs`` (one multiply and one add per MAC)."""
        return 2 * self.macs

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (what ``dgconv profile --json`` prints)."""
        return json.loads(json.dumps(asdict(self)))

    def table(self, layers: bool = True) -> str:
        """A plain-text table: per-layer breakdown (optional) and totals."""
        lines = []
        if layers:
            head = f"{'layer':<28} {'kind':<9} {'in':>5} {'out':>5} {'kernel':>6} {'groups':>6} {'out HxW':>8} {'MACs':>14}"
            lines += [head, "-" * len(head)]
            for lp in self.layers:
                k = f"{lp.kernel[0]}x{lp.kernel[1]}"
                hw = f"{lp.output_hw[0]}x{lp.output_hw[1]}"
                mark = "*" if lp.group_conv else " "
                lines.append(
                    f"{lp.name:<28.28} {lp.kind:<9} {lp.in_channels:>5} {lp.out_channels:>5} {k:>6} "
                    f"{lp.groups:>5}{mark} {hw:>8} {lp.macs:>14,}"
                )
            lines.append("(* = group-convolution layer, counted in GConv MACs)")
        lines += [
            f"input size              {'x'.join(map(str, self.input_size))}",
            f"parameters              {self.params:,}",
            f"parameters deployed     {self.deployed_params:,}",
            f"MACs                    {self.macs:,}  ({self.macs / 1e9:.3f} G; FLOPs = 2 x MACs)",
            f"GConv MACs              {self.gconv_macs:,}  ({self.gconv_macs / 1e9:.4f} G)",
        ]
        if self.gathers:
            lines.append(f"channel gathers         {len(self.gathers)} ({sum(self.gathers.values()):,} values moved per input; "
                         f"learned orders no layer could absorb: {', '.join(self.gathers)})")
        return "\n".join(lines)


def is_group_conv(name: str, module: nn.Module, group_conv_names: Iterable[str] | None = None) -> bool:
    """Whether a layer counts as a group convolution ("GConv" in Table 3).

    A model may list its group-convolution slots in ``group_conv_names`` (our ResNet does: the 3x3
    bottleneck convolutions of ResNeXt, ResNeXt* and G-ResNeXt, whatever their current groups); a deployed slot
    that runs channel orders is the convolution inside its wrapper (``<slot>.1``). Otherwise every DGConv2d and
    every ``nn.Conv2d`` with ``groups > 1`` counts.
    """
    if group_conv_names is not None:
        names = set(group_conv_names)
        return name in names or (isinstance(module, nn.Conv2d) and name.rpartition(".")[0] in names)
    return isinstance(module, DGConv2d) or (isinstance(module, nn.Conv2d) and module.groups > 1)


def _layer_params(m: nn.Module) -> tuple[int, int]:
    stored = sum(p.numel() for p in m.parameters(recurse=False))
    if isinstance(m, DGConv2d):
        kh, kw = m.kernel_size
        deployed = m.out_channels * (m.in_channels // m.groups) * kh * kw + (m.out_channels if m.bias is not None else 0)
        return stored, deployed
    return stored, stored


@torch.no_grad()
def _forward_records(model: nn.Module, input_size: Sequence[int], device: Any,
                     count_other: bool) -> tuple[dict[str, tuple[nn.Module, tuple[int, ...]]], int]:
    """One eval-mode forward pass on a zero input: each convolution's and linear layer's output shape, and the MACs
    of everything else (``FlopCounterMode``; 0 unless ``count_other``)."""
    records: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (DGConv2d, nn.Conv2d, nn.Linear)) or (isinstance(m, ChannelPermutation) and not m.identity):
            hooks.append(m.register_forward_hook(lambda mod, inp, out, name=name: records.__setitem__(name, (mod, tuple(out.shape)))))
    was_training = model.training
    model.eval()
    root = type(model).__name__
    try:
        x = torch.zeros(1, *map(int, input_size), device=device)
        counter = FlopCounterMode(display=False) if count_other else None
        with counter if counter is not None else contextlib.nullcontext():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    other_macs = 0
    if counter is not None:
        flops = counter.get_flop_counts()
        counted_in_layers = sum(sum(flops.get(f"{root}.{n}", {}).values()) for n in records)
        other_macs = max(0, (counter.get_total_flops() - counted_in_layers) // 2)
    return records, other_macs


def _layer_profile(name: str, m: nn.Module, shape: tuple[int, ...], names: set[str] | None) -> LayerProfile:
    stored, deployed = _layer_params(m)
    if isinstance(m, nn.Linear):
        rows = 1
        for s in shape[:-1]:
            rows *= s
        macs = rows * m.in_features * m.out_features
        return LayerProfile(name, "Linear", m.in_features, m.out_features, (1, 1), 1, (1, 1), macs, stored, deployed, False)
    groups = m.groups
    kh, kw = m.kernel_size
    hw = (shape[-2], shape[-1])
    macs = hw[0] * hw[1] * m.out_channels * (m.in_channels // groups) * kh * kw
    kind = type(m).__name__ if isinstance(m, DGConv2d) else "Conv2d"
    return LayerProfile(name, kind, m.in_channels, m.out_channels, (kh, kw), groups, hw, macs, stored, deployed,
                        is_group_conv(name, m, names))


def profile(
    model: nn.Module,
    input_size: Sequence[int],
    group_conv_names: Iterable[str] | None = None,
    device: torch.device | str | None = None,
    count_other: bool = True,
) -> Profile:
    """Count parameters and MACs of ``model`` for one input of ``input_size`` = ``(C, H, W)``.

    Runs one forward pass in eval mode on a zero input (the model's training mode is restored; BN statistics
    are not touched). DGConv layers count at their current groups; ``deployed_params`` is the parameter count
    after :func:`dgconv.deploy` (in-group weights only, no gates).

    Args:
        model: any module taking a ``(1, C, H, W)`` tensor.
        input_size: ``(C, H, W)``.
        group_conv_names: names of the layers to count as GConv; default: ``model.group_conv_names`` when the
            model has it, else DGConv2d layers and convolutions with ``groups > 1``.
        device: where to run; default: the device of the model's first parameter.
        count_other: also count matrix products outside convolution and linear layers (with
            ``FlopCounterMode``, whose first use costs seconds); ``False`` counts the layers only.

    Example::

        >>> from dgconv.models import create_model
        >>> p = profile(create_model("resnext50_32x4d"), (3, 224, 224))
        >>> round(p.macs / 1e9, 2), p.params
        (4.23, 25028904)
    """
    if len(input_size) != 3 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"input_size must be (channels, height, width) with positive entries, got {tuple(input_size)}")
    if group_conv_names is None:
        group_conv_names = getattr(model, "group_conv_names", None)
    names = set(group_conv_names) if group_conv_names is not None else None
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")

    records, other_macs = _forward_records(model, input_size, device, count_other)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    gathers = {name: math.prod(shape) for name, (m, shape) in sorted(records.items(), key=lambda i: order[i[0]])
               if isinstance(m, ChannelPermutation)}
    records = {k: v for k, v in records.items() if k not in gathers}
    layers = [_layer_profile(name, m, shape, names) for name, (m, shape) in sorted(records.items(), key=lambda i: order[i[0]])]
    params = sum(p.numel() for p in model.parameters())
    deployed_total = params - sum(stored - deployed for stored, deployed in map(_layer_params, model.modules()))
    layer_macs = sum(lp.macs for lp in layers)
    return Profile(
        input_size=tuple(int(s) for s in input_size),
        params=params,
        deployed_params=deployed_total,
        macs=layer_macs + other_macs,
        gconv_macs=sum(lp.macs for lp in layers if lp.group_conv),
        other_macs=other_macs,
        layers=layers,
        gathers=gathers,
    )
