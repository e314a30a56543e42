"""What a hostile tester found in 0.2 plus a round (issue 31): config files that could hang or lie, replays that did
not repeat, tracebacks instead of messages. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ENV, PATIENCE, cli, metrics


def one_line_error(r, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words:
        assert w in r.stderr, r.stderr


def alias_bomb(levels: int = 9) -> str:
    lines = ["epochs: [&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        lines.append(f", &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "".join(lines) + "]\n"


def test_a_yaml_alias_bomb_is_a_short_message(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "b.yaml").write_text(alias_bomb())
    started = time.time()
    r = cli("train", "--config", str(tmp_path / "b.yaml"), "--print-config")
    one_line_error(r, "'epochs'", "must be int")
    assert len(r.stderr) < 400 and time.time() - started < PATIENCE


def test_config_files_are_checked_before_they_are_read(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text('model: "' + "g" * (2 << 20) + '"\n')
    one_line_error(cli("train", "--config", str(big), "--print-config"), "at most 1,048,576")
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    one_line_error(cli("train", "--config", str(fifo), "--print-config"), "not a regular file")  # never opened
    one_line_error(cli("train", "--config", "/dev/zero", "--print-config"), "use a .yaml")
    (tmp_path / "d.json").mkdir()
    one_line_error(cli("train", "--config", str(tmp_path / "d.json"), "--print-config"), "not a regular file")


def test_a_process_substitution_is_refused_unread():
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m dgconv train --config <(yes) --print-config"],
                       capture_output=True, text=True, env=ENV, timeout=PATIENCE)
    assert r.returncode == 2 and "use a .yaml" in r.stderr, r.stderr


@pytest.mark.parametrize("text,suffix,key,value", [
    ("weight_decay: 5e-4\n", ".yaml", "weight_decay", 5e-4),       # YAML 1.1 would read a string
    ("hflip: on\n", ".yaml", "hflip", "on"),                         # YAML 1.1 would read True
    ("budget: none\ngroups: null\n", ".yaml", "budget", None),
    ('budget = "none"\n', ".toml", "budget", None),                  # TOML has no null
    ('mean = "none"\nstd = "none"\n', ".toml", "mean", None),
])
def test_config_files_read_as_written(tmp_path, text, suffix, key, value):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    p = tmp_path / f"c{suffix}"
    p.write_text(text)
    r = cli("train", "--config", str(p), "--print-config")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[key] == value


@pytest.mark.parametrize("text,suffix,words", [
    ('{"epochs": 2, "epochs": 3}', ".json", ("'epochs' is given twice",)),
    ("epochs: 2\nepochs: 3\n", ".yaml", ("'epochs' is given twice",)),
    ("limit-train: 5\nlimit_train: 6\n", ".yaml", ("'limit_train' is given twice",)),
    ("tta: no\n", ".yaml", ("--tta must be one of",)),
    ("device: cuda:7\n", ".yaml", ("--device must be one of", "'cuda:7'")),
    ("device: meta\n", ".yaml", ("--device must be one of",)),
])
def test_config_file_mistakes_are_named(tmp_path, text, suffix, words):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    p = tmp_path / f"c{suffix}"
    p.write_text(text)
    one_line_error(cli("train", "--config", str(p), "--print-config"), *words)


def test_flags_override_every_file_value(tmp_path):
    pytest.importorskip("yaml")
    p = tmp_path / "c.yaml"
    p.write_text("nesterov: true\nmomentum: 0.9\ntarget: 1000000\ngroups: 4\nmean: [0.5]\nstd: [0.5]\n"
                 "freeze_groups_at: '0.5'\nmodel: g_resnext_digits\n")
    groups = tmp_path / "g.json"
    groups.write_text(json.dumps({"layer1.0.conv2": 2}))
    r = cli("train", "--config", str(p), "--no-nesterov", "--budget", "8", "--groups-from", str(groups), "--mean",
            "none", "--std", "none", "--freeze-groups-at", "none", "--print-config")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["nesterov"] is False and cfg["budget"] == 8 and cfg["target"] is None
    assert cfg["groups"] is None and cfg["groups_from"] == str(groups)
    assert cfg["mean"] is None and cfg["std"] is None and cfg["freeze_groups_at"] is None


def test_a_replay_of_a_run_resumed_with_more_epochs_is_refused_with_the_reason(tmp_path):
    run = tmp_path / "e"
    assert cli("train", "--epochs", "1", "--limit-train", "128", "--out", str(run), "--no-progress").returncode == 0
    assert cli("train", "--resume", str(run), "--epochs", "2", "--no-progress").returncode == 0
    history = json.loads((run / "config.json").read_text())["history"]
    assert history[-1]["epochs"] == [1, 2]
    r = cli("train", "--config", str(run / "config.json"), "--out", str(tmp_path / "r"))
    one_line_error(r, "cannot repeat its run", "--epochs 1", "--epochs 2")
    assert not (tmp_path / "r").exists()


def test_print_config_beside_resume_shows_the_resumed_run(tmp_path):
    run = tmp_path / "e"
    assert cli("train", "--epochs", "1", "--limit-train", "128", "--seed", "7", "--lr", "0.05", "--out", str(run),
               "--no-progress").returncode == 0
    r = cli("train", "--resume", str(run), "--epochs", "3", "--print-config")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert (cfg["seed"], cfg["lr"], cfg["epochs"], cfg["out"]) == (7, 0.05, 3, str(run))


def test_cuda_on_a_machine_without_one_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(cli("train", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "r")), "no CUDA device")
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "r"
    assert cli("train", "--epochs", "2", "--limit-train", "128", "--out", str(run), "--no-progress").returncode == 0
    return run


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("field,value,words", [
    ("test_acc", float("nan"), ("'test_acc' = NaN", "a fraction in [0, 1]")),
    ("train_loss", 1e308, ("'train_loss' = 1e+308", "a finite number")),
    ("test_acc", 1e308, ("'test_acc'",)),
])
def test_report_refuses_values_no_run_writes_and_leaves_no_folder(finished_run, tmp_path, field, value, words):
    run = copy_run(finished_run, tmp_path / "r")
    rows = metrics(run)
    rows[-1][field] = value
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("report", str(run), "--out", str(tmp_path / "rep"))
    one_line_error(r, *words)
    assert not (tmp_path / "rep").exists()


def test_report_refuses_groups_its_model_cannot_take(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "r")
    doc = json.loads((run / "groups.json").read_text())
    doc["groups"]["layer1.0.conv2"] = 3  # 3 groups on 32 channels
    (run / "groups.json").write_text(json.dumps(doc))
    one_line_error(cli("report", str(run), "--out", str(tmp_path / "rep")), "groups.json")
    assert not (tmp_path / "rep").exists()
    one_line_error(cli("profile", str(run)), "3")


def test_a_huge_sparse_metrics_file_is_refused_without_reading_it(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "r")
    with open(run / "metrics.jsonl", "r+b") as f:
        f.truncate(2 << 30)  # 2 GiB, sparse: costs no disk
    for args in (["report", str(run), "--out", str(tmp_path / "rep")], ["profile", str(run)]):
        one_line_error(cli(*args), "MiB")
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("protocol", ['"garbage"', '{"arms": [{"x": 1}]}', '{"budgets_by_cost": [1]}'])
def test_a_sweep_record_of_the_wrong_shape_is_one_line(tmp_path, protocol):
    sweep = tmp_path / "s"
    sweep.mkdir()
    base = {"name": "t", "label": "t", "model": "g_fastnet", "plain": "fastnet", "epochs": 1, "batch_size": 8, "lr": 0.1}
    doc = json.loads(protocol)
    proto = {**base, **doc} if isinstance(doc, dict) else doc
    (sweep / "sweep.json").write_text(json.dumps({"protocol": proto}))
    one_line_error(cli("results", str(sweep), "--out", str(tmp_path / "r.md")), "sweep.json")


@pytest.mark.parametrize("edit,words", [
    (lambda t: t["shapes"][next(iter(t["shapes"]))].__setitem__("ms", [1.0, 2.0]), ("'ms' must map",)),
    (lambda t: t.__setitem__("layers", ["a"]), ("'layers' and 'shapes' must be mappings",)),
    (lambda t: t["layers"].__setitem__(next(iter(t["layers"])), "s9"), ("names the shape 's9'",)),
])
def test_malformed_latency_tables_are_one_line(tmp_path, edit, words):
    from dgconv import LatencyTable, create_model

    model = create_model("g_resnext_digits", num_classes=10)
    table = LatencyTable.measure(model, (1, 8, 8), reps=1)
    table.save(tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    edit(doc)
    (tmp_path / "t.json").write_text(json.dumps(doc))
    r = cli("train", "--cost", "latency", "--latency-table", str(tmp_path / "t.json"), "--epochs", "1",
            "--out", str(tmp_path / "r"))
    one_line_error(r, "malformed latency table", *words)


def test_a_local_worker_ends_when_its_sweep_is_killed(tmp_path):
    """SIGKILL of the sweep process: its worker stops its run at a checkpoint (the death signal) and then ends,
    instead of waiting forever on a task pipe it holds open itself (it once stayed, 800 MB, minutes later)."""
    run, log = tmp_path / "r", tmp_path / "r.log"
    code = f"""
