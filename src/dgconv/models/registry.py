"""A small model registry in the style of timm: ``@register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from ..errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "model_info", "ModelInfo", "UnknownModelError"]

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """What a registered name builds.

    Attributes:
        name: registered name.
        builder: the function that builds it (keyword arguments go to :class:`dgconv.models.ResNet`).
        input_size: ``(channels, height, width)`` the model is designed for.
        dgconv: whether it has DGConv layers (a G-ResNeXt).
        budget: the complexity scale ``b`` it is usually trained with (``None``: unconstrained / no gates).
        doc: first line of the builder's docstring.
        plain: for a G-ResNeXt, the registered ResNeXt with the same topology, which ``dgconv.deploy``'s spec
            rebuilds with per-layer ``groups``; for other models their own name.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    dgconv: bool
    budget: float | None
    doc: str
    plain: str


_REGISTRY: dict[str, ModelInfo] = {}


class UnknownModelError(ConfigError):
    """Raised by :func:`create_model` for a name that is not registered; the message lists close matches."""


def register_model(
    *, input_size: tuple[int, int, int], dgconv: bool = False, budget: float | None = None, plain: str | None = None
) -> Callable[[F], F]:
    """Decorator: register a builder under its function name (``plain``: see :class:`ModelInfo`)."""

    def deco(fn: F) -> F:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = ModelInfo(name, fn, input_size, dgconv, budget, doc, plain or name)
        return fn

    return deco


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` filters with shell wildcards (``list_models("g_*")``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered name (raises :class:`UnknownModelError` otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        # names the request extends ("g_resnext50_32x4d" -> "g_resnext50") first, then similar spellings
        prefixes = sorted((n for n in _REGISTRY if name.startswith(n)), key=len, reverse=True)
        similar = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        close = list(dict.fromkeys(prefixes + similar))[:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} `dgconv models` lists all {len(_REGISTRY)} names "
            f"(in Python: dgconv.list_models())."
        ) from None


def create_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs.
        **kwargs: passed to the builder and on to :class:`dgconv.models.ResNet`, e.g. ``groups=`` (an int, or
            a mapping from module name to group number as ``dgconv.learned_groups`` returns, to build the
            ResNeXt* of Table 6), ``zero_init_residual=True``, ``in_chans=1``, ``dgconv_impl="reference"``.

    Example::

        >>> from dgconv.models import create_model
        >>> m = create_model("resnext29_32x4d", num_classes=10, groups={"layer1.0.conv2": 8})
        >>> m.layer1[0].conv2.groups, m.layer1[1].conv2.groups
        (8, 32)
    """
    model = model_info(name).builder(num_classes=num_classes, **kwargs)
    # How it was built, so that deploy/export can name the plain architecture and its arguments.
    model.dgconv_cfg = {"name": name, "num_classes": num_classes, "kwargs": dict(kwargs)}
    return model
