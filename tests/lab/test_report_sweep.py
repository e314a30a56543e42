"""`dgconv report`, `dgconv sweep` (a miniature cpu protocol) and `dgconv results`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dgconv.errors import DGConvError
from dgconv.lab.arms import Protocol
from dgconv.lab.protocols import PROTOCOLS, planned_runs
from dgconv.lab.results import render_results
from dgconv.lab.sweepdata import spearman
from dgconv.train.config import TrainConfig
from tests.helpers import ENV, PATIENCE, cli
from tests.train.test_data import HAS_CIFAR, SHARED

plt = pytest.importorskip("matplotlib")


def run_cli(*args: str, timeout: float = PATIENCE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dgconv", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def png_pixels(path):
    from matplotlib import image

    return np.asarray(image.imread(str(path)))


def cpu_fair_runs(sweep, name: str) -> list:
    """An arm's run directories (seed 0 unsuffixed, the others ``-sN``), finished or not."""
    import re

    return [d for d in sorted(sweep.glob(f"{name}*")) if re.fullmatch(rf"{name}(-s\d+)?", d.name)]


def cpu_fair_accs(sweep, name: str) -> np.ndarray:
    """Final test accuracies of an arm's finished runs (the protocol's 4 epochs), read from metrics.jsonl directly:
    the independent side of the cpu-fair checks."""
    return np.array([acc for acc in map(finished_acc, cpu_fair_runs(sweep, name)) if acc is not None])


def finished_acc(run) -> float | None:
    """A cpu-fair run's final test accuracy, or None when it has not finished the protocol's 4 epochs."""
    if not (run / "metrics.jsonl").is_file():
        return None
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return rows[-1]["test_acc"] if rows and rows[-1]["epoch"] == 4 else None