import time
from dgconv.cli import run_train
from dgconv.lab.launchers import LocalPool
from dgconv.lab.sweep import _train_in_worker
if __name__ == "__main__":
    pool = LocalPool(1)
    pool.submit(_train_in_worker, run_train, {{"epochs": 500, "out": {str(run)!r}, "progress": False}}, {str(log)!r})
    while not getattr(pool, "_processes", None):
        time.sleep(0.05)
    print(list(pool._processes)[0], flush=True)
    time.sleep(3600)
"""
    script = tmp_path / "controller.py"
    script.write_text(code)
    controller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=ENV)
    worker = int(controller.stdout.readline())
    deadline = time.time() + PATIENCE
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:  # the run is under way
        time.sleep(0.1)
    controller.kill()
    controller.wait(PATIENCE)

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    while alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    try:
        assert not alive(worker), "the orphaned worker is still alive"
        assert (run / "last.pt").exists() and "stopped by SIGTERM" in log.read_text()
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_0_1_runs_config_json_reads_as_that_run():
    """dgconv 0.1 wrote config.json without a format marker; it once failed with "unknown option 'config'"."""
    old = Path(__file__).resolve().parents[2] / "results" / "gpu-0.1" / "g-b32" / "config.json"
    doc = json.loads(old.read_text())
    assert "format" not in doc
    r = cli("train", "--config", str(old), "--print-config")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["model"] == doc["config"]["model"] and cfg["budget"] == doc["config"]["budget"]
    assert cfg["orders"] == "gather"  # recorded before --orders: replays with what it ran


def test_a_replay_finds_the_sweeps_files_where_the_sweep_is_now(tmp_path, finished_run):
    """A sweep committed and cloned elsewhere: its runs' config.json name the group specs by their old absolute
    paths; the replay looks them up under the run's sweep directory."""
    import shutil

    sweep = tmp_path / "moved" / "s"
    run = sweep / "r"
    shutil.copytree(finished_run, run)
    (sweep / "w.groups.json").write_text(json.dumps({"layer1.0.conv2": 2}))
    doc = json.loads((run / "config.json").read_text())
    doc["config"].update(groups_from="/gone/old/place/s/w.groups.json", budget=None, model="resnext_digits")
    (run / "config.json").write_text(json.dumps(doc))
    r = cli("train", "--config", str(run / "config.json"), "--print-config")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["groups_from"] == str(sweep / "w.groups.json")
