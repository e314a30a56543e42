"""Registered builders: ImageNet ResNet / ResNeXt / G-ResNeXt, the CIFAR ResNeXt-29 family, and small
members cheap enough for 2 CPU cores. ``docs/models.md`` lists their sizes and measured throughput."""

from __future__ import annotations

from typing import Any

from .fastnet import FastNet
from .registry import register_model
from .resnet import BasicBlock, Bottleneck, ResNet

IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)
#: Widths of the cpu-fair controls (chosen by measured time on 2 CPU cores: see dgconv.lab.protocols, cpu-fair).
MIX_WIDTHS = (64, 128, 128)
CONST_WIDTHS = (128, 128, 128)


def _imagenet(block: Any, layers: list[int], **kwargs: Any) -> ResNet:
    return ResNet(block, layers, **kwargs)


def _cifar(layers: list[int], *, stage_planes: tuple[int, ...] = (64, 128, 256), **kwargs: Any) -> ResNet:
    kwargs.setdefault("stem", "cifar")
    return ResNet(Bottleneck, layers, stage_planes=stage_planes, **kwargs)


# ----------------------------------------------------------------------------------------- ImageNet
@register_model(input_size=IMAGENET)
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (basic blocks)."""
    return _imagenet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(input_size=IMAGENET)
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (basic blocks)."""
    return _imagenet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(input_size=IMAGENET)
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (25.6M parameters, as torchvision)."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(input_size=IMAGENET)
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model(input_size=IMAGENET)
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152."""
    return _imagenet(Bottleneck, [3, 8, 36, 3], **kwargs)


@register_model(input_size=IMAGENET)
def resnet200(**kwargs: Any) -> ResNet:
    """ResNet-200, the 'deeper' 2x ResNet-101 of Table 4."""
    return _imagenet(Bottleneck, [3, 24, 36, 3], **kwargs)


@register_model(input_size=IMAGENET)
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-50 32x4d (the paper's baseline, Table 1)."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], cardinality=32, base_width=4, **kwargs)


@register_model(input_size=IMAGENET)
def resnext101_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 32x4d."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], cardinality=32, base_width=4, **kwargs)


@register_model(input_size=IMAGENET)
def resnext101_32x8d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 32x8d (88.8M parameters, as torchvision)."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], cardinality=32, base_width=8, **kwargs)


@register_model(input_size=IMAGENET)
def resnext101_64x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 64x4d, the 'cardinality' 2x ResNet-101 of Table 4."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], cardinality=64, base_width=4, **kwargs)


@register_model(input_size=IMAGENET)
def resnext101_2x64d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 2x64d of Table 4 (same widths as 32x4d, 2 groups)."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], cardinality=2, base_width=64, **kwargs)


@register_model(input_size=IMAGENET, dgconv=True, budget=32, plain="resnext50_32x4d")
def g_resnext50(**kwargs: Any) -> ResNet:
    """G-ResNeXt-50: ResNeXt-50 32x4d with every 3x3 group conv a DGConv2d (Table 1)."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], cardinality=32, base_width=4, dgconv=True, **kwargs)


@register_model(input_size=IMAGENET, dgconv=True, budget=4, plain="resnet50")
def g_resnet50(**kwargs: Any) -> ResNet:
    """G-ResNet-50: ResNet-50 with every bottleneck 3x3 a DGConv2d (start from ResNet-50 weights: --init-from)."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], dgconv=True, **kwargs)


@register_model(input_size=IMAGENET, dgconv=True, budget=32, plain="resnext101_32x4d")
def g_resnext101(**kwargs: Any) -> ResNet:
    """G-ResNeXt-101 with the widths of ResNeXt-101 32x4d."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], cardinality=32, base_width=4, dgconv=True, **kwargs)


