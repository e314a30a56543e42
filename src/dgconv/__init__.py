"""dgconv: Dynamic Grouping Convolution (DGConv) and Groupable ResNeXt.

Public API:

* :class:`DGConv2d` -- the layer that learns its number of groups.
* :mod:`dgconv.grouping` -- the pure grouping math (relationship matrix, groups, permutations).
* :mod:`dgconv.functional` -- the straight-through gate binarisation and the reference convolution.
* :func:`create_model`, :func:`list_models` -- ResNet / ResNeXt / G-ResNeXt (:mod:`dgconv.models`).
* :func:`profile` -- parameters and MACs, DGConv layers at their learned groups.
* :class:`ResourceConstraint`, :func:`parameter_groups`, :func:`learned_groups` -- the training objective.
* :func:`deploy`, :func:`groupify`, :func:`save_deployed`, :func:`load_deployed` -- conversions.
"""

from . import models
from .constraint import ResourceConstraint, learned_groups, parameter_groups
from .convert import architecture_spec, deploy, groupify, load_deployed, save_deployed
from .layers import DGConv2d, cached_gates
from .models import create_model, list_models
from .profile import Profile, profile

__version__ = "0.1.0"

__all__ = [
    "DGConv2d",
    "cached_gates",
    "ResourceConstraint",
    "parameter_groups",
    "learned_groups",
    "create_model",
    "list_models",
    "models",
    "profile",
    "Profile",
    "deploy",
    "groupify",
    "architecture_spec",
    "save_deployed",
    "load_deployed",
    "__version__",
]
