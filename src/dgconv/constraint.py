"""The resource-constrained objective of §3.3 and §4, read from the DGConv modules of a model.

For DGConv layers ``l`` with channels ``C_l^in, C_l^out``::

    zeta = sum_l zeta_l,              zeta_l = sum_ij U_ij  (eq. 8; = C_in C_out / G_l)
    o    = sum_l C_l^in C_l^out / b   (b = 32: the GConv size of ResNeXt 32x4d)
    loss = L * (o / zeta) ** a,       a = 0 if zeta <= o else alpha  (alpha = -0.02)

``zeta`` carries the straight-through gradient to every gate, so while the network is over budget each
gate also feels ``dloss/dg = L * alpha * (o/zeta)**alpha / zeta * dzeta/dg`` (alpha < 0: pushes gates to 0,
more groups). Once ``zeta <= o`` the factor is exactly 1 and only the task loss moves the gates.

Keeping the budget (beyond the paper)
-------------------------------------
The factor ``(o/zeta)**alpha`` scales with the task loss ``L``; where training loss goes to ~0 (small data)
its pull vanishes and ``zeta`` can stay above ``o`` (measured on the digits default with b = 8: zeta/o = 1.14
after 30 epochs). The paper states the problem as "minimize ... subject to zeta <= o", so
:meth:`ResourceConstraint.project` enforces the constraint: it closes open gates, the least confident per
unit of ``zeta`` saved first (smallest ``g~ / (zeta_l (1 - 1/p_k))``), reflecting each across the sign
boundary (``g~ -> -g~``), until ``zeta <= o``. ``dgconv train`` calls it at the end of every epoch unless
``--no-enforce-budget`` is given.

Weight decay: following common ResNeXt practice every parameter is decayed *except the DGConv gates*
(:func:`parameter_groups`); decaying ``g~`` would pull every gate towards 0, i.e. towards the sign
boundary, which is not a regulariser of anything meaningful.

Example (any training loop)::

    model = dgconv.create_model("g_resnext29_32x4d", num_classes=10)
    constraint = dgconv.ResourceConstraint(model, budget=32, alpha=-0.02)
    opt = torch.optim.SGD(dgconv.parameter_groups(model, weight_decay=1e-4), lr=0.1, momentum=0.9)
    for x, y in loader:
        loss = constraint(F.cross_entropy(model(x), y))   # L * (o / zeta) ** a
        opt.zero_grad(); loss.backward(); opt.step()
    print(constraint.summary())                           # zeta, o, zeta/o, groups per layer
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from . import grouping
from .layers import GATE_INIT, DGConv2d

__all__ = ["ResourceConstraint", "parameter_groups", "dgconv_layers", "learned_groups", "reset_gate_state"]


def dgconv_layers(model: nn.Module) -> list[tuple[str, DGConv2d]]:
    """``(name, layer)`` of every :class:`DGConv2d` in ``model``, in module order (DDP/compile wrappers stripped)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return [(n, m) for n, m in model.named_modules() if isinstance(m, DGConv2d)]


def learned_groups(model: nn.Module) -> dict[str, int]:
    """Module name -> current number of groups of every DGConv layer (the format ``create_model(groups=...)``
    takes and ``groups.json`` stores under ``"groups"``)."""
    return {name: m.groups for name, m in dgconv_layers(model)}