@register_model(input_size=IMAGENET, dgconv=True, budget=2, plain="resnext101_2x64d")
def g_resnext101_2x64d(**kwargs: Any) -> ResNet:
    """G-ResNeXt-101 of Table 4: 2x64d widths (equal to 32x4d's), trained with b = 2 (2x ResNet-101)."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], cardinality=2, base_width=64, dgconv=True, **kwargs)


# ----------------------------------------------------------------------------------------- CIFAR
# ResNeXt-29 (Xie et al. 2017, §5.3): 3x3 stem of 64, three stages of three bottlenecks with outputs
# 256/512/1024, bottleneck width cardinality * base_width * 2**stage.
@register_model(input_size=CIFAR)
def resnext29_8x64d(**kwargs: Any) -> ResNet:
    """ResNeXt-29 8x64d for CIFAR (34.4M parameters)."""
    return _cifar([3, 3, 3], cardinality=8, base_width=64, **kwargs)


@register_model(input_size=CIFAR)
def resnext29_16x64d(**kwargs: Any) -> ResNet:
    """ResNeXt-29 16x64d for CIFAR (68.2M parameters)."""
    return _cifar([3, 3, 3], cardinality=16, base_width=64, **kwargs)


@register_model(input_size=CIFAR)
def resnext29_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-29 32x4d for CIFAR (widths 128/256/512)."""
    return _cifar([3, 3, 3], cardinality=32, base_width=4, **kwargs)


@register_model(input_size=CIFAR, dgconv=True, budget=8, plain="resnext29_8x64d")
def g_resnext29_8x64d(**kwargs: Any) -> ResNet:
    """G-ResNeXt-29 with the widths of ResNeXt-29 8x64d."""
    return _cifar([3, 3, 3], cardinality=8, base_width=64, dgconv=True, **kwargs)


@register_model(input_size=CIFAR, dgconv=True, budget=16, plain="resnext29_16x64d")
def g_resnext29_16x64d(**kwargs: Any) -> ResNet:
    """G-ResNeXt-29 with the widths of ResNeXt-29 16x64d."""
    return _cifar([3, 3, 3], cardinality=16, base_width=64, dgconv=True, **kwargs)


@register_model(input_size=CIFAR, dgconv=True, budget=32, plain="resnext29_32x4d")
def g_resnext29_32x4d(**kwargs: Any) -> ResNet:
    """G-ResNeXt-29 with the widths of ResNeXt-29 32x4d."""
    return _cifar([3, 3, 3], cardinality=32, base_width=4, dgconv=True, **kwargs)


# Small members for 2 CPU cores: the same topology, fewer blocks, narrower stages, and a stride-2 stem (stages
# at 16/8/4 pixels), which makes them about 7x faster to train on a CPU than a stride-1 stem.
_TINY = dict(stage_planes=(16, 32, 64), stem_width=32, stem_stride=2, cardinality=16, base_width=16)  # widths 64/128/256
_SMALL = dict(stage_planes=(32, 64, 128), stem_width=64, stem_stride=2, cardinality=32, base_width=8)  # widths 128/256/512
_DIGITS = dict(stage_planes=(8, 16, 32), stem_width=16, cardinality=8, base_width=32, in_chans=1)  # widths 32/64/128


@register_model(input_size=CIFAR)
def resnext_cifar_tiny(**kwargs: Any) -> ResNet:
    """ResNeXt-11 for CIFAR: stride-2 stem, one bottleneck per stage, widths 64/128/256 at 16 groups (CPU-sized)."""
    return _cifar([1, 1, 1], **{**_TINY, **kwargs})


@register_model(input_size=CIFAR, dgconv=True, budget=16, plain="resnext_cifar_tiny")
def g_resnext_cifar_tiny(**kwargs: Any) -> ResNet:
    """G-ResNeXt-11 for CIFAR with the widths of resnext_cifar_tiny (CPU-sized)."""
    return _cifar([1, 1, 1], dgconv=True, **{**_TINY, **kwargs})


