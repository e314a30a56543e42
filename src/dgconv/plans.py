"""Backward plans of the fast DGConv path: how the weight and gate gradients of a step with gate gradients are made.

All plans give the same gradients (exact; the masked-dense reference of :mod:`dgconv.functional` to float rounding);
they differ in what they launch. In the channels sorted by group (``xp``, ``gyp``; see :mod:`dgconv.fast`):

* ``"partner"`` (the default where nothing is measured): one group convolution backward at ``G`` groups, a
  super-group weight gradient that merges the least significant zero gates (``M`` groups wide) and one grouped weight
  gradient per digit shift of every other zero gate -- the fewest multiply-adds, but up to a dozen launches per
  layer, and its shapes change with the grouping.
* ``"dense"``: the input gradient at ``G`` groups, then *one* dense weight gradient (``X`` against ``dY`` over every
  channel pair, at one group). Its in-group part is the weight gradient; ``dL/dU = sum_hw W * dW`` contracted with
  the cached 0/1 masks ``dU/dg_k`` gives every gate's gradient in one matrix product. Two launches whatever the
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

    >>> import dgconv.plans as plans
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

from .errors import ConfigError
from .functional import conv_backward
from .gathers import _gather
from .grouping import Grouping, digits

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
    """Per grouping, device and dtype: what the dense plans need, in the channels sorted by group."""

    gates: Tensor  # (K, out*in) 0/1: dU/dg_k on every pair
    in_group: Tensor  # (out*in,) 0/1: U, the pairs inside a group
    w_sorted: Tensor | None  # (out*in,) flat pair index of W for each sorted pair (None: the grouping is contiguous)
    within: Tensor  # (out*ig,) flat sorted pairs of the in-group weights, in the order of fast's gathered weight


_MASKS: OrderedDict[tuple[Grouping, torch.device, torch.dtype], _Masks] = OrderedDict()
_MAX_MASKS = 64


def masks(g: Grouping, device: torch.device, dtype: torch.dtype) -> _Masks:
    """The cached masks of grouping ``g`` (built once per grouping, device and dtype; least recently used dropped)."""
    key = (g, device, dtype)
    m = _MASKS.get(key)
    if m is not None:
        _MASKS.move_to_end(key)
        return m
    cin, cout, G = g.in_channels, g.out_channels, g.groups
    ig, og = cin // G, cout // G
    din, dout = digits(g.factors, cin)[:, g.in_perm], digits(g.factors, cout)[:, g.out_perm]  # sorted channels
    differ = dout[:, :, None] != din[:, None, :]  # (K, out, in)
    zero = torch.tensor([not gk for gk in g.gates])
    mismatched = differ[zero].sum(0) if bool(zero.any()) else torch.zeros(cout, cin, dtype=torch.long)
    # one gate k: digit k differs and every zero digit agrees; zero gate k: digit k is the only zero digit differing
    allowed = zero.long()[:, None, None]
    gate_masks = (differ & (mismatched[None] == allowed)).reshape(len(g.gates), -1)
    in_group = (mismatched == 0).reshape(-1)
    rows = torch.arange(cout)
    within = (rows[:, None] * cin + (rows // og)[:, None] * ig + torch.arange(ig)[None, :]).reshape(-1)
    w_sorted = None if g.is_contiguous else (g.out_perm[:, None] * cin + g.in_perm[None, :]).reshape(-1)
    m = _Masks(gate_masks.to(device, dtype), in_group.to(device, dtype),
               None if w_sorted is None else w_sorted.to(device), within.to(device))
    _MASKS[key] = m
    if len(_MASKS) > _MAX_MASKS:
        _MASKS.popitem(last=False)
    return m


# ------------------------------------------------------------------------------------------------ plans
Grads = tuple[Tensor | None, Tensor, Tensor | None, Tensor]  # (dx sorted, in-group dW (out, ig, kh, kw), db sorted, dg)


def _gates_from_dense(dw: Tensor, w_sorted_full: Tensor, m: _Masks, acc: torch.dtype) -> Tensor:
    du = (dw.to(acc) * w_sorted_full.to(acc)).sum(dim=(2, 3)).reshape(-1)  # dL/dU on every sorted pair
    return m.gates.to(acc) @ du


def _sorted_weight(weight: Tensor, m: _Masks) -> Tensor:
    out = weight.shape[0]
    return weight if m.w_sorted is None else _gather(weight, m.w_sorted, out)


def dense_backward(gyp: Tensor, xp: Tensor, weight: Tensor, wg: Tensor, g: Grouping, conf: tuple, need_x: bool,
                   need_b: bool) -> Grads:
    """Plan ``"dense"``: input (and bias) gradient at ``G`` groups, one dense weight gradient for the rest."""
    out = weight.shape[0]
    acc = torch.promote_types(weight.dtype, torch.float32)
    m = masks(g, weight.device, acc)
    gxp, _, gbp = conv_backward(gyp, xp, wg, *conf, g.groups, [need_x, False, need_b], need_b)
    dw = conv_backward(gyp, xp, weight, *conf, 1, [False, True, False])[1]  # weight: only its shape is read
    gwg = _gather(dw, m.within, out)
    return gxp, gwg, gbp, _gates_from_dense(dw, _sorted_weight(weight, m), m, acc)


def masked_backward(gyp: Tensor, xp: Tensor, weight: Tensor, wg: Tensor, g: Grouping, conf: tuple, need_x: bool,
                    need_b: bool) -> Grads:
    """Plan ``"masked"``: one dense ``convolution_backward`` with the masked weight ``W * U`` (sorted channels)."""
    out = weight.shape[0]
    acc = torch.promote_types(weight.dtype, torch.float32)
    m = masks(g, weight.device, acc)
    ws = _sorted_weight(weight, m)
    u = m.in_group.to(ws.dtype).view(out, -1, 1, 1)
    gxp, dw, gbp = conv_backward(gyp, xp, ws * u, *conf, 1, [need_x, True, need_b], need_b)
    gwg = _gather(dw, m.within, out)
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
