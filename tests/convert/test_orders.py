"""Learned channel orders in chains of group convolutions (dgconv.convert.orders): merged per junction, folded where
the neighbours can absorb them, the rest gathered in the tensor's own layout; frozen and deployed networks compute
what the G-network computes, and a frozen network trains on from the same state."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from dgconv import create_model, deploy, groupify
from dgconv.budget.optimizer import configure_optimizer
from dgconv.convert.freeze import freeze_groups
from dgconv.convert.orders import ChannelPermutation, fold_orders
from dgconv.convert.spec import load_deployed, save_deployed
from dgconv.layer.conv import dgconv_layers, gate_gradients
from tests.helpers import cli, metrics, strip_time


def learned(name: str, seed: int, dtype=torch.float64):
    torch.manual_seed(seed)
    net = create_model(name, num_classes=10).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    for _, m in dgconv_layers(net):
        m.gate.data = torch.randn(len(m.factors), generator=gen, dtype=dtype)
    assert any(not m.grouping().is_contiguous for _, m in dgconv_layers(net))
    return net


def perms(net):
    return [m for m in net.modules() if isinstance(m, ChannelPermutation) and not m.identity]


@pytest.mark.parametrize("name", ["g_fastnet", "g_fastnet_mix", "g_fastnet_const"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_deployed_chains_compute_what_the_g_network_computes(name, seed, channels_last):
    net = learned(name, seed).eval()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    folded, gathered = deploy(net, orders="fold"), deploy(net, orders="gather")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        folded = folded.to(memory_format=torch.channels_last)
    ref = net(x)
    torch.testing.assert_close(folded(x), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gathered(x), ref, rtol=1e-10, atol=1e-10)
    # one gather per junction at most (FastNet has 5 junctions between its 6 group convolutions), never more than
    # the 0.2 way's one per side of every layer
    assert len(perms(folded)) <= 5 < len(perms(gathered)) or len(perms(gathered)) <= 5


def test_junctions_the_neighbours_can_absorb_need_no_gather():
    """Whitening -> first group conv and last group conv -> classifier are dense on one side: always folded."""
    net = learned("g_fastnet", 0).eval()
    frozen = copy.deepcopy(net)
    from dgconv.convert.deploy import deploy_in_place

    deploy_in_place(frozen, orders="gather")
    first_in = isinstance(frozen.block1.conv1, torch.nn.Sequential) and isinstance(frozen.block1.conv1[0], ChannelPermutation)
    report = fold_orders(frozen)
    assert report.untraceable is None
    assert any(j.endswith("-> fc") for j in report.folded)  # into the classifier's columns
    assert any(j.startswith("whiten.conv ->") for j in report.folded) == first_in  # into the whitening's rows
    assert not any(j.startswith("whiten") or j.endswith("fc") for j in report.gathered)
    assert len(report.folded) + len(report.gathered) <= 7  # FastNet's junctions: whitening, 5 inner, classifier


def test_the_gather_keeps_the_layout_and_is_exact_forward_and_backward():
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(4, 16, 5, 5).contiguous(memory_format=fmt).requires_grad_()
        index = torch.randperm(16, generator=torch.Generator().manual_seed(3))
        y = ChannelPermutation(index)(x)
        assert y.is_contiguous(memory_format=fmt)
        g = torch.randn_like(y)
        y.backward(g)
        x2 = x.detach().clone().requires_grad_()
        y2 = x2.index_select(1, index)
        y2.backward(g)
        assert torch.equal(y, y2) and torch.equal(x.grad, x2.grad)  # a permutation: no sum, bit-identical
        assert x.grad.is_contiguous(memory_format=fmt)


def test_bad_orders_are_refused_when_built_naming_the_layer():
    with pytest.raises(ValueError, match="of block2.conv1 .* not a permutation"):
        ChannelPermutation(torch.tensor([0, 0, 1]), name="block2.conv1")
    with pytest.raises(ValueError, match="of block2.conv1 reorders 3 channels, but it is applied to 4"):
        ChannelPermutation(torch.tensor([2, 0, 1]), name="block2.conv1", channels=4)
    with pytest.raises(ValueError, match="applied to 5"):
        ChannelPermutation(torch.tensor([2, 0, 1, 3]))(torch.randn(1, 5, 2, 2))


def test_a_frozen_chain_trains_on_like_the_g_network_with_its_gates_held():
    """After freeze_groups (orders folded, optimizer state moved with every weight it belongs to) the next steps
    equal those of the unfrozen network with its gates held fixed (float64)."""
    net = learned("g_fastnet", 1)
    opt = configure_optimizer(net, lr=0.05, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))

    def step(model, o, gates):
        with gate_gradients(model, gates):
            loss = F.cross_entropy(model(x), y)
            o.zero_grad(set_to_none=True)
            loss.backward()
        o.step()

    for _ in range(2):
        step(net, opt, False)
    frozen, frozen_opt = copy.deepcopy((net, opt))
    freeze_groups(frozen, frozen_opt, orders="fold")
    assert len(perms(frozen)) < 10
    for _ in range(2):
        step(net, opt, False)
        step(frozen, frozen_opt, False)
    net.eval(), frozen.eval()
    torch.testing.assert_close(frozen(x), net(x), rtol=1e-9, atol=1e-9)


def test_groupify_output_folds_too():
    torch.manual_seed(0)
    from tests.convert.test_deploy import UserNet, assert_same_function

    g = groupify(UserNet().eval())
    g.b.gate.data = torch.tensor([1.0, -1.0, 1.0, -1.0])
    d = deploy(g)
    assert_same_function(g, d, torch.randn(2, 3, 9, 9))
    assert all(m.identity for m in d.b.modules() if isinstance(m, ChannelPermutation))  # folded into a and d


def test_a_deployed_chain_saves_and_loads_with_its_gathers(tmp_path):
    net = learned("g_fastnet", 2, torch.float32).eval()
    d = deploy(net)
    path, spec = save_deployed(d, tmp_path / "m.pt")
    assert json.loads(spec.read_text())["orders"]
    back = load_deployed(path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back(x), d(x))
    assert len(perms(back)) == len(perms(d))


def test_orders_gather_replays_runs_recorded_before_it(tmp_path):
    """A run whose config.json predates --orders (0.2's gathers) replays bit-identically; a checkpoint without the
    field resumes with the gathers it trained with."""
    run = tmp_path / "g"
    args = ["train", "--epochs", "3", "--limit-train", "256", "--budget", "4", "--freeze-groups-at", "1",
            "--orders", "gather", "--out", str(run), "--no-progress"]
    assert cli(*args).returncode == 0
    doc = json.loads((run / "config.json").read_text())
    del doc["config"]["orders"]  # as 0.2 wrote it
    (run / "config.json").write_text(json.dumps(doc))
    again = tmp_path / "again"
    assert cli("train", "--config", str(run / "config.json"), "--out", str(again)).returncode == 0
    assert json.loads((again / "config.json").read_text())["config"]["orders"] == "gather"
    assert strip_time(metrics(again)) == strip_time(metrics(run))
