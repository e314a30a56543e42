"""The DGConv layer and its kernels, in the order they build on each other: :mod:`~dgconv.layer.grouping` (the pure
grouping math: gates -> factors -> ``U``, group ids, permutations) -> :mod:`~dgconv.layer.functional` (the
straight-through binarisation and the reference convolution), :mod:`~dgconv.layer.gathers` (channel gathers and
in-group weight blocks), :mod:`~dgconv.layer.plans` (backward plans) -> :mod:`~dgconv.layer.fast` (the exact grouped
autograd) -> :mod:`~dgconv.layer.compiled` (the same as one opaque op for ``torch.compile``) ->
:mod:`~dgconv.layer.conv` (:class:`~dgconv.layer.conv.DGConv2d`, and finding the DGConv layers of a model).

Nothing here knows a model, a cost or a trainer."""
