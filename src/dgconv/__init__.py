"""dgconv: Dynamic Grouping Convolution (DGConv) and Groupable ResNeXt.

Public API:

* :class:`DGConv2d` -- the layer that learns its number of groups.
* :mod:`dgconv.grouping` -- the pure grouping math (relationship matrix, groups, permutations).
* :mod:`dgconv.functional` -- the straight-through gate binarisation and the reference convolution.
* :func:`create_model`, :func:`list_models` -- ResNet / ResNeXt / G-ResNeXt (:mod:`dgconv.models`).
* :func:`profile` -- parameters and MACs, DGConv layers at their learned groups.
"""

from . import models
from .layers import DGConv2d
from .models import create_model, list_models
from .profile import Profile, profile

__version__ = "0.1.0"

__all__ = ["DGConv2d", "create_model", "list_models", "models", "profile", "Profile", "__version__"]
