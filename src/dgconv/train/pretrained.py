"""Start learning groups from a trained network: ``dgconv train --init-from PATH`` and :func:`load_pretrained`.

``PATH`` is a dgconv checkpoint (a G-network, a plain network, or a frozen run) or a ``state_dict`` file of a
torchvision or timm ResNet / ResNeXt (their parameter names are ours: ``conv1``, ``layer1.0.conv2``, ``fc``, ...;
a ``state_dict``/``model`` wrapper key and DDP's ``module.`` prefix are understood). Files are read with
``weights_only=True``.

A plain group convolution in the file becomes the DGConv layer of the same name at that convolution's grouping,
computing exactly what it computed (:meth:`dgconv.DGConv2d.load_conv`): its weights in the block diagonal, fresh
initial weights outside (masked, so closed gates can feel a gradient and merge groups later), and confident gates
(``|g~| = gate_init``, 1.0 by default) so that the first steps of fine-tuning keep the structure until the loss says
otherwise. A classifier of another class count is left at its fresh initialisation (and said so). Any other
difference -- a missing or unexpected parameter, another shape -- is an error that names the first mismatches and
counts them.

Fine-tuning recipe (measured in docs/guide.md): ``--init-from`` the trained network, a learning rate about a tenth of
the from-scratch one, a budget, and a few epochs; ``--freeze-groups-at`` once the groups have settled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..layer.conv import DGConv2d, dgconv_layers
from .checkpoint import FORMAT, CheckpointError, Contents, contents, load_weights_only

__all__ = ["load_pretrained", "read_state_dict", "GATE_INIT_PRETRAINED"]

#: ``|g~|`` of the gates of a network converted from pretrained weights.
GATE_INIT_PRETRAINED = 1.0


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], Contents | None]:
    """The parameters in ``path`` and, when it is a dgconv checkpoint, the checkpoint itself.

    Raises:
        CheckpointError: missing, unreadable, holding objects outside the weights-only format, or no mapping of
            parameter names to tensors.
    """
    path = Path(path)
    obj = load_weights_only(path, "weights file (--init-from)")
    ckpt = contents(obj) if isinstance(obj, dict) and obj.get("format") == FORMAT else None
    sd: Any = obj
    if ckpt is not None:
        sd = ckpt.model
    elif isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                sd = obj[key]
                break
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"--init-from: {path} holds no state_dict (a mapping from parameter names to tensors)")
    odd = [k for k, v in sd.items() if not isinstance(v, torch.Tensor) and not k.endswith("_extra_state")]
    if odd:
        kinds = sorted({type(sd[k]).__name__ for k in odd})
        raise CheckpointError(f"--init-from: {path} is not a state_dict: {len(odd)} value(s) are not tensors "
                              f"({', '.join(kinds)}; first: {', '.join(odd[:3])})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return {k: v for k, v in sd.items()}, ckpt


def _classifier(model: nn.Module) -> str | None:
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return last


def _mismatch_error(path: Path, missing: list[str], unexpected: list[str], shapes: list[str]) -> CheckpointError:
    parts = []
    for what, items in (("missing from the file", missing), ("not in the model", unexpected), ("of another shape", shapes)):
        if items:
            parts.append(f"{len(items)} {what} (first: {', '.join(items[:3])})")
    return CheckpointError(f"--init-from: {path} does not fit this model: " + "; ".join(parts))


@torch.no_grad()
def load_pretrained(model: nn.Module, path: str | Path, gate_init: float = GATE_INIT_PRETRAINED) -> list[str]:
    """Initialise ``model`` (freshly built) from the weights in ``path``; return notes on what was done.

    See the module docstring for what ``path`` may hold. DGConv layers of ``model`` take the grouping the file's
    convolution had (or the file's own gates, for a G-network checkpoint).

    Raises:
        CheckpointError: an unreadable file, or parameters that do not fit (named and counted).
    """
    path = Path(path)
    sd, ckpt = read_state_dict(path)
    if ckpt is not None and ckpt.frozen:
        raise CheckpointError(f"--init-from: {path} is a run whose groups were frozen; start from its deployed model "
                              f"(dgconv deploy) or an earlier checkpoint")
    notes = []
    own = model.state_dict()
    layers = dict(dgconv_layers(model))
    classifier = _classifier(model)
    skip: set[str] = set()
    if classifier and f"{classifier}.weight" in sd and sd[f"{classifier}.weight"].shape != own[f"{classifier}.weight"].shape:
        skip |= {f"{classifier}.weight", f"{classifier}.bias"}
        notes.append(f"classifier {classifier} left at its fresh initialisation ({tuple(sd[f'{classifier}.weight'].shape)[0]} "
                     f"classes in the file, {tuple(own[f'{classifier}.weight'].shape)[0]} here)")
    converted = 0
    shapes: list[str] = []
    for name, layer in layers.items():
        key = f"{name}.weight"
        w = sd.get(key)
        if w is None or f"{name}.gate" in sd:  # absent (reported below), or a G-network's own DGConv state
            continue
        if w.dim() != 4 or layer.in_channels % w.shape[1] or w.shape[0] != layer.out_channels:
            shapes.append(f"{key} {tuple(w.shape)} vs {tuple(own[key].shape)}")
            continue
        groups = layer.in_channels // w.shape[1]
        try:
            layer.load_conv(w, sd.get(f"{name}.bias"), groups, gate_magnitude=gate_init)
        except ValueError as e:
            shapes.append(f"{key}: {e}")
            continue
        skip |= {key, f"{name}.bias"}
        converted += 1
    rest = {k: v for k, v in sd.items() if k not in skip}
    missing = [k for k in own if k not in sd and k not in skip
               and not k.endswith(("num_batches_tracked", "._extra_state", ".gate"))]
    unexpected = [k for k in rest if k not in own]
    shapes += [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in rest.items()
               if k in own and isinstance(v, Tensor) and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        raise _mismatch_error(path, missing, unexpected, shapes)
    model.load_state_dict(rest, strict=False)
    if converted:
        notes.append(f"{converted} group convolution(s) became DGConv layers at their own grouping (gates |g~| = {gate_init:g})")
    groups_kept = sum(isinstance(m, DGConv2d) for m in model.modules()) - converted
    if groups_kept and ckpt is not None:
        notes.append(f"{groups_kept} DGConv layer(s) took the checkpoint's gates")
    notes.insert(0, f"initialised from {path} ({'a dgconv checkpoint' if ckpt else 'a state_dict'}, {len(sd)} tensors)")
    return notes