@register_model(input_size=CIFAR)
def resnext_cifar_small(**kwargs: Any) -> ResNet:
    """ResNeXt-20 for CIFAR: stride-2 stem, two bottlenecks per stage, widths 128/256/512 at 32 groups."""
    return _cifar([2, 2, 2], **{**_SMALL, **kwargs})


@register_model(input_size=CIFAR, dgconv=True, budget=32, plain="resnext_cifar_small")
def g_resnext_cifar_small(**kwargs: Any) -> ResNet:
    """G-ResNeXt-20 for CIFAR with the widths of resnext_cifar_small."""
    return _cifar([2, 2, 2], dgconv=True, **{**_SMALL, **kwargs})


@register_model(input_size=DIGITS)
def resnext_digits(**kwargs: Any) -> ResNet:
    """ResNeXt-11 for 8x8 grayscale digits: widths 32/64/128 at 8 groups."""
    return _cifar([1, 1, 1], **{**_DIGITS, **kwargs})


@register_model(input_size=DIGITS, dgconv=True, budget=8, plain="resnext_digits")
def g_resnext_digits(**kwargs: Any) -> ResNet:
    """G-ResNeXt-11 for 8x8 grayscale digits (the default of `dgconv train`)."""
    return _cifar([1, 1, 1], dgconv=True, **{**_DIGITS, **kwargs})


# ----------------------------------------------------------------------------------------- fast-recipe CIFAR net
@register_model(input_size=CIFAR)
def fastnet(**kwargs: Any) -> FastNet:
    """FastNet for CIFAR: frozen patch whitening, 3 conv blocks 64/256/256 (dense unless groups=), fast-recipe net."""
    kwargs.pop("zero_init_residual", None)  # no residual branches
    return FastNet(**kwargs)


@register_model(input_size=CIFAR)
def fastnet_shuffle(**kwargs: Any) -> FastNet:
    """FastNet with a channel shuffle after every group convolution (ShuffleNet's hand-set connectivity)."""
    kwargs.pop("zero_init_residual", None)
    return FastNet(shuffle=True, **kwargs)


@register_model(input_size=CIFAR, dgconv=True, budget=16, plain="fastnet")
def g_fastnet(**kwargs: Any) -> FastNet:
    """G-FastNet: FastNet whose six 3x3 convolutions are DGConv2d (the gpu-fast protocol)."""
    kwargs.pop("zero_init_residual", None)
    return FastNet(dgconv=True, **kwargs)


# Controls of protocol cpu-fair: every group convolution followed by a dense 1x1 convolution (the mixing control), and
# one width in all three blocks (the depth control).
@register_model(input_size=CIFAR)
def fastnet_mix(**kwargs: Any) -> FastNet:
    """FastNet with a dense 1x1 convolution after every group convolution (every grouping equally connected)."""
    kwargs.pop("zero_init_residual", None)
    return FastNet(mix=True, **{"widths": MIX_WIDTHS, **kwargs})


@register_model(input_size=CIFAR, dgconv=True, budget=16, plain="fastnet_mix")
def g_fastnet_mix(**kwargs: Any) -> FastNet:
    """G-FastNet with a dense 1x1 convolution after every DGConv layer (the mixing control of cpu-fair)."""
    kwargs.pop("zero_init_residual", None)
    return FastNet(dgconv=True, mix=True, **{"widths": MIX_WIDTHS, **kwargs})


@register_model(input_size=CIFAR)
def fastnet_const(**kwargs: Any) -> FastNet:
    """FastNet of one width (128) in all three blocks: every layer costs the same per connection."""
    kwargs.pop("zero_init_residual", None)
    return FastNet(**{"widths": CONST_WIDTHS, **kwargs})


@register_model(input_size=CIFAR, dgconv=True, budget=16, plain="fastnet_const")
def g_fastnet_const(**kwargs: Any) -> FastNet:
    """G-FastNet of one width (128) in all three blocks (the depth control of cpu-fair)."""
    kwargs.pop("zero_init_residual", None)
    return FastNet(dgconv=True, **{"widths": CONST_WIDTHS, **kwargs})
