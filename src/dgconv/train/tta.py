"""Test-time augmentation: the logits of a batch averaged over views of each image (``--tta``).

* ``flip``: the image and its mirror image (2 views);
* ``flip-shift``: those two, each also translated by one pixel up-left and one pixel down-right (6 views; the
  translation pads with the edge row and column, so nothing is zero-filled), as the fast CIFAR recipe evaluates.

Every view has the same weight. Example::

    >>> import torch
    >>> net = torch.nn.Flatten()
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> tta_logits(net, x, net(x), "flip").tolist()
    [[0.5, 0.5, 2.5, 2.5]]
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TTA_MODES", "tta_logits", "views"]

TTA_MODES = ("none", "flip", "flip-shift")


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """``x`` translated by ``(dy, dx)`` pixels (positive: down/right), edges replicated."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return padded[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def views(x: Tensor, mode: str) -> list[Tensor]:
    """The views of a batch ``mode`` averages over (the batch itself first)."""
    if mode == "none":
        return [x]
    base = [x, x.flip(-1)]
    if mode == "flip":
        return base
    if mode == "flip-shift":
        return base + [_shift(v, d, d) for v in base for d in (-1, 1)]
    raise ValueError(f"--tta must be one of {TTA_MODES}, got {mode!r}")


def tta_logits(model: nn.Module, x: Tensor, first: Tensor, mode: str) -> Tensor:
    """The mean logits over the views of ``x``; ``first`` is ``model(x)``, already computed."""
    extra = views(x, mode)[1:]
    total = first.float()
    for v in extra:
        total = total + model(v).float()
    return total / (1 + len(extra))
