"""Backward plans of the fast path (dgconv.layer.plans): every plan against the independent dense autograd reference in
float64, the choice by measurement and its cache (never served to another grouping, dtype or device), forcing, and
what each plan launches."""

from __future__ import annotations

import pytest
import torch

import dgconv.layer.plans as plans
from dgconv import DGConv2d, create_model
from dgconv.errors import ConfigError
from tests.layer.test_fast import CASES, check_against_reference, reference_case


@pytest.fixture(autouse=True)
def fresh():
    plans.clear()
    yield
    plans.force(None)
    plans.set_selection("auto")
    plans.clear()


@pytest.mark.parametrize("plan", plans.PLANS)
@pytest.mark.parametrize("cin,cout,bits,stride", CASES)
def test_every_plan_equals_the_dense_reference(plan, cin, cout, bits, stride):
    layer, x, gen = reference_case(cin, cout, bits, stride)
    with plans.forced(plan):
        check_against_reference(layer, x, stride, gen)
    assert plans.chosen(torch.nn.Sequential(layer)) == {"0": plan}


def test_channels_last_layers_under_the_dense_plans():
    gen = torch.Generator().manual_seed(5)
    for plan in ("dense", "masked"):
        layer = DGConv2d(64, 64, 3, padding=1, bias=True, impl="fast").double().to(memory_format=torch.channels_last)
        layer.gate.data = torch.tensor([0.3, -0.3, 0.3, -0.3, -0.3, 0.3], dtype=torch.float64)
        x = torch.randn(2, 64, 6, 6, dtype=torch.float64, generator=gen).to(memory_format=torch.channels_last)
        x.requires_grad_(True)
        with plans.forced(plan):
            check_against_reference(layer, x, 1, gen)


def test_calls_each_plan_makes(monkeypatch):
    """dense: the group convolution's input gradient plus one dense weight gradient; masked: one dense call."""
    import dgconv.layer.functional as functional

    layer = DGConv2d(64, 64, 3, padding=1, impl="fast")
    layer.gate.data = torch.tensor([-0.3, 0.3, -0.3, 0.3, -0.3, -0.3])  # 16 non-adjacent groups
    x = torch.randn(2, 64, 8, 8)
    seen = []
    real = torch.ops.aten.convolution_backward

    class Spy:
        def __call__(self, *args):
            seen.append((args[9], tuple(args[10])))  # groups, output mask
            return real(*args)

    monkeypatch.setattr(functional.torch.ops.aten, "convolution_backward", Spy())
    counts = {}
    for plan in plans.PLANS:
        seen.clear()
        with plans.forced(plan):
            layer(x).sum().backward()
        counts[plan] = list(seen)
    assert counts["dense"] == [(16, (False, False, True)), (1, (False, True, False))]  # x needs no gradient here
    assert counts["masked"] == [(1, (False, True, True))]
    assert len(counts["partner"]) > 2  # partner passes for the zero gates


def test_an_unknown_plan_is_refused_with_the_list():
    with pytest.raises(ConfigError, match="unknown DGConv backward plan 'fastest': choose from partner, dense, masked"):
        plans.force("fastest")
    with pytest.raises(ConfigError, match="plan selection must be one of"):
        plans.set_selection("always")


def test_measured_choices_are_cached_per_cost_dtype_and_device_and_masks_per_grouping(monkeypatch):
    """A measured choice is reused for its key only: another grouping of other cost (groups, merge width, partner
    passes), another dtype or another device measures again; masks are built per grouping, dtype and device."""
    measured = []
    real = plans._timed

    def timed(fn, device, repeats=2):
        measured.append(device.type)
        return real(fn, device, 1)

    monkeypatch.setattr(plans, "_timed", timed)
    plans.set_selection("measure")
    layer = DGConv2d(32, 32, 3, padding=1, impl="fast")
    x = torch.randn(2, 32, 6, 6)

    def step(bits, dtype=torch.float32):
        layer.gate.data = torch.tensor([0.3 if b else -0.3 for b in bits], dtype=dtype)
        layer.to(dtype)(x.to(dtype)).sum().backward()

    n = len(plans.PLANS)
    step([1, 0, 1, 0, 1])
    assert len(measured) == n  # every plan timed once
    step([1, 0, 1, 0, 1])
    assert len(measured) == n  # the same key: the cached choice
    assert plans.chosen(torch.nn.Sequential(layer))["0"] in plans.PLANS
    step([0, 1, 1, 0, 1])  # another grouping with the same cost (4 groups, non-adjacent, same passes): reused ...
    assert len(measured) == n
    assert len(plans._MASKS) in (0, 1, 2)  # ... but its masks are its own (built only if a dense plan ran)
    step([0, 0, 0, 1, 1])  # 8 groups: another cost
    assert len(measured) == 2 * n
    step([0, 0, 0, 1, 1], torch.float64)  # another dtype
    assert len(measured) == 3 * n
    if torch.cuda.is_available():
        layer.cuda()
        layer.gate.data = layer.gate.data.cuda()
        layer(x.double().cuda()).sum().backward()  # another device
        assert measured[-1] == "cuda"
    keys = list(plans._CHOICES)
    assert len(set(keys)) == len(keys) == len(measured) // n


