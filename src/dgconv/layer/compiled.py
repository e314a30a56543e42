"""DGConv under ``torch.compile``: the grouped convolution as one opaque custom op, so a G-network compiles for
training with no graph break per layer.

Eager DGConv reads its binary gates on the host to pick the grouping (a data-dependent choice that a compiler
cannot trace). Here that choice happens *inside* two custom ops, ``dgconv::grouped_conv`` and its backward
``dgconv::grouped_conv_backward``: the compiler sees a convolution with known output shape (registered "fake"
implementations) and a straight-through gate gradient, and everything around the layers -- batch norm,
activations, the residual adds -- is compiled. The ops run the same exact fast path as eager mode
(:mod:`dgconv.layer.fast`), re-sorting the input in backward instead of saving it.

Needs ``torch.library.custom_op`` (torch >= 2.4); :func:`available` says whether it is there. ``DGConv2d`` uses
this path automatically while being compiled.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gathers import gather_channels, gather_pairs, memory_format_of
from .grouping import Grouping

__all__ = ["available", "grouped_conv"]


def available() -> bool:
    """Whether this torch has ``torch.library.custom_op`` (the compiled path); otherwise DGConv layers are left out
    of the compiled graph (``torch.compiler.disable``)."""
    return hasattr(torch, "library") and hasattr(torch.library, "custom_op")


def _out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _empty(shape: tuple[int, ...] | torch.Size, like: Tensor, fmt: torch.memory_format) -> Tensor:
    """An uninitialised result of ``shape`` in ``fmt`` with canonical strides (what the fake kernels promise)."""
    fmt = fmt if len(shape) == 4 else torch.contiguous_format
    return torch.empty(tuple(shape), dtype=like.dtype, device=like.device, memory_format=fmt)


def _laid_out(t: Tensor, fmt: torch.memory_format) -> Tensor:
    """``t`` with exactly the strides :func:`_empty` gives (copied only when they differ): compiled code checks
    that a custom op's results have the strides its fake kernel announced. The strides are read from a meta
    tensor, so nothing is allocated when ``t`` already has them."""
    fmt = fmt if t.dim() == 4 else torch.contiguous_format
    if torch.empty(t.shape, device="meta", memory_format=fmt).stride() == t.stride():
        return t
    return _empty(t.shape, t, fmt).copy_(t)


def _grouping(gates: Tensor, factors: list[int], cin: int, cout: int) -> Grouping:
    bits = tuple(bool(v) for v in (gates >= 0.5).tolist())  # gates arrive as 0/1 values
    return Grouping(cin, cout, tuple(factors), bits)


if available():
    from . import fast

    @torch.library.custom_op("dgconv::grouped_conv", mutates_args=())
    def _grouped_conv(x: Tensor, weight: Tensor, bias: Tensor | None, gates: Tensor, factors: list[int],
                      stride: list[int], padding: list[int], dilation: list[int], fraction: float) -> Tensor:
        g = _grouping(gates, factors, weight.shape[1], weight.shape[0])
        conf = (tuple(stride), tuple(padding), tuple(dilation))
        plan = fast.plan_for(g, x, weight.shape, *conf, fraction)
        return _laid_out(fast.grouped_forward(x, weight, bias, plan, conf)[0], memory_format_of(x))  # type: ignore[arg-type]

    @_grouped_conv.register_fake
    def _(x, weight, bias, gates, factors, stride, padding, dilation, fraction):  # type: ignore[no-untyped-def]
        h = _out(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0])
        w = _out(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1])
        return _empty((x.shape[0], weight.shape[0], h, w), x, memory_format_of(x))

    @torch.library.custom_op("dgconv::grouped_conv_backward", mutates_args=())
    def _grouped_conv_backward(grad_y: Tensor, x: Tensor, weight: Tensor, gates: Tensor, factors: list[int],
                               stride: list[int], padding: list[int], dilation: list[int], fraction: float,
                               has_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = _grouping(gates, factors, weight.shape[1], weight.shape[0])
        conf = (tuple(stride), tuple(padding), tuple(dilation))
        plan = fast.plan_for(g, x, weight.shape, *conf, fraction)
        xp = x if plan.contiguous else gather_channels(x, plan.in_perm)
        wg = gather_pairs(weight, plan.w_index, weight.shape[0])
        gx, gw, gb, gg = fast.grouped_backward(grad_y, xp, weight, wg, plan, conf, (True, True, has_bias, True),  # type: ignore[arg-type]
                                               gates.shape[0], fraction)
        gb = gb if gb is not None else weight.new_zeros(weight.shape[0])
        return (_laid_out(gx, memory_format_of(x)), _laid_out(gw, memory_format_of(weight)),  # type: ignore[arg-type]
                _laid_out(gb, torch.contiguous_format), _laid_out(gg.to(gates.dtype), torch.contiguous_format))  # type: ignore[union-attr]

    @_grouped_conv_backward.register_fake
    def _(grad_y, x, weight, gates, factors, stride, padding, dilation, fraction, has_bias):  # type: ignore[no-untyped-def]
        return (_empty(x.shape, x, memory_format_of(x)), _empty(weight.shape, weight, memory_format_of(weight)),
                _empty((weight.shape[0],), weight, torch.contiguous_format),
                _empty(gates.shape, gates, torch.contiguous_format))

    def _setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
        x, weight, bias, gates, factors, stride, padding, dilation, fraction = inputs
        ctx.save_for_backward(x, weight, gates)
        ctx.conf = (factors, stride, padding, dilation, fraction, bias is not None)

    def _backward(ctx, grad_y):  # type: ignore[no-untyped-def]
        x, weight, gates = ctx.saved_tensors
        factors, stride, padding, dilation, fraction, has_bias = ctx.conf
        gy = grad_y.contiguous(memory_format=memory_format_of(x))
        gx, gw, gb, gg = _grouped_conv_backward(gy, x, weight, gates, factors, stride, padding, dilation, fraction,
                                                has_bias)
        return gx, gw, (gb if has_bias else None), gg, None, None, None, None, None

    _grouped_conv.register_autograd(_backward, setup_context=_setup)


def grouped_conv(x: Tensor, weight: Tensor, bias: Tensor | None, gates: Tensor, factors: tuple[int, ...],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], fraction: float = 1.0) -> Tensor:
    """The DGConv forward as the ``dgconv::grouped_conv`` op (``gates``: the 0/1 gate values carrying the
    straight-through gradient). Same result and gradients as :func:`dgconv.layer.fast.dgconv2d_grouped`."""
    return torch.ops.dgconv.grouped_conv(x, weight, bias, gates, list(factors), list(stride), list(padding),
                                         list(dilation), float(fraction))
