"""The resource-constrained objective of §3.3 and §4, read from the DGConv modules of a model.

For DGConv layers ``l`` and a cost measure ``c_l(G)`` (:mod:`dgconv.budget.costs`: the paper's connections, MACs, or a
measured latency table)::

    zeta = sum_l c_l(G_l)                       (connections: zeta_l = sum_ij U_ij = C_in C_out / G_l, eq. 8)
    o    = sum_l c_l(b)                         "no more than the same network with b groups in every layer"
           (connections: o = sum_l C_in C_out / b, exactly the paper's; b = 32: ResNeXt 32x4d's GConv size)
         = target - (cost of the non-DGConv part)   with ``target=`` an absolute cap in the cost's own units

Objectives:

* ``"paper"`` (default): ``loss = L * (o / zeta) ** a``, ``a = 0`` if ``zeta <= o`` else ``alpha`` (-0.02).
  While over budget each gate feels ``dloss/dg = L * alpha * (o/zeta)**alpha / zeta * dzeta/dg`` (alpha < 0:
  pushes gates to 0, more groups). The pull is proportional to the task loss ``L`` and fades as it falls.
* ``"lagrangian"``: ``loss = L + lambda * (zeta / o - 1)`` with a multiplier ``lambda >= 0`` raised by dual
  ascent at every call, ``lambda <- max(0, lambda + dual_lr * (zeta / o - 1))``: while over budget the pull grows
  until the constraint holds, however small ``L`` is; under budget ``lambda`` decays back to 0.

``zeta`` carries the straight-through gradient to every gate (the per-gate finite difference of the cost, see
:mod:`dgconv.budget.costs`).

Keeping the budget (beyond the paper)
-------------------------------------
The paper states the problem as "minimize ... subject to zeta <= o". :meth:`ResourceConstraint.project` enforces
the constraint: it closes open gates, the least confident per unit of cost saved first (smallest
``g~ / (zeta_l(open) - zeta_l(closed))``, only gates whose closing saves cost), reflecting each across the sign
boundary (``g~ -> -g~``) and zeroing its optimizer state, until ``zeta <= o``. ``dgconv train`` calls it at the
end of every epoch unless ``--no-enforce-budget`` is given.

Weight decay: every parameter is decayed *except the DGConv gates* (:func:`dgconv.parameter_groups`); decaying ``g~``
would pull every gate towards the sign boundary, which is not a regulariser of anything meaningful.

Example (any training loop)::

    model = dgconv.create_model("g_resnext29_32x4d", num_classes=10)
    constraint = dgconv.ResourceConstraint(model, budget=32, cost="macs")   # MACs at 32x32 (the model's input)
    opt = torch.optim.SGD(dgconv.parameter_groups(model, weight_decay=1e-4), lr=0.1, momentum=0.9)
    for x, y in loader:
        loss = constraint(F.cross_entropy(model(x), y))   # L * (o / zeta) ** a
        opt.zero_grad(); loss.backward(); opt.step()
    constraint.project(optimizer=opt)                     # close gates until zeta <= o
    print(constraint.summary())                           # zeta, o, zeta/o, groups per layer
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .costs import COSTS, ConnectionCost, Cost, LatencyCost, MacCost, InverseGroupsCost
from ..errors import ConfigError
from ..layer.conv import GATE_INIT, dgconv_layers
from ..layer.conv import unwrap as _unwrap

__all__ = [
    "ResourceConstraint",
    "reset_gate_state",
    "OBJECTIVES",
    "DEFAULT_BUDGET",
    "check_budget",
]

OBJECTIVES = ("paper", "lagrangian")

#: ``b`` of a :class:`ResourceConstraint` given neither a budget nor a target (the paper's ResNeXt cardinality).
DEFAULT_BUDGET = 32.0


def check_budget(budget: Any, target: Any = None) -> None:
    """The one rule for a budget ``b`` and a target, used by :class:`ResourceConstraint` and ``dgconv train`` alike
    (so both refuse the same things with the same words): ``b`` a finite number >= 1 or ``None``; a target a finite
    positive number or ``None``; not both.

    Raises:
        ConfigError (a ``ValueError``).

    Example::

        >>> check_budget(0.5)
        Traceback (most recent call last):
        ...
        dgconv.errors.ConfigError: budget b=0.5 is below 1: it allows more than the dense network (o > sum C_in C_out), so it constrains nothing; give b >= 1, or no budget
    """
    if budget is not None and target is not None:
        raise ConfigError("give a budget or a target, not both (a target is an absolute cap in the cost's units)")
    for name, value in (("budget", budget), ("target", target)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0:
            raise ConfigError(f"{name} must be a finite positive number, got {value!r}")
    if budget is not None and budget < 1:  # o = sum C_in C_out / b above the dense network's: nothing to keep
        raise ConfigError(f"budget b={budget:g} is below 1: it allows more than the dense network (o > sum C_in C_out), "
                          f"so it constrains nothing; give b >= 1, or no budget")


def _model_input_size(model: nn.Module) -> tuple[int, ...] | None:
    cfg = getattr(_unwrap(model), "dgconv_cfg", None)
    if not isinstance(cfg, dict):
        return None
    from ..models import model_info

    size = model_info(cfg["name"]).input_size
    in_chans = cfg.get("kwargs", {}).get("in_chans")
    return (in_chans, *size[1:]) if in_chans else size


class ResourceConstraint:
    """The budget of a model's DGConv layers, in a chosen cost, as a loss factor (or term) and a projection.

    Args:
        model: a model containing :class:`DGConv2d` layers (also inside DDP or ``torch.compile``).
        budget: ``b`` >= 1: spend no more than the same network with ``b`` groups in every DGConv layer
            (``o = sum_l c_l(b)``); ``None`` (with no ``target``) means unconstrained (factor 1); ``"default"`` (the
            default): :data:`DEFAULT_BUDGET`, or none when a ``target`` is given. :func:`check_budget` is the rule.
        alpha: the exponent of the paper's factor while ``zeta > o`` (paper: -0.02). Must be negative.
        cost: ``"connections"`` (the paper's, default), ``"macs"``, ``"latency"`` or a :class:`dgconv.budget.costs.Cost`.
        target: an absolute cap on the whole network in the cost's units (MACs for one input, or milliseconds);
            the non-DGConv part is subtracted to give ``o``. Instead of ``budget`` (giving both is refused).
        input_size: ``(C, H, W)`` of one input, for ``"macs"`` (default: the registered model's input size).
        latency_table: a :class:`dgconv.budget.latency.LatencyTable` or the path of one, for ``"latency"``.
        objective: ``"paper"`` (the factor ``(o/zeta)^a``) or ``"lagrangian"`` (see the module docstring).
        dual_lr: the dual ascent step of ``"lagrangian"``.

    Raises:
        ConfigError (a ``ValueError``): non-positive budget or target, non-negative alpha, a budgeted model without
            DGConv layers, an unknown cost or objective, a missing or mismatched latency table, or a budget or target
            below the smallest cost the layers can reach.
    """

    def __init__(
        self,
        model: nn.Module,
        budget: float | str | None = "default",
        alpha: float = -0.02,
        cost: str | Cost = "connections",
        *,
        target: float | None = None,
        input_size: Sequence[int] | None = None,
        latency_table: Any = None,
        objective: str = "paper",
        dual_lr: float = 0.05,
    ) -> None:
        if budget == "default":
            budget = None if target is not None else DEFAULT_BUDGET
        check_budget(budget, target)
        if not alpha < 0:
            raise ConfigError(f"alpha must be negative (the paper uses -0.02), got {alpha!r}")
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not dual_lr > 0:
            raise ConfigError(f"dual_lr must be positive, got {dual_lr!r}")
        self.layers = dgconv_layers(model)
        self.budget = budget
        self.target = target
        if (self.budget is not None or target is not None) and not self.layers:
            raise ConfigError("a budget needs DGConv2d layers, and this model has none (use budget=None)")
        self.alpha = float(alpha)
        self.objective = objective
        self.dual_lr = float(dual_lr)
        self.lam = torch.zeros(())
        self._frozen: dict[str, Any] | None = None
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else _model_input_size(model)
        self._macs: MacCost | None = None
        self.macs_cost(model)  # MACs are reported whatever the cost (when the input size is known)
        self.cost = self._make_cost(model, cost, latency_table)
        self.capacity = sum(m.in_channels * m.out_channels for _, m in self.layers)
        self.o = self._bound()
        if self.constrained and self.minimum() > self.o * (1 + 1e-9):
            what = f"target {target:g} {self.cost.unit}" if target is not None else f"budget b={budget:g}"
            raise ConfigError(
                f"{what} is unreachable in {self.cost.name}: even with every DGConv layer at its cheapest grouping "
                f"zeta = {self.minimum():,.6g} > o = {self.o:,.6g}" + (f" (after the fixed part {self.cost.fixed:,.6g})" if target else "")
                + (self._smaller_budget_hint() if target is None else "; raise the target")
            )

    def _smaller_budget_hint(self) -> str:
        """``; the largest reachable b is B`` for an unreachable budget (or a plain hint when none is)."""
        lowest = self.minimum()
        if isinstance(self.cost, InverseGroupsCost):  # o = S / b: exact
            b_max = sum(self.cost.at_budget(n, 1.0) for n, _ in self.layers) / lowest
            return f"; the largest reachable b is {math.floor(b_max * 100) / 100:g} (every layer at its most groups)"
        for b in sorted({g for _, m in self.layers for g in m.reachable_groups}, reverse=True):
            try:
                if sum(self.cost.at_budget(n, b) for n, _ in self.layers) >= lowest * (1 - 1e-9):
                    return f"; the largest reachable b is {b}"
            except ConfigError:  # not a group number of every layer
                continue
        return "; use a smaller b, or give a target"

    # ------------------------------------------------------------------------------------------------ costs
    def _make_cost(self, model: nn.Module, cost: str | Cost, table: Any) -> Cost:
        layers = dict(self.layers)
        if isinstance(cost, Cost):
            return cost
        if cost not in COSTS:
            raise ConfigError(f"unknown cost {cost!r}: choose from {list(COSTS)}")
        if cost == "connections":
            return ConnectionCost(layers)
        if cost == "macs":
            macs = self.macs_cost(model)
            if macs is None:
                raise ConfigError("cost='macs' needs the input size: pass input_size=(C, H, W)")
            return macs
        if table is None:
            raise ConfigError("cost='latency' needs a latency table (dgconv latency MODEL --out table.json; "
                              "latency_table=... or --latency-table FILE)")
        if isinstance(table, (str, Path)):
            from .latency import LatencyTable

            table = LatencyTable.load(table)
        return LatencyCost(layers, table, self.input_size)

    def macs_cost(self, model: nn.Module | None = None) -> MacCost | None:
        """The MAC cost of these layers (built once, from one forward pass at :attr:`input_size`); ``None`` when the
        input size is unknown. Also used to report MACs whatever the constraint's cost."""
        if self._macs is None and model is not None and self.layers and self.input_size is not None:
            from ..convert.profile import profile

            try:
                prof = profile(_unwrap(model), self.input_size, count_other=False)
            except RuntimeError as e:
                raise ConfigError(f"the model does not accept an input of size {self.input_size}: "
                                  f"{str(e).splitlines()[0][:200]}") from None
            names = dict(self.layers)
            hw = {lp.name: lp.output_hw for lp in prof.layers if lp.name in names}
            if set(hw) != set(names):
                raise ConfigError(f"layers {sorted(set(names) - set(hw))[:3]} did not run in a forward pass")
            dgconv_macs = sum(lp.macs for lp in prof.layers if lp.name in names)
            self._macs = MacCost(names, hw, fixed=prof.macs - dgconv_macs)
        return self._macs

    def _bound(self) -> float:
        if self.target is not None:
            o = self.target - self.cost.fixed
            if not o > 0:
                raise ConfigError(
                    f"target {self.target:,.6g} {self.cost.unit} is not above the network's fixed part "
                    f"{self.cost.fixed:,.6g} {self.cost.unit} (everything that is not a DGConv layer)"
                )
            return float(o)
        if self.budget is None:
            return math.inf
        return float(sum(self.cost.at_budget(n, self.budget) for n, _ in self.layers))

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` fixed the groups (after :func:`dgconv.freeze_groups`)."""
        return self._frozen is not None

    def freeze(self) -> None:
        """Fix the groups at their current values (call it with :func:`dgconv.freeze_groups`): from now on the
        constraint reports that state, its loss factor is 1, projection does nothing, and it no longer holds the
        DGConv layers (so their dense weights can be freed)."""
        minimum = self.minimum()
        self._frozen = self.summary()
        self._frozen_minimum = minimum
        self.layers = []
        self.cost.layers = {}  # the cost keeps its name and unit, and forgets the layers
        self._macs = None

    @property
    def constrained(self) -> bool:
        """Whether there is a budget or target at all."""
        return self.budget is not None or self.target is not None

    def zeta(self) -> Tensor:
        """``sum_l zeta_l`` in the constraint's cost, a 0-d tensor that carries the straight-through gradient."""
        if self._frozen is not None:
            return torch.tensor(float(self._frozen["zeta"]))
        if not self.layers:
            return torch.zeros(())
        return torch.stack([self.cost.value(n) for n, _ in self.layers]).sum()

    def current(self) -> float:
        """``zeta`` at the current groups as a float (from the tables; no autograd, no device sync)."""
        if self._frozen is not None:
            return float(self._frozen["zeta"])
        return float(sum(self.cost.current(n) for n, _ in self.layers))

    def minimum(self) -> float:
        """The smallest reachable ``zeta``: every layer at its cheapest reachable grouping."""
        if self._frozen is not None:
            return self._frozen_minimum
        return float(sum(self.cost.minimum(n) for n, _ in self.layers))

    # ------------------------------------------------------------------------------------------------ objective
    def factor(self, zeta: Tensor | None = None) -> Tensor:
        """The paper's ``(o / zeta) ** a`` with ``a = 0`` when ``zeta <= o`` (exactly 1 then), else ``alpha``."""
        zeta = self.zeta() if zeta is None else zeta
        one = torch.ones((), device=zeta.device, dtype=zeta.dtype)
        if not self.constrained:
            return one
        # torch.where, not a Python branch: no device-to-host sync per step.
        return torch.where(zeta > self.o, (self.o / zeta) ** self.alpha, one)

    def __call__(self, loss: Tensor) -> Tensor:
        """The constrained loss: ``loss * (o / zeta) ** a`` (paper) or ``loss + lambda * (zeta / o - 1)``
        (lagrangian; each call is one dual ascent step of ``lambda``)."""
        if not self.constrained or self._frozen is not None:
            return loss
        zeta = self.zeta()
        if self.objective == "paper":
            return loss * self.factor(zeta).to(loss.dtype)
        excess = zeta / self.o - 1
        if self.lam.device != zeta.device or self.lam.dtype != zeta.dtype:
            self.lam = self.lam.to(zeta.device, zeta.dtype)
        out = loss + (self.lam * excess).to(loss.dtype)
        with torch.no_grad():
            self.lam = torch.clamp(self.lam + self.dual_lr * excess.detach(), min=0)
        return out

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep to continue exactly (the lagrangian multiplier)."""
        return {"lambda": float(self.lam)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.lam = torch.tensor(float(state.get("lambda", 0.0)))

    # ------------------------------------------------------------------------------------------------ projection
    @torch.no_grad()
    def project(self, optimizer: torch.optim.Optimizer | None = None) -> list[tuple[str, int]]:
        """Close gates until ``zeta <= o``; return the ``(layer name, gate index)`` pairs closed.

        Greedy: among learnable open gates (``g~ >= 0``) whose closing lowers the cost, pick the smallest
        ``g~ / (zeta_l(now) - zeta_l(k closed))`` -- the least confident gate per unit of cost it saves -- and
        reflect it to ``-max(g~, 1e-8)``. Stops early (returning what it closed) when no gate can lower the cost
        any more. A no-op when unconstrained or within budget.

        ``optimizer``: the optimizer that trains the gates. A reflected gate must not keep the state that carried
        it open (SGD's momentum would reopen it on the next step), so every per-parameter state tensor of that gate
        entry (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``, ...) is zeroed at its index.
        """
        if not self.constrained or self._frozen is not None:
            return []
        layers = dict(self.layers)
        bits = {name: list(m.binary_gates()) for name, m in self.layers}
        values = {name: m.gate.detach().double().cpu().tolist() for name, m in self.layers}

        def groups_of(name: str) -> int:
            m = layers[name]
            return math.prod(p for p, b in zip(m.factors, bits[name]) if not b)

        zeta = sum(self.cost.at(n, groups_of(n)) for n in bits)
        closed: list[tuple[str, int]] = []
        while zeta > self.o:
            best = None
            for name, m in self.layers:
                now, g = self.cost.at(name, groups_of(name)), groups_of(name)
                for k, (open_, held) in enumerate(zip(bits[name], m.held)):
                    if open_ and not held:
                        gain = now - self.cost.at(name, g * m.factors[k])
                        if gain > 0:
                            score = (values[name][k] / gain, -gain)
                            if best is None or score < best[0]:
                                best = (score, name, k, gain)
            if best is None:
                break
            _, name, k, gain = best
            layers[name].gate[k] = -max(values[name][k], GATE_INIT)
            bits[name][k] = False
            zeta -= gain
            closed.append((name, k))
        if optimizer is not None:
            reset_gate_state(optimizer, [(layers[n].gate, k) for n, k in closed])
        return closed

    # ------------------------------------------------------------------------------------------------ reporting
    def gates_in_sync(self, all_reduce_sum: Callable[[Tensor], Tensor]) -> bool:
        """Whether every process holds the same gates: ``all_reduce_sum`` (a sum over processes, e.g.
        ``torch.distributed.all_reduce``) of the gate vector must equal the local vector times the process count.
        With a single process (the sum of ones is 1) this is trivially true."""
        if not self.layers:  # none (or frozen: the gates are gone)
            return True
        g = torch.cat([m.gate.detach().double().flatten() for _, m in self.layers])
        world = all_reduce_sum(torch.ones((), dtype=torch.float64, device=g.device))
        total = all_reduce_sum(g.clone())
        return bool(torch.equal(total, g * world))

    def nonfinite_gates(self) -> list[str]:
        """The DGConv layers whose gates hold a NaN or an infinity (the trainer stops on any)."""
        return [name for name, m in self.layers if not torch.isfinite(m.gate).all()]

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly snapshot: ``zeta``, ``o``, ``zeta/o`` in the cost's units, the cost's name, the MACs of the
        DGConv layers (when the input size is known), the lagrangian multiplier, and per-layer groups, channels
        and gates."""
        if self._frozen is not None:
            return dict(self._frozen)
        zeta = self.current()
        macs = self._macs
        return {
            "cost": self.cost.name,
            "zeta": zeta,
            "o": self.o if self.constrained else None,
            "zeta_over_o": zeta / self.o if self.constrained else None,
            "budget": self.budget,
            "target": self.target,
            "objective": self.objective,
            "lambda": float(self.lam) if self.objective == "lagrangian" else None,
            "dgconv_macs": sum(macs.current(n) for n, _ in self.layers) if macs is not None else None,
            "macs": sum(macs.current(n) for n, _ in self.layers) + macs.fixed if macs is not None else None,
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
