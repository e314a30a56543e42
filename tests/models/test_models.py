"""Model zoo: registry, torchvision parameter parity, G-ResNeXt(32) == ResNeXt-32x4d, ResNeXt* from a spec."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgconv import DGConv2d
from dgconv.models import (
    ResNet,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
)

PAPER_NAMES = [
    "resnet50", "resnet101", "resnet200", "resnext50_32x4d", "resnext101_32x4d", "resnext101_32x8d",
    "resnext101_64x4d", "resnext101_2x64d", "g_resnext50", "g_resnext101", "g_resnext101_2x64d",
    "resnext29_8x64d", "resnext29_16x64d", "resnext29_32x4d", "g_resnext29_8x64d", "g_resnext29_16x64d",
    "g_resnext29_32x4d",
]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_has_the_paper_names_and_small_members():
    names = list_models()
    for n in PAPER_NAMES + ["resnext_cifar_tiny", "g_resnext_cifar_tiny", "resnext_digits", "g_resnext_digits"]:
        assert n in names
    assert list_models("g_*") == [n for n in names if n.startswith("g_")]
    assert all(model_info(n).dgconv == n.startswith("g_") for n in names)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match="Did you mean: resnext50_32x4d") as e:
        create_model("resnext50_32x8d")
    assert isinstance(e.value, ValueError)
    with pytest.raises(UnknownModelError, match="list_models"):
        create_model("vit_base")


@pytest.mark.parametrize(
    "name,count",
    [("resnet50", 25_557_032), ("resnext50_32x4d", 25_028_904), ("resnext101_32x8d", 88_791_336),
     ("resnet18", 11_689_512), ("resnext101_64x4d", 83_455_272)],
)
def test_parameter_counts_match_torchvision(name, count):
    assert n_params(create_model(name)) == count


def test_resnext29_sizes_match_the_resnext_paper():
    # Xie et al. 2017, Table 7: 34.4M and 68.1M parameters (CIFAR-10 heads)
    assert round(n_params(create_model("resnext29_8x64d", num_classes=10)) / 1e6, 1) == 34.4
    assert round(n_params(create_model("resnext29_16x64d", num_classes=10)) / 1e6, 1) == 68.2


def _copy_resnext_into_g_resnext(src: ResNet, dst: ResNet, groups: int) -> None:
    """Independent weight transfer: group-conv weights go into the block diagonal of the dense weights."""
    state = dst.state_dict()
    for key, value in src.state_dict().items():
        if key.endswith("conv2.weight") and state[key].shape != value.shape:
            dense = torch.zeros_like(state[key])
            out, ig = value.shape[:2]
            og = out // groups
            for j in range(groups):
                dense[j * og:(j + 1) * og, j * ig:(j + 1) * ig] = value[j * og:(j + 1) * og]
            state[key] = dense
        else:
            state[key] = value
    dst.load_state_dict(state)
    for m in dst.modules():
        if isinstance(m, DGConv2d):
            m.set_groups(groups)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_g_resnext50_at_32_groups_equals_resnext50_32x4d(mode):
    torch.manual_seed(0)
    ref = create_model("resnext50_32x4d", num_classes=10)
    g = create_model("g_resnext50", num_classes=10)
    assert g.group_conv_names == ref.group_conv_names and len(g.group_conv_names) == 16
    _copy_resnext_into_g_resnext(ref, g, 32)
    # nothing but the 3x3 group convolutions differs (Table 1)
    kinds = lambda m: [type(x).__name__ for x in m.modules()]  # noqa: E731
    assert [k.replace("DGConv2d", "Conv2d") for k in kinds(g)] == kinds(ref)
    x = torch.randn(2, 3, 96, 96)
    getattr(ref, mode)()
    getattr(g, mode)()
    torch.testing.assert_close(g(x), ref(x), rtol=1e-4, atol=1e-4)


def test_resnext_star_from_a_group_spec():
    spec = {"layer1.0.conv2": 1, "layer1.1.conv2": 4, "layer3.2.conv2": 256, "layer2.0.conv2": 64}
    m = create_model("resnext29_32x4d", num_classes=10, groups=spec)
    for name, mod in m.named_modules():
        if name in spec:
            assert isinstance(mod, nn.Conv2d) and mod.groups == spec[name]
        elif name in m.group_conv_names:
            assert mod.groups == 32
    assert len(m.group_conv_names) == 9
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # a G-ResNeXt can start from a spec as well
    g = create_model("g_resnext29_32x4d", num_classes=10, groups=spec)
    assert g.layer1[1].conv2.groups == 4 and isinstance(g.layer1[1].conv2, DGConv2d)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"groups": {"layer9.0.conv2": 2}}, "not group-convolution layers"),
        ({"groups": {"layer1.0.conv1": 2}}, "not group-convolution layers"),
        ({"groups": {"layer1.0.conv2": 3}}, "positive divisor of its width 128"),
        ({"groups": {"layer1.0.conv2": 0}}, "positive divisor"),
        ({"groups": "32"}, "groups must be an int or a mapping"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"in_chans": -1}, "in_chans"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("resnext29_32x4d", **kwargs)


def test_basic_block_refuses_groups():
    with pytest.raises(ValueError, match="Bottleneck"):
        create_model("resnet18", groups=2)


def test_initialisation_follows_section_4():
    torch.manual_seed(0)
    m = create_model("g_resnext29_32x4d", num_classes=10, zero_init_residual=True)
    for name, mod in m.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert torch.all(mod.bias == 0)
            assert torch.all(mod.weight == (0 if name.endswith("bn3") else 1)), name
        if isinstance(mod, DGConv2d):
            assert torch.all(mod.gate.abs() == torch.tensor(1e-8))
            # He normal, fan-out: std = sqrt(2 / (out * 9))
            std = (2 / (mod.out_channels * 9)) ** 0.5
            assert abs(mod.weight.std().item() / std - 1) < 0.05


@pytest.mark.parametrize("name", ["resnext_digits", "g_resnext_digits", "g_resnext_cifar_tiny", "resnext_cifar_small"])
def test_small_models_run_at_their_input_size(name):
    info = model_info(name)
    m = create_model(name, num_classes=10)
    y = m(torch.randn(2, *info.input_size))
    assert y.shape == (2, 10)
    y.sum().backward()


def test_in_chans_and_scripting_of_plain_models():
    m = create_model("resnext_digits", num_classes=10)
    scripted = torch.jit.script(m.eval())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(scripted(x), m(x))
