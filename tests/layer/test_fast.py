"""The grouped fast path under every merge regime (no merging: all partner terms; partial; full),
against the independent dense autograd reference with the straight-through estimator."""

from __future__ import annotations

import pytest
import torch

import dgconv.layer.fast as fast
from dgconv import DGConv2d
from tests.reference import dense_reference

CASES = [
    # (in, out, binary gates or None for random, stride)
    (256, 256, [0, 0, 0, 0, 0, 1, 1, 1], 1),  # 32 contiguous groups: merged + partner terms
    (256, 256, [1, 0, 1, 0, 0, 1, 0, 0], 2),  # 32 strided groups, permutations on both sides
    (96, 96, [0, 1, 0, 1, 1, 0], 1),  # 2 * 2 * 3: a p = 3 zero gate has two digit shifts
    (45, 30, [0, 0], 1),  # gcd 15 = 3 * 5: partners with shifts 1..4
    (48, 32, [0, 1, 0, 0], 1),  # unequal channels
    (64, 64, None, 1),
]


@pytest.fixture(params=[(1, 1), (8, 8), (32, 32), None], ids=["no-merge", "merge8", "merge32", "default"])
def merge_width(request, monkeypatch):
    if request.param is not None:
        monkeypatch.setattr(fast, "MERGE_WIDTH", {"cpu": request.param, "cuda": request.param})
    return request.param


def reference_case(cin, cout, bits, stride):
    """A float64 fast-path layer at binary gates ``bits`` (random where None) and an input that needs gradients."""
    gen = torch.Generator().manual_seed(cin + cout)
    layer = DGConv2d(cin, cout, 3, stride=stride, padding=1, bias=True, impl="fast").double()
    if bits is None:
        bits = torch.randint(0, 2, (len(layer.factors),), generator=gen).tolist()
    layer.gate.data = torch.tensor([0.3 if b else -0.3 for b in bits], dtype=torch.float64)
    x = torch.randn(2, cin, 6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    return layer, x, gen


def check_against_reference(layer, x, stride, gen):
    """The layer's output and its input, weight, bias and gate gradients against the dense autograd reference."""
    y = layer(x)
    ref_y, grads = dense_reference(x, layer.weight, layer.bias, layer.gate, layer.factors, stride, 1, 1)
    torch.testing.assert_close(y.detach(), ref_y)
    gy = torch.randn(y.shape, dtype=y.dtype, generator=gen)
    y.backward(gy)
    dx, dw, db, dg = grads(gy)
    torch.testing.assert_close(x.grad, dx)
    torch.testing.assert_close(layer.weight.grad, dw)
    torch.testing.assert_close(layer.bias.grad, db)
    torch.testing.assert_close(layer.gate.grad, dg)


@pytest.mark.parametrize("cin,cout,bits,stride", CASES)
def test_fast_path_equals_dense_reference(merge_width, cin, cout, bits, stride):
    layer, x, gen = reference_case(cin, cout, bits, stride)
    check_against_reference(layer, x, stride, gen)


def test_merge_regimes_really_differ():
    """Guard for the fixture above: the plans it forces use partner terms, merging, or both."""
    from dgconv.layer.grouping import Grouping

    g = Grouping(256, 256, (2,) * 8, (False,) * 5 + (True,) * 3)
    none = fast._build_plan(g, torch.device("cpu"), 1)
    some = fast._build_plan(g, torch.device("cpu"), 32)
    full = fast._build_plan(g, torch.device("cpu"), 256)
    assert (none.merge, len(none.partners)) == (1, 5)
    assert (some.merge, len(some.partners)) == (4, 3)
    assert (full.merge, len(full.partners)) == (32, 0)


@pytest.mark.parametrize("bits", [[0, 0, 0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 0, 1, 0, 0]], ids=["contiguous", "strided"])
def test_an_off_step_backward_makes_the_calls_of_a_group_convolution(monkeypatch, bits):
    """Without gate gradients (--gate-every's off-steps, gate_gradients(False)) the backward makes exactly the calls
    nn.Conv2d(groups=32) makes -- one convolution_backward at groups = 32 -- and no super-group (M-wide) weight
    gradient, which it once did at the merge widths; the gradients stay the reference's."""
    from dgconv import gate_gradients

    monkeypatch.setattr(fast, "MERGE_WIDTH", {"cpu": (32, 128), "cuda": (64, 256)})
    layer = DGConv2d(256, 256, 3, padding=1, bias=True, impl="fast").double()
    layer.gate.data = torch.tensor([0.3 if b else -0.3 for b in bits], dtype=torch.float64)
    assert layer.groups == 32
    x = torch.randn(2, 256, 6, 6, dtype=torch.float64, requires_grad=True)
    calls = []
    real = fast.conv_backward

    def spy(gy, xp, w, stride, padding, dilation, groups, mask, *rest):
        calls.append((groups, list(mask)))
        return real(gy, xp, w, stride, padding, dilation, groups, mask, *rest)

    monkeypatch.setattr(fast, "conv_backward", spy)
    with gate_gradients(layer, False):
        y = layer(x)
        gy = torch.randn_like(y)
        y.backward(gy)
    assert calls == [(32, [True, True, True])]  # nn.Conv2d(groups=32)'s one call: input, weight, bias
    _, grads = dense_reference(x.detach(), layer.weight.detach(), layer.bias.detach(), layer.gate.detach(),
                               layer.factors, 1, 1, 1)
    dx, dw, db, _ = grads(gy)
    torch.testing.assert_close(x.grad, dx)
    torch.testing.assert_close(layer.weight.grad, dw)
    torch.testing.assert_close(layer.bias.grad, db)
    assert layer.gate.grad is None
    calls.clear()  # with the gates on, the same layer takes its super-group (groups < 32) or partner passes
    layer(x).backward(gy)
    assert len(calls) >= 2 and calls[0] != (32, [True, True, True])  # the gates' passes come on top


def test_gradients_flow_only_where_asked():
    layer = DGConv2d(32, 32, 3, padding=1, groups=4)
    layer.gate.requires_grad_(False)
    x = torch.randn(2, 32, 5, 5)
    layer(x).sum().backward()
    assert layer.gate.grad is None and layer.weight.grad is not None
    layer.weight.requires_grad_(False)
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()
    assert xg.grad is not None


@pytest.mark.parametrize("bits", [[0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 0, 1]])
def test_channels_last_inputs_keep_their_layout_and_values(bits):
    torch.manual_seed(0)
    layer = DGConv2d(64, 64, 3, padding=1, bias=True).double()
    layer.gate.data = torch.tensor([0.2 if b else -0.2 for b in bits], dtype=torch.float64)
    x = torch.randn(2, 64, 6, 6, dtype=torch.float64)
    ref_y, grads = dense_reference(x, layer.weight, layer.bias, layer.gate, layer.factors, 1, 1, 1)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    layer = layer.to(memory_format=torch.channels_last)
    y = layer(xc)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y.detach(), ref_y)
    gy = torch.randn_like(y)
    y.backward(gy)
    dx, dw, db, dg = grads(gy)
    torch.testing.assert_close(xc.grad, dx)
    torch.testing.assert_close(layer.weight.grad, dw)
    torch.testing.assert_close(layer.gate.grad, dg)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("bits", [[0, 0, 0, 0, 1, 1], [1, 0, 1, 0, 0, 0]], ids=["contiguous", "strided"])
