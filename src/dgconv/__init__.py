"""dgconv: Dynamic Grouping Convolution (DGConv) and Groupable ResNeXt.

The public API is the names below (``dgconv.X``), plus :mod:`dgconv.models` and what docs/guide.md lists:

* :class:`DGConv2d` -- the layer that learns its number of groups; :func:`cached_gates`, :func:`gate_gradients`,
  :func:`set_gate_batch_fraction` -- its training speed controls.
* :func:`create_model`, :func:`list_models` -- ResNet / ResNeXt / G-ResNeXt / FastNet (:mod:`dgconv.models`).
* :class:`ResourceConstraint`, :func:`parameter_groups`, :func:`learned_groups`, :func:`configure_optimizer` -- the
  training objective under a budget; :class:`LatencyTable` -- measured per-layer latencies for latency budgets.
* :func:`deploy`, :func:`groupify`, :func:`architecture_spec`, :func:`save_deployed`, :func:`load_deployed`,
  :func:`register_fold_rule`, :func:`freeze_groups` -- conversions; :func:`profile` / :class:`Profile` -- parameters
  and MACs, DGConv layers at their learned groups.

The names load on first use (``import dgconv`` itself does not import torch), so the ``dgconv`` command answers
``--version`` and handles Ctrl-C from its first instant. Importing dgconv changes nothing in Python's import system.

Layout (docs/design.md): the core is grouped by what it is for -- :mod:`dgconv.layer` (the grouping math, the
autograd kernels and :class:`DGConv2d`), :mod:`dgconv.models`, :mod:`dgconv.convert` (deploy, freeze, groupify,
profile) and :mod:`dgconv.budget` (costs, the constraint, latency tables) -- with two wings above it,
:mod:`dgconv.train` (the trainer) and :mod:`dgconv.lab` (protocols, sweeps, results), and :mod:`dgconv.cli` on top.
timm sees our models after an explicit ``import dgconv.models.timm`` (:mod:`dgconv.models.timm`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module that defines it (its one address; dgconv.X is the public spelling)
_EXPORTS = {
    "DGConv2d": "layer.conv",
    "cached_gates": "layer.conv",
    "gate_gradients": "layer.conv",
    "set_gate_batch_fraction": "layer.conv",
    "learned_groups": "layer.conv",
    "ResourceConstraint": "budget.constraint",
    "parameter_groups": "budget.optimizer",
    "configure_optimizer": "budget.optimizer",
    "LatencyTable": "budget.latency",
    "create_model": "models.registry",
    "list_models": "models.registry",
    "profile": "convert.profile",
    "Profile": "convert.profile",
    "deploy": "convert.deploy",
    "architecture_spec": "convert.spec",
    "save_deployed": "convert.spec",
    "load_deployed": "convert.spec",
    "register_fold_rule": "convert.deploy",
    "groupify": "convert.groupify",
    "freeze_groups": "convert.freeze",
}

_SUBPACKAGES = ("layer", "models", "convert", "budget", "errors", "train", "lab")

__all__ = [*_EXPORTS, *_SUBPACKAGES, "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import budget, convert, errors, lab, layer, models, train  # noqa: F401
    from .budget.constraint import ResourceConstraint  # noqa: F401
    from .budget.optimizer import configure_optimizer, parameter_groups  # noqa: F401
    from .budget.latency import LatencyTable  # noqa: F401
    from .convert.deploy import deploy, register_fold_rule  # noqa: F401
    from .convert.spec import architecture_spec, load_deployed, save_deployed  # noqa: F401
    from .convert.freeze import freeze_groups  # noqa: F401
    from .convert.groupify import groupify  # noqa: F401
    from .convert.profile import Profile, profile  # noqa: F401
    from .layer.conv import DGConv2d, cached_gates, gate_gradients, learned_groups, set_gate_batch_fraction  # noqa: F401
    from .models.registry import create_model, list_models  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dgconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
