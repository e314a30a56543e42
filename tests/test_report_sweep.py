"""`dgconv report`, `dgconv sweep` (a miniature cpu protocol) and `dgconv results`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dgconv.protocols import PROTOCOLS, Protocol, planned_runs
from dgconv.results import render_results, spearman
from tests.test_data import HAS_CIFAR, SHARED

plt = pytest.importorskip("matplotlib")


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dgconv", *args], capture_output=True, text=True, timeout=timeout)


def png_pixels(path):
    from matplotlib import image

    return np.asarray(image.imread(str(path)))


def test_report_of_two_runs(tmp_path):
    for name, budget in (("a", "4"), ("b", "16")):
        r = run_cli("train", "--epochs", "3", "--limit-train", "256", "--budget", budget, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    r = run_cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    for fig in ("groups.png", "dynamics.png", "training.png", "macs.png"):
        px = png_pixels(tmp_path / "rep" / fig)
        assert px.shape[0] > 300 and px.shape[1] > 600 and px.std() > 0.05, fig  # a real, non-blank picture
    text = (tmp_path / "rep" / "summary.md").read_text()
    groups = json.loads((tmp_path / "a" / "groups.json").read_text())["groups"]
    for name, g in groups.items():
        assert f"| {name} |" in text and f"| {g} |" in text
    assert "MACs deployed" in text and "zeta/o" in text and "MACs in the ResNeXt counterpart" in text
    r = run_cli("report", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_protocols_plan_tables_3_5_6():
    # the plan of a sweep recorded before budget costs existed (results/cpu, results/gpu) is unchanged
    old = Protocol("x", "x", "g_resnext_cifar_tiny", "resnext_cifar_tiny", 1, 8, 0.1)
    assert [str(r.name) for r in planned_runs(old)] == [
        "resnext-g32", "g-b32", "g-b64", "g-b96", "g-b128", "g-b32-s1", "g-b32-s2", "star-b32", "star-b96"]
    for p in PROTOCOLS.values():  # both costs side by side, three seeds for the baseline and b = 32
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
        assert by["star-macs-b96"].phase == 2 and "{sweep}/g-macs-b96/groups.json" in by["star-macs-b96"].args
        assert "--cost" in by["g-macs-b64"].args and by["g-macs-b64"].args[by["g-macs-b64"].args.index("--cost") + 1] == "macs"
        assert "--cost" not in by["g-b64"].args
        assert [r.phase for r in runs] == sorted(r.phase for r in runs)
    assert PROTOCOLS["gpu"].amp and PROTOCOLS["gpu"].channels_last and PROTOCOLS["gpu"].device == "cuda"


def test_short_schedules_keep_warmup_valid():
    import dataclasses

    p = dataclasses.replace(PROTOCOLS["gpu"], epochs=1)
    args = planned_runs(p)[0].args
    assert float(args[args.index("--warmup-epochs") + 1]) < 1


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


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
def test_miniature_cpu_sweep_and_results(tmp_path):
    """A CPU rehearsal of the cpu protocol (1 epoch, 256 images): every arm trains, the document renders from the
    run directories, its statistics match an independent recomputation, unfinished runs show as missing."""
    stats = pytest.importorskip("scipy.stats")
    out = tmp_path / "sweep"
    args = ["sweep", "--protocol", "cpu", "--data-dir", str(SHARED), "--out", str(out), "--epochs", "1",
            "--limit-train", "256", "--limit-test", "256", "--results", str(tmp_path / "results.md")]
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    planned = [str(p.name) for p in planned_runs(PROTOCOLS["cpu"])]
    assert r.stdout.count(" done") == len(planned) == 18 and "FAILED" not in r.stdout
    text = (out / "results.md").read_text()
    assert text == (tmp_path / "results.md").read_text() == render_results([out])  # regenerated from the run dirs
    for heading in ("Table 3 analogue", "Table 5 analogue", "Table 6 analogue", "claims, measured here"):
        assert heading in text
    assert "256 test images" in text and "Verdict:" in text and "Missing runs" not in text
    assert "not the official CIFAR-10 files" in text  # provenance from the checksums, not a fixed sentence

    def acc(name):
        return json.loads((out / name / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]

    # the baseline arm's mean and 95 % interval, recomputed from metrics.jsonl with SciPy
    base = np.array([acc(n) for n in ("resnext-g32", "resnext-g32-s1", "resnext-g32-s2")])
    lo, hi = stats.t.interval(0.95, 2, loc=base.mean(), scale=stats.sem(base))
    assert f"| ResNeXt | 32 groups | - | 3 | {100 * base.mean():.2f} | {100 * base.std(ddof=1):.2f} | [{100 * lo:.2f}, {100 * hi:.2f}] |" in text
    # claim 1 per cost: Welch interval of G-ResNeXt (b = 32, 3 seeds) minus the baseline
    for prefix, cost in (("g", "connections"), ("g-macs", "macs")):
        g = np.array([acc(n) for n in (f"{prefix}-b32", f"{prefix}-b32-s1", f"{prefix}-b32-s2")])
        ci = stats.ttest_ind(g, base, equal_var=False).confidence_interval(0.95)
        assert f"[{cost}] G-ResNeXt at b = 32 vs ResNeXt: {100 * (g.mean() - base.mean()):+.2f} points (95 % CI " \
               f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]; n = 3 vs 3)" in text
    star = json.loads((out / "star-macs-b32" / "config.json").read_text())["config"]
    assert star["model"] == "resnext_cifar_tiny" and star["groups_from"].endswith("g-macs-b32/groups.json")
    r = run_cli("results", str(out))
    assert r.returncode == 0 and r.stdout == text
    # resumable: a second invocation finds every run finished and starts none, and keeps the start date
    started = json.loads((out / "sweep.json").read_text())["started"]
    r = run_cli(*args[:-2])
    assert r.returncode == 0 and "start" not in r.stdout
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["started"] == started and len(meta["resumed"]) == 1
    assert f"sweep started {started}, resumed {meta['resumed'][0]}." in (out / "results.md").read_text()
    # a run that did not finish is missing, never a number
    (out / "g-b64" / "metrics.jsonl").write_text("")
    text = render_results([out])
    assert "Missing runs (planned, not finished; not in any table or statistic): g-b64 (0/1 epochs)." in text
    assert "| G-ResNeXt | b = 64 | connections |" not in text
