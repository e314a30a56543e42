"""dgconv: Dynamic Grouping Convolution (DGConv) and Groupable ResNeXt.

Public API:

* :class:`DGConv2d` -- the layer that learns its number of groups.
* :mod:`dgconv.grouping` -- the pure grouping math (relationship matrix, groups, permutations).
* :mod:`dgconv.functional` -- the straight-through gate binarisation and the reference convolution.
* :func:`create_model`, :func:`list_models` -- ResNet / ResNeXt / G-ResNeXt (:mod:`dgconv.models`).
* :func:`profile` -- parameters and MACs, DGConv layers at their learned groups.
* :class:`ResourceConstraint`, :func:`parameter_groups`, :func:`learned_groups` -- the training objective.
* :func:`deploy`, :func:`groupify`, :func:`save_deployed`, :func:`load_deployed` -- conversions.

The names load on first use (``import dgconv`` itself does not import torch), so the ``dgconv`` command answers
``--version`` and handles Ctrl-C from its first instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "DGConv2d": "layers",
    "cached_gates": "layers",
    "ResourceConstraint": "constraint",
    "parameter_groups": "constraint",
    "learned_groups": "constraint",
    "create_model": "models",
    "list_models": "models",
    "profile": "profile",
    "Profile": "profile",
    "deploy": "convert",
    "groupify": "convert",
    "architecture_spec": "convert",
    "save_deployed": "convert",
    "load_deployed": "convert",
}

__all__ = [*_EXPORTS, "models", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import models  # noqa: F401
    from .constraint import ResourceConstraint, learned_groups, parameter_groups  # noqa: F401
    from .convert import architecture_spec, deploy, groupify, load_deployed, save_deployed  # noqa: F401
    from .layers import DGConv2d, cached_gates  # noqa: F401
    from .models import create_model, list_models  # noqa: F401
    from .profile import Profile, profile  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name == "models":
        return importlib.import_module(".models", __name__)
    raise AttributeError(f"module 'dgconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
