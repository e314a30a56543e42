"""dgconv: Dynamic Grouping Convolution (DGConv) and Groupable ResNeXt.

Public API:

* :class:`DGConv2d` -- the layer that learns its number of groups.
* :mod:`dgconv.grouping` -- the pure grouping math (relationship matrix, groups, permutations).
* :mod:`dgconv.functional` -- the straight-through gate binarisation and the reference convolution.
* :func:`create_model`, :func:`list_models` -- ResNet / ResNeXt / G-ResNeXt (:mod:`dgconv.models`).
* :func:`profile` -- parameters and MACs, DGConv layers at their learned groups.
* :class:`ResourceConstraint`, :func:`parameter_groups`, :func:`learned_groups` -- the training objective.
* :func:`deploy`, :func:`groupify`, :func:`save_deployed`, :func:`load_deployed`, :func:`register_fold_rule` --
  conversions.
* :func:`freeze_groups` -- search, then train: a G-network becomes its group-convolution network mid-training.
* :func:`configure_optimizer`, :func:`gate_gradients`, :func:`set_gate_batch_fraction` -- training speed.
* :class:`LatencyTable` -- measured per-layer latencies for latency budgets (:mod:`dgconv.costs`).

The names load on first use (``import dgconv`` itself does not import torch), so the ``dgconv`` command answers
``--version`` and handles Ctrl-C from its first instant.

Layout (docs/design.md): the core (the layer, its maths, costs, constraint, conversions, models) sits at the top;
:mod:`dgconv.train` holds the trainer (config, engine, run directories, checkpoints, data) and :mod:`dgconv.lab` the
experiments (protocols, sweeps, results, reports, statistics). The modules' 0.2 paths (``dgconv.engine``,
``dgconv.rundir``, ``dgconv.data``, ...) still import: they name the same module objects (:data:`MOVED`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: A module's path before 0.3 -> where it lives now (``import dgconv.engine`` is ``dgconv.train.engine``).
MOVED = {
    "config": "train.config", "engine": "train.engine", "checkpoint": "train.checkpoint", "rundir": "train.rundir",
    "distributed": "train.distributed", "progress": "train.progress", "interrupts": "train.interrupts",
    "pretrained": "train.pretrained", "data": "train.data", "data_folder": "train.data.folder",
    "download": "train.data.cifar", "protocols": "lab.protocols", "sweep": "lab.sweep", "results": "lab.results",
    "report": "lab.report", "stats": "lab.stats",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of an old path (:data:`MOVED`) return the module at its new path: one module object, two names."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        head, _, tail = fullname.partition(".")
        if head == __name__ and tail in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(f"{__name__}.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module: Any) -> None:  # already executed under its new name
        return None


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())

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
    "register_fold_rule": "convert",
    "freeze_groups": "freeze",
    "configure_optimizer": "constraint",
    "LatencyTable": "latency",
    "gate_gradients": "layers",
    "set_gate_batch_fraction": "layers",
}

_SUBMODULES = ("models", "compiled", "costs", "latency", "errors", "freeze", "train", "lab", *MOVED)

__all__ = [*_EXPORTS, *_SUBMODULES, "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import models  # noqa: F401
    from .constraint import (  # noqa: F401
        ResourceConstraint,
        configure_optimizer,  # noqa: F401
        learned_groups,
        parameter_groups,
    )
    from .convert import (  # noqa: F401
        architecture_spec,
        deploy,
        groupify,
        load_deployed,
        register_fold_rule,
        save_deployed,
    )
    from .freeze import freeze_groups  # noqa: F401
    from .latency import LatencyTable  # noqa: F401
    from .layers import DGConv2d, cached_gates, gate_gradients, set_gate_batch_fraction  # noqa: F401  # noqa: F401
    from .models import create_model, list_models  # noqa: F401
    from .profile import Profile, profile  # noqa: F401


class _Package(types.ModuleType):
    """The ``dgconv`` package: a public function named like the submodule that defines it (``profile``) stays the
    function. Importing a submodule records it on its parent package, which turned ``from dgconv import profile``
    into the module whenever ``dgconv.profile`` had been imported first (by ``dgconv train``, a sweep, a test)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dgconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# timm.create_model("g_resnext50") after `import dgconv` (registers when timm is imported; timm is optional)
from .timm_models import install_hook as _install_timm_hook  # noqa: E402

_install_timm_hook()
