"""Conversions between a G-network and the plain network it is: :mod:`~dgconv.convert.groupify` (nn.Conv2d ->
DGConv2d, function preserved), :mod:`~dgconv.convert.deploy` (DGConv2d -> ``nn.Conv2d(groups=G)``, channel
permutations folded by registered rules; the deployed spec), :mod:`~dgconv.convert.freeze` (the same in place,
mid-training, with the optimizer's state) and :mod:`~dgconv.convert.profile` (parameters and MACs per layer)."""
