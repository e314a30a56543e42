"""DGConv2d against independent references: F.conv2d with a brute-force mask, nn.Conv2d(groups=G),
dense autograd with the straight-through estimator, and torch.autograd.gradcheck."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgconv import DGConv2d
from dgconv.layer.functional import binarize_gates, dgconv2d_reference
from tests.reference import brute_mask, dense_reference, divisors, primes

IMPLS = ["fast", "reference"]
PAIRS = [(8, 8), (16, 16), (32, 32), (96, 96), (48, 32), (12, 18), (30, 30), (7, 7), (3, 5), (20, 8)]


def random_gates(layer: DGConv2d, gen: torch.Generator) -> None:
    """Random binary gates set through gate.data, as an outside user would."""
    bits = torch.randint(0, 2, (len(layer.factors),), generator=gen)
    layer.gate.data = torch.where(bits.bool(), 0.5, -0.5).to(layer.gate.dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cin,cout", PAIRS)
def test_forward_and_gradients_equal_dense_autograd_with_ste(impl, cin, cout):
    gen = torch.Generator().manual_seed(cin * 100 + cout)
    for trial, (stride, padding, dilation) in enumerate([(1, 1, 1), (2, 0, 1), ((1, 2), (2, 1), 2)]):
        layer = DGConv2d(cin, cout, 3, stride, padding, dilation, bias=trial != 1, impl=impl).double()
        random_gates(layer, gen)
        bits = [int(v) for v in (layer.gate >= 0).tolist()]
        u = torch.from_numpy(brute_mask(cin, cout, list(layer.factors), bits))
        assert torch.equal(layer.relationship(), u)
        assert layer.groups == math.prod(p for p, b in zip(layer.factors, bits) if not b)
        x = torch.randn(3, cin, 9, 8, dtype=torch.float64, generator=gen, requires_grad=True)
        y = layer(x)
        expected = F.conv2d(x.detach(), layer.weight.detach() * u[:, :, None, None], layer.bias, stride, padding, dilation)
        torch.testing.assert_close(y.detach(), expected.detach())
        ref_y, ref_grads = dense_reference(x, layer.weight, layer.bias, layer.gate, layer.factors, stride, padding, dilation)
        torch.testing.assert_close(y.detach(), ref_y)
        gy = torch.randn(y.shape, dtype=y.dtype, generator=gen)
        y.backward(gy)
        dx, dw, db, dg = ref_grads(gy)
        torch.testing.assert_close(x.grad, dx)
        torch.testing.assert_close(layer.weight.grad, dw)
        assert torch.all(layer.weight.grad[u == 0] == 0), "weight gradient must vanish outside the groups"
        if layer.bias is not None:
            torch.testing.assert_close(layer.bias.grad, db)
        torch.testing.assert_close(layer.gate.grad, dg)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_adjacent_grouping_of_the_paper(impl):
    """g = [0, 1, 0] on 8 channels: 4 groups {0,2}, {1,3}, {4,6}, {5,7} (Fig. 3 c)."""
    layer = DGConv2d(8, 8, 1, bias=False, impl=impl).double()
    layer.gate.data = torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)
    assert layer.groups == 4
    w = layer.weight.detach()[:, :, 0, 0]
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    y = layer(x)
    for o in range(8):
        partners = [c for c in range(8) if (c >> 2) == (o >> 2) and (c & 1) == (o & 1)]
        manual = sum(w[o, c] * x[:, c] for c in partners)
        torch.testing.assert_close(y[:, o], manual)


def test_gate_gradient_reaches_continuous_gate_by_identity_ste():
    """dL/dg~ equals dL/dg evaluated at the binary point, for any magnitude of g~; sign(0) is 1."""
    torch.manual_seed(0)
    layer = DGConv2d(4, 4, 1, bias=False).double()
    layer.gate.data = torch.tensor([0.0, -3.0], dtype=torch.float64)
    assert layer.binary_gates() == (True, False)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    layer(x).square().sum().backward()
    g = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    eye = torch.eye(2, dtype=torch.float64)
    u = torch.kron(eye + g[0] * (1 - eye), eye + g[1] * (1 - eye))
    F.conv2d(x, layer.weight.detach() * u[:, :, None, None]).square().sum().backward()
    torch.testing.assert_close(layer.gate.grad, g.grad)


@pytest.mark.parametrize("cin,cout", [(8, 8), (12, 18), (6, 6)])
def test_gradcheck_of_explicit_backward(cin, cout):
    """Appendix B's hand-written backward, checked numerically in float64 (gates relaxed into (0, 1))."""
    torch.manual_seed(0)
    k = len(primes(math.gcd(cin, cout)))
    x = torch.randn(2, cin, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    g = torch.rand(k, dtype=torch.float64).mul(0.8).add(0.1).requires_grad_()
    fn = lambda x, w, b, g: dgconv2d_reference(x, w, g, b, stride=(2, 1), padding=1, dilation=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b, g), eps=1e-6, atol=1e-6)


