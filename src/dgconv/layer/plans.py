"""Backward plans of the fast DGConv path: how the weight and gate gradients of a step with gate gradients are made.

All plans give the same gradients (exact; the masked-dense reference of :mod:`dgconv.layer.functional` to float rounding);
they differ in what they launch. In the channels sorted by group (``xp``, ``gyp``; see :mod:`dgconv.layer.fast`):

* ``"partner"`` (the default where nothing is measured): one group convolution backward at ``G`` groups, a
  super-group weight gradient that merges the least significant zero gates (``M`` groups wide) and one grouped weight
  gradient per digit shift of every other zero gate -- the fewest multiply-adds, but up to a dozen launches per
  layer, and its shapes change with the grouping.
* ``"dense"``: the input gradient at ``G`` groups, then *one* dense weight gradient (``X`` against ``dY`` over every
  channel pair, at one group). Its in-group part is the weight gradient; ``dL/dU = sum_hw W * dW``, summed over the
  channels of each Kronecker index and contracted with the cached Kronecker factors of every ``dU/dg_k`` (one
  einsum), gives every gate's gradient. Two launches whatever the
  grouping, and the dense one's shape never changes (no new autotuning after a grouping changes).
* ``"masked"``: one dense ``convolution_backward`` at one group with the masked weight ``W * U``: input, weight and
  bias gradients in a single launch; the gates as in ``"dense"``.

Steps without gate gradients (``--gate-every`` off-steps, frozen gates) never use a plan: they are plain group
convolution steps.

Which plan runs is chosen per layer by measurement, like ``torch.backends.cudnn.benchmark``: at the first backward of
a new key -- input and weight shape, dtype, device, and the grouping's cost signature (groups, super-group width,
partner passes) -- each plan runs on that step's tensors (once to warm up, twice timed) and the fastest is kept for
that key; the step itself uses the measured gradients. Masks and indices are never shared between groupings: they are
built and cached per grouping, device and dtype. Measuring is on where ``cudnn.benchmark`` is on for a CUDA tensor
(``dgconv train`` sets it unless ``--deterministic``), or everywhere after :func:`set_selection` ``("measure")``; off,
``"partner"`` runs (on the CPU its arithmetic is the floor, and a timing-dependent choice would make bit-identical
resumption depend on the machine's load). :func:`force` fixes one plan (tests, benchmarks); :func:`chosen` reports
what each layer of a model uses.

Example::

    >>> import dgconv.layer.plans as plans
    >>> plans.PLANS
    ('partner', 'dense', 'masked')
    >>> with plans.forced("dense"):
    ...     plans.forced_plan()
    'dense'
    >>> plans.force("sparse")
    Traceback (most recent call last):
    ...
    dgconv.errors.ConfigError: unknown DGConv backward plan 'sparse': choose from partner, dense, masked
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from ..errors import ConfigError
from .functional import conv_backward
from .gathers import gather_pairs
from .grouping import Grouping

__all__ = ["PLANS", "force", "forced", "forced_plan", "set_selection", "selection", "chosen", "clear", "choose"]

PLANS = ("partner", "dense", "masked")
_SELECTIONS = ("auto", "measure", "off")

_state: dict[str, Any] = {"forced": None, "selection": "auto"}


def _check(name: str) -> str:
    if name not in PLANS:
        raise ConfigError(f"unknown DGConv backward plan {name!r}: choose from {', '.join(PLANS)}")
    return name


def force(name: str | None) -> None:
    """Run plan ``name`` in every layer from now on (``None``: choose again). An unknown name is a ConfigError
    listing the plans."""
    _state["forced"] = None if name is None else _check(name)


def forced_plan() -> str | None:
    """The plan :func:`force` fixed, or None."""
    return _state["forced"]


@contextlib.contextmanager
def forced(name: str) -> Iterator[None]:
    """``with forced("dense"): ...``: :func:`force` for a block, restored afterwards."""
    before = _state["forced"]
    force(name)
    try:
        yield
    finally:
        _state["forced"] = before


def set_selection(mode: str) -> None:
    """``"auto"`` (measure where ``cudnn.benchmark`` is on, for CUDA tensors), ``"measure"`` (everywhere) or
    ``"off"`` (``"partner"`` unless forced)."""
    if mode not in _SELECTIONS:
        raise ConfigError(f"plan selection must be one of {', '.join(_SELECTIONS)}, got {mode!r}")
    _state["selection"] = mode


def selection() -> str:
    return _state["selection"]


def _measuring(device: torch.device) -> bool:
    mode = _state["selection"]
    if mode == "auto":
        return device.type == "cuda" and bool(torch.backends.cudnn.benchmark)
    return mode == "measure"


# ------------------------------------------------------------------------------------------------ masks
@dataclass
class _Masks:
    """Per grouping, device and dtype: what the dense plans need. Nothing here is ``out x in`` sized: the gate
    gradients contract ``dL/dU`` with the Kronecker factors of ``dU/dg_k`` digit by digit instead of a 0/1 mask
    per gate (those took ``gates x out x in`` floats per layer: +22 % of a CPU step's peak memory)."""

    factors: tuple[int, ...]
    kron: list[Tensor]  # per digit j: (K, p_j, p_j), the factor j of dU/dg_k for every gate k
    equation: str  # the einsum contracting dL/dU (viewed as the digits of both sides) with those factors
    out_perm: Tensor
    in_perm: Tensor
    out_inv: Tensor
    in_inv: Tensor
    within: Tensor  # (out*ig,) flat sorted pairs of the in-group weights, in the order of fast's gathered weight
    contiguous: bool


_MASKS: OrderedDict[tuple[Grouping, torch.device, torch.dtype], _Masks] = OrderedDict()
_MAX_MASKS = 256


def masks(g: Grouping, device: torch.device, dtype: torch.dtype) -> _Masks:
    """The cached factors and indices of grouping ``g`` (built once per grouping, device and dtype; least recently
    used dropped)."""
    import string

    key = (g, device, dtype)
    m = _MASKS.get(key)
    if m is not None:
        _MASKS.move_to_end(key)
        return m
    cin, cout, G = g.in_channels, g.out_channels, g.groups
    ig, og = cin // G, cout // G
    K = len(g.factors)
    kron = []
    for j, p in enumerate(g.factors):
        ones, eye = torch.ones(p, p), torch.eye(p)
        # dU/dg_k = prod_j B_j: B_k = J - I; for j != k, U_j = J (gate j open) or I (closed)
        own, other = ones - eye, (ones if g.gates[j] else eye)
        kron.append(torch.stack([own if k == j else other for k in range(K)]).to(device, dtype))
    letters = string.ascii_letters
    outs, ins = letters[:K], letters[K : 2 * K]
    equation = f"{outs}{ins}," + ",".join(f"z{o}{i}" for o, i in zip(outs, ins)) + "->z"
    rows = torch.arange(cout)
    within = (rows[:, None] * cin + (rows // og)[:, None] * ig + torch.arange(ig)[None, :]).reshape(-1)
    m = _Masks(tuple(g.factors), kron, equation, g.out_perm.to(device), g.in_perm.to(device),
               torch.argsort(g.out_perm).to(device), torch.argsort(g.in_perm).to(device), within.to(device),
               g.is_contiguous)
    _MASKS[key] = m
    if len(_MASKS) > _MAX_MASKS:
        _MASKS.popitem(last=False)
    return m


_BLOCKS: OrderedDict[tuple, Tensor] = OrderedDict()


def _block_diagonal(groups: int, out: int, cin: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``U`` in the channels sorted by group: ``groups`` blocks of ones on the diagonal, ``(out, cin, 1, 1)``."""
    key = (groups, out, cin, device, dtype)
    u = _BLOCKS.get(key)
    if u is None:
        og, ig = out // groups, cin // groups
        u = torch.block_diag(*[torch.ones(og, ig)] * groups).view(out, cin, 1, 1).to(device, dtype)
        _BLOCKS[key] = u
        if len(_BLOCKS) > 64:
            _BLOCKS.popitem(last=False)
    return u


# ------------------------------------------------------------------------------------------------ plans
Grads = tuple[Tensor | None, Tensor, Tensor | None, Tensor]  # (dx sorted, in-group dW (out, ig, kh, kw), db sorted, dg)


def _gates_from_dense(dw: Tensor, ws: Tensor, m: _Masks, acc: torch.dtype) -> Tensor:
    """Every gate's gradient from the dense weight gradient ``dw`` and the weight ``ws`` (both in sorted channels):
    ``dL/dU = sum_hw W * dW``, back in channel order, summed over each Kronecker index's channels and contracted
    with the factors of ``dU/dg_k``."""
    K = len(m.factors)
    if K == 0:
        return torch.zeros(0, dtype=acc, device=dw.device)
    du = (dw.to(acc) * ws.to(acc)).sum(dim=(2, 3))  # (out, in), sorted
    if not m.contiguous:
        du = du.index_select(0, m.out_inv).index_select(1, m.in_inv)
    d = 1
    for p in m.factors:
        d *= p
    out, cin = du.shape
    t = du.reshape(d, out // d, d, cin // d).sum(dim=(1, 3)).reshape(*m.factors, *m.factors)
    return torch.einsum(m.equation, t, *m.kron)


def _sorted_weight(weight: Tensor, m: _Masks) -> Tensor:
    return weight if m.contiguous else weight.index_select(0, m.out_perm).index_select(1, m.in_perm)


def dense_backward(gyp: Tensor, xp: Tensor, weight: Tensor, wg: Tensor, g: Grouping, conf: tuple, need_x: bool,
                   need_b: bool) -> Grads:
    """Plan ``"dense"``: input (and bias) gradient at ``G`` groups, one dense weight gradient for the rest."""
    out = weight.shape[0]
    acc = torch.promote_types(weight.dtype, torch.float32)
    m = masks(g, weight.device, acc)
    gxp, _, gbp = conv_backward(gyp, xp, wg, *conf, g.groups, [need_x, False, need_b], need_b)
    dw = conv_backward(gyp, xp, weight, *conf, 1, [False, True, False])[1]  # weight: only its shape is read
    gwg = gather_pairs(dw, m.within, out)
    return gxp, gwg, gbp, _gates_from_dense(dw, _sorted_weight(weight, m), m, acc)


def masked_backward(gyp: Tensor, xp: Tensor, weight: Tensor, wg: Tensor, g: Grouping, conf: tuple, need_x: bool,
                    need_b: bool) -> Grads:
    """Plan ``"masked"``: one dense ``convolution_backward`` with the masked weight ``W * U`` (sorted channels)."""
    out, cin = weight.shape[:2]
    acc = torch.promote_types(weight.dtype, torch.float32)
    m = masks(g, weight.device, acc)
    ws = _sorted_weight(weight, m)
    u = _block_diagonal(g.groups, out, cin, weight.device, ws.dtype)
    gxp, dw, gbp = conv_backward(gyp, xp, ws * u, *conf, 1, [need_x, True, need_b], need_b)
    gwg = gather_pairs(dw, m.within, out)
    return gxp, gwg, gbp, _gates_from_dense(dw, ws, m, acc)


# ------------------------------------------------------------------------------------------------ choice
_CHOICES: OrderedDict[tuple, str] = OrderedDict()
_MAX_CHOICES = 1024
#: The plan each leaf weight's layer used last (for :func:`chosen`).
_USED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _key(cost: tuple, xp: Tensor, weight: Tensor, conf: tuple, fraction: float) -> tuple:
    return (cost, tuple(xp.shape), tuple(weight.shape), xp.dtype, weight.dtype, xp.device, conf, fraction)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int = 2) -> tuple[float, Any]:
    result = fn()  # warm-up (and autotuning)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times), result


def choose(cost: tuple, xp: Tensor, weight: Tensor, conf: tuple, fraction: float,
           candidates: dict[str, Callable[[], Any]]) -> tuple[str, Any]:
    """The plan for this key and, when it was measured now, its result (else None): the forced plan, the cached
    measurement, a new measurement, or ``"partner"``.

    ``cost`` is what the plans' costs depend on besides shapes, dtype and device: the number of groups, the
    super-group's width and the number of partner passes (``fast`` passes them). A grouping with the same ones
    reuses the measured choice (its masks and indices are its own, built for it); any other measures again."""
    name = _state["forced"]
    result = None
    if name is None:
        key = _key(cost, xp, weight, conf, fraction)
        name = _CHOICES.get(key)
        if name is not None:
            _CHOICES.move_to_end(key)
        elif _measuring(xp.device):
            timings = {p: _timed(fn, xp.device) for p, fn in candidates.items()}
            name = min(timings, key=lambda p: timings[p][0])
            result = timings[name][1]
            _CHOICES[key] = name
            if len(_CHOICES) > _MAX_CHOICES:
                _CHOICES.popitem(last=False)
        else:
            name = "partner"
    if weight.is_leaf:
        _USED[weight] = name
    return name, result


def chosen(model: nn.Module) -> dict[str, str]:
    """The backward plan each DGConv layer of ``model`` used at its last step with gate gradients (layers that have
    not had one are left out)."""
    out = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, Tensor) and w in _USED:
            out[name] = _USED[w]
    return out


def clear() -> None:
    """Forget every measured choice and cached mask (the next step with gate gradients measures again)."""
    _CHOICES.clear()
    _MASKS.clear()
    _BLOCKS.clear()
