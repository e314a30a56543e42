"""``DGConv2d``: a drop-in ``nn.Conv2d`` that learns its number of groups (paper §3.1-3.2)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import grouping
from .._compat import autocast_dtype
from ..errors import ConfigError
from .functional import as_pair, binarize_gates, dgconv2d_reference

__all__ = ["DGConv2d", "GATE_INIT", "cached_gates", "gate_gradients", "set_gate_batch_fraction", "dgconv_layers",
           "learned_groups", "unwrap", "check_group_limits"]

#: Magnitude of the initial continuous gates (§4: "We initialize them as small values 1e-8 or -1e-8 randomly").
GATE_INIT = 1e-8

_IMPLS = ("auto", "fast", "reference")


def _compiling() -> bool:
    """Whether torch.compile is tracing (the compiled path is used only where ``torch.library.custom_op`` exists)."""
    try:
        tracing = torch.compiler.is_compiling()
    except AttributeError:  # torch < 2.3
        return False
    if tracing:
        from . import compiled

        return compiled.available()
    return False


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def check_group_limits(min_group_width: Any = None, max_groups: Any = None, *, learnable: bool = True) -> None:
    """The one rule for the hardware limits of learned groups, used by :class:`DGConv2d`, the G-networks,
    ``dgconv train`` and ``dgconv latency`` alike: each limit is a positive integer or ``None``, and only a network
    that learns its groups (``learnable``) takes one.

    Raises:
        ConfigError (a ``ValueError``): the limit that breaks the rule, by name.
    """
    for name, v in (("min_group_width", min_group_width), ("max_groups", max_groups)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if not learnable and (min_group_width is not None or max_groups is not None):
        raise ConfigError("min_group_width / max_groups limit learned groups: they need a G-network (a g_* model)")


def _positive_pair(v: Any, name: str) -> tuple[int, int]:
    try:
        pair = as_pair(v, name)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}") from None
    if any(isinstance(i, bool) or i < 1 for i in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return pair


class DGConv2d(nn.Module):
    r"""Dynamic grouping convolution: a 2-D convolution whose channel grouping is learned.

    The layer holds a dense weight :math:`\omega` of shape ``(out, in, kh, kw)`` and one continuous gate
    :math:`\tilde g_k` per prime factor of ``gcd(in, out)``. It computes (eq. 3)

    .. math:: y = \mathrm{conv2d}(x, \omega \odot U(g)) + b, \qquad g = \mathbb{1}[\tilde g \ge 0],

    where ``U`` is the Kronecker product of the gate matrices described in :mod:`dgconv.layer.grouping`. The
    gates receive gradients through the identity straight-through estimator (``dL/dg~ = dL/dg``), so
    ordinary SGD learns the number of groups, which is any divisor of ``gcd(in, out)``. Once trained, the
    layer *is* a group convolution with :attr:`groups` groups (see :func:`dgconv.deploy`).

    The constructor takes :class:`torch.nn.Conv2d`'s arguments in ``nn.Conv2d``'s positional order, so a
    ``DGConv2d`` drops in where an ``nn.Conv2d`` was: ``DGConv2d(64, 64, 3, 1, 1, 1, 4)`` is 4 groups, like
    ``nn.Conv2d(64, 64, 3, 1, 1, 1, 4)``, and there is a bias unless ``bias=False`` (ResNe(X)t blocks pass it).

    Args:
        in_channels, out_channels: channel counts (any positive integers).
        kernel_size, stride, dilation: as in :class:`torch.nn.Conv2d`.
        padding: an int, a pair, ``"valid"`` or ``"same"`` (as in :class:`torch.nn.Conv2d`).
        groups: the starting grouping (:meth:`set_groups`: ``groups`` contiguous groups); ``None`` (default) draws
            the paper's random ``±1e-8`` gates. Either way the number of groups is then learned.
        bias: add a learnable bias (default ``True``, as ``nn.Conv2d``).
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        device, dtype: as in :class:`torch.nn.Conv2d`.
        impl: (keyword only) ``"auto"`` (default; the fast grouped path), ``"fast"`` or ``"reference"`` (masked
            dense convolution of eq. 3 with the explicit backward of Appendix B; slow, for testing).
        min_group_width: (keyword only) the fewest channels a group may have (``min(in, out) / groups``), e.g. 8
            or 16 for hardware that runs narrow groups badly.
        max_groups: (keyword only) the most groups the layer may have.

    Hardware limits: with ``min_group_width`` and/or ``max_groups`` the layer may only reach group numbers
    ``G <= L = min(max_groups, min(in, out) // min_group_width)``. It keeps learnable the gates of the largest
    divisor ``D`` of ``gcd(in, out)`` with ``D <= L`` (one gate per prime factor of ``D``, first in the factor
    order) and holds the other gates open: they are always 1, receive no gradient, and the budget projection
    never closes them. ``groups`` is therefore always a divisor of ``D``: every ``G <= L`` that divides ``D``
    is reachable, and nothing above ``L`` is (for powers of two, ``D = L``' s largest power of two).

    Attributes:
        weight: the dense weight ``(out, in, kh, kw)``; entries outside the current groups are kept (a gate
            may flip) but receive zero gradient.
        bias: ``(out,)`` or ``None``.
        gate: the continuous gates ``g~`` (an ``nn.Parameter`` of shape ``(K,)``), initialised to
            ``±1e-8`` at random from torch's RNG.

    Example::

        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> conv = DGConv2d(64, 64, 3, padding=1)
        >>> conv.gate.shape, conv.groups in (1, 2, 4, 8, 16, 32, 64)
        (torch.Size([6]), True)
        >>> conv.set_groups(8); conv.groups
        8
        >>> conv(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int | None = None,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: str = "auto",
        min_group_width: int | None = None,
        max_groups: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int)):
            raise ValueError(f"groups must be a positive integer or None, got {groups!r}")
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r} (DGConv2d takes nn.Conv2d's positional order: "
                             f"in, out, kernel_size, stride, padding, dilation, groups, bias)")
        check_group_limits(min_group_width, max_groups)
        self.min_group_width, self.max_groups = min_group_width, max_groups
        narrow = min(self.in_channels, self.out_channels)
        if self.min_group_width is not None and self.min_group_width > narrow:
            raise ValueError(
                f"min_group_width={self.min_group_width} is larger than this layer's channels (in={self.in_channels}, "
                f"out={self.out_channels}): even one group has only {narrow}"
            )
        self.kernel_size = _positive_pair(kernel_size, "kernel_size")
        self.stride = _positive_pair(stride, "stride")
        self.dilation = _positive_pair(dilation, "dilation")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        self.padding = self._check_padding(padding)
        self.impl = impl
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self._learnable_groups = grouping.largest_divisor_at_most(
            math.gcd(self.in_channels, self.out_channels), self.group_limit
        )
        self._factors = self._default_order()
        self.gate = nn.Parameter(torch.empty(len(self._factors), **factory))
        # gates held open by the hardware limits (not learnable): True where held; follows the factor order
        self.register_buffer("_held", torch.zeros(len(self._factors), dtype=torch.bool, device=device), persistent=False)
        self._plan_cache: dict[tuple[tuple[int, ...], tuple[bool, ...]], grouping.Grouping] = {}
        self._host_gates: tuple[bool, ...] | None = None  # set only inside dgconv.cached_gates
        #: fraction of the batch the zero gates' cross terms are computed on (1: exact; see dgconv.layer.fast)
        self.gate_batch_fraction = 1.0
        self.reset_parameters()
        if groups is not None:
            self.set_groups(groups)

    # ------------------------------------------------------------------ construction and state
    def _check_padding(self, padding: int | Sequence[int] | str) -> tuple[int, int] | str:
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions (as in nn.Conv2d)")
            return padding
        try:
            pair = as_pair(padding, "padding")
        except (TypeError, ValueError):
            raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}") from None
        if any(isinstance(i, bool) or i < 0 for i in pair):
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        return pair

    @property
    def impl(self) -> str:
        """Which forward/backward path runs: ``"auto"``, ``"fast"`` or ``"reference"``."""
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {value!r}")
        self._impl = value

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Conv2d`` (Kaiming-uniform weight, uniform bias) and draw random ``±1e-8`` gates."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        self.reset_gates()

    @property
    def group_limit(self) -> int:
        """The largest group number the hardware limits allow (``gcd(in, out)`` without limits)."""
        limit = math.gcd(self.in_channels, self.out_channels)
        if self.max_groups is not None:
            limit = min(limit, self.max_groups)
        if self.min_group_width is not None:
            limit = min(limit, min(self.in_channels, self.out_channels) // self.min_group_width)
        return max(1, limit)

    @property
    def reachable_groups(self) -> tuple[int, ...]:
        """Every group number this layer can take: the divisors of its learnable part ``D`` (see the class doc)."""
        d = self._learnable_groups
        return tuple(g for g in range(1, d + 1) if d % g == 0)

    def _default_order(self) -> tuple[int, ...]:
        """Learnable factors (the primes of ``D``) first, ascending, then the held ones."""
        d = math.gcd(self.in_channels, self.out_channels)
        return grouping.prime_factors(self._learnable_groups) + grouping.prime_factors(d // self._learnable_groups)

    def _sync_held(self) -> None:
        n = len(grouping.prime_factors(self._learnable_groups))
        held = torch.arange(len(self._factors), device=self._held.device) >= n
        self._held.copy_(held)

    @torch.no_grad()
    def reset_gates(self) -> None:
        """Draw the learnable gates as ``±1e-8`` with equal probability from torch's global RNG (§4), default order;
        gates held open by the hardware limits are set to +1."""
        self._factors = self._default_order()
        self._sync_held()
        signs = torch.randint(0, 2, (len(self._factors),)) * 2 - 1
        values = torch.where(self._held.cpu(), torch.ones(len(self._factors)), signs.float() * GATE_INIT)
        self.gate.copy_(values.to(self.gate))

    @property
    def factors(self) -> tuple[int, ...]:
        """Kronecker factor sizes in order: ``gate[k]`` drives factor ``factors[k]`` (see :mod:`dgconv.layer.grouping`)."""
        return self._factors

    @property
    def held(self) -> tuple[bool, ...]:
        """Which gates the hardware limits hold open (``True``: always 1, not learnable), in factor order."""
        n = len(grouping.prime_factors(self._learnable_groups))
        return tuple(k >= n for k in range(len(self._factors)))

    def get_extra_state(self) -> dict[str, Any]:
        return {"factors": list(self._factors), "min_group_width": self.min_group_width, "max_groups": self.max_groups}

    def _check_order(self, factors: Any) -> tuple[int, ...]:
        order = grouping.check_factors(factors, self.in_channels, self.out_channels)
        n = len(grouping.prime_factors(self._learnable_groups))
        if sorted(order[:n]) != sorted(grouping.prime_factors(self._learnable_groups)):
            raise ValueError(f"factor order {list(order)} does not put the learnable factors "
                             f"{list(grouping.prime_factors(self._learnable_groups))} first")
        return order

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "factors" not in state:
            raise RuntimeError(f"DGConv2d: unrecognised extra state {state!r} (expected {{'factors': [...]}})")
        self._factors = self._check_order(state["factors"])
        self._sync_held()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        where = f"DGConv2d at '{prefix[:-1] or '<root>'}'"
        gate = state_dict.get(prefix + "gate")
        if gate is not None and tuple(gate.shape) != tuple(self.gate.shape):
            error_msgs.append(
                f"{where}: the checkpoint's gate has shape {tuple(gate.shape)}, but a layer with "
                f"in_channels={self.in_channels}, out_channels={self.out_channels} has one gate per prime factor of "
                f"gcd = {math.gcd(self.in_channels, self.out_channels)}, shape {tuple(self.gate.shape)}"
            )
            state_dict = {k: v for k, v in state_dict.items() if k != prefix + "gate"}
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            try:
                limits = (extra.get("min_group_width"), extra.get("max_groups"))
                if limits != (self.min_group_width, self.max_groups):
                    raise ValueError(
                        f"it was saved with min_group_width={limits[0]}, max_groups={limits[1]}, this layer has "
                        f"min_group_width={self.min_group_width}, max_groups={self.max_groups}"
                    )
                self._check_order(extra["factors"])
            except (TypeError, KeyError, ValueError, AttributeError) as e:
                error_msgs.append(f"{where}: bad grouping state in the checkpoint: {e}")
                state_dict = {**state_dict, prefix + "_extra_state": self.get_extra_state()}
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # ------------------------------------------------------------------ the grouping
    def binary_gates(self) -> tuple[bool, ...]:
        """The current binary gates ``g`` as Python bools (reads the gate tensor; syncs on CUDA, except inside
        :func:`cached_gates`)."""
        if self._host_gates is not None:
            return self._host_gates
        return tuple(bool(v) or h for v, h in zip((self.gate.detach() >= 0).tolist(), self.held))

    def effective_gates(self) -> Tensor:
        """The binary gates as a float tensor carrying the straight-through gradient to :attr:`gate`: ``g = 1[g~ >= 0]``,
        with the gates held open by the hardware limits fixed at 1 (no gradient)."""
        g = binarize_gates(self.gate)
        if self._learnable_groups == math.gcd(self.in_channels, self.out_channels):
            return g
        return torch.where(self._held, torch.ones_like(g), g)

    def grouping(self) -> grouping.Grouping:
        """The current discrete grouping (groups, group of each channel, permutations); cached per gate state."""
        key = (self._factors, self.binary_gates())
        plan = self._plan_cache.get(key)
        if plan is None:
            if len(self._plan_cache) > 64:
                self._plan_cache.clear()
            plan = grouping.Grouping(self.in_channels, self.out_channels, *key)
            self._plan_cache[key] = plan
        return plan

    @property
    def groups(self) -> int:
        """The current number of groups, ``prod(p_k for g_k == 0)``."""
        return grouping.num_groups(self._factors, self.binary_gates())

    def relationship(self) -> Tensor:
        """The 0/1 relationship matrix ``U`` (float, shape ``(out, in)``), built by Kronecker products (eq. 4, 5, 7)."""
        with torch.no_grad():
            g = ((self.gate >= 0) | self._held).to(self.gate.dtype)
            return grouping.relationship(g, self._factors, self.in_channels, self.out_channels)

    def complexity(self) -> Tensor:
        """``zeta_l = sum_ij U_ij`` (eq. 8) as a 0-d tensor carrying the straight-through gradient to the gates.

        Equals ``in * out / groups``; for ``in = out = C`` it is ``C * prod_k (1 + g_k)`` (eq. 9).
        """
        return grouping.complexity(self.effective_gates(), self._factors, self.in_channels, self.out_channels)

    @torch.no_grad()
    def set_groups(self, groups: int, magnitude: float = GATE_INIT) -> None:
        """Set the gates so that ``U`` is the standard grouping into ``groups`` *contiguous* groups.

        The factor order becomes ``primes(groups) + primes(gcd / groups)`` with zero gates
        (``g~ = -magnitude``) on the first and one gates (``g~ = +magnitude``) on the rest, so the layer
        computes exactly ``nn.Conv2d(..., groups=groups)`` with the block-diagonal part of :attr:`weight`.

        Gates held open by the hardware limits keep the value +1 at the end of the order.

        Raises:
            ValueError: if ``groups`` does not divide ``gcd(in_channels, out_channels)``, or the hardware limits do
                not allow it (it must divide :attr:`reachable_groups`' largest value).
        """
        if not magnitude > 0:
            raise ValueError(f"magnitude must be positive, got {magnitude!r}")
        factors, gates = grouping.factors_for_groups(groups, self.in_channels, self.out_channels)
        d = self._learnable_groups
        if d % groups:
            raise ValueError(
                f"groups={groups} is not reachable under min_group_width={self.min_group_width}, "
                f"max_groups={self.max_groups} for in={self.in_channels}, out={self.out_channels}: "
                f"reachable are {list(self.reachable_groups)}"
            )
        rest = grouping.prime_factors(d // groups)
        held = grouping.prime_factors(math.gcd(self.in_channels, self.out_channels) // d)
        self._factors = grouping.prime_factors(groups) + rest + held
        self._sync_held()
        n_zero, n_rest = len(grouping.prime_factors(groups)), len(rest)
        values = [-magnitude] * n_zero + [magnitude] * n_rest + [1.0] * len(held)
        self.gate.copy_(torch.tensor(values, dtype=torch.float64).to(self.gate))

    @torch.no_grad()
    def set_grouping(self, factors: Sequence[int], gates: Sequence[bool], magnitude: float = 1.0) -> None:
        """Set the factor order and the binary gates directly (``g~ = ±magnitude``), e.g. to restore a recorded
        grouping. Gates held open by the hardware limits must be given as open.

        Raises:
            ValueError: ``factors`` is not a valid order for this layer, the gate count differs, or a held gate is closed.
        """
        order = self._check_order(factors)
        if len(gates) != len(order):
            raise ValueError(f"{len(gates)} gates for {len(order)} factors")
        n = len(grouping.prime_factors(self._learnable_groups))
        if any(not g for g in list(gates)[n:]):
            raise ValueError("a gate held open by the hardware limits cannot be closed")
        self._factors = order
        self._sync_held()
        self.gate.copy_(torch.tensor([magnitude if g else -magnitude for g in gates], dtype=torch.float64).to(self.gate))

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_conv(cls, conv: nn.Conv2d, impl: str = "auto", fill: str = "init",
                  gate_magnitude: float = GATE_INIT) -> DGConv2d:
        """A ``DGConv2d`` computing exactly what ``conv`` computes (any ``groups``, bias and padding mode).

        The weights of ``conv`` are placed in the block diagonal of the dense weight and the gates are set with
        :meth:`set_groups` to ``conv.groups``. Regular (``groups=1``), group and depthwise convolutions are all
        special cases. Device and dtype follow ``conv``. See :meth:`load_conv` for ``fill`` and ``gate_magnitude``.
        """
        if not isinstance(conv, nn.Conv2d) or isinstance(conv, nn.ConvTranspose2d):
            raise TypeError(f"from_conv needs an nn.Conv2d (not transposed), got {type(conv).__name__}")
        w = conv.weight
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            w.device,
            w.dtype,
            impl=impl,
        )
        layer.load_conv(w, conv.bias, conv.groups, fill=fill, gate_magnitude=gate_magnitude)
        return layer

    @torch.no_grad()
    def load_conv(self, weight: Tensor, bias: Tensor | None, groups: int, fill: str = "init",
                  gate_magnitude: float = GATE_INIT) -> None:
        """Become the group convolution with ``weight`` ``(out, in/groups, kh, kw)``, ``bias`` and ``groups`` (its
        function, exactly), e.g. to start from pretrained weights.

        Args:
            fill: what the weights outside the groups start as. ``"init"`` (default): the layer's fresh
                initialisation (Kaiming-uniform over the dense fan-in), so a closed gate feels a gradient and can open
                -- they are masked while it is closed, so the function is unchanged; ``"zeros"``: zeros (a closed
                gate's gradient is then exactly 0 and the grouping can only split further, never merge).
            gate_magnitude: ``|g~|`` of the gates (:meth:`set_groups`). A converted network should start confident
                (``dgconv train --init-from`` uses 1.0) so that the first optimizer steps do not regroup it before the
                loss has a say; the paper's ``1e-8`` is for training from scratch.

        Raises:
            ValueError: shapes that do not fit this layer, or an unknown ``fill``.
        """
        if fill not in ("init", "zeros"):
            raise ValueError(f"fill must be 'init' or 'zeros', got {fill!r}")
        g = int(groups)
        ig, og = self.in_channels // g, self.out_channels // g
        want = (self.out_channels, ig, *self.kernel_size)
        if tuple(weight.shape) != want:
            raise ValueError(f"a {g}-group weight for this layer has shape {want}, got {tuple(weight.shape)}")
        self.set_groups(g, magnitude=gate_magnitude)
        if fill == "zeros":
            self.weight.zero_()
        else:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        for j in range(g):
            self.weight[j * og : (j + 1) * og, j * ig : (j + 1) * ig] = weight[j * og : (j + 1) * og].to(self.weight)
        if self.bias is not None:
            if bias is None:
                self.bias.zero_()
            else:
                self.bias.copy_(bias)

    # ------------------------------------------------------------------ forward
    def _pad(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Apply padding that ``conv2d`` cannot express; return the input and the conv's own padding."""
        if self.padding == "valid":
            return x, (0, 0)
        if self.padding == "same":
            pads = []
            for k, dil in zip(self.kernel_size, self.dilation):
                total = dil * (k - 1)
                pads.append((total // 2, total - total // 2))
            (th, bh), (lw, rw) = pads
            if th == bh and lw == rw and self.padding_mode == "zeros":
                return x, (th, lw)
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            return F.pad(x, (lw, rw, th, bh), mode=mode), (0, 0)
        ph, pw = self.padding  # type: ignore[misc]
        if self.padding_mode == "zeros" or (ph == 0 and pw == 0):
            return x, (ph, pw)
        return F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode), (0, 0)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"DGConv2d expects a 3-D or 4-D input, got shape {tuple(x.shape)}")
        if x.shape[-3] != self.in_channels:
            raise ValueError(f"DGConv2d expects {self.in_channels} input channels, got input of shape {tuple(x.shape)}")
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        weight, bias = self.weight, self.bias
        cast = autocast_dtype(x.device.type)
        if cast is not None:
            x, weight = x.to(cast), weight.to(cast)
            bias = bias.to(cast) if bias is not None else None
        x, padding = self._pad(x)
        with torch.autocast(x.device.type, enabled=False) if cast is not None else contextlib.nullcontext():
            if _compiling() and self._impl != "reference":
                y = self._compiled_forward(x, weight, bias, padding)
            elif self._impl == "reference":
                y = dgconv2d_reference(
                    x, weight, self.effective_gates(), bias, self.stride, padding, self.dilation, self._factors
                )
            else:
                from .fast import dgconv2d_grouped

                y = dgconv2d_grouped(
                    x, weight, self.effective_gates(), bias, self.stride, padding, self.dilation, self.grouping(),
                    self.gate_batch_fraction,
                )
        return y.squeeze(0) if unbatched else y

    def _compiled_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        """Under ``torch.compile``: the grouping is chosen inside one opaque op (:mod:`dgconv.layer.compiled`)."""
        from . import compiled

        binary = (self.gate >= 0).to(self.gate.dtype)
        gates = self.gate + (binary - self.gate).detach()  # straight-through: value g, gradient to g~ unchanged
        gates = torch.where(self._held, torch.ones_like(gates), gates)
        return compiled.grouped_conv(x, weight, bias, gates, self._factors, self.stride, padding, self.dilation,
                                     self.gate_batch_fraction)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        s += f", groups={self.groups} (learned, {len(self._factors)} gates)"
        if self.min_group_width is not None:
            s += f", min_group_width={self.min_group_width}"
        if self.max_groups is not None:
            s += f", max_groups={self.max_groups}"
        if self._impl != "auto":
            s += f", impl={self._impl!r}"
        return s


def set_gate_batch_fraction(model: nn.Module, fraction: float) -> None:
    """Compute the zero gates' cross-group gradient terms of every DGConv layer of ``model`` on a random
    ``fraction`` of each batch (an unbiased estimate; 1 restores the exact gradient). See :mod:`dgconv.layer.fast`.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if isinstance(fraction, bool) or not 0 < float(fraction) <= 1:
        raise ValueError(f"gate batch fraction must be in (0, 1], got {fraction!r}")
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.gate_batch_fraction = float(fraction)


@contextlib.contextmanager
def gate_gradients(model: nn.Module, enabled: bool) -> Iterator[None]:
    """With ``enabled=False``, the DGConv layers of ``model`` compute no gate gradient inside the block: each runs
    as a plain group convolution forward and backward (input and weight gradients only), and the gates stay
    where they are (their ``.grad`` stays ``None``, so the optimizer skips them). ``dgconv train --gate-every K``
    enables gate gradients on every K-th step only.

    Example::

        >>> model = torch.nn.Sequential(DGConv2d(8, 8, 3, padding=1))
        >>> with gate_gradients(model, enabled=False):
        ...     model(torch.randn(1, 8, 4, 4)).sum().backward()
        >>> model[0].gate.grad is None
        True
    """
    gates = [m.gate for m in model.modules() if isinstance(m, DGConv2d)]
    before = [g.requires_grad for g in gates]
    try:
        for g in gates:
            g.requires_grad_(bool(enabled) and g.requires_grad)
        yield
    finally:
        for g, b in zip(gates, before):
            g.requires_grad_(b)


@contextlib.contextmanager
def cached_gates(model: nn.Module) -> Iterator[None]:
    """Read the gates of every DGConv layer of ``model`` once, and let the layers use that host copy inside.

    The fast path needs each layer's grouping on the host, which costs a device-to-host sync per layer and
    forward on CUDA. Inside this context there is one sync for the whole model. The gates must not change
    inside the context (run the optimizer step outside it); ``dgconv train`` wraps each forward pass.

    Example::

        >>> model = torch.nn.Sequential(DGConv2d(8, 8, 3, padding=1), DGConv2d(8, 8, 1))
        >>> with cached_gates(model):
        ...     y = model(torch.randn(1, 8, 5, 5))
    """
    layers = [m for m in model.modules() if isinstance(m, DGConv2d)]
    if not layers:
        yield
        return
    bits = (torch.cat([m.gate.detach().reshape(-1) for m in layers]) >= 0).tolist()
    i = 0
    for m in layers:
        k = m.gate.numel()
        m._host_gates = tuple(bool(b) or h for b, h in zip(bits[i : i + k], m.held))
        i += k
    try:
        yield
    finally:
        for m in layers:
            m._host_gates = None



# ------------------------------------------------------------------------------------------------ finding layers
def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def dgconv_layers(model: nn.Module) -> list[tuple[str, DGConv2d]]:
    """``(name, layer)`` of every :class:`DGConv2d` in ``model``, in module order (DDP/compile wrappers stripped).

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), DGConv2d(8, 8, 3, padding=1))
        >>> [name for name, _ in dgconv_layers(net)]
        ['1']
    """
    return [(n, m) for n, m in unwrap(model).named_modules() if isinstance(m, DGConv2d)]


def learned_groups(model: nn.Module) -> dict[str, int]:
    """Module name -> current number of groups of every DGConv layer (the format ``create_model(groups=...)``
    takes and ``groups.json`` stores under ``"groups"``)."""
    return {name: m.groups for name, m in dgconv_layers(model)}
