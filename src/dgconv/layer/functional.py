"""Autograd functions of DGConv: the straight-through gate binarisation and the reference convolution.

Straight-through estimator (the exact rule)
-------------------------------------------
Forward: ``g_k = 1 if g~_k >= 0 else 0`` (eq. 6). Backward: ``dL/dg~_k = dL/dg_k`` -- the gradient with
respect to the binary gate, computed from the multilinear form of ``U`` (eq. 7), is passed to the
continuous gate unchanged: no clipping, no scaling. This is the identity straight-through estimator
that the authors' released code uses.

Reference convolution (eq. 3, Appendix B)
-----------------------------------------
``y = conv2d(x, w * U(g)) + b``, with a hand-written backward::

    dL/dx = conv2d_input(dL/dy, w * U)
    G     = conv2d_weight(x, dL/dy)              # gradient w.r.t. the masked weight
    dL/dw = G * U                                 # zero outside the groups
    dL/db = sum of dL/dy over batch and space
    dL/dU = sum_{kh,kw} G * w
    dL/dg_k = <dL/dU, dU/dg_k>                    # grouping.relationship_grad

The gates may be relaxed to [0, 1] here (``U`` is multilinear in them), which lets
``torch.autograd.gradcheck`` verify the gate gradient numerically. It computes a dense ``(out, in, k, k)``
masked weight and a dense weight gradient at every call: it is the specification, not the fast path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from . import grouping

__all__ = ["binarize_gates", "dgconv2d_reference", "as_pair"]

_Pair = tuple[int, int]


class _BinarizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, gate: Tensor) -> Tensor:  # type: ignore[override]
        return (gate >= 0).to(gate.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


def binarize_gates(gate: Tensor) -> Tensor:
    """Binary gates ``g = (g~ >= 0)`` in ``gate``'s dtype, with the identity straight-through gradient.

    >>> g = torch.tensor([-1e-8, 0.0, 3.0], requires_grad=True)
    >>> binarize_gates(g)
    tensor([0., 1., 1.], grad_fn=<_BinarizeSTEBackward>)
    """
    return _BinarizeSTE.apply(gate)


def conv_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, stride: _Pair, padding: _Pair, dilation: _Pair, groups: int,
    mask: Sequence[bool], bias: bool = False,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """``(dL/dx, dL/dweight, dL/dbias)`` of ``conv2d(x, weight, bias, stride, padding, dilation, groups)`` for the
    outputs ``mask`` asks for (``aten.convolution_backward``; only ``weight``'s shape matters for the weight
    gradient)."""
    return torch.ops.aten.convolution_backward(
        grad_y, x, weight, [weight.shape[0]] if bias else None, list(stride), list(padding), list(dilation), False,
        [0, 0], groups, list(mask),
    )


class _ReferenceDGConv(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        gates: Tensor,
        factors: tuple[int, ...],
        stride: _Pair,
        padding: _Pair,
        dilation: _Pair,
    ) -> Tensor:
        out_channels, in_channels = weight.shape[:2]
        u = grouping.relationship(gates.detach(), factors, in_channels, out_channels)
        masked = weight * u.to(weight.dtype)[:, :, None, None]
        ctx.save_for_backward(x, weight, gates)
        ctx.has_bias = bias is not None
        ctx.conf = (factors, stride, padding, dilation)
        return F.conv2d(x, masked, bias, stride, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor):  # type: ignore[override]
        x, weight, gates = ctx.saved_tensors
        factors, stride, padding, dilation = ctx.conf
        out_channels, in_channels = weight.shape[:2]
        u = grouping.relationship(gates, factors, in_channels, out_channels)
        masked = weight * u.to(weight.dtype)[:, :, None, None]
        need_x, need_w, need_b, need_g = ctx.needs_input_grad[:4]
        grad_x, grad_masked, grad_b = conv_backward(
            grad_y, x, masked, stride, padding, dilation, 1, [need_x, need_w or need_g, need_b and ctx.has_bias], ctx.has_bias
        )
        grad_w = grad_masked * u.to(grad_masked.dtype)[:, :, None, None] if need_w else None
        grad_g = None
        if need_g:
            acc = torch.promote_types(weight.dtype, torch.float32)  # never accumulate in half precision
            grad_u = (grad_masked.to(acc) * weight.to(acc)).sum(dim=(2, 3))
            grad_g = grouping.relationship_grad(grad_u, gates, factors, in_channels, out_channels)
        return grad_x, grad_w, grad_b, grad_g, None, None, None, None


def as_pair(v: int | Sequence[int], name: str) -> _Pair:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def dgconv2d_reference(
    x: Tensor,
    weight: Tensor,
    gates: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    factors: Sequence[int] | None = None,
) -> Tensor:
    """DGConv by its definition: ``conv2d(x, weight * U(gates)) + bias`` (eq. 3) with Appendix B's backward.

    Args:
        x: input ``(N, in, H, W)``.
        weight: the dense weight ``(out, in, kh, kw)``.
        gates: gate *values* ``g`` (binary, or relaxed to [0, 1]), one per factor. Pass
            ``binarize_gates(g~)`` to train continuous gates through the straight-through estimator.
        bias: optional ``(out,)``.
        stride, padding, dilation: as in :func:`torch.nn.functional.conv2d` (numeric padding only).
        factors: the factor order (default: prime factors of ``gcd(in, out)``, ascending).

    Returns:
        The output tensor ``(N, out, H', W')``.

    Example::

        >>> x, w = torch.randn(1, 4, 5, 5), torch.randn(4, 4, 3, 3)
        >>> y = dgconv2d_reference(x, w, torch.tensor([0., 1.]), padding=1)
        >>> y.shape
        torch.Size([1, 4, 5, 5])
    """
    out_channels, in_channels = weight.shape[:2]
    if factors is None:
        factors = grouping.default_factors(in_channels, out_channels)
    factors = grouping.check_factors(factors, in_channels, out_channels)
    if gates.shape != (len(factors),):
        raise ValueError(f"gates must have shape ({len(factors)},) for factors {list(factors)}, got {tuple(gates.shape)}")
    return _ReferenceDGConv.apply(
        x, weight, bias, gates, factors, as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    )
