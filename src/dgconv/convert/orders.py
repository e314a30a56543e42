"""Learned channel orders at no run-time cost where the network allows it (chains of group convolutions).

A deployed DGConv layer is a group convolution between two channel orders: ``y = conv_G(x[:, P_in])[:, P_out^-1]``.
Where no fold rule applies (FastNet: conv, max-pool, batch norm, GELU, conv), :func:`dgconv.deploy` inserts
:class:`ChannelPermutation` modules around the convolution. :func:`fold_orders` then works on the data flow of the
deployed network (``torch.fx``):

* **one reorder per junction**: between a producer (a convolution or linear layer) and the next consumer, through
  channel-wise layers only (batch norm -- its parameters and statistics reordered --, activations, pooling,
  dropout), every permutation on the way composes into one gather ``R`` of the producer's output;
* **folded where a group convolution can absorb it**: a producer may reorder its output rows within each of its
  groups, a consumer its input columns within each of its groups (a dense layer: anywhere). When, for every input
  group of the consumer, the channels it reads come from the producer's groups in the same numbers as its own
  positions do, such a pair of reorders exists (we build it group by group) and the junction needs no gather at all;
  among the equivalent orders this picks one that leaves nothing to gather;
* **else one gather**, right after the producer, done by :class:`ChannelPermutation` in the tensor's own memory
  layout (no channels_last <-> NCHW flip) with the inverse gather as its backward (no scatter-add).

The function is the same up to floating-point rounding (a reordered sum); optimizer state moves with the weights it
belongs to, so training continues exactly where a frozen network was (:func:`dgconv.freeze_groups`).

Example::

    >>> import torch, dgconv
    >>> from dgconv.convert.deploy import ChannelPermutation
    >>> net = dgconv.create_model("g_fastnet", num_classes=10).double().eval()
    >>> _ = torch.manual_seed(0)
    >>> for _, m in dgconv.layer.conv.dgconv_layers(net):
    ...     m.gate.data = torch.randn(len(m.factors), dtype=m.gate.dtype)
    >>> x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    >>> deployed = dgconv.deploy(net)
    >>> bool(torch.allclose(deployed(x), net(x), atol=1e-10))
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layer.gathers import gather_channels

__all__ = ["ChannelPermutation", "fold_orders", "OrdersReport", "CHANNELWISE"]


class _Gather(torch.autograd.Function):
    """``x[:, index]`` in ``x``'s own layout; backward: the gradient gathered by the inverse (a permutation: every
    channel receives exactly one gradient, so no scatter-add is needed and the values are bit-identical)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, index: Tensor, inverse: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse)
        return gather_channels(x, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        return gather_channels(grad, inverse), None, None


class ChannelPermutation(nn.Module):
    """``x[:, index]``: reorders channels. Inserted by :func:`dgconv.deploy` where no fold rule applies, merged and
    folded by :func:`fold_orders`; an identity order costs nothing. The gather keeps the tensor's memory layout,
    forward and backward (``layout=False``: ``index_select``, whose output is contiguous NCHW -- what dgconv 0.2 did,
    kept for runs recorded with ``--orders gather``).

    Args:
        index: the order: output channel ``i`` is input channel ``index[i]``.
        layout: gather in the tensor's own memory layout (see above).
        name: the layer it belongs to, for messages.
        channels: the channel count it will be applied to, when known (checked now, not at the first batch).

    Raises:
        ValueError: ``index`` is not a permutation of ``0 .. C-1``, or ``channels`` differs from its length (the
            layer ``name`` is named in the message).
    """

    def __init__(self, index: Tensor, layout: bool = True, name: str = "", channels: int | None = None) -> None:
        super().__init__()
        index = torch.as_tensor(index).detach().clone().long().reshape(-1)
        n = index.numel()
        where = f" of {name}" if name else ""
        if n == 0 or not torch.equal(torch.sort(index).values, torch.arange(n, device=index.device)):
            raise ValueError(f"the channel order{where} is not a permutation of 0..{n - 1}: {index.tolist()[:12]}")
        if channels is not None and channels != n:
            raise ValueError(f"the channel order{where} reorders {n} channels, but it is applied to {channels}")
        self.register_buffer("index", index)
        self.layout = layout
        self._identity: bool | None = None

    @property
    def identity(self) -> bool:
        if self._identity is None:
            self._identity = bool(torch.equal(self.index, torch.arange(self.index.numel(), device=self.index.device)))
        return self._identity

    def set_index(self, index: Tensor) -> None:
        """Replace the order (``fold_orders`` does)."""
        self.index.copy_(index.to(self.index))
        self._identity = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super()._load_from_state_dict(*args, **kwargs)
        self._identity = None

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return x.index_select(1, self.index)
        if x.shape[1] != self.index.numel():
            raise ValueError(f"ChannelPermutation of {self.index.numel()} channels applied to {x.shape[1]}")
        if self.identity:
            return x
        if not self.layout:
            return x.index_select(1, self.index)
        if torch.is_grad_enabled() and x.requires_grad:
            return _Gather.apply(x, self.index, torch.argsort(self.index))
        return gather_channels(x, self.index)

    def extra_repr(self) -> str:
        return f"channels={self.index.numel()}" + (", identity" if self.identity else "")


#: Modules that act on each channel alone (a reorder of channels commutes with them; per-channel parameters and
#: statistics are reordered with it).
CHANNELWISE: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU,
    nn.ELU, nn.Sigmoid, nn.Tanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, ChannelPermutation,
)
_FUNCTIONS = {F.relu, F.gelu, F.silu, torch.relu, torch.sigmoid, torch.tanh, F.hardswish, F.leaky_relu}