def test_binarize_gates():
    g = torch.tensor([-1e-8, 0.0, 1e-8, -2.0], requires_grad=True)
    out = binarize_gates(g)
    assert out.tolist() == [0.0, 1.0, 1.0, 0.0]
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert g.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("cin,cout", [(96, 96), (48, 32), (12, 18), (30, 30), (7, 7), (64, 64)])
@pytest.mark.parametrize("impl", IMPLS)
def test_set_groups_equals_nn_conv2d(cin, cout, impl):
    torch.manual_seed(1)
    x = torch.randn(2, cin, 6, 6)
    for G in divisors(math.gcd(cin, cout)):
        layer = DGConv2d(cin, cout, 3, padding=1, bias=True, impl=impl)
        layer.set_groups(G)
        assert layer.groups == G
        conv = nn.Conv2d(cin, cout, 3, padding=1, groups=G, bias=True)
        og, ig = cout // G, cin // G
        with torch.no_grad():
            for j in range(G):
                conv.weight[j * og:(j + 1) * og] = layer.weight[j * og:(j + 1) * og, j * ig:(j + 1) * ig]
            conv.bias.copy_(layer.bias)
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
        assert layer.complexity().item() == cin * cout // G


def test_set_groups_rejects_non_divisors():
    layer = DGConv2d(96, 64, 3)
    with pytest.raises(ValueError, match="must divide gcd = 32"):
        layer.set_groups(3)
    with pytest.raises(ValueError, match="magnitude"):
        layer.set_groups(2, magnitude=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=1),
        dict(in_channels=16, out_channels=32, kernel_size=3, padding=1, groups=4, bias=False),
        dict(in_channels=32, out_channels=32, kernel_size=3, padding=1, groups=32),  # depthwise
        dict(in_channels=24, out_channels=36, kernel_size=(3, 1), stride=2, padding=(1, 0), groups=6),
        dict(in_channels=12, out_channels=12, kernel_size=3, dilation=2, padding=2, groups=3, padding_mode="reflect"),
        dict(in_channels=10, out_channels=10, kernel_size=4, padding="same", groups=5, padding_mode="circular"),
        dict(in_channels=9, out_channels=9, kernel_size=2, padding="valid", groups=3),
        dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=2, padding_mode="replicate"),
    ],
)
def test_from_conv_equals_nn_conv2d(impl, kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs)
    layer = DGConv2d.from_conv(conv, impl=impl)
    assert layer.groups == conv.groups
    x = torch.randn(2, conv.in_channels, 9, 9, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, conv(x), rtol=1e-5, atol=1e-5)
    # outside the block diagonal: fresh initial weights (masked, so the function is conv's), or zeros on request
    u = layer.relationship()
    if conv.groups > 1:
        assert torch.all(layer.weight[u == 0] != 0)
        zeros = DGConv2d.from_conv(conv, impl=impl, fill="zeros")
        assert torch.all(zeros.weight[u == 0] == 0)
        torch.testing.assert_close(zeros(x), y)
    # the gradients agree with nn.Conv2d's inside the groups
    gy = torch.randn_like(y)
    gx_layer, = torch.autograd.grad(y, x, gy)
    gx_conv, = torch.autograd.grad(conv(x), x, gy)
    torch.testing.assert_close(gx_layer, gx_conv, rtol=1e-5, atol=1e-5)


