"""The deployed model's files: ``PATH`` (its ``state_dict``) and ``PATH.json``, an architecture spec that rebuilds it
with :func:`dgconv.create_model` -- the plain network, its per-layer groups and, where learned channel orders could
not be folded away (:mod:`dgconv.convert.orders`), which layers run them. This module owns that format.

Example::

    >>> import tempfile, pathlib, dgconv
    >>> g = dgconv.create_model("g_resnext_digits", num_classes=10)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.pt"
    >>> _ = save_deployed(dgconv.deploy(g), path)
    >>> type(load_deployed(path)).__name__
    'ResNet'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layer.conv import DGConv2d, learned_groups
from ..models.registry import create_model, model_info
from .groupify import set_module
from .orders import ChannelPermutation

__all__ = ["architecture_spec", "save_deployed", "load_deployed", "SPEC_FORMAT"]

SPEC_FORMAT = "dgconv.deployed/1"


def architecture_spec(model: nn.Module) -> dict[str, Any]:
    """The JSON architecture spec of a model built by :func:`dgconv.create_model` (G-ResNeXt or deployed).

    ``{"format", "model": plain network name, "num_classes", "kwargs": {..., "groups": {name: G}}, "orders":
    {layer: [input order?, output order?]}}``: the deployed network is ``create_model(spec["model"],
    num_classes=spec["num_classes"], **spec["kwargs"])``, with each layer in ``orders`` wrapped in its channel
    permutations (which ones it has; their indices are in the state dict).
    """
    cfg = getattr(model, "dgconv_cfg", None)
    if not isinstance(cfg, dict):
        raise ValueError("architecture_spec needs a model built by dgconv.create_model (it records how it was built)")
    name = cfg["name"]
    kwargs = dict(cfg["kwargs"])
    groups = learned_groups(model)
    if groups:  # a G-ResNeXt: the plain architecture with its learned groups
        name = model_info(name).plain
        kwargs["groups"] = groups
    kwargs.pop("dgconv_impl", None)
    spec: dict[str, Any] = {"format": SPEC_FORMAT, "model": name, "num_classes": cfg["num_classes"], "kwargs": kwargs}
    orders = {n: [isinstance(m[0], ChannelPermutation), isinstance(m[-1], ChannelPermutation)]
              for n, m in model.named_modules() if isinstance(m, nn.Sequential) and len(m) in (2, 3)
              and any(isinstance(c, nn.Conv2d) for c in m) and all(isinstance(c, (nn.Conv2d, ChannelPermutation)) for c in m)}
    if orders:
        spec["orders"] = orders
    json.dumps(spec)  # must be plain JSON
    return spec


def save_deployed(model: nn.Module, path: str | Path) -> tuple[Path, Path]:
    """Save a deployed model as ``PATH`` (its ``state_dict``) and ``PATH.json`` (its architecture spec).

    Returns the two paths. :func:`load_deployed` rebuilds it with ``create_model``; no training code needed.
    """
    if any(isinstance(m, DGConv2d) for m in model.modules()):
        raise ValueError("save_deployed expects a deployed model: call dgconv.deploy(model) first")
    from .._files import atomic_write

    path = Path(path)
    spec = architecture_spec(model)
    state = model.state_dict()
    atomic_write(path, lambda f: torch.save(state, f))
    spec_path = path.with_name(path.name + ".json")
    text = json.dumps(spec, indent=2) + "\n"
    atomic_write(spec_path, lambda f: f.write(text.encode()))
    return path, spec_path


def load_deployed(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_deployed` (``PATH`` or ``PATH.json``): plain ``torch.nn`` modules (and
    :class:`~dgconv.convert.orders.ChannelPermutation` where the spec names channel orders)."""
    path = Path(path)
    if path.suffix == ".json":
        spec_path, weights = path, path.with_suffix("")
    else:
        spec_path, weights = path.with_name(path.name + ".json"), path
    spec = json.loads(spec_path.read_text())
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"{spec_path} is not a dgconv deployed-model spec")
    model = create_model(spec["model"], num_classes=spec["num_classes"], **spec["kwargs"])
    for name, (has_in, has_out) in (spec.get("orders") or {}).items():
        conv = model.get_submodule(name)
        n_in, n_out = conv.in_channels, conv.out_channels
        parts = ([ChannelPermutation(torch.arange(n_in))] if has_in else []) + [conv] + (
            [ChannelPermutation(torch.arange(n_out))] if has_out else [])
        set_module(model, name, nn.Sequential(*parts))
    model.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
    return model.eval()
