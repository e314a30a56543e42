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

Cheaper gate gradients (opt-in, unbiased): with ``gate_batch_fraction = f < 1`` the cross terms of the zero gates
that need their own pass (those not merged into the super-group) are computed on a random sub-batch of
``n = ceil(f N)`` of the ``N`` examples and scaled by ``N / n``. Each term is a sum over examples, so the estimate is
unbiased (its mean over draws is the full-batch gradient); the one-gate and merged zero-gate terms still come
exactly from the full-batch (super-group) weight gradient, which the weights need anyway. It saves ``1 - f`` of the
separate passes; and because a merged gate's term costs a whole batch of wider weight gradient where a separate
pass costs ``f`` of one, the super-group stays at the small ``MERGE_WIDTH`` in this mode.

What is above is the ``"partner"`` backward plan. A step with gate gradients may instead use one dense weight
gradient, or one masked dense call, chosen per layer by measurement (:mod:`dgconv.layer.plans`); a step without them is
always the plain group-convolution backward.

Only :func:`dgconv2d_grouped` is public; the layer calls it for ``impl="auto"``/``"fast"``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.utils.weak import WeakIdKeyDictionary

from . import plans
from .functional import conv_backward
from .gathers import gather_channels, gather_pairs, memory_format_of, put_pairs, scatter_pairs
from .grouping import Grouping, digits

__all__ = ["dgconv2d_grouped", "plan_for", "grouped_forward", "grouped_backward"]

_Pair = tuple[int, int]


#: Widest super-group (input channels) the merged weight gradient may use, by device type and by whether the
#: output has at least ``MERGE_POSITIONS`` positions (N * H' * W'). Merging a zero gate's digit doubles (for
#: p = 2) the width of one grouped weight gradient and yields that gate's cross term with it, instead of a
#: separate pass over a permuted input. On 2 CPU cores that pays up to 128 channels on large activations and
#: up to 32 on small ones (docs/performance.md has the measurements). With a gate batch fraction below 1 a separate
#: pass runs on a sub-batch only, while a merged one runs on the whole batch, so there the small width holds at
#: every activation size.
MERGE_WIDTH = {"cpu": (32, 128), "cuda": (64, 256)}
MERGE_POSITIONS = 4096


def _merge_limit(device: torch.device, positions: int, gate_batch_fraction: float = 1.0) -> int:
    small, large = MERGE_WIDTH.get(device.type, (32, 128))
    return large if positions >= MERGE_POSITIONS and gate_batch_fraction >= 1.0 else small


@dataclass
class _PartnerTerm:
    gate: int  # the zero gate this cross term belongs to
    in_index: Tensor  # (in,) sorted-input channels that put each group's partner group in its slot
    w_index: Tensor  # (out*ig,) flat indices into W.view(out*in, -1) of the matching partner weights


@dataclass
class _Plan:
    """Device-resident index tensors for one grouping (see the module docstring)."""

    grouping: Grouping
    groups: int
    contiguous: bool
    in_perm: Tensor
    out_perm: Tensor
    in_inv: Tensor
    out_inv: Tensor
    w_index: Tensor  # (out*ig,) flat indices of the in-group weights, rows in sorted output order
    merge: int  # M: super-groups merge M consecutive groups (1 = no merging)
    wm_index: Tensor  # (out*ig*M,) flat indices of the super-group weights
    within: Tensor  # (out*ig,) rows of dW_merged.view(out*ig*M, -1) that are in-group, ordered like w_index
    block_gates: Tensor  # (n,) gates whose gradient lies inside the super-group block: all one gates, merged zeros
    block_masks: Tensor  # (n, out*ig*M) float: the pairs of the block in dU/dg_k for each of those gates
    partners: list[_PartnerTerm]


