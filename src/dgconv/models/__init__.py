"""Model zoo: ResNet / ResNeXt / G-ResNeXt for ImageNet and CIFAR, behind a timm-style registry."""

from . import zoo as _zoo  # noqa: F401  (registers the builders)
from .registry import (
    ModelInfo,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
)
from .resnet import BasicBlock, Bottleneck, GroupSpec, ResNet, conv1x1, conv3x3

__all__ = [
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "ModelInfo",
    "UnknownModelError",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "GroupSpec",
    "conv1x1",
    "conv3x3",
]
