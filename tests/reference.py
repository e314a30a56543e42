"""Independent references for the tests: written from the paper and the issue's spec, sharing no code
with ``dgconv`` (no Kronecker helpers, no grouping module, no custom autograd functions)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def primes(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


def digits_of(i: int, factors: list[int]) -> list[int]:
    """Mixed-radix digits of i, most significant (factor 0) first."""
    out = []
    for p in reversed(factors):
        out.append(i % p)
        i //= p
    return out[::-1]


def brute_mask(cin: int, cout: int, factors: list[int], bits: list[int]) -> np.ndarray:
    """U by its meaning, entry by entry: o and c connect iff their Kronecker indices agree at every zero gate."""
    d = math.gcd(cin, cout)
    a, b = cout // d, cin // d
    u = np.zeros((cout, cin))
    for o in range(cout):
        do = digits_of(o // a, factors)
        for c in range(cin):
            dc = digits_of(c // b, factors)
            u[o, c] = all(bits[k] or do[k] == dc[k] for k in range(len(factors)))
    return u


def kron_mask(cin: int, cout: int, factors: list[int], bits: list[int]) -> np.ndarray:
    """U by the issue's formula with numpy: (U_1 ⊗ ... ⊗ U_K) ⊗ ones(out/d, in/d)."""
    d = math.gcd(cin, cout)
    u = np.ones((1, 1))
    for p, g in zip(factors, bits):
        u = np.kron(u, g * np.ones((p, p)) + (1 - g) * np.eye(p))
    return np.kron(u, np.ones((cout // d, cin // d)))


def relaxed_mask(g: torch.Tensor, cin: int, cout: int, factors: list[int]) -> torch.Tensor:
    """Multilinear U(g) = prod_k (E_k + g_k (1 - E_k)), E_k = [digit k of o == digit k of c]; autograd-able."""
    d = math.gcd(cin, cout)
    a, b = cout // d, cin // d
    dout = torch.tensor([digits_of(o // a, factors) for o in range(cout)]).reshape(cout, len(factors))
    din = torch.tensor([digits_of(c // b, factors) for c in range(cin)]).reshape(cin, len(factors))
    u = torch.ones(cout, cin, dtype=g.dtype)
    for k in range(len(factors)):
        e = (dout[:, k, None] == din[None, :, k]).to(g.dtype)
        u = u * (e + g[k] * (1 - e))
    return u


def dense_reference(x, weight, bias, gate, factors, stride=1, padding=0, dilation=1):
    """Output and gradients of the masked dense conv with the identity STE, by plain autograd.

    Returns (y, fn) where fn(grad_y) -> (dx, dW, db, dgate). The STE gradient of the continuous gate is the
    autograd gradient with respect to the binary gate treated as a real variable.
    """
    x = x.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    b = None if bias is None else bias.detach().clone().requires_grad_()
    g = (gate.detach() >= 0).to(x.dtype).requires_grad_()
    u = relaxed_mask(g, weight.shape[1], weight.shape[0], list(factors))
    y = F.conv2d(x, w * u[:, :, None, None], b, stride, padding, dilation)

    def grads(grad_y):
        inputs = [x, w, g] + ([b] if b is not None else [])
        out = torch.autograd.grad(y, inputs, grad_y, allow_unused=True)
        dx, dw, dg = out[:3]
        db = out[3] if b is not None else None
        if dg is None:  # no gates at all (gcd = 1): an empty gradient
            dg = torch.zeros_like(g)
        return dx, dw, db, dg

    return y.detach(), grads
