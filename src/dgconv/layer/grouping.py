"""The grouping math of DGConv, separate from autograd and from ``nn.Module`` plumbing.

Construction (paper §3.2, eq. 4-7, generalised to any channel counts)
---------------------------------------------------------------------
Let ``d = gcd(in_channels, out_channels)`` and ``p_1, ..., p_K`` the prime factors of ``d`` (with
multiplicity, in a stored *factor order*; ascending by default). One gate ``g_k`` in {0, 1} drives each
factor::

    U_k = g_k * ones(p_k, p_k) + (1 - g_k) * eye(p_k)
    U   = U_1 ⊗ U_2 ⊗ ... ⊗ U_K ⊗ ones(out_channels / d, in_channels / d)      # shape (out, in)

For ``in = out = 2**K`` every ``p_k`` is 2, the trailing ones block is 1x1 and ``U`` is exactly the
paper's eq. (7). In general ``U`` connects output channel ``o`` and input channel ``c`` iff the indices
``o // (out/d)`` and ``c // (in/d)``, written in the mixed radix ``(p_1, ..., p_K)`` (``p_1`` most
significant), agree in every digit whose gate is 0. So the channels fall into::

    groups = prod(p_k for k with g_k == 0)

groups of ``in/groups`` inputs and ``out/groups`` outputs, and every divisor of ``gcd(in, out)`` -- every
``groups`` value :class:`torch.nn.Conv2d` accepts -- is reachable (choose the gates of a sub-multiset of the
prime factors).

The grouping is contiguous (the standard block-diagonal group convolution) iff all zero gates precede all
one gates in the factor order. A fixed order cannot make every divisor contiguous once ``d`` has two
different primes (for ``d = 96 = 2**5 * 3`` the order ``2,2,2,2,2,3`` makes 3 groups strided), so the factor
order is part of a layer's state: :func:`factors_for_groups` returns the order ``primes(G) + primes(d/G)``
that makes ``G`` contiguous. For powers of two every order is the same and nothing changes.

Everything here is a pure function of its arguments. Gates given as Python ``bool`` sequences describe a
discrete grouping; gates given as tensors may be relaxed to [0, 1] and are differentiated exactly
(``U`` is multilinear in the gates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = [
    "prime_factors",
    "largest_divisor_at_most",
    "default_factors",
    "check_factors",
    "factors_for_groups",
    "num_groups",
    "relationship",
    "relationship_grad",
    "complexity",
    "digits",
    "group_index",
    "Grouping",
]


def prime_factors(n: int) -> tuple[int, ...]:
    """Prime factors of ``n`` with multiplicity, ascending (``prime_factors(96) == (2, 2, 2, 2, 2, 3)``).

    ``prime_factors(1) == ()``.

    >>> prime_factors(48)
    (2, 2, 2, 2, 3)
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"prime_factors needs a positive integer, got {n!r}")
    out: list[int] = []
    p = 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return tuple(out)


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (1 when ``limit < 1``).

    >>> largest_divisor_at_most(96, 8), largest_divisor_at_most(96, 12), largest_divisor_at_most(64, 20)
    (8, 12, 16)
    """
    return max((d for d in range(1, min(n, limit) + 1) if n % d == 0), default=1)


def default_factors(in_channels: int, out_channels: int) -> tuple[int, ...]:
    """The default factor order of a layer: the prime factors of ``gcd(in, out)``, ascending.

    >>> default_factors(48, 32)
    (2, 2, 2, 2)
    """
    return prime_factors(math.gcd(in_channels, out_channels))


def check_factors(factors: Sequence[int], in_channels: int, out_channels: int) -> tuple[int, ...]:
    """Validate a factor order: it must be a permutation of the prime factors of ``gcd(in, out)``.

    Returns it as a tuple of ints; raises ``ValueError`` with the expected factors otherwise.
    """
    factors = tuple(int(p) for p in factors)
    expected = default_factors(in_channels, out_channels)
    if sorted(factors) != list(expected):
        raise ValueError(
            f"factor order {list(factors)} is not a permutation of the prime factors {list(expected)} of "
            f"gcd({in_channels}, {out_channels}) = {math.gcd(in_channels, out_channels)}"
        )
    return factors


def factors_for_groups(groups: int, in_channels: int, out_channels: int) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Factor order and binary gates whose grouping is ``groups`` *contiguous* groups.

    The zero gates (the prime factors of ``groups``) come first, then the one gates (the prime factors of
    ``gcd / groups``), so ``U`` is ``eye(groups) ⊗ ones(out/groups, in/groups)``, the weight mask of
    ``nn.Conv2d(in, out, k, groups=groups)``.

    Raises ``ValueError`` when ``groups`` does not divide ``gcd(in_channels, out_channels)``.

    >>> factors_for_groups(3, 96, 96)
    ((3, 2, 2, 2, 2, 2), (False, True, True, True, True, True))
    """
    d = math.gcd(in_channels, out_channels)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or d % groups:
        divisors = [g for g in range(1, d + 1) if d % g == 0]
        raise ValueError(
            f"groups={groups!r} is not reachable for in_channels={in_channels}, out_channels={out_channels}: "
            f"it must divide gcd = {d}; possible values are {divisors}"
        )
    zeros = prime_factors(groups)
    ones = prime_factors(d // groups)
    return zeros + ones, (False,) * len(zeros) + (True,) * len(ones)


def num_groups(factors: Sequence[int], gates: Sequence[bool]) -> int:
    """Number of groups of a discrete grouping: the product of the factors whose gate is 0."""
    _check_same_length(factors, gates)
    return math.prod(p for p, g in zip(factors, gates) if not g)


def _check_same_length(factors: Sequence[int], gates: Sequence[object] | Tensor) -> None:
    if len(factors) != len(gates):
        raise ValueError(f"{len(gates)} gates for {len(factors)} factors: need one gate per factor")


def _blocks(factors: Sequence[int], in_channels: int, out_channels: int) -> tuple[int, int, int]:
    d = math.prod(factors)
    if in_channels % d or out_channels % d or d != math.gcd(in_channels, out_channels):
        raise ValueError(
            f"factors {list(factors)} (product {d}) do not factor gcd({in_channels}, {out_channels}) = "
            f"{math.gcd(in_channels, out_channels)}"
        )
    return d, out_channels // d, in_channels // d


def relationship(gates: Tensor, factors: Sequence[int], in_channels: int, out_channels: int) -> Tensor:
    """The relationship matrix ``U`` of shape ``(out_channels, in_channels)`` (eq. 4, 5, 7).

    ``gates`` is a 1-D tensor of gate values, one per factor; binary values give the 0/1 mask, values in
    [0, 1] give its multilinear relaxation. Differentiable with respect to ``gates``; dtype and device follow
    ``gates``.

    >>> relationship(torch.tensor([0., 1.]), (2, 2), 4, 4)   # I ⊗ 1: 2 groups, adjacent pairs
    tensor([[1., 1., 0., 0.],
            [1., 1., 0., 0.],
            [0., 0., 1., 1.],
            [0., 0., 1., 1.]])
    """
    _check_same_length(factors, gates)
    d, out_block, in_block = _blocks(factors, in_channels, out_channels)
    u = gates.new_ones(1, 1)
    for g, p in zip(gates.unbind(0) if len(factors) else (), factors):
        eye = torch.eye(p, dtype=gates.dtype, device=gates.device)
        u = torch.kron(u, eye + g * (1 - eye))
    return torch.kron(u, gates.new_ones(out_block, in_block))


def relationship_grad(
    grad_u: Tensor, gates: Tensor, factors: Sequence[int], in_channels: int, out_channels: int
) -> Tensor:
    """Exact ``dL/dg_k = sum_ij grad_u[i, j] * dU[i, j]/dg_k`` for every gate k (paper, Appendix B).

    ``grad_u`` is ``dL/dU`` of shape ``(out, in)``. Since ``dU_k/dg_k = ones - eye``, the derivative of ``U``
    with respect to ``g_k`` is the Kronecker product with factor k replaced by ``ones - eye``; this contracts
    ``grad_u`` (summed over the trailing ones block, reshaped to one axis pair per factor) with those
    factors, without ever building a ``(K, out, in)`` tensor. Works for relaxed gates too. Returns a tensor
    of shape ``(K,)`` in ``gates``' dtype.
    """
    _check_same_length(factors, gates)
    d, out_block, in_block = _blocks(factors, in_channels, out_channels)
    k_count = len(factors)
    if k_count == 0:
        return gates.new_zeros(0)
    work = grad_u.to(torch.promote_types(grad_u.dtype, gates.dtype))
    m = work.reshape(d, out_block, d, in_block).sum(dim=(1, 3))
    # Interleave the axes as (i_1, j_1, i_2, j_2, ...) so that factor k owns one contiguous axis pair.
    m = m.reshape(*factors, *factors)
    order = [axis for k in range(k_count) for axis in (k, k_count + k)]
    m = m.permute(order).contiguous()
    g = gates.to(m.dtype)
    mats = []
    derivs = []
    for k, p in enumerate(factors):
        eye = torch.eye(p, dtype=m.dtype, device=m.device)
        mats.append(eye + g[k] * (1 - eye))
        derivs.append(1 - eye)
    out = []
    for k in range(k_count):
        x = m.reshape(-1)
        for j in reversed(range(k_count)):
            a = derivs[j] if j == k else mats[j]
            p = factors[j]
            x = x.reshape(-1, p * p) @ a.reshape(p * p)
        out.append(x.reshape(()))
    return torch.stack(out).to(gates.dtype)


def complexity(gates: Tensor, factors: Sequence[int], in_channels: int, out_channels: int) -> Tensor:
    """``zeta = sum_ij U_ij`` (eq. 8) in closed form, differentiable in ``gates``.

    ``sum(U) = (out/d) * (in/d) * prod_k sum(U_k)`` and ``sum(U_k) = p_k * (1 + g_k * (p_k - 1))``, so::

        zeta = out * in / d * prod_k (1 + g_k * (p_k - 1))

    which for ``in = out = C = 2**K`` is the paper's ``C * prod_k (1 + g_k)`` (eq. 9).
    """
    _check_same_length(factors, gates)
    d, _, _ = _blocks(factors, in_channels, out_channels)
    scale = out_channels * in_channels / d
    if not factors:
        return gates.new_tensor(scale).sum()
    p = torch.tensor(factors, dtype=gates.dtype, device=gates.device)
    return scale * torch.prod(1 + gates * (p - 1))


def digits(factors: Sequence[int], channels: int) -> Tensor:
    """Mixed-radix digits ``(K, channels)`` of every channel's Kronecker index ``c // (channels / d)``.

    Row ``k`` holds digit ``k`` (``factors[0]`` most significant), a CPU ``LongTensor``.
    """
    d = math.prod(factors)
    if channels % d:
        raise ValueError(f"{channels} channels are not a multiple of the factor product {d}")
    idx = torch.arange(channels) // (channels // d)
    out = []
    stride = d
    for p in factors:
        stride //= p
        out.append((idx // stride) % p)
    return torch.stack(out) if out else torch.zeros(0, channels, dtype=torch.long)


def group_index(factors: Sequence[int], gates: Sequence[bool], channels: int) -> Tensor:
    """Group of each of ``channels`` channels (a CPU ``LongTensor`` with values in ``[0, groups)``).

    The group of a channel is the mixed-radix number formed by its digits (:func:`digits`) at the zero gates,
    most significant first. Two channels (one input, one output) are connected by ``U`` iff their groups are
    equal.
    """
    _check_same_length(factors, gates)
    dig = digits(factors, channels)
    gid = torch.zeros(channels, dtype=torch.long)
    for k, (p, g) in enumerate(zip(factors, gates)):
        if not g:
            gid = gid * p + dig[k]
    return gid


@dataclass(frozen=True)
class Grouping:
    """A discrete grouping of a layer: its channels, factor order and binary gates.

    Derived quantities (group counts, group index of each channel, the permutations that make the groups
    contiguous) are computed once and cached. Instances are immutable and hashable, so layers can cache
    them by their gates.
    """

    in_channels: int
    out_channels: int
    factors: tuple[int, ...]
    gates: tuple[bool, ...]

    def __post_init__(self) -> None:
        _check_same_length(self.factors, self.gates)
        _blocks(self.factors, self.in_channels, self.out_channels)

    @cached_property
    def groups(self) -> int:
        """Number of groups, ``prod(p_k for g_k == 0)``."""
        return num_groups(self.factors, self.gates)

    @cached_property
    def in_group(self) -> Tensor:
        """Group of every input channel (CPU ``LongTensor``)."""
        return group_index(self.factors, self.gates, self.in_channels)

    @cached_property
    def out_group(self) -> Tensor:
        """Group of every output channel (CPU ``LongTensor``)."""
        return group_index(self.factors, self.gates, self.out_channels)

    @cached_property
    def in_perm(self) -> Tensor:
        """Input channels sorted by group (stable): ``x[:, in_perm]`` has contiguous groups."""
        return torch.argsort(self.in_group, stable=True)

    @cached_property
    def out_perm(self) -> Tensor:
        """Output channels sorted by group (stable): ``y[:, out_perm]`` has contiguous groups."""
        return torch.argsort(self.out_group, stable=True)

    @cached_property
    def in_group_inputs(self) -> Tensor:
        """``(out, in/G)``: for output channel ``out_perm[r]``, the input channels of its group, in sorted order.

        ``W[out_perm[:, None], in_group_inputs]`` are the in-group weights of the grouped convolution that
        computes the layer on sorted channels (what the fast path runs and what ``deploy`` keeps).
        """
        og, ig = self.out_channels // self.groups, self.in_channels // self.groups
        return self.in_perm.view(self.groups, ig).repeat_interleave(og, dim=0)

    @cached_property
    def weight_index(self) -> Tensor:
        """``(out * in/G,)`` flat row indices into ``W.view(out * in, kh * kw)``: the in-group weights, rows in sorted
        output order, columns in sorted input order (the weight of the grouped convolution on sorted channels)."""
        return (self.out_perm[:, None] * self.in_channels + self.in_group_inputs).reshape(-1)

    @cached_property
    def is_contiguous(self) -> bool:
        """True iff the grouping is the standard block-diagonal one (both permutations are the identity)."""
        return bool(
            torch.all(self.in_group[1:] >= self.in_group[:-1]) and torch.all(self.out_group[1:] >= self.out_group[:-1])
        )

    def mask(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """The 0/1 relationship matrix ``U`` of shape ``(out, in)`` (equal to :func:`relationship`)."""
        u = self.out_group[:, None] == self.in_group[None, :]
        return u.to(device=device, dtype=dtype)

    def complexity(self) -> int:
        """``sum(U)`` as an int: ``in * out / groups``."""
        return self.in_channels * self.out_channels // self.groups
