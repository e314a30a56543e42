"""One flexible ResNet / ResNeXt / Groupable ResNeXt (G-ResNeXt), for ImageNet and CIFAR-size inputs.

In the style of ``torchvision/models/resnet.py``: ``conv1x1``/``conv3x3`` helpers, ``BasicBlock`` and
``Bottleneck`` (ResNet v1.5: the stride sits on the 3x3 convolution), and a single :class:`ResNet` class
that the registered builders in :mod:`dgconv.models.zoo` configure. G-ResNeXt replaces every 3x3 group
convolution of ResNeXt by :class:`~dgconv.DGConv2d` and changes nothing else (paper Table 1, Fig. 4).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..layer.conv import DGConv2d, check_group_limits

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "conv1x1", "conv3x3", "GroupSpec"]

#: Per-layer group numbers: module name (e.g. ``"layer1.0.conv2"``) to groups, as ``dgconv.learned_groups`` writes.
GroupSpec = Mapping[str, int]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding."""
    return nn.Conv2d(
        in_planes, out_planes, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def dgconv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int | None = None, impl: str = "auto",
              **limits: int | None) -> DGConv2d:
    """3x3 dynamic grouping convolution with padding, no bias; ``groups`` sets a starting grouping, else random
    gates; ``limits``: ``min_group_width``, ``max_groups`` (see :class:`~dgconv.DGConv2d`)."""
    return DGConv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False, impl=impl, **limits)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        width: int | None = None,
        group_conv: Callable[[int, int, int], nn.Module] | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if width not in (None, planes) or group_conv is not None:
            raise ValueError("BasicBlock has no group convolution: use Bottleneck for ResNeXt / G-ResNeXt")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    def last_norm(self) -> nn.Module:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (group or DGConv) -> 1x1, with the stride on the 3x3 (ResNet v1.5, as torchvision)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        width: int | None = None,
        group_conv: Callable[[int, int, int], nn.Module] | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        width = planes if width is None else width
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = group_conv(width, width, stride) if group_conv is not None else conv3x3(width, width, stride)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def last_norm(self) -> nn.Module:
        return self.bn3