def test_masks_are_never_served_to_another_grouping_dtype_or_device():
    from dgconv.layer.grouping import Grouping

    a = Grouping(32, 32, (2,) * 5, (True, False, True, False, True))
    b = Grouping(32, 32, (2,) * 5, (False, True, True, False, True))
    cpu = torch.device("cpu")
    ma = plans.masks(a, cpu, torch.float32)
    assert plans.masks(a, cpu, torch.float32) is ma
    assert plans.masks(b, cpu, torch.float32) is not ma
    assert not all(torch.equal(x, y) for x, y in zip(plans.masks(b, cpu, torch.float32).kron, ma.kron))
    assert plans.masks(a, cpu, torch.float64).kron[0].dtype == torch.float64
    assert plans.masks(a, torch.device("meta"), torch.float32).kron[0].device.type == "meta"


def test_the_kronecker_contraction_equals_explicit_masks():
    """dL/dg_k = <dL/dU, dU/dg_k>, with dU/dg_k built pair by pair from the digits (tests/reference.py's Kronecker
    mask differentiated by finite differences of the binary gates), against the contraction the dense plans use."""
    import numpy as np

    from dgconv.layer.grouping import Grouping
    from tests.reference import kron_mask

    gen = torch.Generator().manual_seed(3)
    for cin, cout, factors, bits in [(48, 32, (2, 2, 2, 2), (1, 0, 0, 1)), (45, 30, (3, 5), (0, 0)),
                                     (96, 96, (2, 2, 2, 2, 2, 3), (0, 1, 0, 1, 1, 0))]:
        g = Grouping(cin, cout, factors, tuple(bool(b) for b in bits))
        m = plans.masks(g, torch.device("cpu"), torch.float64)
        dw = torch.randn(cout, cin, 3, 3, dtype=torch.float64, generator=gen)
        w = torch.randn(cout, cin, 3, 3, dtype=torch.float64, generator=gen)
        ws = w.index_select(0, g.out_perm).index_select(1, g.in_perm)
        dws = dw.index_select(0, g.out_perm).index_select(1, g.in_perm)
        got = plans._gates_from_dense(dws, ws, m, torch.float64)
        du = (dw * w).sum(dim=(2, 3)).numpy()
        want = []
        for k in range(len(bits)):
            on = list(bits); on[k] = 1
            off = list(bits); off[k] = 0
            dmask = kron_mask(cin, cout, list(factors), on) - kron_mask(cin, cout, list(factors), off)
            want.append(float((du * dmask).sum()))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


def test_a_cached_choice_is_never_served_to_another_device_key():
    """Without a GPU, the device part of the key is checked directly: a key differing only in device is a miss."""
    from dgconv.layer.grouping import Grouping

    g = Grouping(32, 32, (2,) * 5, (True, False, True, False, True))
    x = torch.zeros(2, 32, 6, 6)
    w = torch.zeros(32, 32, 3, 3)
    key = plans._key(g, x, w, ((1, 1), (1, 1), (1, 1)), 1.0)
    plans._CHOICES[key] = "masked"
    other = (*key[:5], torch.device("meta"), *key[6:])
    assert other not in plans._CHOICES and key in plans._CHOICES


def test_without_measuring_the_partner_plan_runs_and_the_model_reports_it():
    torch.manual_seed(0)
    model = create_model("g_resnext_cifar_tiny", num_classes=10)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    used = plans.chosen(model)
    assert used and set(used.values()) == {"partner"}  # CPU, selection "auto": not measured
