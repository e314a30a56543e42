"""Search, then train: turn a G-network into the group-convolution network it has learned, mid-training.

Learning groups costs more per step than training the network one ends up with (the dense weight, the gate
gradients). Groups settle early, so a recipe that searches for a fraction of the schedule and then trains the
learned architecture costs little more than training that architecture alone. :func:`freeze_groups` makes the
switch for any training loop (``dgconv train --freeze-groups-at X`` does it for you):

* every DGConv layer becomes ``nn.Conv2d(groups=G)`` over its in-group weights, channel permutations folded into
  the neighbouring layers where a fold rule allows (exactly what :func:`dgconv.deploy` does, but in place);
* batch norm statistics and parameters carry on (permuted where a fold permuted their channels);
* the optimizer keeps the state of every surviving weight: the momentum (or Adam moments) of the in-group weights
  is gathered into the new weights, permuted parameters have their state permuted alike, and the gates and
  out-of-group weights leave the optimizer. The next step therefore equals the step the unfrozen model would take
  with its gates held fixed.

From then on a step costs what ResNeXt* with those groups costs, in time and memory.

:func:`frozen_record` / :func:`refreeze` let a checkpoint written after the switch be restored: build the
G-network (and its optimizer) as at the start, apply the record, and the structure is the frozen one again.

Example::

    model = dgconv.create_model("g_resnext_cifar_tiny", num_classes=10)
    opt = torch.optim.SGD(dgconv.parameter_groups(model, 5e-4), lr=0.1, momentum=0.9)
    ...  # search: train with a ResourceConstraint for a few epochs
    dgconv.freeze_groups(model, opt)      # from here on: a plain ResNeXt* with the learned groups
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .deploy import deploy_in_place
from ..layer.conv import dgconv_layers

__all__ = ["freeze_groups", "frozen_record", "structure_record", "restore_grouping", "refreeze", "is_frozen",
           "freeze_structure", "frozen_structure"]


def frozen_record(model: nn.Module) -> dict[str, dict[str, list[Any]]]:
    """The grouping of every DGConv layer (factor order, binary gates and the gate values): what :func:`refreeze`
    needs to rebuild the structure and report the same state."""
    return {name: {"factors": list(m.factors), "gates": [bool(b) for b in m.binary_gates()],
                   "values": [float(v) for v in m.gate.detach().cpu().tolist()]} for name, m in dgconv_layers(model)}


def structure_record(model: nn.Module) -> dict[str, dict[str, list[Any]]]:
    """The structure a G-network deploys to: every DGConv layer's factor order and binary gates (a
    :func:`frozen_record` without the gate values). ``groups.json`` keeps it as ``"structure"``, so that
    :func:`freeze_structure` (``dgconv train --structure-from``) can rebuild the learned groups *with their channel
    order*."""
    return {name: {"factors": r["factors"], "gates": r["gates"]} for name, r in frozen_record(model).items()}


def freeze_structure(model: nn.Module, record: dict[str, dict[str, list[Any]]],
                     optimizer: torch.optim.Optimizer | None = None, orders: str = "fold") -> None:
    """Turn a freshly built G-network into the structure of ``record`` (a :func:`structure_record`), *untrained*:
    each DGConv layer becomes its group convolution with the recorded groups and channel order (the permutations
    folded or inserted exactly as :func:`freeze_groups` does), and each of those convolutions starts again from
    ``nn.Conv2d``'s own initialisation, so that it starts as a plain network with those groups would. Call it
    before the first step (``optimizer``: the optimizer built for the G-network, whose gate entries leave it).

    Raises:
        ValueError: the record does not fit the model (other layers or channels).
    """
    restore_grouping(model, record)
    freeze_groups(model, optimizer, orders)
    root = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    for name in record:  # the group convolution, alone or between the channel permutations no rule could fold
        for conv in (m for m in root.get_submodule(name).modules() if isinstance(m, nn.Conv2d)):
            conv.reset_parameters()
            if optimizer is not None:  # nothing trained yet; a state would belong to the discarded values
                for p in conv.parameters():
                    optimizer.state.pop(p, None)


def freeze_groups(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                  orders: str = "fold") -> dict[str, dict[str, list[Any]]]:
    """Replace every DGConv layer of ``model`` (in place; DDP/compile wrappers are looked through) by the group
    convolution it currently is, carrying ``optimizer``'s state; returns the :func:`frozen_record` of the grouping.

    The model's ``dgconv_frozen`` attribute holds the record afterwards (checkpoints save it). A model inside
    ``DistributedDataParallel`` must be wrapped again afterwards (its parameters changed).

    Raises:
        ValueError: the model has no DGConv layers (nothing to freeze).
    """
    root = getattr(model, "module", model)
    root = getattr(root, "_orig_mod", root)
    record = frozen_record(root)
    if not record:
        raise ValueError("freeze_groups: the model has no DGConv layers (already frozen, or never a G-network)")
    deploy_in_place(root, optimizer, orders)
    root.dgconv_frozen = record
    return record


def frozen_structure(model: nn.Module) -> dict[str, dict[str, list[Any]]] | None:
    """The :func:`frozen_record` :func:`freeze_groups` took of ``model``, or ``None`` when it was never frozen
    (what a checkpoint keeps, so that :func:`refreeze` can rebuild the structure)."""
    root = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    record = getattr(root, "dgconv_frozen", None)
    return record if isinstance(record, dict) else None


def is_frozen(model: nn.Module) -> bool:
    """Whether :func:`freeze_groups` has run on this model."""
    root = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    return isinstance(getattr(root, "dgconv_frozen", None), dict)


@torch.no_grad()
def restore_grouping(model: nn.Module, record: dict[str, dict[str, list[Any]]]) -> None:
    """Set each DGConv layer of a G-network to the grouping (factor order and gates) in a :func:`frozen_record`.

    Raises:
        ValueError: the record does not fit the model (other layers or channels).
    """
    layers = dict(dgconv_layers(model))
    if set(record) != set(layers):
        raise ValueError(f"the frozen record names layers {sorted(set(record) ^ set(layers))[:3]} that this model "
                         f"does not have (or lacks)")
    for name, layer in layers.items():
        try:
            layer.set_grouping(record[name]["factors"], [bool(g) for g in record[name]["gates"]])
            values = record[name].get("values")
            if values is not None:  # the exact values, whose signs are the gates just set
                v = torch.tensor(values, dtype=layer.gate.dtype)
                if [bool(b) or h for b, h in zip((v >= 0).tolist(), layer.held)] != [bool(g) for g in record[name]["gates"]]:
                    raise ValueError("the recorded gate values disagree with the recorded gates")
                layer.gate.copy_(v.to(layer.gate.device))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the frozen record of {name} does not fit it: {e}") from None


def refreeze(model: nn.Module, record: dict[str, dict[str, list[Any]]], optimizer: torch.optim.Optimizer | None = None,
             orders: str = "fold") -> None:
    """Set each DGConv layer of a freshly built G-network to the grouping in ``record`` and freeze it, so the model
    (and ``optimizer``) have exactly the structure they had when ``record`` was taken. Load the checkpoint's
    state dicts afterwards.

    Raises:
        ValueError: the record does not fit the model (other layers or channels).
    """
    restore_grouping(model, record)
    freeze_groups(model, optimizer, orders)
