"""torch.compile of a G-network for training: no graph break per DGConv layer, same outputs and gradients as eager,
across gate flips (the grouping is chosen inside the opaque op, so a flip needs no recompilation)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dgconv import DGConv2d, create_model
from dgconv.layer import compiled
from dgconv.layer.conv import dgconv_layers

pytestmark = pytest.mark.skipif(not compiled.available(), reason="needs torch.library.custom_op (torch >= 2.4)")


def test_a_g_network_compiles_without_graph_breaks_and_trains_like_eager():
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    model = create_model("g_resnext_digits", num_classes=10)
    eager = copy.deepcopy(model)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    explanation = dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    dynamo.reset()
    counts = {"frames": 0}

    def backend(gm, example_inputs):  # aot_eager: real autograd graphs, no code generation (fast in CI)
        counts["frames"] += 1
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    compiled_model = torch.compile(model, backend=backend)
    for trial in range(3):
        gen = torch.Generator().manual_seed(trial)
        for a, b in zip(dgconv_layers(model), dgconv_layers(eager)):  # new groupings, non-adjacent
            a[1].gate.data = b[1].gate.data = torch.randn(len(a[1].factors), generator=gen)
        for m in (model, eager):
            m.zero_grad(set_to_none=True)
        out_c, out_e = compiled_model(x), eager(x)
        F.cross_entropy(out_c, y).backward()
        F.cross_entropy(out_e, y).backward()
        torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
        for (name, p), (_, q) in zip(model.named_parameters(), eager.named_parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert counts["frames"] == 1  # gate flips did not recompile


def test_compiled_layer_with_bias_and_held_gates():
    torch.manual_seed(1)
    layer = DGConv2d(24, 48, 3, 2, 1, min_group_width=4)  # bias, stride, held gates
    ref = copy.deepcopy(layer)
    f = torch.compile(layer, backend="aot_eager")
    x = torch.randn(2, 24, 9, 9, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    f(x).square().sum().backward()
    ref(xr).square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-5)
    for p, q in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    assert torch.all(layer.gate.grad[torch.tensor(layer.held)] == 0)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_the_ops_fake_kernels_promise_the_real_layout(fmt):
    """Inductor checks that a custom op returns the strides its fake kernel announced; channels_last training on
    an H200 failed that check once (the fake said NCHW, the op returned NHWC). opcheck runs the op on real and fake
    tensors and compares shapes and strides (and the autograd registration)."""
    torch.manual_seed(2)
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(16, 16, 3, 3).contiguous(memory_format=fmt).requires_grad_()
    b = torch.randn(16, requires_grad=True)
    gates = torch.tensor([1.0, 0.0, 1.0, 0.0], requires_grad=True)  # 4 groups, non-adjacent: permutations used
    torch.library.opcheck(torch.ops.dgconv.grouped_conv.default,
                          (x, w, b, gates, [2, 2, 2, 2], [1, 1], [1, 1], [1, 1], 1.0))
    gy = torch.randn(2, 16, 3, 3).contiguous(memory_format=fmt)
    torch.library.opcheck(torch.ops.dgconv.grouped_conv_backward.default,
                          (gy, x.detach(), w.detach(), gates.detach(), [2, 2, 2, 2], [2, 2], [1, 1], [1, 1], 1.0, True))