class ResourceConstraint:
    """``L * (o / zeta) ** a`` for a model's DGConv layers.

    Args:
        model: a model containing :class:`DGConv2d` layers (also inside DDP).
        budget: the scale ``b`` in ``o = sum_l C_in C_out / b``; ``None`` means unconstrained (factor 1).
        alpha: the exponent used while ``zeta > o`` (paper: -0.02). Must be negative.

    Raises:
        ValueError: non-positive budget, non-negative alpha, or a budgeted model without DGConv layers.
    """

    def __init__(self, model: nn.Module, budget: float | None = 32, alpha: float = -0.02) -> None:
        if budget is not None and (isinstance(budget, bool) or not budget > 0 or not math.isfinite(budget)):
            raise ValueError(f"budget must be a positive number (or None for unconstrained), got {budget!r}")
        if not alpha < 0:
            raise ValueError(f"alpha must be negative (the paper uses -0.02), got {alpha!r}")
        self.layers = dgconv_layers(model)
        if budget is not None and not self.layers:
            raise ValueError("a budget needs DGConv2d layers, and this model has none (use budget=None)")
        self.budget = budget
        self.alpha = float(alpha)
        self.capacity = sum(m.in_channels * m.out_channels for _, m in self.layers)
        self.target = self.capacity / budget if budget is not None else math.inf

    def zeta(self) -> Tensor:
        """``sum_l zeta_l`` as a 0-d tensor that carries the straight-through gradient to the gates."""
        if not self.layers:
            return torch.zeros(())
        return torch.stack([m.complexity() for _, m in self.layers]).sum()

    def factor(self, zeta: Tensor | None = None) -> Tensor:
        """``(o / zeta) ** a`` with ``a = 0`` when ``zeta <= o`` (exactly 1 then), else ``alpha``."""
        zeta = self.zeta() if zeta is None else zeta
        one = torch.ones((), device=zeta.device, dtype=zeta.dtype)
        if self.budget is None:
            return one
        # torch.where, not a Python branch: no device-to-host sync per step.
        return torch.where(zeta > self.target, (self.target / zeta) ** self.alpha, one)

    def __call__(self, loss: Tensor) -> Tensor:
        """The constrained loss ``loss * (o / zeta) ** a``."""
        if self.budget is None:
            return loss
        return loss * self.factor().to(loss.dtype)

    def minimum_zeta(self) -> int:
        """The smallest reachable ``zeta``: every layer at its maximum groups, ``sum C_in C_out / gcd``."""
        return sum(m.in_channels * m.out_channels // math.gcd(m.in_channels, m.out_channels) for _, m in self.layers)

    @torch.no_grad()
    def project(self, optimizer: torch.optim.Optimizer | None = None) -> list[tuple[str, int]]:
        """Close gates until ``zeta <= o``; return the ``(layer name, gate index)`` pairs closed.

        Greedy: among open gates (``g~ >= 0``) pick the smallest ``g~ / (zeta_l * (1 - 1/p_k))`` -- the least
        confident gate per unit of complexity it removes -- and reflect it to ``-max(g~, 1e-8)``. Stops early
        (returning what it closed) only if every gate is closed. A no-op when unconstrained or within budget.

        ``optimizer``: the optimizer that trains the gates. A reflected gate must not keep the state that carried
        it open (SGD's momentum would reopen it on the next step), so every per-parameter state tensor of that gate
        entry (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``, ...) is zeroed at its index.
        """
        if self.budget is None:
            return []
        bits = {name: list(m.binary_gates()) for name, m in self.layers}
        values = {name: m.gate.detach().double().cpu().tolist() for name, m in self.layers}
        layers = dict(self.layers)

        def zeta_of(name: str) -> float:
            m = layers[name]
            return m.in_channels * m.out_channels / grouping.num_groups(m.factors, bits[name])

        zeta = sum(zeta_of(n) for n in bits)
        closed: list[tuple[str, int]] = []
        while zeta > self.target:
            best = None
            for name, m in self.layers:
                z = zeta_of(name)
                for k, open_ in enumerate(bits[name]):
                    if open_:
                        gain = z * (1 - 1 / m.factors[k])
                        score = (values[name][k] / gain, -gain)
                        if best is None or score < best[0]:
                            best = (score, name, k, gain)
            if best is None:
                break
            _, name, k, gain = best
            m = layers[name]
            m.gate[k] = -max(values[name][k], GATE_INIT)
            bits[name][k] = False
            zeta -= gain
            closed.append((name, k))
        if optimizer is not None:
            reset_gate_state(optimizer, [(layers[n].gate, k) for n, k in closed])
        return closed

    def gates_in_sync(self, all_reduce_sum: Callable[[Tensor], Tensor]) -> bool:
        """Whether every process holds the same gates: ``all_reduce_sum`` (a sum over processes, e.g.
        ``torch.distributed.all_reduce``) of the gate vector must equal the local vector times the process count.
        With a single process (the sum of ones is 1) this is trivially true."""
        if not self.layers:
            return True
        g = torch.cat([m.gate.detach().double().flatten() for _, m in self.layers])
        world = all_reduce_sum(torch.ones((), dtype=torch.float64, device=g.device))
        total = all_reduce_sum(g.clone())
        return bool(torch.equal(total, g * world))

    def groups_document(self, model_name: str | None = None) -> dict[str, Any]:
        """What ``groups.json`` holds: the learned groups and channels of every layer (:func:`dgconv.rundir.groups_document`)."""
        from .rundir import groups_document

        return groups_document(
            {n: m.groups for n, m in self.layers}, {n: [m.in_channels, m.out_channels] for n, m in self.layers}, model_name
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly snapshot: ``zeta``, ``o``, ``zeta/o`` and per-layer groups, channels and gates."""
        with torch.no_grad():
            zeta = float(self.zeta())
        return {
            "zeta": zeta,
            "o": self.target if self.budget is not None else None,
            "zeta_over_o": zeta / self.target if self.budget is not None else None,
            "budget": self.budget,
            "groups": {n: m.groups for n, m in self.layers},
            "gates": {n: [float(v) for v in m.gate.detach().cpu().tolist()] for n, m in self.layers},
            "channels": {n: [m.in_channels, m.out_channels] for n, m in self.layers},
        }


def reset_gate_state(optimizer: torch.optim.Optimizer, entries: list[tuple[Tensor, int]]) -> None:
    """Zero the optimizer state of single gate entries ``(gate parameter, index)``: every state tensor shaped like
    the parameter (SGD momentum, Adam moments) loses that entry; step counters and other scalars are kept."""
    for param, k in entries:
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value[k] = 0


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: weight decay on every parameter except the DGConv gates (decay 0).

    Returns ``[{"params": [...], "weight_decay": weight_decay}, {"params": gates, "weight_decay": 0.0}]``
    (the second group only when there are gates).
    """
    gates = {id(m.gate) for _, m in dgconv_layers(model)}
    decay = [p for p in model.parameters() if id(p) not in gates]
    no_decay = [p for p in model.parameters() if id(p) in gates]
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
