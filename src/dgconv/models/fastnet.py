"""FastNet: a small VGG-like CIFAR network for fast-recipe experiments (``fastnet``; ``g_fastnet`` learns groups).

Written after the ideas of the fastest published CIFAR-10 recipe (Keller Jordan's airbench: a frozen patch-whitening
first layer, three conv blocks with max-pooling, batch norm and GELU, a scaled linear head), in our own code:

* ``whiten``: a 2x2 convolution (no padding) whose ``2 * 12`` filters are the eigenvectors of the covariance of
  2x2 image patches scaled by ``1/sqrt(eigenvalue + eps)``, in both signs; set from training images by
  :meth:`FastNet.initialize_from_data` (``dgconv train`` calls it before the first step) and frozen;
* three blocks of widths 64, 256, 256: ``conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU``; their six
  3x3 convolutions are the group convolutions (``nn.Conv2d(groups=G)``, or :class:`~dgconv.DGConv2d` in
  ``g_fastnet``);
* a 3x3 max-pool to 1x1, and a linear layer without bias whose output is scaled by 1/9.

The first convolution has 24 inputs, so it can take at most ``gcd(24, 64) = 8`` groups; a uniform ``groups=G`` is
clipped to 8 there (:attr:`group_conv_names` lists the six layers; ``groups`` may also map names to numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..layer.conv import DGConv2d, check_group_limits

__all__ = ["FastNet", "Whitening", "ChannelShuffle"]


class Whitening(nn.Module):
    """A frozen 2x2 patch-whitening convolution with ``2 * C * 4`` outputs (see the module docstring)."""

    def __init__(self, in_chans: int = 3, eps: float = 5e-4) -> None:
        super().__init__()
        k = in_chans * 4
        self.conv = nn.Conv2d(in_chans, 2 * k, 2, padding=0, bias=True)
        self.conv.weight.requires_grad_(False)
        self.eps = eps
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor) -> None:
        """Set the filters from images ``x`` ``(N, C, H, W)`` (normalised as in training)."""
        c = x.shape[1]
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / max(1, len(patches) - 1)
        values, vectors = torch.linalg.eigh(cov.double())
        filters = (vectors.T / torch.sqrt(values.clamp_min(0)[:, None] + self.eps)).reshape(-1, c, 2, 2)
        self.conv.weight.copy_(torch.cat([filters, -filters]).to(self.conv.weight))
        self.conv.bias.zero_()
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: with ``groups`` groups of ``C / groups`` channels, channel ``j`` of group ``i``
    moves to position ``j * groups + i``, so that the next group convolution's every group reads from every group of
    this one (contiguous groups without it are disconnected towers). No parameters; ``groups = 1`` is the identity."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            return x
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def _groups_of(conv: nn.Module) -> int:
    return int(getattr(conv, "groups", 1) or 1)


def _mixer(mix: bool, channels: int) -> nn.Module:
    return nn.Conv2d(channels, channels, 1, bias=False) if mix else nn.Identity()


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, conv: Any, names: tuple[str, str], shuffle: bool = False,
                 mix: bool = False) -> None:
        super().__init__()
        self.conv1 = conv(cin, cout, names[0])
        self.shuffle1 = ChannelShuffle(_groups_of(self.conv1)) if shuffle else nn.Identity()
        self.mix1 = _mixer(mix, cout)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(cout, momentum=0.4)
        self.conv2 = conv(cout, cout, names[1])
        self.shuffle2 = ChannelShuffle(_groups_of(self.conv2)) if shuffle else nn.Identity()
        self.mix2 = _mixer(mix, cout)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.4)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.pool(self.mix1(self.shuffle1(self.conv1(x))))))
        return self.act(self.bn2(self.mix2(self.shuffle2(self.conv2(x)))))


class FastNet(nn.Module):
    """FastNet (see the module docstring).

    Args:
        num_classes, in_chans: classifier outputs and image channels.
        widths: the three blocks' widths.
        groups: an int for every group convolution (clipped to what a layer can take), a mapping from layer name
            (``"block1.conv1"``, ...) to groups, or ``None`` (dense; random gates in a G-network).
        dgconv: the six 3x3 convolutions are :class:`~dgconv.DGConv2d`.
        dgconv_impl, min_group_width, max_groups: passed to each DGConv2d.
        shuffle: a :class:`ChannelShuffle` after every group convolution (``fastnet_shuffle``; plain groups only):
            the hand-set way to connect consecutive group convolutions.
        mix: a dense 1x1 convolution (no bias) after every group convolution (``fastnet_mix``, ``g_fastnet_mix``):
            every grouping is then equally connected, so that comparing groupings compares only how the groups
            are allocated across layers (the mixing control of protocol ``cpu-fair``).
    """

    __jit_ignored_attributes__ = ["group_conv_names", "dgconv_cfg"]

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (64, 256, 256), *,
                 groups: int | Mapping[str, int] | None = None, dgconv: bool = False, dgconv_impl: str = "auto",
                 min_group_width: int | None = None, max_groups: int | None = None, shuffle: bool = False,
                 mix: bool = False) -> None:
        super().__init__()
        if shuffle and dgconv:
            raise ValueError("shuffle is for fixed group convolutions; a G-network learns its channel order")
        if len(widths) != 3 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be three positive ints (one per block), got {widths!r}")
        check_group_limits(min_group_width, max_groups, learnable=dgconv)
        names = [f"block{b}.conv{c}" for b in (1, 2, 3) for c in (1, 2)]
        spec = dict(groups) if isinstance(groups, Mapping) else {}
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ValueError(f"groups names {unknown} are not group-convolution layers of FastNet; they are {names}")
        if groups is not None and not isinstance(groups, Mapping) and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 1):
            raise ValueError(f"groups must be a positive int or a mapping from layer name to int, got {groups!r}")

        def conv(cin: int, cout: int, name: str) -> nn.Module:
            g = spec.get(name, groups if isinstance(groups, int) else None)
            if g is not None:
                g = math.gcd(cin, cout) if g > math.gcd(cin, cout) and name not in spec else g
                if math.gcd(cin, cout) % g:
                    raise ValueError(f"groups for {name} must divide gcd({cin}, {cout}) = {math.gcd(cin, cout)}, got {g}")
            if dgconv:
                return DGConv2d(cin, cout, 3, padding=1, groups=g, bias=False, impl=dgconv_impl,
                                min_group_width=min_group_width, max_groups=max_groups)
            return nn.Conv2d(cin, cout, 3, padding=1, groups=g or 1, bias=False)

        self.whiten = Whitening(in_chans)
        self.act = nn.GELU()
        w0 = 8 * in_chans
        self.block1 = _Block(w0, widths[0], conv, (names[0], names[1]), shuffle, mix)
        self.block2 = _Block(widths[0], widths[1], conv, (names[2], names[3]), shuffle, mix)
        self.block3 = _Block(widths[1], widths[2], conv, (names[4], names[5]), shuffle, mix)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = 1 / 9
        self.group_conv_names = names
        self.dgconv_cfg = None
        self.num_classes = num_classes

    def initialize_from_data(self, x: Tensor) -> None:
        """Set the whitening layer from training images (``dgconv train`` calls this before the first step)."""
        self.whiten.initialize_from_data(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(torch.flatten(self.pool(x), 1)) * self.scale