@pytest.mark.parametrize("grad_kind", ["sum", "other-layout"])
def test_an_output_gradient_that_is_not_dense_is_made_dense_once(monkeypatch, layout, bits, grad_kind):
    """`y.sum().backward()` hands the layer an expanded gradient (every stride 0) and a gradient can arrive in the
    other layout; the exact path calls convolution_backward several times (input, super-group weight, one per
    partner term), and each call would copy such a gradient again. Every call must get it dense in the input's
    layout, and the gradients must still be the reference's."""
    torch.manual_seed(0)
    layer = DGConv2d(64, 64, 3, padding=1, bias=False).double()
    layer.gate.data = torch.tensor([0.2 if b else -0.2 for b in bits], dtype=torch.float64)
    layer = layer.to(memory_format=layout)
    x = torch.randn(2, 64, 8, 8, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    ref_y, grads = dense_reference(x.detach(), layer.weight, None, layer.gate, layer.factors, 1, 1, 1)
    calls = []
    real = fast.conv_backward

    def spy(gy, xp, w, *args):
        calls.append(gy.is_contiguous(memory_format=layout) and gy.stride()[1] != 0)
        return real(gy, xp, w, *args)

    monkeypatch.setattr(fast, "conv_backward", spy)
    monkeypatch.setattr(fast, "MERGE_WIDTH", {"cpu": (16, 16)})  # a super-group and partner passes
    y = layer(x)
    if grad_kind == "sum":
        y.sum().backward()
        gy = torch.ones_like(ref_y)
    else:
        other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format
        gy = torch.randn(y.shape, dtype=y.dtype).contiguous(memory_format=other)
        y.backward(gy)
    assert len(calls) >= 3 and all(calls), calls
    dx, dw, _, dg = grads(gy)
    torch.testing.assert_close(x.grad, dx)
    torch.testing.assert_close(layer.weight.grad, dw)
    torch.testing.assert_close(layer.gate.grad, dg)


# The dense weight gradient is written into storage kept from the previous backward pass when nothing else refers
# to it (fast._dense_grad). Whatever users do with `.grad` in between, every gradient must stay the reference's, and
# a gradient someone kept must never be overwritten.


def _layer_and_input(seed: int, layout=torch.contiguous_format):
    gen = torch.Generator().manual_seed(seed)
    layer = DGConv2d(64, 64, 3, padding=1, bias=False).double().to(memory_format=layout)
    layer.gate.data = torch.randn(len(layer.factors), dtype=torch.float64, generator=gen)
    x = torch.randn(2, 64, 5, 5, dtype=torch.float64, generator=gen).contiguous(memory_format=layout)
    return layer, x, gen


def _ref_weight_grad(layer, x, gy):
    _, grads = dense_reference(x, layer.weight.detach(), None, layer.gate.detach(), layer.factors, 1, 1, 1)
    return grads(gy)[1]


def _store_of(weight):
    store = fast._GRAD_STORES.get(weight)
    return None if store is None else store.tensor.data_ptr()


def check_kept_storage_over_steps(layout, device: str = "cpu") -> None:
    """Eight SGD steps with the dense gradient's storage kept: every step's gradient is the CPU reference's, across
    grouping changes and an in-place edit of ``.grad`` (``tests/layer/test_cuda.py`` runs it on CUDA)."""
    layer, x, gen = _layer_and_input(1, layout)
    layer, xd = layer.to(device), x.to(device).contiguous(memory_format=layout)
    opt = torch.optim.SGD([layer.weight], lr=0.05, momentum=0.9, weight_decay=1e-3)  # gates change only below
    reused = 0
    for step in range(8):
        if step in (3, 6):  # the grouping changes: last grouping's in-group pairs must not leak into the next
            layer.gate.data = torch.randn(len(layer.factors), dtype=torch.float64, generator=gen).to(device)
        before = _store_of(layer.weight)
        opt.zero_grad(set_to_none=True)
        y = layer(xd)
        gy = torch.randn(y.shape, dtype=y.dtype, generator=gen)
        y.backward(gy.to(device))
        _, grads = dense_reference(x, layer.weight.detach().cpu(), None, layer.gate.detach().cpu(), layer.factors, 1, 1, 1)
        torch.testing.assert_close(layer.weight.grad.cpu(), grads(gy)[1], rtol=0, atol=1e-12)
        assert layer.weight.grad.is_contiguous(memory_format=layout)
        reused += layer.weight.grad.data_ptr() == before
        if step == 4:  # edited in place (clipping scales, this adds): the next step must zero it again
            layer.weight.grad.add_(1.0)
        opt.step()
    assert reused >= 5  # the storage really was kept (steps 1, 2, 4, 5, 7 at least); the rest allocate afresh


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_kept_gradient_storage_gives_the_reference_gradient_every_step(layout):
    check_kept_storage_over_steps(layout)


def test_a_gradient_someone_keeps_is_never_overwritten():
    layer, x, gen = _layer_and_input(2)
    layer(x).sum().backward()
    kept = layer.weight.grad  # e.g. a logging hook or a user holding the last gradient
    copy = kept.clone()
    layer.weight.grad = None
    layer.gate.data = torch.randn(len(layer.factors), dtype=torch.float64, generator=gen)
    y = layer(x)
    gy = torch.randn(y.shape, dtype=y.dtype, generator=gen)
    y.backward(gy)
    torch.testing.assert_close(kept, copy, rtol=0, atol=0)
    assert layer.weight.grad.data_ptr() != kept.data_ptr()
    torch.testing.assert_close(layer.weight.grad, _ref_weight_grad(layer, x, gy), rtol=0, atol=1e-12)
    (g1,) = torch.autograd.grad(layer(x).sum(), [layer.weight])
    g1_copy = g1.clone()
    (g2,) = torch.autograd.grad((2 * layer(x)).sum(), [layer.weight])
    torch.testing.assert_close(g1, g1_copy, rtol=0, atol=0)
    torch.testing.assert_close(g2, 2 * g1_copy)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_accumulated_and_shared_weight_gradients_sum_correctly(set_to_none):
    layer, x, _ = _layer_and_input(3)
    x2 = torch.randn_like(x)
    for _ in range(3):
        layer.zero_grad(set_to_none=set_to_none)
        y1, y2 = layer(x), layer(x2)  # two uses of the weight in one graph ...
        g1, g2 = torch.randn_like(y1), torch.randn_like(y2)
        torch.autograd.backward([y1, y2], [g1, g2])
        y3 = layer(x)  # ... and a second backward pass accumulating into .grad
        g3 = torch.randn_like(y3)
        y3.backward(g3)
        want = _ref_weight_grad(layer, x, g1) + _ref_weight_grad(layer, x2, g2) + _ref_weight_grad(layer, x, g3)
        torch.testing.assert_close(layer.weight.grad, want, rtol=1e-12, atol=1e-12)


def test_sub_batch_mode_keeps_the_super_group_narrow_on_large_activations():
    """A merged gate costs a whole batch of wider weight gradient, a separate pass only the sub-batch: with a gate
    batch fraction below 1 the plan merges up to the small width even where the exact path merges wider."""
    from dgconv.layer.grouping import Grouping

    g = Grouping(128, 128, (2,) * 7, (False,) * 5 + (True,) * 2)  # 32 groups of 4 channels
    x = torch.empty(8, 128, 28, 28)  # 6272 output positions: the exact path's large width applies
    small, large = fast.MERGE_WIDTH["cpu"]
    exact = fast.plan_for(g, x, (128, 128, 3, 3), (1, 1), (1, 1), (1, 1))
    sub = fast.plan_for(g, x, (128, 128, 3, 3), (1, 1), (1, 1), (1, 1), gate_batch_fraction=0.125)
    assert exact.merge * 4 == min(large, 128) and sub.merge * 4 == small
    assert len(sub.partners) == len(exact.partners) + 2  # the gates merged no more get (sub-batch) passes
