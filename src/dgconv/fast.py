"""The fast exact path of DGConv: group convolutions at the current grouping, never a dense masked one.

At any moment the binary gates define a group convolution (up to a channel permutation), so::

    y = conv2d(x[:, P_in], W_g, groups=G)[:, P_out^-1]

where ``P_in``/``P_out`` sort the channels by group (identity when the grouping is contiguous) and ``W_g``
``(out, in/G, kh, kw)`` gathers the in-group weights of the dense ``W``. The backward computes the input
gradient and the in-group weight gradient with one grouped ``convolution_backward``; the weight gradient
is scattered into a dense gradient that is zero outside the groups (exactly ``dL/dW * U``).

Gate gradients (identity STE, ``dL/dg~_k = dL/dg_k``) equal ``<dL/dU, dU/dg_k>`` with
``dL/dU[o, c] = sum_hw W[o, c] * (x ⋆ dL/dy)[o, c]``. The pairs ``dU/dg_k`` touches:

* ``g_k = 1``: in-group pairs whose digit k differs. They come for free from the in-group weight gradient.
* ``g_k = 0``: pairs of *different* groups whose group ids differ only in digit k. For each of the
  ``p_k - 1`` digit shifts the partner groups form another group convolution over a permuted input, so
  the term is one grouped weight gradient ``conv2d_weight(x[:, P_cross], dL/dy, groups=G)`` contracted
  with the matching weights. No dense ``(out, in, kh, kw)`` temporary is formed; the extra cost is
  ``sum_{k: g_k=0} (p_k - 1)`` grouped weight gradients.

Only :func:`dgconv2d_grouped` is public; the layer calls it for ``impl="auto"``/``"fast"``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .functional import binarize_gates
from .grouping import Grouping

__all__ = ["dgconv2d_grouped"]

_Pair = tuple[int, int]


@dataclass
class _CrossTerm:
    gate: int  # index of the zero gate this term belongs to
    in_index: Tensor  # (in,) input channels so that slot γ*ig+j holds partner group's channel j
    w_index: Tensor  # (out*ig,) flat indices into W.view(out*in, -1) of the partner weights


@dataclass
class _Plan:
    """Device-resident index tensors for one grouping."""

    groups: int
    contiguous: bool
    in_perm: Tensor
    out_perm: Tensor
    in_inv: Tensor
    out_inv: Tensor
    w_index: Tensor  # (out*ig,) flat indices of the in-group weights, rows in sorted output order
    one_gates: list[int]
    one_masks: Tensor  # (len(one_gates), out, ig): 1 where the in-group pair differs in that gate's digit
    cross: list[_CrossTerm]


def _digits(channels: int, factors: tuple[int, ...]) -> Tensor:
    """Mixed-radix digits (K, channels) of each channel's Kronecker index."""
    d = 1
    for p in factors:
        d *= p
    idx = torch.arange(channels) // (channels // d)
    out = []
    stride = d
    for p in factors:
        stride //= p
        out.append((idx // stride) % p)
    return torch.stack(out) if out else torch.zeros(0, channels, dtype=torch.long)


def _build_plan(g: Grouping, device: torch.device) -> _Plan:
    cin, cout, G = g.in_channels, g.out_channels, g.groups
    ig = cin // G
    in_perm, out_perm = g.in_perm, g.out_perm
    # Sorted slot r (output) pairs with sorted input slots (r // og) * ig + j, j < ig.
    og = cout // G
    slot_group = torch.arange(cout) // og
    in_slots = slot_group[:, None] * ig + torch.arange(ig)[None, :]  # (out, ig)
    in_chan = in_perm[in_slots]  # (out, ig) original input channel
    w_index = (out_perm[:, None] * cin + in_chan).reshape(-1)

    din, dout = _digits(cin, g.factors), _digits(cout, g.factors)
    one_gates = [k for k, gk in enumerate(g.gates) if gk]
    if one_gates:
        masks = torch.stack([dout[k][out_perm][:, None] != din[k][in_chan] for k in one_gates])
    else:
        masks = torch.zeros(0, cout, ig, dtype=torch.bool)

    # Cross terms: partner group of group γ for zero gate k and shift s: digit k of γ advanced by s mod p_k.
    # Group ids are mixed-radix numbers over the zero-gate digits (most significant first).
    zero = [k for k, gk in enumerate(g.gates) if not gk]
    radices = [g.factors[k] for k in zero]
    cross: list[_CrossTerm] = []
    gamma = torch.arange(G)
    for pos, k in enumerate(zero):
        p = radices[pos]
        place = 1
        for r in radices[pos + 1 :]:
            place *= r
        digit = (gamma // place) % p
        for s in range(1, p):
            partner = gamma + (((digit + s) % p) - digit) * place  # (G,)
            src_slots = partner[slot_group][:, None] * ig + torch.arange(ig)[None, :]  # (out, ig) sorted input slots
            cross_chan = in_perm[src_slots]
            cross_in = in_perm.view(G, ig)[partner].reshape(-1)
            cross.append(_CrossTerm(k, cross_in.to(device), (out_perm[:, None] * cin + cross_chan).reshape(-1).to(device)))

    return _Plan(
        groups=G,
        contiguous=g.is_contiguous,
        in_perm=in_perm.to(device),
        out_perm=out_perm.to(device),
        in_inv=torch.argsort(in_perm).to(device),
        out_inv=torch.argsort(out_perm).to(device),
        w_index=w_index.to(device),
        one_gates=one_gates,
        one_masks=masks.to(device),
        cross=cross,
    )


_PLANS: OrderedDict[tuple[Grouping, torch.device], _Plan] = OrderedDict()
_MAX_PLANS = 256


def _plan(g: Grouping, device: torch.device) -> _Plan:
    key = (g, device)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _build_plan(g, device)
        _PLANS[key] = plan
        if len(_PLANS) > _MAX_PLANS:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan


def _gather(weight: Tensor, index: Tensor, rows: int) -> Tensor:
    """Rows ``index`` of ``weight`` viewed as ``(out*in, kh*kw)``, reshaped to ``(rows, -1, kh, kw)``."""
    o, i, kh, kw = weight.shape
    return weight.reshape(o * i, kh * kw).index_select(0, index).reshape(rows, -1, kh, kw)


class _GroupedDGConv(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        gates: Tensor,
        plan: _Plan,
        stride: _Pair,
        padding: _Pair,
        dilation: _Pair,
    ) -> Tensor:
        out = weight.shape[0]
        xp = x if plan.contiguous else x.index_select(1, plan.in_perm)
        wg = _gather(weight, plan.w_index, out)
        bp = None if bias is None or plan.contiguous else bias.index_select(0, plan.out_perm)
        yp = F.conv2d(xp, wg, bias if plan.contiguous else bp, stride, padding, dilation, plan.groups)
        ctx.save_for_backward(x, weight)
        ctx.conf = (plan, stride, padding, dilation, bias is not None, gates.shape[0])
        return yp if plan.contiguous else yp.index_select(1, plan.out_inv)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        plan, stride, padding, dilation, has_bias, gate_count = ctx.conf
        need_x, need_w, need_b, need_g = ctx.needs_input_grad[:4]
        out, cin, kh, kw = weight.shape
        G = plan.groups
        xp = x if plan.contiguous else x.index_select(1, plan.in_perm)
        gyp = grad_y if plan.contiguous else grad_y.index_select(1, plan.out_perm)
        wg = _gather(weight, plan.w_index, out)
        gxp, gwg, gbp = torch.ops.aten.convolution_backward(
            gyp,
            xp,
            wg,
            [out] if has_bias else None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0, 0],
            G,
            [need_x, need_w or need_g, need_b and has_bias],
        )
        grad_x = grad_w = grad_b = grad_g = None
        if need_x:
            grad_x = gxp if plan.contiguous else gxp.index_select(1, plan.in_inv)
        if need_b and has_bias:
            grad_b = gbp if plan.contiguous else gbp.index_select(0, plan.out_inv)
        if need_w:
            grad_w = torch.zeros_like(weight).reshape(out * cin, kh * kw)
            grad_w.index_copy_(0, plan.w_index, gwg.reshape(-1, kh * kw))
            grad_w = grad_w.reshape(weight.shape)
        if need_g:
            acc = torch.promote_types(weight.dtype, torch.float32)
            grad_g = torch.zeros(gate_count, dtype=acc, device=weight.device)
            if plan.one_gates:
                m = (gwg.to(acc) * wg.to(acc)).sum(dim=(2, 3))  # dL/dU on in-group pairs, (out, ig)
                vals = (plan.one_masks.to(acc) * m).sum(dim=(1, 2))
                grad_g.index_add_(0, torch.tensor(plan.one_gates, device=weight.device), vals)
            for term in plan.cross:
                xc = x.index_select(1, term.in_index)
                wc = _gather(weight, term.w_index, out)
                gwc = torch.ops.aten.convolution_backward(
                    gyp, xc, wc, None, list(stride), list(padding), list(dilation), False, [0, 0], G, [False, True, False]
                )[1]
                grad_g[term.gate] += (gwc.to(acc) * wc.to(acc)).sum()
        return grad_x, grad_w, grad_b, grad_g, None, None, None, None


def dgconv2d_grouped(
    x: Tensor,
    weight: Tensor,
    gate: Tensor,
    bias: Tensor | None,
    stride: _Pair,
    padding: _Pair,
    dilation: _Pair,
    grouping: Grouping,
) -> Tensor:
    """DGConv through group convolutions at ``grouping`` (which must match ``gate``'s signs).

    ``gate`` is the continuous gate tensor; it receives the identity straight-through gradient. The
    result and all gradients equal :func:`dgconv.functional.dgconv2d_reference` to float tolerance.
    """
    plan = _plan(grouping, x.device)
    g = binarize_gates(gate)
    return _GroupedDGConv.apply(x, weight, bias, g, plan, stride, padding, dilation)