@dataclass
class OrdersReport:
    """What :func:`fold_orders` did: junctions whose reorder was folded away, and those left with one gather."""

    folded: list[str] = field(default_factory=list)
    gathered: list[str] = field(default_factory=list)
    untraceable: str | None = None


@dataclass
class _Junction:
    producer: str | None
    consumer: str | None
    nodes: list[tuple[str, nn.Module]]  # the channel-wise modules (permutations included) in order


def _chain(start: Any, modules: dict[str, nn.Module]) -> _Junction:
    """The junction a permutation node sits in: back to its producer, forward to its consumer, through single-user
    channel-wise nodes only."""

    def module_of(node: Any) -> nn.Module | None:
        return modules.get(node.target) if node.op == "call_module" else None

    def channelwise(node: Any) -> bool:
        m = module_of(node)
        if m is not None:
            return isinstance(m, CHANNELWISE)
        return node.op == "call_function" and node.target in _FUNCTIONS and len(node.args) >= 1

    def flatten_to_linear(node: Any) -> bool:  # torch.flatten(pool_1x1(x), 1) before a linear layer
        if not (node.op == "call_function" and node.target is torch.flatten and len(node.users) == 1):
            return False
        prev, nxt = node.args[0], next(iter(node.users))
        pool = module_of(prev) if hasattr(prev, "op") else None
        return (isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and pool.output_size in (1, (1, 1))
                and isinstance(module_of(nxt), nn.Linear) and node.args[1:2] == (1,))

    nodes = [start]
    node = start
    while True:  # backward
        prev = node.args[0] if node.args else None
        if prev is None or not hasattr(prev, "op") or len(prev.users) != 1:
            producer = None
            break
        m = module_of(prev)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, CHANNELWISE):
            producer = prev.target
            break
        if not channelwise(prev):
            producer = None
            break
        nodes.insert(0, prev)
        node = prev
    node = start
    consumer = None
    while len(node.users) == 1:  # forward
        nxt = next(iter(node.users))
        m = module_of(nxt)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, CHANNELWISE):
            consumer = nxt.target
            break
        if not (channelwise(nxt) or flatten_to_linear(nxt)) or nxt.args[0] is not node:
            break
        nodes.append(nxt)
        node = nxt
    return _Junction(producer, consumer, [(n.target, modules[n.target]) for n in nodes if n.op == "call_module"])


