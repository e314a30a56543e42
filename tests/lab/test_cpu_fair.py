"""Protocol cpu-fair's parts: the learned structure retrained with its channel order (--structure-from), run names
with tags, arms at equal or lower MACs, the sweep's own wall times and its estimate against the protocol's budget."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dgconv import DGConv2d, create_model, deploy
from dgconv.layer.conv import dgconv_layers
from dgconv.errors import ConfigError
from dgconv.convert.freeze import freeze_structure, structure_record
from dgconv.lab import arms as arms_module
from dgconv.lab.arms import Arm, Protocol, arm_macs, arms_of, check_macs, estimate_seconds
from dgconv.lab.fair import arm_key
from dgconv.lab.names import RunName
from dgconv.lab.protocols import PROTOCOLS, planned_runs
from dgconv.convert.profile import profile
from tests.helpers import ENV, PATIENCE, cli, metrics, strip_time
from tests.train.test_data import HAS_CIFAR, SHARED



def random_gates(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _, m in dgconv_layers(model):
        m.gate.data = torch.randn(len(m.factors), generator=gen, dtype=m.gate.dtype)


@pytest.mark.parametrize("name", ["g_fastnet", "g_fastnet_mix", "g_resnext_cifar_tiny"])
def test_a_structure_record_rebuilds_the_deployed_network_untrained(name):
    """freeze_structure(fresh G-net, structure_record(A)) is the network deploy(A) gives -- the same groups, channel
    order and module layout -- but with nn.Conv2d's own initialisation in its group convolutions."""
    torch.manual_seed(0)
    a = create_model(name, num_classes=10).double().eval()
    random_gates(a, 3)
    assert any(not m.grouping().is_contiguous for _, m in dgconv_layers(a))  # orders to rebuild
    record = structure_record(a)
    deployed = deploy(a)
    torch.manual_seed(1)
    b = create_model(name, num_classes=10).double().eval()
    freeze_structure(b, record)
    assert not any(isinstance(m, DGConv2d) for m in b.modules())
    assert [type(m).__name__ for m in b.modules()] == [type(m).__name__ for m in deployed.modules()]
    for layer in record:
        convs = [m for m in b.get_submodule(layer).modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 1
        w = convs[0].weight
        bound = 1 / (w[0].numel()) ** 0.5  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound, layer
    b.load_state_dict(deployed.state_dict())  # the same parameters and buffers, permutation indices included
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(b(x), a(x), rtol=1e-9, atol=1e-9)


def test_structure_from_trains_the_learned_structure_and_replays(tmp_path):
    src = tmp_path / "g"
    assert cli("train", "--epochs", "2", "--limit-train", "256", "--budget", "8", "--out", str(src),
               "--no-progress").returncode == 0
    doc = json.loads((src / "groups.json").read_text())
    assert set(doc["structure"]) == set(doc["groups"])
    for layer, s in doc["structure"].items():  # the recorded gates give the recorded groups: a closed gate splits
        g = 1
        for f, on in zip(s["factors"], s["gates"], strict=True):
            g *= 1 if on else f
        assert g == doc["groups"][layer], layer
    run = tmp_path / "struct"
    r = cli("train", "--model", "g_resnext_digits", "--budget", "none", "--structure-from", str(src), "--epochs", "2",
            "--limit-train", "256", "--threads", "1", "--seed", "2", "--out", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert {k: {"factors": v["factors"], "gates": v["gates"]} for k, v in ckpt["frozen"].items()} == doc["structure"]
    assert metrics(run)[-1]["groups"] == doc["groups"] and all(m["frozen"] for m in metrics(run))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["threads"] == 1 and cfg["environment"]["threads"] == 1
    again = tmp_path / "again"
    assert cli("train", "--config", str(run / "config.json"), "--out", str(again)).returncode == 0
    assert strip_time(metrics(again)) == strip_time(metrics(run))  # bit-identical replay


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "resnext_digits"], "no DGConv layers"),
        (["--budget", "8"], "--budget none"),
        (["--freeze-groups-at", "1"], "--budget none"),
    ],
)
def test_bad_structure_options(tmp_path, args, message):
    (tmp_path / "groups.json").write_text(json.dumps({"groups": {"a": 1}}))
    base = ["train", "--structure-from", str(tmp_path), "--budget", "none", "--epochs", "2", "--out", str(tmp_path / "r")]
    r = cli(*base, *args)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_groups_file_without_structure_is_refused(tmp_path):
    (tmp_path / "groups.json").write_text(json.dumps({"groups": {"layer1.0.conv2": 2}}))
    r = cli("train", "--structure-from", str(tmp_path), "--budget", "none", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "records no structure" in r.stderr, r.stderr
    (tmp_path / "groups.json").write_text(json.dumps({"structure": {"x": {"factors": [2, 1], "gates": [True]}}}))
    r = cli("train", "--structure-from", str(tmp_path), "--budget", "none", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "malformed" in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text", ["g-macs-b16", "mix-g-macs-b16-s3", "depth-g-b16", "struct-macs-b16-s2",
                                  "star-macs-b4-s1", "fastnet_mix_width-g16-s7", "fastnet-g1"])
