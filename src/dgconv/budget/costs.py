r"""What a learned grouping costs: the cost measures of :class:`dgconv.ResourceConstraint`.

Each cost assigns every DGConv layer ``l`` a cost ``c_l(G)`` at ``G`` groups; the constraint's ``zeta`` is the
sum over layers at the current groups. Three measures:

* ``"connections"`` (the paper's, eq. 8): ``c_l(G) = C_in C_out / G`` -- the number of ones in ``U``.
* ``"macs"``: ``c_l(G) = C_in C_out k_h k_w H'_l W'_l / G`` -- the layer's multiply-accumulates for one input of
  ``input_size``. The output sizes ``H'_l, W'_l`` are recorded by one forward pass when the cost is built, so
  any architecture works.
* ``"latency"``: ``c_l(G) = t_l(G)``, milliseconds read from a :class:`~dgconv.budget.latency.LatencyTable` measured on
  the target device, dtype, batch and input size.

Gradients (the straight-through estimator, as for the paper's ``zeta``)
-----------------------------------------------------------------------
With binary gates ``g_1..g_K`` (``G = prod_{k: g_k = 0} p_k``) the layer cost is extended to real gates by the
*multilinear extension* of the table ``c_l``::

    zeta_l(g) = sum_{b in {0,1}^K} c_l(G(b)) prod_k (g_k if b_k else 1 - g_k)

It equals ``c_l(G(g))`` at binary ``g``, and its derivative there is the per-gate finite difference::

    d zeta_l / d g_k = c_l(G(g with g_k = 1)) - c_l(G(g with g_k = 0))

which the identity straight-through estimator passes to the continuous gate ``g~_k``. For connections and MACs
``c_l(G) = s_l / G`` and the extension has the closed form ``s_l / d * prod_k (1 + g_k (p_k - 1))`` (``d = gcd``;
for connections this is exactly eq. 9), which is what is computed; for a latency table the ``2^K`` table is
contracted with the gates (K is at most about a dozen). Gates held open by hardware limits are constant 1.

Example::

    >>> import torch
    >>> from dgconv import DGConv2d
    >>> layer = DGConv2d(64, 64, 3, padding=1, groups=8)
    >>> cost = MacCost({"conv": layer}, {"conv": (16, 16)})
    >>> cost.at("conv", 8), cost.value("conv").item()
    (1179648.0, 1179648.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layer.conv import DGConv2d

__all__ = ["Cost", "ConnectionCost", "MacCost", "LatencyCost", "COSTS", "output_sizes", "InverseGroupsCost"]

COSTS = ("connections", "macs", "latency")


class Cost:
    """A per-layer cost ``c_l(G)`` over named DGConv layers (subclasses define :meth:`at`).

    Attributes:
        name: ``"connections"``, ``"macs"`` or ``"latency"``.
        unit: how the values read (``"connections"``, ``"MACs"``, ``"ms"``).
        fixed: the cost of the rest of the network (0 for connections; the other layers' MACs; the latency
            table's base), which ``target=`` counts in.
    """

    name = "cost"
    unit = ""

    def __init__(self, layers: Mapping[str, DGConv2d]) -> None:
        self.layers = dict(layers)
        self.fixed = 0.0

    def at(self, name: str, groups: int) -> float:
        """``c_l(G)``: the cost of layer ``name`` at ``groups`` groups."""
        raise NotImplementedError

    def at_budget(self, name: str, b: float) -> float:
        """``c_l(b)``, the layer's share of the budget "as expensive as ``b`` groups in every layer". A measured
        cost needs ``b`` to be a group number the layer can take."""
        if not float(b).is_integer() or int(b) not in self.layers[name].reachable_groups:
            raise ConfigError(
                f"a {self.name} budget b={b:g} needs b to be a group number every DGConv layer can take ({name!r} can "
                f"take {list(self.layers[name].reachable_groups)}); give target= in {self.unit} instead"
            )
        return self.at(name, int(b))

    def value(self, name: str) -> Tensor:
        """``zeta_l`` at the layer's current gates, a 0-d tensor carrying the straight-through gradient."""
        return self._multilinear(name)

    def current(self, name: str) -> float:
        """``c_l`` at the layer's current groups (no autograd)."""
        return self.at(name, self.layers[name].groups)

    def minimum(self, name: str) -> float:
        """The smallest cost the layer can reach (over its reachable group numbers)."""
        return min(self.at(name, g) for g in self.layers[name].reachable_groups)

    def _table(self, layer: DGConv2d, name: str) -> Tensor:
        """``c_l(G(b))`` for every binary gate pattern ``b``, shape ``(2,) * K`` (index 1 = gate open)."""
        k = len(layer.factors)
        values = torch.empty((2,) * k, dtype=torch.float64)
        for bits in itertools.product((0, 1), repeat=k):
            g = math.prod(p for p, b, h in zip(layer.factors, bits, layer.held) if not b and not h)
            values[bits] = self.at(name, g)
        return values

    def _multilinear(self, name: str) -> Tensor:
        layer = self.layers[name]
        key = (name, layer.factors)
        cache = self.__dict__.setdefault("_tables", {})
        table = cache.get(key)
        gates = layer.effective_gates()
        if table is None or table.device != gates.device:
            table = self._table(layer, name).to(gates.device)
            cache[key] = table
        out = table.to(gates.dtype)
        for k in range(len(layer.factors)):  # contract the first remaining axis with (1 - g_k, g_k)
            out = (1 - gates[k]) * out[0] + gates[k] * out[1]
        return out.reshape(())


class InverseGroupsCost(Cost):
    """``c_l(G) = s_l / G`` with the closed-form multilinear extension (see the module docstring)."""

    def scale(self, name: str) -> float:
        raise NotImplementedError

    def at(self, name: str, groups: int) -> float:
        return self.scale(name) / groups

    def at_budget(self, name: str, b: float) -> float:
        return self.scale(name) / b  # any positive b: the paper's o = sum C_in C_out / b

    def value(self, name: str) -> Tensor:
        layer = self.layers[name]
        g = layer.effective_gates()
        d = math.gcd(layer.in_channels, layer.out_channels)
        if not layer.factors:
            return g.new_tensor(self.scale(name)).sum()
        p = torch.tensor(layer.factors, dtype=g.dtype, device=g.device)
        return (self.scale(name) / d) * torch.prod(1 + g * (p - 1))

    def minimum(self, name: str) -> float:
        return self.at(name, max(self.layers[name].reachable_groups))


class ConnectionCost(InverseGroupsCost):
    """The paper's cost: connections ``C_in C_out / G`` (the ones of ``U``, eq. 8)."""

    name, unit = "connections", "connections"

    def scale(self, name: str) -> float:
        m = self.layers[name]
        return float(m.in_channels * m.out_channels)


def output_sizes(model: nn.Module, input_size: tuple[int, ...], names: Mapping[str, nn.Module]) -> dict[str, tuple[int, int]]:
    """``(H', W')`` of each named layer's output for one input of ``input_size`` = ``(C, H, W)``, from one forward
    pass in eval mode on zeros (training mode restored; BN statistics untouched)."""
    if len(input_size) != 3 or any(int(s) < 1 for s in input_size):
        raise ConfigError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    found: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: found.__setitem__(n, (int(o.shape[-2]), int(o.shape[-1]))))
             for n, m in names.items()]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *map(int, input_size), device=device))
    except RuntimeError as e:
        raise ConfigError(f"the model does not accept an input of size {tuple(input_size)}: {str(e).splitlines()[0]}") from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    missing = sorted(set(names) - set(found))
    if missing:
        raise ConfigError(f"layers {missing[:3]} did not run in a forward pass; their MACs are unknown")
    return found


