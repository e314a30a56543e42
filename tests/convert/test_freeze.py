"""Search, then train (freeze_groups), cheaper gate gradients (sub-batch, every K steps), and their CLI options."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgconv import DGConv2d, create_model, learned_groups
from dgconv.budget.optimizer import configure_optimizer
from dgconv.layer.conv import dgconv_layers
from dgconv.convert.freeze import freeze_groups, is_frozen
from dgconv.layer.conv import gate_gradients, set_gate_batch_fraction
from dgconv.train.checkpoint import load_checkpoint, model_from_checkpoint
from tests.helpers import ENV, PATIENCE, cli, metrics, strip_time
from tests.reference import brute_mask


def random_grouping(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _, m in dgconv_layers(model):
        m.gate.data = torch.randn(len(m.factors), generator=gen, dtype=m.gate.dtype)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return configure_optimizer(model, lr=0.05, momentum=0.9, weight_decay=1e-3)


def step(model, opt, x, y, gates: bool = True) -> None:
    with gate_gradients(model, gates):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    opt.step()


@pytest.mark.parametrize("model_name", ["g_resnext_cifar_tiny", "g_resnext_digits"])
def test_freezing_keeps_the_function_and_the_next_steps(model_name):
    """After freeze_groups the network computes the same function, and the next steps equal those of the unfrozen
    network with its gates held fixed (momentum and weight decay of every surviving weight carried over)."""
    torch.manual_seed(0)
    size = (3, 32, 32) if "cifar" in model_name else (1, 8, 8)
    model = create_model(model_name, num_classes=10, in_chans=size[0]).double()
    random_grouping(model, 1)
    assert any(not m.grouping().is_contiguous for _, m in dgconv_layers(model))  # permutations to fold
    opt = sgd(model)
    x, y = torch.randn(8, *size, dtype=torch.float64), torch.randint(0, 10, (8,))
    for _ in range(3):  # build up momentum, gates held so the grouping stays what it is
        step(model, opt, x, y, gates=False)
    frozen, frozen_opt = copy.deepcopy((model, opt))  # deepcopy keeps the optimizer pointing at the copy's params
    groups = learned_groups(model)
    freeze_groups(frozen, frozen_opt)
    assert is_frozen(frozen) and not any(isinstance(m, DGConv2d) for m in frozen.modules())
    # it is ResNeXt* with the learned groups: same parameter names and shapes
    star = create_model(create_model(model_name).dgconv_cfg["name"].replace("g_", ""), num_classes=10, in_chans=size[0],
                        groups=groups)
    assert {k: v.shape for k, v in frozen.state_dict().items()} == {k: v.shape for k, v in star.state_dict().items()}
    model.eval(), frozen.eval()
    torch.testing.assert_close(frozen(x), model(x), rtol=1e-10, atol=1e-10)
    model.train(), frozen.train()
    for _ in range(3):
        step(model, opt, x, y, gates=False)
        step(frozen, frozen_opt, x, y)
        model.eval(), frozen.eval()
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-9, atol=1e-9)
        model.train(), frozen.train()
    assert learned_groups(model) == groups
    # the optimizer lost the gates and the out-of-group weights
    n_frozen = sum(p.numel() for g in frozen_opt.param_groups for p in g["params"])
    assert n_frozen == sum(p.numel() for p in frozen.parameters()) < sum(p.numel() for p in model.parameters())


def test_freezing_frees_the_dense_weights():
    model = create_model("g_resnext_cifar_tiny", num_classes=10)
    opt = sgd(model)
    step(model, opt, torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    dense = sum(m.weight.numel() for _, m in dgconv_layers(model))
    before = sum(v.numel() for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    freeze_groups(model, opt)
    after = sum(v.numel() for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    assert before - after >= dense - sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
    with pytest.raises(ValueError, match="no DGConv layers"):
        freeze_groups(model, opt)


@pytest.mark.parametrize("merge_width", [4, 8])  # 8: one zero gate rides the super-group, two get their own pass
def test_sub_batch_gate_gradient_is_unbiased_and_weights_stay_exact(monkeypatch, merge_width):
    from dgconv.layer import fast
    from dgconv.layer.functional import dgconv2d_reference

    monkeypatch.setattr(fast, "MERGE_WIDTH", {"cpu": (merge_width, merge_width)})
    torch.manual_seed(0)
    layer = DGConv2d(32, 32, 3, padding=1, bias=False).double()
    layer.gate.data = torch.tensor([-0.3, 0.2, -0.1, -0.4, 0.5], dtype=torch.float64)  # 3 zero gates: cross terms
    x = torch.randn(16, 32, 6, 6, dtype=torch.float64)
    dy = torch.randn(16, 32, 6, 6, dtype=torch.float64)

    def grads(fraction):
        layer.gate_batch_fraction = fraction
        for p in layer.parameters():
            p.grad = None
        xx = x.clone().requires_grad_()
        (layer(xx) * dy).sum().backward()
        return layer.gate.grad.clone(), layer.weight.grad.clone(), xx.grad

    exact_g, exact_w, exact_x = grads(1.0)
    # the exact gate gradient is the masked dense definition's (identity STE)
    g_bin = torch.tensor(layer.binary_gates(), dtype=torch.float64, requires_grad=True)
    (dgconv2d_reference(x, layer.weight.detach(), g_bin, padding=1) * dy).sum().backward()
    torch.testing.assert_close(exact_g, g_bin.grad)
    u = torch.tensor(brute_mask(32, 32, list(layer.factors), [int(b) for b in layer.binary_gates()]), dtype=torch.float64)
    w_ref = layer.weight.detach().clone().requires_grad_()
    (F.conv2d(x, w_ref * u[:, :, None, None], padding=1) * dy).sum().backward()
    torch.testing.assert_close(exact_w, w_ref.grad)  # dense, zero outside the groups
    draws = torch.stack([grads(0.25)[0] for _ in range(400)])
    g, w, gx = grads(0.25)
    torch.testing.assert_close(w, exact_w)
    torch.testing.assert_close(gx, exact_x)
    mean, se = draws.mean(0), draws.std(0) / 400 ** 0.5
    estimated = [k for k in range(5) if draws[:, k].std() > 1e-9 * exact_g.abs().max()]  # beyond summation order
    zero = [k for k, b in enumerate(layer.binary_gates()) if not b]
    # the zero gates needing their own pass are estimated (all three unmerged at width 4, two at width 8) ...
    assert set(estimated) <= set(zero) and len(estimated) == {4: 3, 8: 2}[merge_width]
    for k in set(range(5)) - set(estimated):  # ... the one gates and merged zero gates stay exact
        torch.testing.assert_close(draws[:, k], exact_g[k].expand(400), rtol=1e-10, atol=1e-10)
    assert torch.all((mean - exact_g).abs() <= 4 * se + 1e-12), (mean, exact_g, se)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        set_gate_batch_fraction(layer, 0.0)


def test_gate_gradients_off_runs_a_plain_group_convolution_backward():
    model = create_model("g_resnext_digits", num_classes=10)
    random_grouping(model, 3)
    opt = sgd(model)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    gates = {n: m.gate.detach().clone() for n, m in dgconv_layers(model)}
    for k in range(4):
        step(model, opt, x, y, gates=(k % 3 == 0))
        for n, m in dgconv_layers(model):
            assert (m.gate.grad is None) == (k % 3 != 0)
            assert m.weight.grad is not None
    assert any(not torch.equal(gates[n], m.gate) for n, m in dgconv_layers(model))
    assert all(m.gate.requires_grad for _, m in dgconv_layers(model))  # restored after each block


TRAIN = ["train", "--epochs", "4", "--limit-train", "256", "--limit-test", "128", "--budget", "4", "--no-progress",
         "--freeze-groups-at", "2"]


@pytest.mark.slow
def test_checkpoints_before_and_after_the_freeze_resume_exactly(tmp_path):
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "dgconv", *TRAIN, "--out", str(tmp_path / name)],
                                    env={**env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, extra in (("ref", {}), ("before", {"DGCONV_FAULT": "commit:metrics#1"}),
                                 ("after", {"DGCONV_FAULT": "commit:metrics#3"}))}
    for name, p in procs.items():
        p.wait(timeout=PATIENCE)
        assert p.returncode == (0 if name == "ref" else -signal.SIGKILL), p.stderr.read()
    ref = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("before", "after"):
            r = cli("train", "--resume", str(tmp_path / name), "--no-progress")
            assert r.returncode == 0, r.stderr
            assert strip_time(metrics(tmp_path / name)) == strip_time(metrics(ref)), name
            a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(tmp_path / name / "last.pt")
            assert a["frozen"] == b["frozen"] and all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    finally:
        torch.set_num_threads(threads)
    rows = metrics(ref)
    assert [r["frozen"] for r in rows] == [False, False, True, True]
    assert rows[2]["groups"] == rows[3]["groups"] == rows[1]["groups"]
    frozen = model_from_checkpoint(ref / "last.pt")  # deploy, report and profile read a frozen run too
    assert not any(isinstance(m, DGConv2d) for m in frozen.modules())
    for args in (["deploy", str(ref), "--out", str(tmp_path / "d.pt")], ["report", str(ref), "--out", str(tmp_path / "rep")]):
        assert cli(*args).returncode == 0, args
    assert (tmp_path / "rep" / "groups.png").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--freeze-groups-at", "7"], "outside the schedule"),
        (["--freeze-groups-at", "0"], "outside the schedule"),
        (["--freeze-groups-at", "1.5"], "must be in (0, 1]"),
        (["--freeze-groups-at", "soon"], "epoch number or a fraction"),
        (["--gate-batch-fraction", "1.5"], "must be in (0, 1]"),
        (["--gate-every", "0"], "positive integer"),
        (["--model", "resnext_digits", "--budget", "none", "--freeze-groups-at", "1"], "no DGConv layers"),
        (["--model", "resnext_digits", "--budget", "none", "--gate-every", "2"], "no DGConv layers"),
    ],
)
def test_bad_speed_options(tmp_path, args, message):
    r = cli("train", "--epochs", "5", *args, "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_resuming_with_other_speed_options_is_refused(tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--epochs", "1", "--limit-train", "128", "--gate-every", "2", "--out", str(run)).returncode == 0
    for args in (["--gate-every", "3"], ["--freeze-groups-at", "1"], ["--gate-batch-fraction", "0.5"]):
        r = cli("train", "--resume", str(run), "--epochs", "2", *args)
        assert r.returncode == 2 and "options differ" in r.stderr, args