def _block_order(r: Tensor, producer_block: int, consumer_block: int) -> Tensor | None:
    """``U`` (within the consumer's input groups) with ``T = r[U]`` within the producer's output groups, or None when
    no such pair exists (then the junction keeps one gather)."""
    n = r.numel()
    u = torch.empty(n, dtype=torch.long)
    a_of = (r // producer_block).tolist()  # the producer group each read channel comes from
    for start in range(0, n, consumer_block):
        positions = range(start, start + consumer_block)
        wanted: dict[int, list[int]] = {}
        for j in positions:
            wanted.setdefault(j // producer_block, []).append(j)
        sources: dict[int, list[int]] = {}
        for k in positions:
            sources.setdefault(a_of[k], []).append(k)
        if {a: len(v) for a, v in wanted.items()} != {a: len(v) for a, v in sources.items()}:
            return None
        for a, js in wanted.items():
            for j, k in zip(js, sources[a]):
                u[j] = k
    return u


def _groups_block(m: nn.Module, side: str) -> int:
    if isinstance(m, nn.Linear):
        return m.in_features if side == "in" else m.out_features
    channels = m.in_channels if side == "in" else m.out_channels
    return channels // m.groups


def fold_orders(root: nn.Module, edit: Any = None) -> OrdersReport:
    """Merge and fold the :class:`ChannelPermutation` modules of a deployed network in place (see the module
    docstring); ``edit``: the deploy's optimizer-state editor (``permute(tensor, dim, index)``), so that a frozen
    network trains on with its optimizer state in the new orders. Returns what was done; a network ``torch.fx``
    cannot trace is left as it is (``report.untraceable`` says why)."""
    report = OrdersReport()
    perms = [n for n, m in root.named_modules() if isinstance(m, ChannelPermutation) and not m.identity]
    if not perms:
        return report
    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, ChannelPermutation) or super().is_leaf_module(m, qualname)

    try:
        gm = torch.fx.GraphModule(root, Tracer().trace(root))
    except Exception as e:  # noqa: BLE001 - tracing is best effort: any failure leaves the gathers as they are
        report.untraceable = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        return report
    modules = dict(root.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    done: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in perms or node.target in done:
            continue
        junction = _chain(node, modules)
        names = [name for name, m in junction.nodes if isinstance(m, ChannelPermutation)]
        done.update(names)
        edited = [junction.producer, junction.consumer,
                  *(n for n, m in junction.nodes if isinstance(m, nn.modules.batchnorm._BatchNorm))]
        shared = [n for n in edited if n is not None and calls.get(n, 0) > 1]
        if shared:  # a module with per-channel weights called from two places cannot take one place's order
            report.gathered += [f"{junction.producer or '(input)'} -> {junction.consumer or '(output)'} (left as it "
                                f"was: {shared[0]} is called twice)"]
            continue
        _fold_junction(junction, modules, edit, report)
    return report


def _fold_junction(j: _Junction, modules: dict[str, nn.Module], edit: Any, report: OrdersReport) -> None:
    """Compose the junction's orders into ``R`` (the consumer's input channel ``c`` is the producer's ``R[c]``),
    then fold it into the producer's rows and the consumer's columns, or keep it as the junction's one gather."""
    order = None  # current channel i holds the producer's channel order[i]
    seen: list[tuple[str, nn.Module, Tensor]] = []  # channel-wise modules with the order their channels are in
    for name, m in j.nodes:
        if isinstance(m, ChannelPermutation):
            idx = m.index.cpu()
            order = idx if order is None else order[idx]
        else:
            seen.append((name, m, order))
    perms = [(name, m) for name, m in j.nodes if isinstance(m, ChannelPermutation)]
    c = perms[0][1].index.numel()
    identity = torch.arange(c)
    r = identity if order is None else order
    seen = [(n, m, identity if o is None else o) for n, m, o in seen]
    label = f"{j.producer or '(input)'} -> {j.consumer or '(output)'}"
    producer = modules.get(j.producer) if j.producer else None
    consumer = modules.get(j.consumer) if j.consumer else None
    u = None
    if producer is not None and consumer is not None and _width(producer, "out") == c == _width(consumer, "in"):
        u = _block_order(r, _groups_block(producer, "out"), _groups_block(consumer, "in"))
    if u is not None:
        t = r[u]
        _permute_rows(producer, t, edit)
        _permute_columns(consumer, u, edit)
        for _, m, o in seen:  # their channel i now holds the producer's channel t[i]
            _reorder_params(m, torch.argsort(o)[t], edit)
        for _, p in perms:
            p.set_index(identity.to(p.index.device))
        report.folded.append(label)
        return
    place = _gather_place(j, perms)
    passed = False
    for name, m in j.nodes:  # one gather, at that place: the channel-wise modules after it see r
        if name == place:
            passed = True
            continue
        if not isinstance(m, ChannelPermutation):
            o = next(o for n, _, o in seen if n == name)
            _reorder_params(m, torch.argsort(o)[r if passed else identity], edit)
    for name, p in perms:
        p.set_index((r if name == place else identity).to(p.index.device))
    report.gathered.append(label)


_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _gather_place(j: _Junction, perms: list[tuple[str, nn.Module]]) -> str:
    """Where a junction's one gather runs: at the permutation after the most pooling layers (a 2x2 pool leaves a
    quarter of the tensor to move), else the first."""
    pools, best, most = 0, perms[0][0], 0
    for name, m in j.nodes:
        if isinstance(m, _POOLS):
            pools += 1
        elif isinstance(m, ChannelPermutation) and pools > most:
            best, most = name, pools
    return best


def _width(m: nn.Module, side: str) -> int:
    if isinstance(m, nn.Linear):
        return m.in_features if side == "in" else m.out_features
    return m.in_channels if side == "in" else m.out_channels  # type: ignore[return-value]


def _permute(t: Tensor | None, dim: int, index: Tensor, edit: Any) -> None:
    if t is None:
        return
    index = index.to(t.device)
    if edit is not None:
        edit.permute(t, dim, index)
    else:
        with torch.no_grad():
            t.copy_(t.index_select(dim, index))


def _permute_rows(m: nn.Module, t: Tensor, edit: Any) -> None:
    _permute(m.weight, 0, t, edit)
    _permute(getattr(m, "bias", None), 0, t, edit)


def _permute_columns(m: nn.Module, u: Tensor, edit: Any) -> None:
    """Input column ``j`` becomes the old column ``u[j]`` (``u`` keeps each of the consumer's input groups)."""
    if isinstance(m, nn.Linear) or m.groups == 1:
        _permute(m.weight, 1, u, edit)
        return
    block = m.in_channels // m.groups
    local = u % block  # within each group the same local reorder applies to every output row of that group
    rows_per_group = m.out_channels // m.groups
    w = m.weight
    index = torch.empty(m.out_channels, block, dtype=torch.long)
    for g in range(m.groups):
        index[g * rows_per_group:(g + 1) * rows_per_group] = local[g * block:(g + 1) * block]
    full = index[:, :, None, None].expand_as(w).to(w.device)
    if edit is not None:
        edit.gather(w, 1, full)
    else:
        with torch.no_grad():
            w.copy_(torch.gather(w, 1, full))


def _reorder_params(m: nn.Module, index: Tensor, edit: Any) -> None:
    """A channel-wise module's per-channel parameters and statistics: channel i takes the old channel index[i]."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        for t in (m.weight, m.bias, m.running_mean, m.running_var):
            _permute(t, 0, index, edit)

