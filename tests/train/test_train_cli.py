"""`dgconv train` end to end: the defaults in a real process, torchrun DDP, a budget, CIFAR, and the bad inputs a
user will hit (in this process: `tests.helpers.cli`). Crashes, clashes and signals: tests/train/test_reliability.py."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgconv.layer.conv import learned_groups
from dgconv.models import create_model
from dgconv.train.checkpoint import load_checkpoint
from tests.helpers import ENV, PATIENCE, cli, dgconv, metrics
from tests.train.test_data import HAS_CIFAR, SHARED


@pytest.mark.slow
def test_defaults_train_g_resnext_on_digits_and_report_groups(tmp_path):
    r = dgconv("train", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    rows = metrics(run)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    quoted = float(re.search(r"final test accuracy (\d+\.\d+) %", readme)[1]) / 100
    assert len(rows) == 30 and rows[-1]["test_acc"] >= quoted - 0.01  # what the README says, within a point
    assert "test accuracy" in r.stdout and "layer3.0.conv2" in r.stdout and "groups" in r.stdout
    doc = json.loads((run / "groups.json").read_text())
    ckpt = load_checkpoint(run / "last.pt")
    model = create_model(ckpt["model_name"], num_classes=10, in_chans=1)
    model.load_state_dict(ckpt["model"])
    assert doc["groups"] == learned_groups(model) == rows[-1]["groups"]
    assert doc["channels"]["layer1.0.conv2"] == [32, 32]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["model"] == "g_resnext_digits" and cfg["config"]["budget"] == 8 and cfg["environment"]["torch"]
    assert rows[-1]["zeta_over_o"] <= 1.0
    assert (run / "best.pt").exists()


def test_budgeted_run_ends_within_budget(tmp_path):
    r = cli("train", "--budget", "16", "--epochs", "3", "--out", str(tmp_path / "b16"))
    assert r.returncode == 0, r.stderr
    last = metrics(tmp_path / "b16")[-1]
    assert last["zeta"] <= last["o"] and last["o"] == (32 * 32 + 64 * 64 + 128 * 128) / 16
    assert "budget b=16" in r.stdout


def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    # --standalone: a free port on localhost (a fixed port can clash with another job or a socket in TIME_WAIT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dgconv", "train", "--epochs", "2", "--out", str(out), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=PATIENCE)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = metrics(out)
    assert len(rows) == 2 and all(row["gates_in_sync"] for row in rows)
    assert rows[-1]["test_acc"] > 0.5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["environment"]["world_size"] == 2
    assert r.stdout.count("test accuracy") == 1  # only rank 0 reports


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_over_a_localhost_rendezvous(tmp_path):
    """The multi-node command of docs/guide.md, rehearsed: two torchrun node processes (one worker each) that meet
    at a c10d rendezvous on localhost, gloo between them; one run directory, written by global rank 0 only."""
    out = tmp_path / "two-nodes"
    for attempt in range(3):  # the port is free when chosen; another process may take it before torchrun binds it
        port = _free_port()
        nodes = [subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
             "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"test-{port}",
             "-m", "dgconv", "train", "--epochs", "2", "--out", str(out), "--device", "cpu", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
        results = [(p.returncode, o, e) for p in nodes for o, e in [p.communicate(timeout=PATIENCE)]]
        if all(rc == 0 for rc, _, _ in results) or not any("address already in use" in e.lower() for _, _, e in results):
            break
    assert all(rc == 0 for rc, _, _ in results), "\n".join(e[-2000:] for _, _, e in results)
    rows = metrics(out)
    assert len(rows) == 2 and all(row["gates_in_sync"] for row in rows)
    assert json.loads((out / "config.json").read_text())["environment"]["world_size"] == 2
    assert sum(o.count("test accuracy") for _, o, _ in results) == 1  # one report, from global rank 0


@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
def test_cifar10_from_the_shared_folder(tmp_path):
    r = cli("train", "--dataset", "cifar10", "--data-dir", str(SHARED), "--limit-train", "512", "--limit-test", "256",
               "--epochs", "1", "--batch-size", "64", "--out", str(tmp_path / "c10"))
    assert r.returncode == 0, r.stderr
    row = metrics(tmp_path / "c10")[0]
    assert row["epoch"] == 1 and 0 <= row["test_acc"] <= 1
    assert json.loads((tmp_path / "c10" / "config.json").read_text())["input_size"] == [3, 32, 32]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/dir"], "Expected a folder 'cifar-10-batches-py'"),
        (["--dataset", "cifar10"], "needs --data-dir"),
        (["--model", "g_resnext50_32x4d"], "Did you mean: g_resnext50"),
        (["--budget", "0"], "budget must be a finite positive number, got 0.0"),
        (["--budget", "-3"], "budget must be a finite positive number, got -3.0"),
        (["--budget", "1e-300"], "budget b=1e-300 is below 1"),
        (["--budget", "nan"], "budget must be"),
        (["--budget", "lots"], "argument --budget: must be a number, 'default' or 'none', got 'lots'"),
        (["--momentum", "-1"], "--momentum must be in [0, 1), got -1.0"),
        (["--weight-decay", "-1"], "--weight-decay must be 0 or more"),
        (["--alpha=-inf"], "--alpha must be a finite number, got -inf"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--freeze-groups-at", "nan"], "--freeze-groups-at takes an epoch number or a fraction of the schedule"),
        (["--seed", "-1"], "--seed must be in [0, 2^63)"),
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["--budget", "8", "--model", "resnext_digits"], "has no DGConv layers"),
        (["--budget", "1000"], "the largest reachable b is 96 (every layer at its most groups)"),
        (["--groups-from", "/nonexistent.json"], "no group spec"),
        (["--image-size", "0"], "--image-size must be a positive integer, got 0"),
        (["--modle", "x"], "unrecognized arguments --modle x; --modle: did you mean --model?"),
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/dir"], "Expected a folder"),
    ],
)
def test_bad_inputs_fail_clearly(tmp_path, args, message):
    """One line that says what was wrong (no usage dump, no traceback), and nothing left on disk."""
    r = cli("train", *args, "--out", str(tmp_path / "runs" / "run"))
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stderr.startswith("dgconv train: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert list(tmp_path.iterdir()) == []  # not even the parent folder --out would have created


def test_the_largest_reachable_budget_is_the_one_named():
    """b_max = sum C_in C_out / (the smallest zeta): o(b_max) equals the cheapest grouping, a bit more is refused."""
    from dgconv.budget.constraint import ResourceConstraint
    from dgconv.errors import ConfigError

    model = create_model("g_resnext_digits", num_classes=10, in_chans=1)
    layers = [(32, 32), (64, 64), (128, 128)]  # its three DGConv layers; at most gcd groups each
    b_max = sum(i * o for i, o in layers) / sum(i * o / math.gcd(i, o) for i, o in layers)
    assert b_max == 96
    ResourceConstraint(model, budget=b_max)  # reachable
    with pytest.raises(ConfigError, match="the largest reachable b is 96 "):
        ResourceConstraint(model, budget=b_max * 1.01)
    with pytest.raises(ConfigError, match=r"the largest reachable b is \d"):
        ResourceConstraint(model, budget=1000, cost="macs", input_size=(1, 8, 8))


def test_a_finished_or_stopped_run_leaves_no_lock_and_a_failed_start_no_folder(tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--epochs", "1", "--limit-train", "128", "--out", str(run), "--no-progress").returncode == 0
    assert not (run / ".lock").exists() and (run / "last.pt").exists()
    # a failed resume of an existing run takes nothing away
    before = sorted(p.name for p in run.iterdir())
    assert cli("train", "--resume", str(run), "--lr", "0.5").returncode == 2
    assert sorted(p.name for p in run.iterdir()) == before
    # an empty folder that existed stays, empty
    (tmp_path / "empty").mkdir()
    assert cli("train", "--budget", "1000", "--out", str(tmp_path / "empty")).returncode == 2
    assert list((tmp_path / "empty").iterdir()) == []


def test_bad_checkpoints_and_resume_conflicts(tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(2000))
    r = cli("train", "--resume", str(tmp_path / "junk.pt"))
    assert r.returncode == 2 and "not a readable checkpoint" in r.stderr
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    r = cli("train", "--resume", str(tmp_path / "foreign.pt"))
    assert r.returncode == 2 and "not a dgconv checkpoint" in r.stderr
    run = tmp_path / "run"
    assert cli("train", "--epochs", "1", "--limit-train", "128", "--out", str(run)).returncode == 0
    r = cli("train", "--epochs", "1", "--out", str(run))
    assert r.returncode == 2 and "already holds a run" in r.stderr
    r = cli("train", "--resume", str(run), "--lr", "0.5")
    assert r.returncode == 2 and "options differ" in r.stderr and "lr" in r.stderr
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["num_classes"] = 7
    torch.save(ckpt, run / "other.pt")
    r = cli("train", "--resume", str(run / "other.pt"), "--epochs", "2")
    assert r.returncode == 2 and "class count mismatch" in r.stderr
    # extending a finished run is allowed and continues from its checkpoint
    r = cli("train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in metrics(run)] == [1, 2]


def test_non_finite_loss_stops_and_keeps_no_bad_checkpoint(tmp_path):
    run = tmp_path / "nan"
    r = cli("train", "--lr", "1e30", "--epochs", "3", "--out", str(run))
    assert r.returncode == 2
    assert "stopping" in r.stderr and ("nan" in r.stderr or "inf" in r.stderr)
    if (run / "last.pt").exists():
        ckpt = load_checkpoint(run / "last.pt")
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if isinstance(v, torch.Tensor) and v.is_floating_point())


def test_non_finite_loss_after_checkpoints_keeps_the_last_one(tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--epochs", "1", "--limit-train", "256", "--out", str(run)).returncode == 0
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["model"]["fc.weight"].fill_(float("inf"))  # every logit becomes non-finite in the next step
    torch.save(ckpt, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    r = cli("train", "--resume", str(run), "--epochs", "3")
    assert r.returncode == 2
    assert "at epoch 2" in r.stderr and f"kept the last good checkpoint {run / 'last.pt'} (end of epoch 1)" in r.stderr
    assert (run / "last.pt").read_bytes() == before
    assert [row["epoch"] for row in metrics(run)] == [1]


def test_lookahead_with_and_without_the_ramp_against_a_hand_computation():
    """Lookahead moves the slow weights a fraction of the way to the fast ones and restarts the fast ones there; with
    the ramp that fraction is 1 - (1 - alpha) t^3 (no averaging at the start, alpha at the end)."""
    from torch import nn

    from dgconv.train.setup import Lookahead

    for ramp in (False, True):
        net = nn.Linear(3, 1, bias=False)
        la = Lookahead(net, alpha=0.3, ramp=ramp)
        slow = net.weight.detach().clone()
        for k, t in enumerate((0.0, 0.25, 0.6, 1.0)):
            with torch.no_grad():
                net.weight.add_(torch.tensor([[1.0, -2.0, 0.5]]) * (k + 1))  # what the optimizer's K steps did
            fast = net.weight.detach().clone()
            frac = 1 - 0.7 * t**3 if ramp else 0.3
            slow = slow + frac * (fast - slow)
            la.step(t)
            assert torch.allclose(net.weight, slow) and torch.allclose(la.slow["weight"], slow)
    assert Lookahead(net, 0.3, ramp=True).fraction(0.0) == 1.0  # the first steps are not slowed down


def test_lookahead_ramp_is_recorded_and_needs_lookahead(tmp_path):
    r = cli("train", "--epochs", "1", "--lookahead-ramp", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--lookahead-ramp needs --lookahead K" in r.stderr
    r = cli("train", "--epochs", "1", "--lookahead", "3", "--lookahead-ramp", "--no-progress", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert cfg["lookahead"] == 3 and cfg["lookahead_ramp"] is True and len(metrics(tmp_path / "run")) == 1