def test_run_names_round_trip(text):
    name = RunName.parse(text)
    assert name is not None and str(name) == text
    if name.arm in ("star", "struct"):
        assert str(name.source) == text.replace(name.arm, "g", 1)


@pytest.mark.parametrize("text", ["g-g-b16", "plain-g1", "mix-plain-b16", "Mix-g-b16", "g-macs-b16-"])
def test_names_that_are_not_runs(text):
    assert RunName.parse(text) is None


def test_bad_arms():
    with pytest.raises(ValueError, match="needs a tag"):
        Arm("g", 16, "macs", model="g_fastnet_mix")
    with pytest.raises(ValueError, match="arm kind"):
        Arm("learned", 16)
    with pytest.raises(ValueError, match="lower-case word"):
        RunName("g", 16, tag="Mix")


def test_cpu_fair_arms_cost_at_most_their_uniform_arm():
    p = PROTOCOLS["cpu-fair"]
    check_macs(p)  # what planned_runs does; it raises on an arm above its uniform arm
    runs = planned_runs(p)
    assert len(runs) == 8 * 9 + 4 * 5 + 2 and len({str(r.name) for r in runs}) == len(runs)
    uniform = {model: float(profile(create_model(model, num_classes=10, groups=16), (3, 32, 32)).macs)
               for model in ("fastnet", "fastnet_mix")}
    by_label = {str(a.names(p.family)[0]): arm_macs(p, a) for a in arms_of(p)}
    assert by_label["fastnet_width-g16"] < uniform["fastnet"] and by_label["g-macs-b16"] <= uniform["fastnet"]
    assert by_label["fastnet_mix_width-g16"] < uniform["fastnet_mix"] and by_label["mix-g-macs-b16"] <= uniform["fastnet_mix"]
    assert by_label["fastnet_shuffle-g16"] == uniform["fastnet"]  # the shuffle adds no MACs
    # every run of the protocol trains on one thread, and the structure arm rebuilds its source's structure
    assert all(r.options["threads"] == 1 for r in runs)
    struct = [r for r in runs if r.name.arm == "struct"]
    assert struct and all(r.phase == 2 and r.options["structure_from"].endswith(f"/{r.name.source}/groups.json")
                          and r.options["model"] == "g_fastnet" for r in struct)


def test_an_arm_above_the_uniform_arm_is_refused(monkeypatch):
    monkeypatch.setitem(arms_module.HAND_RULES, "dense", lambda model, b, size=(3, 32, 32): 1)
    p = Protocol(name="t", label="t", model="g_fastnet", plain="fastnet", family="fastnet", epochs=1, batch_size=8,
                 lr=0.1, equal_macs=True, arms=(Arm("plain", 16), Arm("plain", 16, rule="dense")))
    with pytest.raises(ConfigError, match=r"arm fastnet_dense-g16 costs 118,147,360 MACs, more than the uniform arm "
                                          r"fastnet-g16 \(8,476,384 MACs\)"):
        planned_runs(p)


