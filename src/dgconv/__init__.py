"""dgconv: Dynamic Grouping Convolution (DGConv) and Groupable ResNeXt.

Public API:

* :class:`DGConv2d` -- the layer that learns its number of groups.
* :mod:`dgconv.grouping` -- the pure grouping math (relationship matrix, groups, permutations).
* :mod:`dgconv.functional` -- the straight-through gate binarisation and the reference convolution.
"""

from .layers import DGConv2d

__version__ = "0.1.0"

__all__ = ["DGConv2d", "__version__"]