def _build_plan(g: Grouping, device: torch.device, limit: int) -> _Plan:
    cin, cout, G = g.in_channels, g.out_channels, g.groups
    ig, og = cin // G, cout // G
    in_perm, out_perm = g.in_perm, g.out_perm
    din, dout = digits(g.factors, cin), digits(g.factors, cout)
    zero = [k for k, gk in enumerate(g.gates) if not gk]  # group-id digits, most significant first
    one = [k for k, gk in enumerate(g.gates) if gk]

    # Merge the least significant zero digits while the super-group stays within `limit` inputs.
    merged: list[int] = []
    M = 1
    for k in reversed(zero):
        if ig * M * g.factors[k] > limit:
            break
        merged.insert(0, k)
        M *= g.factors[k]

    slot_group = torch.arange(cout) // og  # group of each sorted output row
    w_index = g.weight_index

    sup_slots = (slot_group // M)[:, None] * (ig * M) + torch.arange(ig * M)[None, :]  # (out, ig*M)
    sup_chan = in_perm[sup_slots]
    wm_index = (out_perm[:, None] * cin + sup_chan).reshape(-1)
    # in-group columns of a super-group row: sub-group (row group % M)
    within_cols = (slot_group % M)[:, None] * ig + torch.arange(ig)[None, :]
    within = (torch.arange(cout)[:, None] * (ig * M) + within_cols).reshape(-1)

    # dU/dg_k is supported on pairs whose digit k differs and whose other zero-gate digits agree. Inside a
    # super-group block the unmerged zero digits agree, so the block holds the whole support of every one
    # gate and every merged zero gate.
    o_dig = dout[:, out_perm]  # (K, out) digits of sorted output rows
    block_gates = one + merged
    if block_gates:  # all masks at once: differ[k, o, c] = digit k of output o and input c differ
        differ = o_dig[:, :, None] != din[:, sup_chan]  # (K, out, ig*M)
        zero_t = torch.tensor(zero, dtype=torch.long)
        mismatched_zero_digits = differ.index_select(0, zero_t).sum(0) if zero else torch.zeros_like(differ[0], dtype=torch.long)
        # one gate k: digit k differs and every zero digit agrees; zero gate k: digit k is the only zero digit differing
        allowed = torch.tensor([0 if g.gates[k] else 1 for k in block_gates])
        sel = differ.index_select(0, torch.tensor(block_gates, dtype=torch.long))
        block_masks = (sel & (mismatched_zero_digits[None] == allowed[:, None, None])).reshape(len(block_gates), -1).float()
    else:
        block_masks = torch.zeros(0, cout * ig * M)

    # Unmerged zero gates: for each digit shift s the partner groups form another group convolution.
    radices = [g.factors[k] for k in zero]
    partners: list[_PartnerTerm] = []
    gamma = torch.arange(G)
    for pos, k in enumerate(zero):
        if k in merged:
            continue
        p = radices[pos]
        place = 1
        for r in radices[pos + 1 :]:
            place *= r
        digit = (gamma // place) % p
        for s in range(1, p):
            partner = gamma + (((digit + s) % p) - digit) * place
            src = in_perm[partner[slot_group][:, None] * ig + torch.arange(ig)[None, :]]
            blocks = (partner[:, None] * ig + torch.arange(ig)[None, :]).reshape(-1)  # whole groups move
            partners.append(_PartnerTerm(k, blocks.to(device), (out_perm[:, None] * cin + src).reshape(-1).to(device)))

    return _Plan(
        grouping=g,
        groups=G,
        contiguous=g.is_contiguous,
        in_perm=in_perm.to(device),
        out_perm=out_perm.to(device),
        in_inv=torch.argsort(in_perm).to(device),
        out_inv=torch.argsort(out_perm).to(device),
        w_index=w_index.to(device),
        merge=M,
        wm_index=wm_index.to(device),
        within=within.to(device),
        block_gates=torch.tensor(block_gates, dtype=torch.long, device=device),
        block_masks=block_masks.to(device),
        partners=partners,
    )


_PLANS: OrderedDict[tuple[Grouping, torch.device, int], _Plan] = OrderedDict()
_MAX_PLANS = 256


def _plan(g: Grouping, device: torch.device, limit: int) -> _Plan:
    key = (g, device, limit)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _build_plan(g, device, limit)
        _PLANS[key] = plan
        if len(_PLANS) > _MAX_PLANS:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan


@dataclass
class _GradStore:
    """The dense gradient storage of one weight, kept between backward passes (see :func:`_dense_grad`)."""

    tensor: Tensor
    version: int  # tensor._version right after the last write: anything else wrote to it since if it differs
    index: Tensor  # the pairs of that write; every other element is zero
    uses: int  # the storage's use count while nothing but this store holds it


#: One store per leaf weight, dropped with the weight.
_GRAD_STORES: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _storage_uses(t: Tensor) -> int | None:
    """How many tensors hold ``t``'s storage (the query's own handle included), or None where torch cannot say."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return None
    try:
        return int(count(t.untyped_storage()._cdata))
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):  # wrapper subclasses have no storage
        return None


def _dense_grad(weight: Tensor, index: Tensor, values: Tensor) -> Tensor:
    """:func:`scatter_pairs`'s result, written into storage kept from the previous backward pass where that is safe.

    A fresh dense gradient costs more than its size suggests: on CPU every one larger than glibc's mmap threshold
    (32 MiB: the 1024-channel layers of G-ResNeXt-50) is new memory whose pages fault in while it is zero-filled,
    and `zero_grad` hands it back. Autograd stores a gradient it is given as ``.grad`` without copying when nothing
    else refers to that tensor, so each call returns a new alias of one kept tensor, and the tensor is reused only
    when (a) no other tensor refers to its storage any more (``.grad`` was set to None, or accumulated into and
    dropped; a hook or user who keeps the gradient makes the next call allocate afresh) and (b) it is unchanged
    since this function wrote it (its version counter, shared by every alias, says so; a clipped or otherwise
    edited gradient is zeroed again first). Outside the pairs written last it is then still zero, so only the
    in-group pairs are rewritten; when the grouping changed, it is zeroed first. Only leaf weights get a store (a
    computed weight's gradient flows on into other backward functions, which may keep it)."""
    if not weight.is_leaf:
        return scatter_pairs(weight, index, values)
    store = _GRAD_STORES.get(weight)
    fmt = memory_format_of(weight)
    if (
        store is not None
        and store.tensor.shape == weight.shape
        and store.tensor.dtype == weight.dtype
        and store.tensor.device == weight.device
        and memory_format_of(store.tensor) == fmt
        and _storage_uses(store.tensor) == store.uses
    ):
        out = store.tensor
        if out._version != store.version or store.index is not index:
            out.zero_()
        put_pairs(out, index, values)
    else:
        out = scatter_pairs(weight, index, values)
        uses = _storage_uses(out)
        if uses is None:
            return out
        store = _GradStore(out, 0, index, uses)
        _GRAD_STORES[weight] = store
    store.version, store.index = out._version, index
    return out.detach()  # a new alias: autograd may store it as .grad without copying


def grouped_forward(x: Tensor, weight: Tensor, bias: Tensor | None, plan: _Plan, conf: tuple[_Pair, _Pair, _Pair]
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, xp, wg)``: the output, the input sorted by group and the gathered in-group weight (what backward needs)."""
    out = weight.shape[0]
    xp = x if plan.contiguous else gather_channels(x, plan.in_perm)
    wg = gather_pairs(weight, plan.w_index, out)
    bp = bias if bias is None or plan.contiguous else bias.index_select(0, plan.out_perm)
    yp = F.conv2d(xp, wg, bp, *conf, plan.groups)
    return (yp if plan.contiguous else gather_channels(yp, plan.out_inv)), xp, wg


def _partner_backward(gyp: Tensor, xp: Tensor, weight: Tensor, wg: Tensor, plan: _Plan, conf: tuple[_Pair, _Pair, _Pair],
                      need_x: bool, need_b: bool, gate_count: int, fraction: float) -> tuple:
    """Plan ``"partner"`` (:mod:`dgconv.layer.plans`): ``(dx, in-group dW, db, dgates)`` in sorted channels from a
    super-group weight gradient and one grouped weight gradient per digit shift of each unmerged zero gate."""
    out, cin, kh, kw = weight.shape
    G, M = plan.groups, plan.merge
    fmt = memory_format_of(xp)
    dwm = None
    if M == 1:  # one call: input, in-group weight and bias gradients
        gxp, gwg, gbp = conv_backward(gyp, xp, wg, *conf, G, [need_x, True, need_b], need_b)
    else:
        gxp, _, gbp = conv_backward(gyp, xp, wg, *conf, G, [need_x, False, need_b], need_b)
        # super-group weight gradient: in-group part and merged gates' cross terms
        shape = torch.empty((out, (cin // G) * M, kh, kw), dtype=wg.dtype, device=wg.device, memory_format=fmt)
        dwm = conv_backward(gyp, xp, shape, *conf, G // M, [False, True, False])[1]  # `shape`: only its shape is read
        gwg = gather_pairs(dwm, plan.within, out)
    acc = torch.promote_types(weight.dtype, torch.float32)
    grad_g = torch.zeros(gate_count, dtype=acc, device=weight.device)
    if len(plan.block_gates):
        dblock, wblock = (gwg, wg) if dwm is None else (dwm, gather_pairs(weight, plan.wm_index, out))
        m = (dblock.to(acc) * wblock.to(acc)).sum(dim=(2, 3)).reshape(-1)  # dL/dU on the block's pairs
        grad_g.index_add_(0, plan.block_gates, plan.block_masks.to(acc) @ m)
    gy_s, x_s, scale = gyp, xp, 1.0
    n_all = xp.shape[0]
    if plan.partners and fraction < 1.0 and n_all > 1:  # unbiased sub-batch estimate of the cross terms
        n = max(1, math.ceil(fraction * n_all))
        pick = torch.randperm(n_all, device=xp.device)[:n]
        gy_s, x_s, scale = gyp.index_select(0, pick), xp.index_select(0, pick), n_all / n
    for term in plan.partners:
        xc = gather_channels(x_s, term.in_index)  # partner groups' channels in each group's slot
        wc = gather_pairs(weight, term.w_index, out)
        gwc = conv_backward(gy_s, xc, wc, *conf, G, [False, True, False])[1]
        grad_g[term.gate] += scale * (gwc.to(acc) * wc.to(acc)).sum()
    return gxp, gwg, gbp, grad_g


def grouped_backward(
    grad_y: Tensor, xp: Tensor, weight: Tensor, wg: Tensor, plan: _Plan, conf: tuple[_Pair, _Pair, _Pair],
    needs: tuple[bool, bool, bool, bool], gate_count: int, fraction: float = 1.0, keep_grad_storage: bool = False,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """``(dL/dx, dL/dweight (dense, zero outside the groups), dL/dbias, dL/dgates)`` for the outputs ``needs`` asks
    for (x, weight, bias, gates); see the module docstring. ``keep_grad_storage``: write the dense weight gradient
    into storage kept from the previous call where that is safe (:func:`_dense_grad`; eager autograd only: a
    compiled graph's outputs must be new tensors)."""
    need_x, need_w, need_b, need_g = needs
    G = plan.groups
    fmt = memory_format_of(xp)
    if not grad_y.is_contiguous(memory_format=fmt):
        # e.g. the expanded gradient of `y.sum()`: every convolution_backward call below would copy it again
        grad_y = grad_y.contiguous(memory_format=fmt)
    gyp = grad_y if plan.contiguous else gather_channels(grad_y, plan.out_perm)
    grad_x = grad_w = grad_b = grad_g = None
    if not need_g:  # nn.Conv2d(groups=G)'s one call: an off-step without gate gradients is a plain step
        gxp, gwg, gbp = conv_backward(gyp, xp, wg, *conf, G, [need_x, need_w, need_b], need_b)
    else:
        args = (gyp, xp, weight, wg, plan.grouping, conf, need_x, need_b)
        candidates = {
            "partner": lambda: _partner_backward(gyp, xp, weight, wg, plan, conf, need_x, need_b, gate_count, fraction),
            "dense": lambda: plans.dense_backward(*args),
            "masked": lambda: plans.masked_backward(*args),
        }
        cost = (G, plan.merge, len(plan.partners), plan.contiguous)
        name, measured = plans.choose(cost, xp, weight, conf, fraction, candidates)
        gxp, gwg, gbp, grad_g = measured if measured is not None else candidates[name]()
    if need_x:
        grad_x = gxp if plan.contiguous else gather_channels(gxp, plan.in_inv)
    if need_b:
        grad_b = gbp if plan.contiguous else gbp.index_select(0, plan.out_inv)
    if need_w:
        grad_w = (_dense_grad if keep_grad_storage else scatter_pairs)(weight, plan.w_index, gwg)
    return grad_x, grad_w, grad_b, grad_g


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
        fraction: float = 1.0,
    ) -> Tensor:
        conf = (stride, padding, dilation)
        y, xp, wg = grouped_forward(x, weight, bias, plan, conf)
        # Save the sorted input (not x): re-sorting in backward would cost a second pass over the activation.
        ctx.save_for_backward(xp, weight, wg)
        ctx.conf = (plan, conf, bias is not None, gates.shape[0], fraction)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor):  # type: ignore[override]
        xp, weight, wg = ctx.saved_tensors
        plan, conf, has_bias, gate_count, fraction = ctx.conf
        need_x, need_w, need_b, need_g = ctx.needs_input_grad[:4]
        grads = grouped_backward(grad_y, xp, weight, wg, plan, conf, (need_x, need_w, need_b and has_bias, need_g),
                                 gate_count, fraction, keep_grad_storage=True)
        return (*grads, None, None, None, None, None)


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def dgconv2d_grouped(
    x: Tensor,
    weight: Tensor,
    gate: Tensor,
    bias: Tensor | None,
    stride: _Pair,
    padding: _Pair,
    dilation: _Pair,
    grouping: Grouping,
    gate_batch_fraction: float = 1.0,
) -> Tensor:
    """DGConv through group convolutions at ``grouping`` (which must match the binary ``gate`` values).

    ``gate`` holds the binary gate values ``g`` (``DGConv2d.effective_gates()``: ``binarize_gates(g~)`` with any
    held gates at 1); the gradient with respect to them is exact and reaches ``g~`` through the straight-through
    estimator. The result and all gradients equal :func:`dgconv.layer.functional.dgconv2d_reference` to float tolerance
    (with ``gate_batch_fraction < 1`` the gate gradient is an unbiased estimate, see the module docstring).
    """
    plan = plan_for(grouping, x, weight.shape, stride, padding, dilation, gate_batch_fraction)
    return _GroupedDGConv.apply(x, weight, bias, gate, plan, stride, padding, dilation, gate_batch_fraction)


def plan_for(grouping: Grouping, x: Tensor, weight_shape: Sequence[int], stride: _Pair, padding: _Pair, dilation: _Pair,
             gate_batch_fraction: float = 1.0) -> _Plan:
    """The (cached) plan of a grouping for an input like ``x``."""
    positions = x.shape[0] * _out_size(x.shape[2], weight_shape[2], stride[0], padding[0], dilation[0]) * _out_size(
        x.shape[3], weight_shape[3], stride[1], padding[1], dilation[1]
    )
    return _plan(grouping, x.device, _merge_limit(x.device, positions, gate_batch_fraction))
