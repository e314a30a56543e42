"""The README's quick start is what CI runs, its links resolve, and the examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import PATIENCE

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_command():
    main_job, tests = quick_start()
    assert main_job.endswith("dgconv train")
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci, "the README's test command must be the one .ci/run runs"
    assert "torch==2.13.0" in ci


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_example_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "groups_tour.py")], capture_output=True, text=True, timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    assert "groups after one step" in r.stdout


RESULTS = ["cpu-fair", "gpu-fast", "gpu", "cpu", "gpu-0.1"]  # the sweeps docs/results.md renders, in its order


def test_results_document_matches_the_committed_runs(tmp_path):
    """docs/results.md is regenerated from results/ (the command below), never hand-edited."""
    from dgconv.lab.results import render_results

    sweeps = [ROOT / "results" / name for name in RESULTS if (ROOT / "results" / name / "sweep.json").exists()]
    expected = render_results(sweeps, tmp_path / "figures")
    assert (ROOT / "docs" / "results.md").read_text() == expected, (
        "docs/results.md is stale: run `dgconv results "
        + " ".join(f"results/{s.name}" for s in sweeps) + " --out docs/results.md --figures docs/figures`"
    )


def test_the_guide_objectives_table_is_recomputed_from_its_runs():
    """docs/guide.md "A budget that binds by learning": each row from results/objectives-0.2 (the script's summary)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from objectives import summarize
    finally:
        sys.path.pop(0)
    guide = (ROOT / "docs" / "guide.md").read_text()
    runs = sorted((ROOT / "results" / "objectives-0.2").iterdir())
    assert len(runs) == 4
    for run in runs:
        _, cost, objective = run.name.split("-")
        s = summarize(run)
        row = (f"| {cost} | {objective} | {s['epochs_with_projection']} of {s['epochs']} | {s['gates_closed']} | "
               f"{s['max_zeta_over_o_before_projection']:.3f} | {s['final_zeta_over_o']:.3f} | {100 * s['test_acc']:.2f} % | "
               f"{' '.join(map(str, s['groups']))} |")
        assert row in guide, row


def test_the_readme_main_job_numbers_are_those_of_the_recorded_run():
    """The README's main-job sentence quotes the recorded run of the digits default (the suite's defaults test checks
    a fresh run reaches that accuracy within a point)."""
    import json

    readme = (ROOT / "README.md").read_text()
    run = ROOT / "results" / "objectives-0.2" / "digits-connections-paper"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["model"] == "g_resnext_digits" and cfg["config"]["budget"] == 8  # the defaults
    assert f"{len(rows)} epochs; final test accuracy {100 * rows[-1]['test_acc']:.2f} %" in readme
    assert f"the best epoch {100 * max(r['test_acc'] for r in rows):.0f} %" in readme
    assert f"zeta/o {rows[-1]['zeta_over_o']:.3f}" in readme
