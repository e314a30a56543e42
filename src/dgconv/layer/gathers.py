"""The gathers of the fast path: channels of an activation by index (NCHW as whole rows of the ``(N*C, H*W)``
matrix, NHWC through precomputed offsets), in-group weight blocks out of the dense weight and back, and the
memory-format rule (:func:`memory_format_of`) that :mod:`dgconv.layer.fast`, :mod:`dgconv.layer.compiled` and
:mod:`dgconv.convert.deploy` share. Derived index tensors are cached per index tensor (:func:`_derived`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["memory_format_of", "gather_channels", "gather_pairs", "put_pairs", "scatter_pairs"]


def _is_channels_last(x: Tensor) -> bool:
    """True for a 4-D tensor laid out as NHWC (and not also NCHW-contiguous)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def memory_format_of(x: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a tensor :func:`_is_channels_last` calls NHWC, else ``torch.contiguous_format``:
    the layout results that follow ``x`` are given (by the fast path, the compiled op and ``convert``)."""
    return torch.channels_last if _is_channels_last(x) else torch.contiguous_format


#: Index tensors derived from a plan's index tensor (plans own those), per index tensor and key; dropped with it.
_DERIVED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _derived(index: Tensor, key: tuple, make: Callable[[], Tensor]) -> Tensor:
    """``make()``, computed once per ``index`` tensor and ``key``: the index arithmetic of a gather is done once per
    grouping, not at every call."""
    per_index = _DERIVED.setdefault(index, {})
    out = per_index.get(key)
    if out is None:
        out = per_index[key] = make()
    return out


def _nchw_rows(index: Tensor, n: int, c: int) -> Tensor:
    """``(n * len(index),)`` rows of an ``(n * c, H * W)`` view that are ``x[:, index]``."""
    return _derived(index, ("nchw", n, c),
                    lambda: (torch.arange(n, device=index.device)[:, None] * c + index[None, :]).reshape(-1))


def gather_channels(x: Tensor, index: Tensor) -> Tensor:
    """``x[:, index]``, keeping ``x``'s memory format. Both layouts are gathered as the 2-D matrix they are in
    memory. A channels_last tensor is the ``(N*H*W, C)`` matrix: ``index_select`` on the last dimension of the 4-D
    NHWC view takes a generic path that measured 15x slower on CPU (30 ms against 2 ms at 128x64x16x16, the layout
    `dgconv train`'s augmented batches have). A contiguous NCHW tensor is the ``(N*C, H*W)`` matrix, whose whole rows
    one ``index_select`` copies: 2-4x faster than ``index_select(1, ...)`` on maps of 16x16 and more (2.9 against 6.3
    ms at 64x256x16x16, 0.24 against 0.95 ms at 8x256x28x28; 2-core EPYC)."""
    if _is_channels_last(x):
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c).index_select(1, index)
        return rows.view(n, h, w, index.numel()).permute(0, 3, 1, 2)
    if x.dim() == 4 and x.is_contiguous():
        n, c, h, w = x.shape
        picked = x.view(n * c, h * w).index_select(0, _nchw_rows(index, n, c))
        return picked.view(n, index.numel(), h, w)
    return x.index_select(1, index)


def _nhwc_offsets(index: Tensor, shape: torch.Size) -> Tensor:
    """``(len(index) * kh * kw,)`` offsets into a channels_last weight of ``shape`` viewed flat: the ``kh * kw``
    elements of each pair ``o * in + c`` of ``index``, in ``(pair, kh, kw)`` order."""
    _, i, kh, kw = shape

    def make() -> Tensor:
        base = (index // i) * (kh * kw * i) + index % i
        return (base[:, None] + torch.arange(kh * kw, device=index.device)[None, :] * i).reshape(-1)

    return _derived(index, ("nhwc", tuple(shape)), make)


def gather_pairs(weight: Tensor, index: Tensor, rows: int) -> Tensor:
    """Rows ``index`` of ``weight`` viewed as ``(out*in, kh*kw)``, reshaped to ``(rows, -1, kh, kw)``.

    A channels_last weight (``model.to(memory_format=torch.channels_last)``) has no such view: reshaping it would
    copy the whole dense weight at every call, so its ``(out, in)`` pairs are picked from its flat memory by cached
    offsets instead (an ``index_select``: 4.0 ms against 6.3 ms for advanced indexing of the NHWC view, 1024x1024
    3x3 at 32 groups, 2-core EPYC)."""
    o, i, kh, kw = weight.shape
    if _is_channels_last(weight):
        flat = weight.permute(0, 2, 3, 1).view(-1)  # NHWC memory is contiguous in this order
        return flat.index_select(0, _nhwc_offsets(index, weight.shape)).view(rows, -1, kh, kw)
    return weight.reshape(o * i, kh * kw).index_select(0, index).reshape(rows, -1, kh, kw)


def put_pairs(out: Tensor, index: Tensor, values: Tensor) -> None:
    """Write ``values`` (``(len(index), ...)``, ``kh * kw`` elements per pair) into the ``(out, in)`` pairs ``index``
    (flat ``o * in + c``) of the weight-shaped ``out``, in either layout."""
    if _is_channels_last(out):
        flat = out.permute(0, 2, 3, 1).view(-1)
        flat.index_copy_(0, _nhwc_offsets(index, out.shape), values.reshape(-1).to(out.dtype))
    else:
        o, i, kh, kw = out.shape
        out.view(o * i, kh * kw).index_copy_(0, index, values.reshape(-1, kh * kw).to(out.dtype))


def scatter_pairs(weight: Tensor, index: Tensor, values: Tensor) -> Tensor:
    """A tensor like ``weight`` (shape and layout), zero except the ``(out, in)`` pairs ``index`` (flat ``o * in +
    c``), which hold ``values`` (``(len(index), ...)`` with ``kh * kw`` elements per pair)."""
    out = torch.zeros_like(weight, memory_format=memory_format_of(weight))
    put_pairs(out, index, values)
    return out
