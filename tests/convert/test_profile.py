"""profile(): MACs and parameters against an independent analytic count and FlopCounterMode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dgconv import DGConv2d, profile
from dgconv.models import create_model


def gresnext50_gconv_macs(groups: list[int]) -> int:
    """Σ H'W' C^2 / G 9 over the 16 bottleneck 3x3 layers of (G-)ResNeXt-50 at 224x224, by hand."""
    widths = [128] * 3 + [256] * 4 + [512] * 6 + [1024] * 3
    sizes = [56] * 3 + [28] * 4 + [14] * 6 + [7] * 3
    return sum(s * s * c * c // g * 9 for c, s, g in zip(widths, sizes, groups))


def test_resnext50_32x4d_costs_4_23_gmacs():
    p = profile(create_model("resnext50_32x4d"), (3, 224, 224))
    assert round(p.macs / 1e9, 2) == 4.23
    assert p.flops == 2 * p.macs
    assert p.gconv_macs == gresnext50_gconv_macs([32] * 16)
    assert p.params == p.deployed_params == 25_028_904


def test_total_equals_flop_counter_on_a_plain_model():
    m = create_model("resnext29_32x4d", num_classes=10).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.zeros(1, 3, 32, 32))
    p = profile(m, (3, 32, 32))
    assert p.macs * 2 == fc.get_total_flops()


@pytest.mark.parametrize("seed", range(4))
def test_g_resnext50_gconv_macs_at_random_groups(seed):
    gen = torch.Generator().manual_seed(seed)
    m = create_model("g_resnext50")
    groups = []
    for mod in m.modules():
        if isinstance(mod, DGConv2d):
            bits = torch.randint(0, 2, (len(mod.factors),), generator=gen)
            mod.gate.data = torch.where(bits.bool(), 1.0, -1.0)
            groups.append(math.prod(p for p, b in zip(mod.factors, bits.tolist()) if not b))
    p = profile(m, (3, 224, 224))
    assert p.gconv_macs == gresnext50_gconv_macs(groups)
    base = profile(create_model("resnext50_32x4d"), (3, 224, 224))
    ratio = p.gconv_macs / base.gconv_macs
    assert ratio == pytest.approx(gresnext50_gconv_macs(groups) / gresnext50_gconv_macs([32] * 16))
    # everything outside the GConv layers is the same network
    assert p.macs - p.gconv_macs == base.macs - base.gconv_macs
    # deployed parameters: dense weights shrink to in-group weights, gates vanish
    widths = [128] * 3 + [256] * 4 + [512] * 6 + [1024] * 3
    assert p.deployed_params == base.params + sum(c * c * 9 // g - c * c * 9 // 32 for c, g in zip(widths, groups))


def test_per_layer_breakdown_and_other_ops():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = DGConv2d(8, 16, 3, padding=1, groups=4, bias=False)
            self.plain = nn.Conv2d(16, 16, 1)
            self.w = nn.Parameter(torch.randn(16, 5))

        def forward(self, x):
            y = self.plain(self.conv(x))
            return y.mean((2, 3)) @ self.w  # a matmul outside any layer

    p = profile(Net(), (8, 6, 6), group_conv_names=None)
    conv, plain = p.layers
    assert (conv.name, conv.kind, conv.groups, conv.output_hw, conv.group_conv) == ("conv", "DGConv2d", 4, (6, 6), True)
    assert conv.macs == 36 * 16 * 2 * 9
    assert conv.deployed_params == 16 * 2 * 9 and conv.params == 16 * 8 * 9 + 3
    assert plain.macs == 36 * 16 * 16 and not plain.group_conv
    assert p.other_macs == 16 * 5
    assert p.macs == conv.macs + plain.macs + 16 * 5
    assert "GConv MACs" in p.table() and "conv" in p.table()
    assert p.to_dict()["layers"][0]["name"] == "conv"


def test_profile_restores_training_mode_and_rejects_bad_sizes():
    m = create_model("g_resnext_digits", num_classes=10).train()
    before = m.layer1[0].bn1.running_mean.clone()
    profile(m, (1, 8, 8))
    assert m.training and torch.equal(before, m.layer1[0].bn1.running_mean)
    with pytest.raises(ValueError, match="channels, height, width"):
        profile(m, (8, 8))