def test_a_closed_gate_of_a_converted_layer_feels_a_gradient():
    """With zeros outside the groups a closed gate's gradient is exactly 0 (the grouping could never merge);
    with the default fill it is not, while the converted layer still computes exactly what the convolution did."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=4)
    x = torch.randn(4, 16, 6, 6)
    for fill, expect_zero in (("zeros", True), ("init", False)):
        layer = DGConv2d.from_conv(conv, fill=fill, gate_magnitude=1.0)
        closed = [k for k, b in enumerate(layer.binary_gates()) if not b]
        assert closed and layer.groups == 4
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
        layer(x).square().sum().backward()
        grads = layer.gate.grad[closed]
        assert bool(torch.all(grads == 0)) == expect_zero, (fill, grads)
        assert torch.all(layer.gate.abs() == 1.0)  # a confident start: |g~| = 1


def test_from_conv_rejects_transposed_and_others():
    with pytest.raises(TypeError, match="nn.Conv2d"):
        DGConv2d.from_conv(nn.ConvTranspose2d(4, 4, 3))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        DGConv2d.from_conv(nn.Linear(4, 4))  # type: ignore[arg-type]


def test_gate_init_is_random_small_and_reproducible():
    torch.manual_seed(123)
    a = DGConv2d(256, 256, 3)
    torch.manual_seed(123)
    b = DGConv2d(256, 256, 3)
    assert torch.equal(a.gate, b.gate)
    assert a.gate.shape == (8,)
    assert torch.all(a.gate.abs() == torch.tensor(1e-8, dtype=a.gate.dtype))
    signs = torch.cat([DGConv2d(1024, 1024, 1).gate.sign() for _ in range(8)])
    assert (signs > 0).any() and (signs < 0).any()


def test_complexity_closed_form_and_gradient():
    layer = DGConv2d(64, 64, 3)
    layer.gate.data = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    g = (layer.gate >= 0).float()
    zeta = layer.complexity()
    assert zeta.item() == 64 * torch.prod(1 + g).item() == layer.relationship().sum().item()
    zeta.backward()
    # d/dg_k of C prod(1 + g) = C prod_{m != k}(1 + g_m)
    expected = torch.tensor([64 * torch.prod(1 + torch.cat([g[:k], g[k + 1:]])).item() for k in range(6)])
    torch.testing.assert_close(layer.gate.grad, expected)
    mixed = DGConv2d(48, 32, 1)
    mixed.gate.data = torch.tensor([1.0, -1.0, -1.0, 1.0])
    assert mixed.complexity().item() == brute_mask(48, 32, [2, 2, 2, 2], [1, 0, 0, 1]).sum()


@pytest.mark.parametrize("cin,cout,G", [(96, 96, 3), (64, 64, 8), (30, 45, 5)])
def test_state_dict_round_trip_including_factor_order(cin, cout, G):
    torch.manual_seed(0)
    layer = DGConv2d(cin, cout, 3, padding=1, bias=True)
    layer.set_groups(G)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = DGConv2d(cin, cout, 3, padding=1, bias=True)
    fresh.load_state_dict(state)
    assert fresh.factors == layer.factors and fresh.groups == G
    x = torch.randn(2, cin, 5, 5)
    torch.testing.assert_close(fresh(x), layer(x))


def test_load_state_dict_with_wrong_gate_shape_says_why():
    state = DGConv2d(64, 64, 3).state_dict()
    with pytest.raises(RuntimeError, match=r"one gate per prime factor of gcd = 48"):
        DGConv2d(48, 96, 3).load_state_dict(state, strict=False)
    bad = DGConv2d(12, 12, 3).state_dict()
    bad["_extra_state"] = {"factors": [2, 2, 2]}
    with pytest.raises(RuntimeError, match="bad grouping state.*not a permutation"):
        DGConv2d(12, 12, 3).load_state_dict(bad)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((0, 8, 3), {}, "in_channels must be a positive integer"),
        ((8, -1, 3), {}, "out_channels must be a positive integer"),
        ((8.0, 8, 3), {}, "in_channels must be a positive integer"),
        ((8, 8, 0), {}, "kernel_size"),
        ((8, 8, (3, 3, 3)), {}, "kernel_size"),
        ((8, 8, 3), {"stride": 0}, "stride"),
        ((8, 8, 3), {"dilation": -1}, "dilation"),
        ((8, 8, 3), {"padding": -1}, "non-negative"),
        ((8, 8, 3), {"padding": "full"}, "padding must be"),
        ((8, 8, 3), {"padding": "same", "stride": 2}, "strided"),
        ((8, 8, 3), {"padding_mode": "mirror"}, "padding_mode"),
        ((8, 8, 3), {"impl": "cuda"}, "impl must be"),
        ((8, 8, 3), {"groups": 3}, "must divide gcd = 8"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DGConv2d(*args, **kwargs)


def test_bad_input_shape():
    layer = DGConv2d(8, 8, 3)
    with pytest.raises(ValueError, match="expects 8 input channels"):
        layer(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="3-D or 4-D"):
        layer(torch.randn(8, 5))


def test_unbatched_input_and_repr():
    layer = DGConv2d(12, 24, 3, padding=1, groups=6)
    x = torch.randn(12, 5, 5)
    torch.testing.assert_close(layer(x), layer(x[None])[0])
    r = repr(layer)
    assert "DGConv2d(12, 24" in r and "kernel_size=(3, 3)" in r and "groups=6" in r


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_matches_float64(impl):
    torch.manual_seed(0)
    layer = DGConv2d(32, 32, 3, padding=1, impl=impl)
    layer.gate.data = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    x = torch.randn(2, 32, 8, 8)
    y32 = layer(x)
    y64 = layer.double()(x.double())
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_autocast_bfloat16_on_cpu(impl):
    torch.manual_seed(0)
    layer = DGConv2d(16, 16, 3, padding=1, impl=impl)
    layer.gate.data = torch.tensor([1.0, -1.0, 1.0, -1.0])
    x = torch.randn(2, 16, 8, 8)
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    y.float().square().sum().backward()
    assert layer.gate.grad is not None and layer.gate.grad.dtype == torch.float32
    assert layer.weight.grad.dtype == torch.float32 and torch.isfinite(layer.gate.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", IMPLS)
def test_cuda_matches_cpu(impl):
    torch.manual_seed(0)
    layer = DGConv2d(48, 32, 3, padding=1, bias=True, impl=impl).double()
    layer.gate.data = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    x = torch.randn(2, 48, 7, 7, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    y.square().sum().backward()
    cpu = [y.detach(), x.grad, layer.weight.grad, layer.gate.grad]
    layer.zero_grad()
    layer.cuda()
    xc = x.detach().cuda().requires_grad_()
    yc = layer(xc)
    yc.square().sum().backward()
    for a, b in zip(cpu, [yc.detach(), xc.grad, layer.weight.grad, layer.gate.grad]):
        torch.testing.assert_close(a, b.cpu())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert layer.float()(xc.float()).dtype == torch.bfloat16


def test_cached_gates_reads_once_and_matches():
    from dgconv import cached_gates

    torch.manual_seed(0)
    model = torch.nn.Sequential(DGConv2d(16, 16, 3, padding=1), DGConv2d(16, 32, 1))
    model[0].gate.data = torch.tensor([1.0, -1.0, 1.0, -1.0])
    x = torch.randn(2, 16, 5, 5)
    plain = model(x)
    with cached_gates(model):
        assert model[0].binary_gates() == (True, False, True, False)
        model[0].gate.data[0] = -1.0  # a change inside the context is not seen (documented)
        assert model[0].groups == 4
        cached = model(x)
    assert model[0].groups == 8 and model[0]._host_gates is None  # outside, gates are read again
    model[0].gate.data[0] = 1.0
    torch.testing.assert_close(cached, plain)
