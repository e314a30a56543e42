"""The fast recipe's ingredients behind options (issue 20): lookahead over batch-norm statistics, normalisation
biases at a scaled learning rate, frozen batch-norm scales, 6-view test-time augmentation -- each against a hand
computation, then together in a short run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import cli, metrics


def test_lookahead_buffers_average_the_running_statistics():
    from dgconv.train.setup import Lookahead

    net = nn.BatchNorm1d(2)
    la = Lookahead(net, alpha=0.5, buffers=True)
    assert "running_mean" in la.slow and "num_batches_tracked" not in la.slow  # floating buffers only
    before = net.running_mean.clone()
    net.train()
    net(torch.tensor([[4.0, -2.0], [6.0, 0.0]]))  # running_mean moves 0.1 of the way to the batch mean [5, -1]
    moved = net.running_mean.clone()
    la.step()
    torch.testing.assert_close(net.running_mean, before + 0.5 * (moved - before))
    assert "running_mean" not in Lookahead(net, alpha=0.5).slow  # off by default


def test_norm_biases_train_at_a_scaled_learning_rate_with_the_same_decay_per_step():
    from dgconv.budget.optimizer import configure_optimizer

    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2))
    opt = configure_optimizer(net, lr=0.1, momentum=0.0, weight_decay=0.01, norm_bias_lr_scale=64.0)
    group = next(g for g in opt.param_groups if g.get("lr_scale") == 64.0)
    assert [id(p) for p in group["params"]] == [id(net[1].bias)] and group["weight_decay"] == pytest.approx(0.01 / 64)
    # one step as the trainer takes it: lr times the group's scale; decay per step lr * wd for both groups
    for g in opt.param_groups:
        g["lr"] = 0.1 * g.get("lr_scale", 1.0)
    b0, w0 = net[1].bias.detach().clone(), net[1].weight.detach().clone()
    net[1].bias.grad, net[1].weight.grad = torch.ones(2), torch.ones(2)
    net[0].weight.grad = torch.zeros_like(net[0].weight)
    opt.step()
    torch.testing.assert_close(net[1].bias, b0 - 6.4 * (1 + 0.01 / 64 * b0))
    torch.testing.assert_close(net[1].weight, w0 - 0.1 * (1 + 0.01 * w0))


def test_six_view_tta_is_the_mean_over_mirror_and_one_pixel_shifts():
    from dgconv.train.tta import tta_logits, views

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    x = torch.randn(2, 3, 5, 5)
    vs = views(x, "flip-shift")
    assert len(vs) == 6
    torch.testing.assert_close(vs[3][..., 1:, 1:], x[..., :-1, :-1])  # shifted down-right by one pixel
    torch.testing.assert_close(vs[3][..., 0, 1:], x[..., 0, :-1])  # the top edge row replicated, not zeros
    torch.testing.assert_close(vs[2][..., :-1, :-1], x[..., 1:, 1:])  # up-left
    want = sum(net(v) for v in [x, x.flip(-1), *vs[2:]]) / 6
    torch.testing.assert_close(tta_logits(net, x, net(x), "flip-shift"), want)


@pytest.mark.slow
def test_the_recipe_options_train_and_resume_with_frozen_scales(tmp_path):
    args = ["train", "--epochs", "2", "--limit-train", "256", "--limit-test", "128", "--no-progress", "--lookahead", "2",
            "--lookahead-ramp", "--lookahead-buffers", "--norm-bias-lr-scale", "64", "--freeze-norm-scale",
            "--tta", "flip-shift", "--out", str(tmp_path / "run")]
    r = cli(*args[:2], "1", *args[3:])
    assert r.returncode == 0, r.stderr
    r = cli("train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(metrics(tmp_path / "run")) == 2
    from dgconv.train.checkpoint import load_checkpoint

    sd = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    scales = [v for k, v in sd.items() if k.endswith("bn1.weight") or k.endswith("bn2.weight")]
    assert scales and all(torch.all(v == 1.0) for v in scales)  # frozen at 1 through training and the resume
    r = cli("train", "--norm-bias-lr-scale", "0", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--norm-bias-lr-scale must be positive" in r.stderr