class MacCost(InverseGroupsCost):
    """Multiply-accumulates ``C_in C_out k_h k_w H' W' / G`` for one input (output sizes given or recorded).

    Args:
        layers: name -> DGConv2d.
        hw: name -> output ``(H', W')`` (:func:`output_sizes` records them).
        fixed: MACs of the rest of the network (for ``target=``).
    """

    name, unit = "macs", "MACs"

    def __init__(self, layers: Mapping[str, DGConv2d], hw: Mapping[str, tuple[int, int]], fixed: float = 0.0) -> None:
        super().__init__(layers)
        self.hw = dict(hw)
        self.fixed = float(fixed)

    def scale(self, name: str) -> float:
        m = self.layers[name]
        h, w = self.hw[name]
        return float(m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * h * w)


class LatencyCost(Cost):
    """Measured latency ``t_l(G)`` in milliseconds from a :class:`~dgconv.budget.latency.LatencyTable` (checked against
    the layers: every layer present, with the same shape, at the same input size)."""

    name, unit = "latency", "ms"

    def __init__(self, layers: Mapping[str, DGConv2d], table: Any, input_size: tuple[int, ...] | None = None) -> None:
        super().__init__(layers)
        table.check(layers, input_size)
        self.table = table
        self.fixed = float(table.base_ms or 0.0)

    def at(self, name: str, groups: int) -> float:
        return self.table.time(name, groups)