class ResNet(nn.Module):
    """ResNet / ResNeXt / G-ResNeXt.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]``.
        num_classes: classifier outputs.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool, 224x224 inputs) or ``"cifar"`` (one 3x3 conv, no
            pooling, 32x32 inputs).
        stem_width: channels of the stem convolution.
        stem_stride: stride of the ``"cifar"`` stem convolution (2 halves every feature map: the CPU-sized
            members use it).
        stage_planes: the ``planes`` of each stage (outputs are ``planes * block.expansion``); stage 1 has
            stride 1, the others stride 2.
        cardinality, base_width: the ResNeXt template ``C x Bd``: bottleneck width
            ``int(planes * base_width / 64) * cardinality`` and, unless ``groups`` says otherwise, ``C`` groups.
        groups: per-layer group numbers of the 3x3 convolutions: an int for all, or a mapping from module name
            (``"layer2.0.conv2"``) to groups for some (ResNeXt* of Table 6). Names not in the model raise.
        dgconv: build G-ResNeXt: every 3x3 bottleneck convolution is a :class:`DGConv2d` (random gates unless
            ``groups`` gives a starting grouping).
        dgconv_impl: the DGConv implementation (``"auto"``, ``"fast"``, ``"reference"``).
        min_group_width, max_groups: hardware limits of every DGConv layer (G-ResNeXt only; see
            :class:`~dgconv.DGConv2d`): no group narrower than ``min_group_width`` channels, at most ``max_groups``.
        in_chans: input image channels.
        zero_init_residual: zero-init the last BN of each residual branch (each block starts as identity).
        norm_layer: normalisation layer factory (default ``nn.BatchNorm2d``).

    Attributes:
        group_conv_names: names of the 3x3 bottleneck convolutions when they are group convolutions
            (ResNeXt, ResNeXt*, G-ResNeXt); empty for ResNet. :func:`dgconv.profile` counts these as
            "GConv" layers.
    """

    # Metadata for profile/deploy, never used in forward: keep it out of TorchScript's type inference.
    __jit_ignored_attributes__ = ["group_conv_names", "dgconv_cfg"]

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        *,
        stem: str = "imagenet",
        stem_width: int = 64,
        stem_stride: int = 1,
        stage_planes: Sequence[int] = (64, 128, 256, 512),
        cardinality: int = 1,
        base_width: int = 64,
        groups: int | GroupSpec | None = None,
        dgconv: bool = False,
        dgconv_impl: str = "auto",
        min_group_width: int | None = None,
        max_groups: int | None = None,
        in_chans: int = 3,
        zero_init_residual: bool = False,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(stage_planes) or not 1 <= len(layers) <= 4:
            raise ValueError(
                f"layers {list(layers)} and stage_planes {list(stage_planes)} must have the same length, 1 to 4 stages"
            )
        if any(int(n) < 1 for n in layers):
            raise ValueError(f"every stage needs at least one block, got layers={list(layers)}")
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans), ("cardinality", cardinality),
                            ("base_width", base_width), ("stem_width", stem_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if stem_stride not in (1, 2) or (stem == "imagenet" and stem_stride != 1):
            raise ValueError(f"stem_stride must be 1 or 2 (cifar stem only), got {stem_stride!r}")
        grouped = dgconv or cardinality > 1 or groups is not None
        if grouped and block is not Bottleneck:
            raise ValueError("group convolutions (cardinality, groups, dgconv) need the Bottleneck block")
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self._groups_spec = dict(groups) if isinstance(groups, Mapping) else {}
        self._groups_all = groups if isinstance(groups, int) and not isinstance(groups, bool) else None
        if groups is not None and not isinstance(groups, Mapping) and self._groups_all is None:
            raise ValueError(f"groups must be an int or a mapping from module name to int, got {groups!r}")
        self._cardinality = cardinality
        self._base_width = base_width
        self._dgconv = dgconv
        check_group_limits(min_group_width, max_groups, learnable=dgconv)
        self._dgconv_options = {"impl": dgconv_impl, "min_group_width": min_group_width, "max_groups": max_groups}
        self.group_conv_names = list[str]()  # typed without an annotation statement, which TorchScript warns on
        self.dgconv_cfg = None  # set by dgconv.create_model: how the model was built
        self.num_classes = num_classes

        self.inplanes = stem_width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = self._norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        self.layer1 = self._make_layer("layer1", block, stage_planes[0], int(layers[0]), 1)
        # Absent stages are None (TorchScript refines `is not None` checks, as for torchvision's downsample).
        self.layer2 = self._make_layer("layer2", block, stage_planes[1], int(layers[1]), 2) if len(layers) > 1 else None
        self.layer3 = self._make_layer("layer3", block, stage_planes[2], int(layers[2]), 2) if len(layers) > 2 else None
        self.layer4 = self._make_layer("layer4", block, stage_planes[3], int(layers[3]), 2) if len(layers) > 3 else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(stage_planes[-1] * block.expansion, num_classes)
        self.num_features = stage_planes[-1] * block.expansion

        unknown = sorted(set(self._groups_spec) - set(self.group_conv_names))
        if unknown:
            raise ValueError(
                f"groups names {unknown} are not group-convolution layers of this model; "
                f"they are: {self.group_conv_names[:4]}{' ...' if len(self.group_conv_names) > 4 else ''}"
            )
        self.reset_parameters(zero_init_residual)

    def _conv2_groups(self, name: str, width: int) -> int | None:
        g = self._groups_spec.get(name, self._groups_all)
        if g is None:
            return None if self._dgconv else self._cardinality
        if isinstance(g, bool) or not isinstance(g, int) or g < 1 or width % g:
            raise ValueError(f"groups for {name} must be a positive divisor of its width {width}, got {g!r}")
        return g

    def _make_layer(self, stage: str, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        norm = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride), norm(planes * block.expansion))
        mods = []
        for j in range(blocks):
            name = f"{stage}.{j}.conv2"
            kwargs = {}
            if block is Bottleneck:
                width = int(planes * (self._base_width / 64.0)) * self._cardinality
                g = self._conv2_groups(name, width)
                grouped = self._dgconv or g != 1 or self._cardinality > 1
                if grouped:
                    self.group_conv_names.append(name)
                if self._dgconv:
                    opts = self._dgconv_options
                    kwargs["group_conv"] = lambda i, o, s, g=g, opts=opts: dgconv3x3(i, o, s, g, **opts)
                else:
                    kwargs["group_conv"] = lambda i, o, s, g=g: conv3x3(i, o, s, groups=g)
                kwargs["width"] = width
            mods.append(
                block(self.inplanes, planes, stride if j == 0 else 1, downsample if j == 0 else None, norm_layer=norm, **kwargs)
            )
            self.inplanes = planes * block.expansion
        return nn.Sequential(*mods)

    @torch.no_grad()
    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """§4 / torchvision initialisation: He-normal (fan-out) convolutions, BN weight 1 and bias 0,
        optionally zero-init of the last BN in each residual branch. DGConv gates keep their own init."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, DGConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (Bottleneck, BasicBlock)):
                    nn.init.constant_(m.last_norm().weight, 0)

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything before global pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        if self.layer2 is not None:
            x = self.layer2(x)
        if self.layer3 is not None:
            x = self.layer3(x)
        if self.layer4 is not None:
            x = self.layer4(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
