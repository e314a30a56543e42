"""The pure grouping math against brute force, exhaustively and with hypothesis."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgconv.layer import grouping
from tests.reference import brute_mask, divisors, kron_mask, primes, relaxed_mask

# Channel pairs: powers of two, equal and unequal, mixed primes, primes, coprime.
PAIRS = [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (4, 8), (8, 2), (6, 6), (12, 12), (12, 18), (18, 12),
         (48, 32), (30, 30), (7, 7), (9, 27), (10, 15), (3, 5), (20, 20), (36, 24)]


def all_bits(k: int):
    return list(itertools.product([0, 1], repeat=k))


@pytest.mark.parametrize("cin,cout", PAIRS)
def test_relationship_equals_brute_force_for_every_gate_setting(cin, cout):
    factors = grouping.default_factors(cin, cout)
    assert list(factors) == primes(math.gcd(cin, cout))
    for bits in all_bits(len(factors)):
        expected = brute_mask(cin, cout, list(factors), list(bits))
        np.testing.assert_array_equal(kron_mask(cin, cout, list(factors), list(bits)), expected)
        u = grouping.relationship(torch.tensor(bits, dtype=torch.float64), factors, cin, cout)
        np.testing.assert_array_equal(u.numpy(), expected)
        plan = grouping.Grouping(cin, cout, factors, tuple(bool(b) for b in bits))
        np.testing.assert_array_equal(plan.mask(torch.float64).numpy(), expected)
        # groups: every output row has in/G ones, every column out/G, and the groups partition channels
        G = plan.groups
        assert (expected.sum(1) == cin // G).all() and (expected.sum(0) == cout // G).all()
        assert len({tuple(r) for r in expected}) == G
        assert plan.complexity() == expected.sum()
        assert grouping.complexity(torch.tensor(bits, dtype=torch.float64), factors, cin, cout).item() == expected.sum()


@pytest.mark.parametrize("cin,cout", PAIRS)
def test_reachable_groups_are_exactly_the_divisors_of_gcd(cin, cout):
    factors = grouping.default_factors(cin, cout)
    reachable = {grouping.num_groups(factors, [bool(b) for b in bits]) for bits in all_bits(len(factors))}
    assert reachable == set(divisors(math.gcd(cin, cout)))


@pytest.mark.parametrize("k", range(0, 7))
def test_power_of_two_is_the_papers_kronecker_product(k):
    """in = out = 2^K: U = U_1 ⊗ ... ⊗ U_K with gate[k] driving U_{k+1}, eq. (7); zeta = C prod(1+g) (eq. 9)."""
    c = 2**k
    assert grouping.default_factors(c, c) == (2,) * k
    for bits in all_bits(k)[:32]:
        u = np.ones((1, 1))
        for g in bits:
            u = np.kron(u, g * np.ones((2, 2)) + (1 - g) * np.eye(2))
        got = grouping.relationship(torch.tensor(bits, dtype=torch.float64), (2,) * k, c, c)
        np.testing.assert_array_equal(got.numpy(), u)
        zeta = grouping.complexity(torch.tensor(bits, dtype=torch.float64), (2,) * k, c, c)
        assert zeta.item() == c * np.prod([1 + g for g in bits])


def test_paper_figure_3_examples():
    """g = [1,1,0] is 1 ⊗ 1 ⊗ I (2 groups, strided); g = [0,1,0] is I ⊗ 1 ⊗ I (4 groups), Fig. 3 (c), (e)."""
    u = grouping.relationship(torch.tensor([1.0, 1.0, 0.0]), (2, 2, 2), 8, 8)
    np.testing.assert_array_equal(u.numpy(), np.kron(np.ones((4, 4)), np.eye(2)))
    assert grouping.num_groups((2, 2, 2), (True, True, False)) == 2
    u = grouping.relationship(torch.tensor([0.0, 1.0, 0.0]), (2, 2, 2), 8, 8)
    np.testing.assert_array_equal(u.numpy(), np.kron(np.kron(np.eye(2), np.ones((2, 2))), np.eye(2)))
    assert grouping.num_groups((2, 2, 2), (False, True, False)) == 4


@pytest.mark.parametrize("cin,cout", [(96, 96), (48, 32), (12, 18), (30, 30), (7, 7), (36, 24), (8, 8)])
def test_factors_for_groups_are_contiguous_block_diagonal(cin, cout):
    d = math.gcd(cin, cout)
    for G in divisors(d):
        factors, gates = grouping.factors_for_groups(G, cin, cout)
        assert sorted(factors) == primes(d)
        expected = np.zeros((cout, cin))
        og, ig = cout // G, cin // G
        for j in range(G):
            expected[j * og:(j + 1) * og, j * ig:(j + 1) * ig] = 1
        np.testing.assert_array_equal(brute_mask(cin, cout, list(factors), [int(g) for g in gates]), expected)
        plan = grouping.Grouping(cin, cout, factors, gates)
        assert plan.groups == G and plan.is_contiguous
        assert torch.equal(plan.in_perm, torch.arange(cin)) and torch.equal(plan.out_perm, torch.arange(cout))


def test_fixed_order_cannot_make_every_divisor_contiguous():
    """Why the factor order is state: with 2,2,2,2,2,3 the grouping into 3 is strided, not contiguous."""
    plan = grouping.Grouping(96, 96, (2, 2, 2, 2, 2, 3), (True,) * 5 + (False,))
    assert plan.groups == 3 and not plan.is_contiguous


@pytest.mark.parametrize("bad", [0, 5, 7, 64, -1, 2.0, True])
def test_factors_for_groups_rejects_non_divisors(bad):
    with pytest.raises(ValueError, match="must divide gcd = 32"):
        grouping.factors_for_groups(bad, 96, 64)


def test_check_factors():
    assert grouping.check_factors([3, 2, 2], 12, 24) == (3, 2, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        grouping.check_factors([2, 2, 2], 12, 24)
    with pytest.raises(ValueError, match="positive integer"):
        grouping.prime_factors(0)


@pytest.mark.parametrize("cin,cout", [(8, 8), (12, 18), (30, 30), (48, 32), (9, 27)])
def test_relationship_grad_equals_autograd_for_relaxed_gates(cin, cout):
    torch.manual_seed(0)
    factors = grouping.default_factors(cin, cout)
    g = torch.rand(len(factors), dtype=torch.float64, requires_grad=True)
    m = torch.randn(cout, cin, dtype=torch.float64)
    (relaxed_mask(g, cin, cout, list(factors)) * m).sum().backward()
    got = grouping.relationship_grad(m, g.detach(), factors, cin, cout)
    torch.testing.assert_close(got, g.grad)
    # the library's own U is differentiable too and agrees with the independent relaxed mask
    torch.testing.assert_close(grouping.relationship(g.detach(), factors, cin, cout), relaxed_mask(g.detach(), cin, cout, list(factors)))


@pytest.mark.parametrize("cin,cout", [(8, 8), (12, 18), (48, 32)])
def test_complexity_gradient_matches_sum_of_relaxed_mask(cin, cout):
    factors = grouping.default_factors(cin, cout)
    g = torch.rand(len(factors), dtype=torch.float64, requires_grad=True)
    relaxed_mask(g, cin, cout, list(factors)).sum().backward()
    g2 = g.detach().clone().requires_grad_()
    zeta = grouping.complexity(g2, factors, cin, cout)
    zeta.backward()
    torch.testing.assert_close(zeta.detach(), relaxed_mask(g.detach(), cin, cout, list(factors)).sum())
    torch.testing.assert_close(g2.grad, g.grad)


def test_permutations_make_groups_contiguous():
    plan = grouping.Grouping(24, 36, (2, 2, 3), (False, True, False))  # 6 groups, non-adjacent
    u = torch.from_numpy(brute_mask(24, 36, [2, 2, 3], [0, 1, 0]))
    permuted = u[plan.out_perm][:, plan.in_perm]
    G = plan.groups
    expected = torch.block_diag(*[torch.ones(36 // G, 24 // G, dtype=u.dtype)] * G)
    assert torch.equal(permuted, expected)
    assert not plan.is_contiguous


@settings(max_examples=60, deadline=None)
@given(
    cin=st.integers(1, 72),
    cout=st.integers(1, 72),
    data=st.data(),
)
def test_hypothesis_any_channels_any_gates(cin, cout, data):
    factors = list(grouping.default_factors(cin, cout))
    order = data.draw(st.permutations(factors))
    bits = data.draw(st.lists(st.integers(0, 1), min_size=len(order), max_size=len(order)))
    expected = brute_mask(cin, cout, list(order), bits)
    plan = grouping.Grouping(cin, cout, tuple(order), tuple(bool(b) for b in bits))
    np.testing.assert_array_equal(plan.mask(torch.float64).numpy(), expected)
    np.testing.assert_array_equal(
        grouping.relationship(torch.tensor(bits, dtype=torch.float64), tuple(order), cin, cout).numpy(), expected
    )
    G = plan.groups
    assert G == math.prod(p for p, b in zip(order, bits) if not b)
    assert expected.sum() == cin * cout // G
    # the permutations sort channels into G contiguous equal blocks
    u = torch.from_numpy(expected)[plan.out_perm][:, plan.in_perm]
    assert torch.equal(u, torch.block_diag(*[torch.ones(cout // G, cin // G, dtype=u.dtype)] * G))