def test_the_estimate_uses_finished_runs_first_and_says_when_it_exceeds_the_budget(tmp_path, caplog):
    from dgconv.lab import sweep, sweepdata

    p = dataclasses.replace(PROTOCOLS["cpu-fair"], budget_hours=1.0)
    runs = planned_runs(p)
    assert estimate_seconds(p, runs) == sum(p.seconds_per_run[str(dataclasses.replace(r.name, seed=0))] for r in runs)
    from dgconv.train.rundir import RunWriter

    for name in ("fastnet-g16", "fastnet-g16-s1"):  # finished runs (the walls of runs not in the sweep do not count)
        with RunWriter(tmp_path / name) as w:
            w.write_config({"config": {"model": "fastnet", "dataset": "cifar10", "epochs": 1}})
            w.append_metrics({"epoch": 1, "test_acc": 0.5})
    (tmp_path / "walls.jsonl").write_text(
        json.dumps({"run": "fastnet-g16", "seconds": 100.0, "exit": 0}) + "\n"
        + json.dumps({"run": "fastnet-g16-s1", "seconds": 40.0, "exit": None}) + "\n{cut by a cra\n"
        + json.dumps({"run": "fastnet-g16-s1", "seconds": 80.0, "exit": 0}) + "\n"
        + json.dumps({"run": "fastnet-g16-s2", "seconds": 999.0, "exit": 0}) + "\n")  # its folder is gone
    assert sweepdata.wall_seconds(tmp_path) == {"fastnet-g16": 110.0}  # median of 100 and 40 + 80
    with caplog.at_level(logging.INFO, logger="dgconv.lab.sweep"):
        sweep._say_estimate(p, tmp_path, runs)
    assert "EXCEEDS IT" in caplog.text and "the protocol's budget is 1 h" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
def test_cpu_fair_rehearses_every_arm_and_records_its_wall_times(tmp_path):
    """Every arm of cpu-fair runs (one seed, one tiny epoch): the controls' networks, the width rules, the learned
    structure from its source run; the sweep records each run's wall time; experiments/cpu_fair_latency.py times
    every deployed arm against the uniform arm of its network and `dgconv results` puts the times in its table."""
    r = cli("sweep", "--protocol", "cpu-fair", "--data-dir", str(SHARED), "--out", str(tmp_path / "s"), "--epochs", "1",
            "--limit-train", "128", "--limit-test", "64", "--batch-size", "64", "--max-seeds", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    walls = [json.loads(line) for line in (tmp_path / "s" / "walls.jsonl").read_text().splitlines()]
    runs = planned_runs(PROTOCOLS["cpu-fair"])
    assert sorted(w["run"] for w in walls) == sorted({str(x.name) for x in runs if x.name.seed == 0})
    assert all(w["exit"] == 0 and w["seconds"] > 0 for w in walls)
    struct = torch.load(tmp_path / "s" / "struct-macs-b16" / "last.pt", weights_only=True)["frozen"]
    source = json.loads((tmp_path / "s" / "g-macs-b16" / "groups.json").read_text())["structure"]
    assert {k: {"factors": v["factors"], "gates": v["gates"]} for k, v in struct.items()} == source

    # experiments/cpu_fair_latency.py times every deployed arm against the uniform arm of its network
    script = Path(__file__).resolve().parents[2] / "experiments" / "cpu_fair_latency.py"
    r2 = subprocess.run([sys.executable, str(script), str(tmp_path / "s"), "--reps", "1", "--passes", "2"],
                        capture_output=True, text=True, timeout=PATIENCE, env=ENV)
    assert r2.returncode == 0, r2.stderr[-2000:]
    lat = json.loads((tmp_path / "s" / "latency.json").read_text())
    assert lat["format"] == "dgconv.arm-latency/1" and lat["passes"] == 2
    want = {arm_key(a, PROTOCOLS["cpu-fair"]) for a in PROTOCOLS["cpu-fair"].arms}
    assert set(lat["arms"]) == want
    against = {k: v["against"] for k, v in lat["arms"].items()}
    assert against["fastnet-g1"] == against["struct-macs-b16"] == against["star-macs-b16"] == "fastnet-g16"
    assert against["fastnet_mix_width-g16"] == against["mix-g-macs-b16"] == "fastnet_mix-g16"
    assert against["depth-g-b16"] == "fastnet_const-g16" and against["g-macs-b4"] == "fastnet-g4"
    for entry in lat["arms"].values():
        for b in ("b1", "b64"):
            lo, hi = entry[f"range_{b}"]
            assert len(entry["per_pass"][b]) == 2 and 0 < lo <= entry[b] <= hi
    r3 = cli("results", str(tmp_path / "s"), "--out", str(tmp_path / "results.md"))
    assert r3.returncode == 0, r3.stderr[-2000:]
    rows = {line.split("|")[1].strip(" `"): line for line in (tmp_path / "results.md").read_text().splitlines()
            if line.startswith("| `")}
    for key in ("struct-macs-b16", "star-macs-b16", "fastnet_mix-g16"):
        assert f"| {lat['arms'][key]['b64']:.2f}x" in rows[key], rows[key]