def test_report_of_two_runs(tmp_path):
    for name, budget in (("a", "4"), ("b", "16")):
        r = cli("train", "--epochs", "3", "--limit-train", "256", "--budget", budget, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    r = cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    for fig in ("groups.png", "dynamics.png", "training.png", "macs.png"):
        px = png_pixels(tmp_path / "rep" / fig)
        assert px.shape[0] > 300 and px.shape[1] > 600 and px.std() > 0.05, fig  # a real, non-blank picture
    text = (tmp_path / "rep" / "summary.md").read_text()
    groups = json.loads((tmp_path / "a" / "groups.json").read_text())["groups"]
    for name, g in groups.items():
        assert f"| {name} |" in text and f"| {g} |" in text
    assert "MACs deployed" in text and "zeta/o" in text and "MACs in the ResNeXt counterpart" in text
    r = cli("report", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_protocols_plan_tables_3_5_6():
    # the plan of a sweep recorded before budget costs existed (results/cpu, results/gpu) is unchanged
    old = Protocol("x", "x", "g_resnext_cifar_tiny", "resnext_cifar_tiny", 1, 8, 0.1)
    assert [str(r.name) for r in planned_runs(old)] == [
        "resnext-g32", "g-b32", "g-b64", "g-b96", "g-b128", "g-b32-s1", "g-b32-s2", "star-b32", "star-b96"]
    for p in (PROTOCOLS["cpu"], PROTOCOLS["gpu"]):  # both costs side by side, three seeds for the baseline and b = 32
        runs = planned_runs(p)
        names = [str(r.name) for r in runs]
        for cost in ("", "-macs"):
            for b in (32, 64, 96, 128) if p.name == "gpu" or not cost else (32, 64, 96):
                assert f"g{cost}-b{b}" in names
            assert f"g{cost}-b32-s1" in names and f"g{cost}-b32-s2" in names
            assert f"star{cost}-b32" in names and f"star{cost}-b96" in names
        assert {"resnext-g32", "resnext-g32-s1", "resnext-g32-s2"} <= set(names)
        assert len(names) == len(set(names)) == 3 + 2 * (4 + 2 + 2) - (p.name == "cpu")
        by = {str(r.name): r for r in runs}
        assert by["star-macs-b96"].phase == 2 and by["star-macs-b96"].options["groups_from"] == "{sweep}/g-macs-b96/groups.json"
        assert by["g-macs-b64"].options["cost"] == "macs" and by["g-macs-b64"].options["budget"] == 64.0
        assert "cost" not in by["g-b64"].options  # the paper's connections, the default
        TrainConfig(**{**by["g-macs-b64"].options, "data_dir": "x"}).resolved()  # typed values a run accepts
        assert [r.phase for r in runs] == sorted(r.phase for r in runs)
    assert PROTOCOLS["gpu"].amp and PROTOCOLS["gpu"].channels_last and PROTOCOLS["gpu"].device == "cuda"
    # gpu-fast: the key arms (dense, fixed G = 16, learned under MACs b = 16) with 8 seeds, the others with 3
    fast = [str(r.name) for r in planned_runs(PROTOCOLS["gpu-fast"])]
    for key in ("fastnet-g1", "fastnet-g16", "g-macs-b16"):
        assert sum(n == key or n.startswith(key + "-s") for n in fast) == 8, key
    for other in ("fastnet-g4", "g-macs-b4", "g-b4", "g-b16", "star-macs-b4", "star-macs-b16"):
        assert sum(n == other or n.startswith(other + "-s") for n in fast) == 3, other
    assert "star-macs-b16-s2" in fast
    assert planned_runs(PROTOCOLS["gpu-fast"])[-1].options["groups_from"] == "{sweep}/g-macs-b16-s2/groups.json"


def test_short_schedules_keep_warmup_valid():
    import dataclasses

    p = dataclasses.replace(PROTOCOLS["gpu"], epochs=1)
    assert planned_runs(p)[0].options["warmup_epochs"] < 1


def test_failed_runs_make_the_sweep_fail(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    r = run_cli("sweep", "--protocol", "cpu", "--data-dir", str(tmp_path), "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "Expected a folder" in r.stderr  # refused before starting nine runs


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    assert spearman([0, 1, 2, 3], [1, 2, 4, 8]) == pytest.approx(1.0)
    assert spearman([0, 1, 2, 3], [8, 4, 2, 1]) == pytest.approx(-1.0)
    assert spearman([0, 1, 2], [1, 1, 1]) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = list(range(9)), rng.integers(0, 5, 9).tolist()  # ties included
        if len(set(y)) > 1:
            assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


REHEARSAL = ["--epochs", "1", "--limit-train", "64", "--limit-test", "64", "--batch-size", "32", "--device", "cpu",
             "--no-amp", "--max-seeds", "2", "--parallel", "2"]


def _acc(run) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
def test_cpu_protocol_rehearsal_with_a_deadline_and_independent_statistics(tmp_path):
    """The cpu protocol at rehearsal size: a first invocation stopped by its deadline leaves runs to do, the next one
    finishes them from the run directories, and the document's statistics match SciPy recomputed from metrics.jsonl."""
    stats = pytest.importorskip("scipy.stats")
    out = tmp_path / "sweep"
    args = ["sweep", "--protocol", "cpu", "--data-dir", str(SHARED), "--out", str(out), *REHEARSAL]
    r = run_cli(*args, "--deadline", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not run before the deadline" in r.stdout
    assert "Missing runs" in (out / "results.md").read_text()  # what did not finish is missing, not a number
    r = run_cli(*args, "--results", str(tmp_path / "results.md"))
    assert r.returncode == 0, r.stdout + r.stderr
    planned = [str(p.name) for p in planned_runs(dataclasses.replace(PROTOCOLS["cpu"], max_seeds=2))]
    assert all((out / n / "metrics.jsonl").exists() for n in planned) and "FAILED" not in r.stdout
    text = (out / "results.md").read_text()
    assert text == (tmp_path / "results.md").read_text() == render_results([out])  # regenerated from the run dirs
    for heading in ("Table 3 analogue", "Table 5 analogue", "Table 6 analogue", "claims, measured here"):
        assert heading in text
    assert "64 test images" in text and "Verdict:" in text and "Missing runs" not in text
    assert "not the official CIFAR-10 files" in text  # provenance from the checksums, not a fixed sentence
    base = np.array([_acc(out / n) for n in ("resnext-g32", "resnext-g32-s1")])
    # t quantile times the standard error (scipy's t.interval gives nan when both seeds agree exactly: sem = 0)
    half = stats.t.ppf(0.975, len(base) - 1) * stats.sem(base)
    lo, hi = base.mean() - half, base.mean() + half
    assert f"| ResNeXt | 32 groups | - | 2 | {100 * base.mean():.2f} | {100 * base.std(ddof=1):.2f} | [{100 * lo:.2f}, {100 * hi:.2f}] |" in text
    for prefix, cost in (("g", "connections"), ("g-macs", "macs")):  # claim 1: Welch interval, G - ResNeXt
        g = np.array([_acc(out / n) for n in (f"{prefix}-b32", f"{prefix}-b32-s1")])
        ci = stats.ttest_ind(g, base, equal_var=False).confidence_interval(0.95)
        line = f"[{cost}] G-ResNeXt at b = 32 vs ResNeXt: {100 * (g.mean() - base.mean()):+.2f} points"
        if np.isfinite(ci.low):  # Welch has no interval when every seed on both sides scored the same (64 test images)
            line += f" (95 % CI [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]; n = 2 vs 2)"
        assert line in text
    star = json.loads((out / "star-macs-b32" / "config.json").read_text())["config"]
    assert star["model"] == "resnext_cifar_tiny" and star["groups_from"].endswith("g-macs-b32/groups.json")
    r = run_cli("results", str(out))
    assert r.returncode == 0 and r.stdout == text
    started = json.loads((out / "sweep.json").read_text())["started"]
    r = run_cli(*args)  # everything finished: starts none, keeps the start date
    assert r.returncode == 0 and "start" not in r.stdout
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["started"] == started and len(meta["resumed"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
@pytest.mark.parametrize("protocol", ["gpu-fast", "gpu"])
def test_gpu_protocols_rehearse_on_the_cpu(tmp_path, protocol):
    """Both GPU protocols run end to end on the CPU at rehearsal size (1 epoch, 128 images, 2 seeds per arm)."""
    stats = pytest.importorskip("scipy.stats")
    out = tmp_path / protocol
    smaller = [] if protocol == "gpu-fast" else [  # ResNeXt-29 costs minutes per run on 2 cores: its CPU-sized sibling
        "--model", "g_resnext_cifar_small", "--plain-model", "resnext_cifar_small"]
    r = run_cli("sweep", "--protocol", protocol, "--data-dir", str(SHARED), "--out", str(out), *REHEARSAL, *smaller,
                "--results", str(tmp_path / "results.md"))
    assert r.returncode == 0, r.stdout + r.stderr
    text = render_results([out], tmp_path / "figures")
    assert "Missing runs" not in text and f"## Protocol `{protocol}`" in text
    assert (tmp_path / "figures" / f"groups_{protocol}.png").exists() and f"(figures/groups_{protocol}.png)" in text
    if protocol == "gpu-fast":
        fixed = np.array([_acc(out / n) for n in ("fastnet-g16", "fastnet-g16-s1")])
        learned = np.array([_acc(out / n) for n in ("g-macs-b16", "g-macs-b16-s1")])
        ci = stats.ttest_ind(learned, fixed, equal_var=False).confidence_interval(0.95)
        assert "At equal cost: learned groups against fixed uniform groups" in text
        assert f"G-FastNet learned under a macs budget b = 16 vs fixed G = 16: {100 * (learned.mean() - fixed.mean()):+.2f} " \
               f"points (95 % CI [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]; n = 2 vs 2)" in text
        cfg = json.loads((out / "g-macs-b16" / "config.json").read_text())["config"]
        assert cfg["nesterov"] and cfg["tta"] == "flip" and cfg["lookahead"] == 5 and cfg["cost"] == "macs"
    else:
        cfg = json.loads((out / "g-b32" / "config.json").read_text())["config"]
        assert cfg["freeze_groups_at"] == "0.3" and cfg["label_smoothing"] == 0.1
        assert "Training options beyond the schedule: `--freeze-groups-at 0.3` for the runs that learn groups" in text


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_stopping_a_sweep_ends_its_busy_workers():
    # A SIGTERM to `dgconv sweep` ends the pool through stop while a run is in flight; shutdown() drops the
    # executor's process table, so stop must take the workers first (it once failed there with a traceback).
    import time

    from dgconv.lab.launchers import LocalPool as _executor, stop as _stop

    ex = _executor(1)
    future = ex.submit(_sleep, 600)
    deadline = time.time() + PATIENCE
    while not getattr(ex, "_processes", None) and time.time() < deadline:
        time.sleep(0.05)
    procs = list(ex._processes.values())
    assert procs and future.running() or not future.done()
    started = time.time()

    def gone(pid: int) -> bool:  # asked of the OS: the pool's thread may reap a worker before multiprocessing does
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended
        except FileNotFoundError:
            return True

    try:
        _stop(ex)
        while not all(gone(p.pid) for p in procs) and time.time() - started < 300:
            time.sleep(0.05)
        assert all(gone(p.pid) for p in procs)
        assert time.time() - started < 300  # terminated, not waited out (the worker sleeps for 600 s)
    finally:  # whatever happened, leave no sleeping worker behind
        for p in procs:
            p.kill()


@pytest.mark.parametrize("rhos, verdict", [
    ([0.87], "not enough seeds** (a single run)"),
    ([0.87, 0.87], "not resolved at this n** (all 2 runs gave the same value"),  # a zero-width interval is no evidence
    ([0.8, 0.9, 0.95], "agrees** (the 95 % interval lies above 0)"),
    ([-0.5, -0.6, -0.7], "disagrees** (the 95 % interval lies below 0)"),
    ([-0.5, 0.6, 0.1], "not resolved at this n** (the 95 % interval contains 0)"),
])
def test_claim3_verdict_reads_the_interval(rhos, verdict):
    from types import SimpleNamespace

    from dgconv.lab.results import _claim3

    arm = SimpleNamespace(arm=SimpleNamespace(kind="g"), rows=[SimpleNamespace(depth_rho=r) for r in rhos])
    line = _claim3(SimpleNamespace(arms=[arm]), 3)
    assert f"Verdict: **{verdict}" in line and f"over {len(rhos)} G-ResNeXt runs" in line


def test_a_sweep_directory_holds_one_protocol(tmp_path):
    """Continuing a sweep with other settings (a changed protocol, another --epochs) would put runs of both into one
    results table under the new settings' description: refused, naming what differs; harmless fields may change."""
    from dgconv.errors import ConfigError
    from dgconv.lab.sweep import run_sweep

    out = tmp_path / "sweep"
    recorded = dataclasses.asdict(dataclasses.replace(PROTOCOLS["cpu"], weight_decay=1e-3, parallel=2))
    (out / "resnext-g32").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"protocol": recorded, "started": "then"}))
    (out / "resnext-g32" / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 0.5}) + "\n")
    with pytest.raises(ConfigError, match=r"other settings \(weight_decay: 0\.001 -> 0\.0005\)"):
        run_sweep("cpu", out, tmp_path / "no-data")
    with pytest.raises(ConfigError, match=r"epochs: 3 -> 5; weight_decay"):
        run_sweep("cpu", out, tmp_path / "no-data", epochs=5)
    # the recorded settings as overrides pass the check (and stop at the missing data, before any run starts)
    with pytest.raises(DGConvError) as e:
        run_sweep("cpu", out, tmp_path / "no-data", weight_decay=1e-3)
    assert "other settings" not in str(e.value)
    (out / "resnext-g32" / "metrics.jsonl").unlink()  # nothing recorded yet: a new protocol may take the directory
    with pytest.raises(DGConvError) as e:
        run_sweep("cpu", out, tmp_path / "no-data")
    assert "other settings" not in str(e.value)


def _no_training(options: dict) -> int:
    """A runner for the tests below: trains nothing; the run named g-b32 'fails'."""
    return 1 if options.get("out", "").endswith("/g-b32") else 0


def test_one_sweep_per_directory_and_phase_two_only_from_finished_runs(tmp_path):
    """Two sweeps on one directory: the second is refused (it once reported 'run(s) failed' for runs the first
    finished). A star run is not started from a source run that has not finished (it once trained from epoch-1
    groups)."""
    from dgconv.errors import RunInUseError
    from dgconv.lab.sweep import SWEEP_LOCK, SweepError, _lock_sweep, run_sweep

    out = tmp_path / "s"
    out.mkdir()
    fd = _lock_sweep(out)
    try:
        with pytest.raises(RunInUseError, match=f"in use by another dgconv sweep \\(PID {os.getpid()}\\)"):
            run_sweep("cpu", out, tmp_path / "no-data", runner=_no_training)
    finally:
        os.close(fd)
    if not HAS_CIFAR:
        pytest.skip("the rest needs the CIFAR-10 copy (the sweep records its checksums first)")
    with pytest.raises(SweepError) as e:
        run_sweep("cpu", out, SHARED, runner=_no_training, max_seeds=1, epochs=1, parallel=1)
    failed = str(e.value)
    assert "g-b32" in failed and "star-b32" in failed  # its source failed
    assert "star-macs-b96" not in failed  # its source 'finished' with no epoch recorded: it waits, it is not failed
    assert not any((out / n / "config.json").exists() for n in ("star-b32", "star-b96", "star-macs-b96"))
    assert not (out / SWEEP_LOCK).exists()


def test_an_empty_group_spec_is_refused(tmp_path):
    (tmp_path / "g.json").write_text("{}")
    r = cli("train", "--groups-from", str(tmp_path / "g.json"), "--model", "resnext_digits", "--budget", "none",
            "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "names no layer's groups" in r.stderr and not (tmp_path / "r").exists()


def test_gpu_fair_arms_and_the_hand_set_rule():
    """gpu-fair's hand-set arms: contiguous, shuffled and rule-set groups at <= the uniform arm's MACs, 8 seeds at
    b = 16; the rule's groups travel as a groups.json written by the sweep; run names parse back to their arms."""
    from dgconv import create_model
    from dgconv.lab.arms import constant_width_groups
    from dgconv.convert.profile import profile
    from dgconv.lab.names import RunName

    p = PROTOCOLS["gpu-fair"]
    runs = planned_runs(p)
    names = [str(r.name) for r in runs]
    for key in ("fastnet-g16", "fastnet_shuffle-g16", "fastnet_width-g16", "g-macs-b16"):
        assert sum(n == key or n.startswith(key + "-s") for n in names) == 8, key
    for key in ("fastnet-g4", "fastnet_shuffle-g4", "fastnet_width-g4", "g-macs-b4", "g-b4", "g-b16", "star-macs-b4"):
        assert sum(n == key or n.startswith(key + "-s") for n in names) == 3, key
    assert all(RunName.parse(n) is not None and str(RunName.parse(n)) == n for n in names)
    for b in (4, 16):
        spec = constant_width_groups("fastnet", b)
        uniform = profile(create_model("fastnet", num_classes=10, groups=b), (3, 32, 32)).gconv_macs
        ruled = profile(create_model("fastnet", num_classes=10, groups=spec), (3, 32, 32)).gconv_macs
        assert ruled <= uniform and ruled > uniform / 2  # equal cost or a little cheaper, never more
        assert spec["block1.conv1"] <= spec["block3.conv2"]  # fewer groups where a layer has few channels
        run = next(r for r in runs if str(r.name) == f"fastnet_width-g{b}")
        assert run.files[f"fastnet_width-g{b}.groups.json"]["groups"] == spec
        assert run.options["groups_from"] == f"{{sweep}}/fastnet_width-g{b}.groups.json"
    assert next(r for r in runs if str(r.name) == "fastnet_shuffle-g16").options["model"] == "fastnet_shuffle"


def test_a_channel_shuffle_connects_consecutive_group_convolutions():
    """Contiguous groups twice in a row: an output channel sees one group's inputs; with the shuffle, all of them."""
    import torch

    from dgconv import create_model

    def inputs_seen(name):
        torch.manual_seed(0)
        net = create_model(name, num_classes=10, groups=16).eval()
        x = torch.randn(1, 64, 16, 16, requires_grad=True)
        net.block2(x)[0, 0].sum().backward()
        return int((x.grad.abs().sum(dim=(0, 2, 3)) > 0).sum())

    assert inputs_seen("fastnet") == 64 // 16  # disconnected towers: one group of block2.conv1's inputs
    assert inputs_seen("fastnet_shuffle") == 64


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
def test_gpu_fair_rehearsal_renders_the_strongest_hand_set_comparison(tmp_path):
    """gpu-fair's b = 16 arms at rehearsal size on the CPU: every hand-set arm trains, and the learned arm is compared
    with the strongest of them, with its interval."""
    import dataclasses

    from dgconv.cli import run_train
    from dgconv.lab.sweep import run_sweep

    fair = PROTOCOLS["gpu-fair"]
    arms = tuple(a for a in fair.arms if (a.kind == "plain" and a.value in (1, 16)) or (a.kind, a.value, a.cost) == ("g", 16, "macs"))
    p = dataclasses.replace(fair, arms=tuple(dataclasses.replace(a, seeds=a.seeds[:2]) for a in arms))
    assert {a.model or a.rule for a in p.arms} == {None, "fastnet_shuffle", "width"} and len(p.arms) == 5
    out = tmp_path / "fair"
    run_sweep(p, out, SHARED, runner=run_train, epochs=1, limit_train=128, limit_test=64, batch_size=64,
              device="cpu", amp=False, parallel=2)
    text = (out / "results.md").read_text()
    assert "Missing runs" not in text and (out / "fastnet_width-g16.groups.json").exists()
    assert "Hand-set fastnet_shuffle, 16 groups vs fixed G = 16" in text
    assert "Hand-set FastNet, rule 'width'" in text
    assert "learned under a macs budget b = 16 vs" in text and "Learned at least as accurate" in text


def test_the_answer_section_against_scipy_from_the_committed_runs():
    """'When does learning groups pay?' for results/gpu-fast, b = 16: the difference and Welch interval recomputed
    with SciPy from the run directories' metrics.jsonl."""
    import re
    from pathlib import Path

    stats = pytest.importorskip("scipy.stats")
    from dgconv.lab.answer import answer
    from dgconv.lab.sweepdata import load_sweep

    root = Path(__file__).resolve().parents[2] / "results" / "gpu-fast"

    def accs(name):
        out = []
        for d in sorted(root.glob(f"{name}*")):
            if re.fullmatch(rf"{name}(-s\d+)?", d.name):
                out.append(json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"])
        return np.array(out)

    g, f = accs("g-macs-b16"), accs("fastnet-g16")
    ci = stats.ttest_ind(g, f, equal_var=False).confidence_interval(0.95)
    line = next(ln for ln in answer([load_sweep(root)]) if "gpu-fast, b = 16" in ln)
    want = f"{100 * (g.mean() - f.mean()):+.2f} points (95 % CI [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]; n = {len(g)} vs {len(f)})"
    assert want in line and "contiguous G = 16" in line and "**agrees**" in line


def test_the_cpu_fair_headline_against_scipy_from_the_committed_runs():
    """docs/results.md's headline for results/cpu-fair: the learned arm (b = 16, MAC budget) against the hand-set arm
    with the highest mean accuracy at b = 16 (contiguous, shuffle, width rule), difference and Welch interval
    recomputed with SciPy from the run directories' metrics.jsonl, and the words the interval calls for."""
    from pathlib import Path

    stats = pytest.importorskip("scipy.stats")
    from dgconv.lab.answer import answer
    from dgconv.lab.sweepdata import load_sweep

    root = Path(__file__).resolve().parents[2] / "results" / "cpu-fair"

    def accs(name):
        return cpu_fair_accs(root, name)

    hand = {"fastnet-g16": "fastnet, contiguous G = 16", "fastnet_shuffle-g16": "G = 16 with a channel shuffle",
            "fastnet_width-g16": "fastnet with groups by the rule 'width'"}
    runs = {name: accs(name) for name in hand}
    g = accs("g-macs-b16")
    if len(g) < 2 or any(len(v) < 2 for v in runs.values()):
        pytest.skip("cpu-fair's b = 16 arms have fewer than 2 finished seeds each")
    best = max(runs, key=lambda k: runs[k].mean())
    ci = stats.ttest_ind(g, runs[best], equal_var=False).confidence_interval(0.95)
    line = next(ln for ln in answer([load_sweep(root)]) if ln.startswith("**Headline (cpu-fair, b = 16"))
    want = (f"{100 * (g.mean() - runs[best].mean()):+.2f} points (95 % CI [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]; "
            f"n = {len(g)} vs {len(runs[best])})")
    words = "beats" if ci.low > 0 else "LOSES to" if ci.high < 0 else "are not told apart"
    assert want in line and hand[best] in line and words in line, line


@pytest.mark.parametrize("learned_b64", [(1.00, 1.02), (0.50, 0.60)])
def test_the_cpu_fair_comparison_at_equal_measured_time(tmp_path, learned_b64):
    """At equal or lower measured time: among the hand-set arms whose fastest pass is no slower than the learned
    arm's slowest, the most accurate, recomputed with SciPy from the committed runs' metrics.jsonl; with a synthetic
    latency document (an arm slower at batch 64 drops out; when every hand-set arm is slower, none is compared)."""
    import re
    import shutil
    from pathlib import Path

    stats = pytest.importorskip("scipy.stats")
    from dgconv.lab.fair import fair_answer, write_latency
    from dgconv.lab.sweepdata import load_sweep

    root = Path(__file__).resolve().parents[2] / "results" / "cpu-fair"
    sweep = tmp_path / "cpu-fair"
    shutil.copytree(root, sweep, ignore=shutil.ignore_patterns("*.pt", "latency.json"))

    def accs(name):
        return cpu_fair_accs(sweep, name)

    names = ["fastnet-g16", "fastnet_shuffle-g16", "fastnet_width-g16", "g-macs-b16"]
    runs = {n: accs(n) for n in names}
    if any(len(v) < 2 for v in runs.values()):
        pytest.skip("cpu-fair's b = 16 arms have fewer than 2 finished seeds each")

    def timed(b1, b64):
        return {"b1": sum(b1) / 2, "range_b1": list(b1), "b64": sum(b64) / 2, "range_b64": list(b64)}

    write_latency(sweep, {"machine": "test", "command": "test", "commit": "0" * 40, "arms": {
        "fastnet-g16": timed((1.0, 1.0), (1.0, 1.0)),
        "fastnet_shuffle-g16": timed((1.05, 1.08), (1.20, 1.25)),   # slower than the learned arm at batch 64
        "fastnet_width-g16": timed((1.0, 1.0), (1.01, 1.03)),       # overlaps the learned arm at batch 64
        "g-macs-b16": timed((1.09, 1.11), learned_b64)}})
    line = next(ln for ln in fair_answer(load_sweep(sweep)) if ln.startswith("- **cpu-fair, learned under a macs budget b = 16**"))
    assert "batch 1: the same arm and difference" in line, line  # every hand-set arm is as fast at batch 1
    if learned_b64[1] < 1.0:
        assert "batch 64: every hand-set arm is slower, so none is at equal time" in line, line
        return
    best = max(["fastnet-g16", "fastnet_width-g16"], key=lambda k: runs[k].mean())
    g = runs["g-macs-b16"]
    ci = stats.ttest_ind(g, runs[best], equal_var=False).confidence_interval(0.95)
    want = (f"batch 64: vs {'fastnet, contiguous G = 16' if best == 'fastnet-g16' else 'fastnet with groups by the rule'}")
    at64 = line.split("batch 64:")[1]
    got = re.search(r"([+-]\d+\.\d+) points \(95 % CI \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]; n = (\d+) vs (\d+)\)", at64)
    assert got is not None, line
    # two decimals as printed (a tie at the third decimal may round either way in another summation order)
    assert np.allclose([float(x) for x in got.groups()[:3]], [100 * (g.mean() - runs[best].mean()), 100 * ci.low,
                                                             100 * ci.high], atol=0.0051), line
    assert (int(got.group(4)), int(got.group(5))) == (len(g), len(runs[best]))
    words = "more accurate" if ci.low > 0 else "LESS accurate" if ci.high < 0 else "no difference resolved"
    assert want in line and words in at64, line


def test_the_cpu_fair_depth_control_against_scipy_from_the_committed_runs():
    """The depth control (one width in every block) is read from its own arms: per finished run Spearman(depth,
    groups) with SciPy from groups.json, their mean and 95 % t interval; the growing-width arms appear only as
    labelled contrast."""
    from pathlib import Path

    stats = pytest.importorskip("scipy.stats")
    from dgconv.lab.fair import fair_answer
    from dgconv.lab.sweepdata import load_sweep

    root = Path(__file__).resolve().parents[2] / "results" / "cpu-fair"
    rhos = {}
    for name in ("depth-g-b16", "depth-g-macs-b16"):
        rs = []
        for d in cpu_fair_runs(root, name):
            if finished_acc(d) is not None:
                groups = list(json.loads((d / "groups.json").read_text())["groups"].values())
                rs.append(stats.spearmanr(range(len(groups)), groups).statistic)
        rhos[name] = np.array(rs)
    if any(len(r) < 2 or np.isnan(r).any() or np.std(r) == 0 for r in rhos.values()):
        pytest.skip("the depth control has fewer than 2 finished seeds an arm (or an undefined correlation)")
    text = "\n".join(fair_answer(load_sweep(root)))
    section = text.split("**The depth control**")[1].split("\n\n**")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("- ")]
    for name, what, r in (("depth-g-b16", "connections budget", rhos["depth-g-b16"]),
                          ("depth-g-macs-b16", "macs budget", rhos["depth-g-macs-b16"])):
        lo, hi = stats.t.interval(0.95, len(r) - 1, loc=r.mean(), scale=stats.sem(r))
        want = f"{r.mean():+.2f}, 95 % CI [{max(-1, lo):+.2f}, {min(1, hi):+.2f}] over {len(r)} runs"
        assert any(f"learned under a {what} b = 16 (g_fastnet_const)" in ln and want in ln for ln in lines), section
    assert all("g_fastnet_const" in ln or ln.startswith("- For contrast (widths grow with depth)") for ln in lines), section
    assert lines[0].find("g_fastnet_const") > 0 and lines[1].find("g_fastnet_const") > 0
