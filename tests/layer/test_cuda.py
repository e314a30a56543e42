"""CUDA: the fast path against the dense reference (computed on the CPU), bf16 autocast with channels_last,
deploy, and a training run. Skipped without a GPU (CI has none; the project's GPU sessions run it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import dgconv.layer.fast as fast
from dgconv import DGConv2d, create_model, deploy
from tests.reference import dense_reference
from tests.layer.test_fast import check_kept_storage_over_steps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CASES = [(256, 256, [0, 0, 0, 0, 0, 1, 1, 1]), (256, 256, [1, 0, 1, 0, 0, 1, 0, 0]), (96, 96, [0, 1, 0, 1, 1, 0]),
         (45, 30, [0, 0]), (48, 32, [0, 1, 0, 0])]


def check_cuda_against_cpu_reference(cin, cout, bits, seed, backward=None):
    """A float64 layer at binary gates ``bits`` run on CUDA (``backward(layer, x, gy)`` does its forward and backward
    and returns the output; default: plainly) against the dense reference computed on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    layer = DGConv2d(cin, cout, 3, stride=2, padding=1, bias=True).double()
    layer.gate.data = torch.tensor([0.3 if b else -0.3 for b in bits], dtype=torch.float64)
    x = torch.randn(3, cin, 9, 7, dtype=torch.float64, generator=gen)
    ref_y, grads = dense_reference(x, layer.weight, layer.bias, layer.gate, layer.factors, 2, 1, 1)
    gy = torch.randn(ref_y.shape, dtype=torch.float64, generator=gen)
    dx, dw, db, dg = grads(gy)
    layer.cuda()
    xc = x.cuda().requires_grad_()

    def plain(layer, xc, gy):
        y = layer(xc)
        y.backward(gy)
        return y

    y = (backward or plain)(layer, xc, gy.cuda())
    for got, want in [(y.detach(), ref_y), (xc.grad, dx), (layer.weight.grad, dw), (layer.bias.grad, db), (layer.gate.grad, dg)]:
        torch.testing.assert_close(got.cpu(), want)


@pytest.mark.parametrize("width", [(1, 1), (32, 32), None], ids=["no-merge", "merge32", "default"])
@pytest.mark.parametrize("cin,cout,bits", CASES)
def test_cuda_fast_path_equals_cpu_dense_reference(monkeypatch, width, cin, cout, bits):
    if width is not None:
        monkeypatch.setattr(fast, "MERGE_WIDTH", {"cpu": width, "cuda": width})
    check_cuda_against_cpu_reference(cin, cout, bits, cin)


@pytest.mark.parametrize("plan", ["partner", "dense", "masked", "measured"])
@pytest.mark.parametrize("cin,cout,bits", CASES)
def test_cuda_every_backward_plan_equals_cpu_dense_reference(plan, cin, cout, bits):
    import dgconv.layer.plans as plans

    def under_the_plan(layer, xc, gy):
        plans.clear()
        try:
            if plan == "measured":
                plans.set_selection("measure")
            else:
                plans.force(plan)
            y = layer(xc)
            y.backward(gy)
            assert plans.chosen(torch.nn.Sequential(layer))["0"] in plans.PLANS
        finally:
            plans.force(None)
            plans.set_selection("auto")
        return y

    check_cuda_against_cpu_reference(cin, cout, bits, cin + 1, under_the_plan)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_cuda_kept_gradient_storage_over_steps(layout):
    """The dense weight gradient's storage is reused between steps on CUDA too (the CPU test's steps and checks)."""
    check_kept_storage_over_steps(layout, "cuda")


@pytest.mark.parametrize("bits", [[0, 0, 0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 0, 1, 0, 0]])
def test_cuda_bf16_channels_last(bits):
    torch.manual_seed(0)
    layer = DGConv2d(256, 256, 3, padding=1).cuda().to(memory_format=torch.channels_last)
    layer.gate.data = torch.tensor([0.3 if b else -0.3 for b in bits], device="cuda")
    x = torch.randn(8, 256, 14, 14, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    ref = layer(x).float()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert (y.float() - ref).abs().max() / ref.abs().max() < 0.02
    y.float().square().mean().backward()
    assert layer.gate.grad.dtype == torch.float32 and torch.isfinite(layer.gate.grad).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()


def test_cuda_deploy_equals_training_model():
    torch.manual_seed(0)
    g = create_model("g_resnext29_32x4d", num_classes=10).cuda().eval()
    for m in g.modules():
        if isinstance(m, DGConv2d):
            m.gate.data = torch.randn(len(m.factors), device="cuda")
    d = deploy(g)
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad():
        a, b = g(x), d(x)
    assert ((a - b).abs().max() / a.abs().max()).item() < 1e-4
    assert next(d.parameters()).is_cuda


def test_cuda_training_run(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "dgconv", "train", "--device", "cuda", "--amp", "--channels-last",
                        "--epochs", "3", "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_acc"] > 0.5 and rows[-1]["zeta"] <= rows[-1]["o"]
    assert json.loads((out / "config.json").read_text())["environment"]["device"].startswith("cuda")
