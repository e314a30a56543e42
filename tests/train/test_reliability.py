"""Run directories under crashes, clashes, crafted files, full and read-only disks, signals and closed pipes:
every case ends with a clear message, a non-zero exit where it failed, and no run data lost or mixed."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgconv.errors import RunInUseError
from dgconv.train.checkpoint import load_checkpoint
from dgconv.train.rundir import RunWriter
from dgconv.train.runs import best_checkpoint, load_run
from tests.helpers import (
    ENV,
    PATIENCE,
    cli,
    metrics,
    strip_time,
    wait_for_handlers,
    wait_until,
)

TRAIN = ["train", "--epochs", "3", "--limit-train", "256", "--limit-test", "128", "--budget", "4", "--no-progress"]
ONE_THREAD = {**ENV, "OMP_NUM_THREADS": "1"}


def start(*args: str, env: dict = ONE_THREAD, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dgconv", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(v, b[k]) if isinstance(v, torch.Tensor) else v == b[k] for k, v in a.items())


def temporaries(run: Path) -> list[str]:
    return [p.name for p in run.glob(".*.tmp")]


@pytest.mark.slow
def test_a_crash_at_any_point_resumes_bit_identical_with_a_consistent_best(tmp_path):
    """SIGKILL at every commit point of an epoch (and once at a random moment), then resume: the metrics, the last
    checkpoint and best.pt equal those of a run that was never interrupted, and no temporary is left."""
    faults = ["write:last.pt#2", "commit:last#2", "write:best.pt#1", "commit:torn#2", "commit:metrics#2"]
    procs = {"ref": start(*TRAIN, "--out", str(tmp_path / "ref"))}
    for i, fault in enumerate(faults):
        procs[fault] = start(*TRAIN, "--out", str(tmp_path / f"f{i}"), env={**ONE_THREAD, "DGCONV_FAULT": fault})
    procs["random"] = start(*TRAIN, "--out", str(tmp_path / "random"))
    wait_until((tmp_path / "random" / "metrics.jsonl").exists, "the first epoch of the randomly killed run",
               proc=procs["random"])
    time.sleep(random.uniform(0.0, 1.5))  # any moment after it: every case below is checked, whatever it hits
    procs["random"].send_signal(signal.SIGKILL)
    for name, p in procs.items():
        p.wait(timeout=PATIENCE)
        if name == "ref":
            assert p.returncode == 0, p.stderr.read()
        elif name != "random":
            assert p.returncode == -signal.SIGKILL, f"{name} was not killed at its fault point: {p.stderr.read()}"
    ref = tmp_path / "ref"
    ref_last, ref_best = load_checkpoint(ref / "last.pt"), load_checkpoint(ref / "best.pt")
    runs = [tmp_path / f"f{i}" for i in range(len(faults))] + [tmp_path / "random"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed processes (OMP_NUM_THREADS=1)
    try:
        for run, fault in zip(runs, faults + ["random"]):
            if not (run / "last.pt").exists():  # killed before the first checkpoint: nothing to resume
                assert fault == "random"
                continue
            done = int(load_checkpoint(run / "last.pt")["epoch"])  # the random kill may land after the last epoch
            assert done < 3 or fault == "random", fault
            r = cli("train", "--resume", str(run), "--no-progress")
            assert r.returncode == 0, (fault, r.stderr)
            if fault.startswith("commit:torn"):
                assert "dropped a torn final line" in r.stdout and "restored the line of epoch 2" in r.stdout
            if fault.startswith("write:"):
                assert "removed ." in r.stdout and ".tmp, a temporary left by a killed write" in r.stdout
            assert strip_time(metrics(run)) == strip_time(metrics(ref)), fault
            last = load_checkpoint(run / "last.pt")
            assert last["epoch"] == 3 and same_tensors(last["model"], ref_last["model"]), fault
            best = load_checkpoint(best_checkpoint(run))
            assert best["epoch"] == ref_best["epoch"] == ref_last["best_epoch"], fault
            assert same_tensors(best["model"], ref_best["model"]), fault
            assert temporaries(run) == [], fault
            assert json.loads((run / "groups.json").read_text())["groups"] == metrics(ref)[-1]["groups"]
            cfg = json.loads((run / "config.json").read_text())  # the original start is kept, the resume recorded
            if done == 3:  # nothing was left to train: the resume changed nothing and said so
                assert "already finished its 3 epochs" in r.stdout and "history" not in cfg
            else:
                assert [h["from_epoch"] for h in cfg["history"]] == [done], fault
            assert "--out" in cfg["environment"]["argv"] and "--resume" not in cfg["environment"]["argv"]
    finally:
        torch.set_num_threads(threads)


def test_best_checkpoint_of_a_run_that_crashed_between_the_two_checkpoints(tmp_path):
    """Before any resume, readers (deploy --best) get the best epoch's weights, not a stale best.pt."""
    run = tmp_path / "run"
    assert cli(*TRAIN[:2], "2", *TRAIN[3:], "--out", str(run)).returncode == 0
    # what a crash between writing last.pt and best.pt at epoch 2 leaves when epoch 2 was the best: last.pt says the
    # best epoch is 2, best.pt still holds epoch 1
    last = torch.load(run / "last.pt", weights_only=True)
    stale = dict(last, epoch=1)
    last["best_epoch"] = 2
    torch.save(last, run / "last.pt")
    torch.save(stale, run / "best.pt")
    assert best_checkpoint(run) == run / "last.pt"
    r = cli("deploy", str(run), "--best", "--out", str(tmp_path / "d.pt"))
    assert r.returncode == 0 and "last.pt" in r.stdout


def test_two_writers_of_one_run_directory(tmp_path):
    run = tmp_path / "same"
    with RunWriter(run):
        with pytest.raises(RunInUseError, match=f"in use by another dgconv process \\(PID {os.getpid()}\\)"):
            RunWriter(run)
    RunWriter(run).close()  # released on exit: the next writer gets it
    # the CLI: a second `dgconv train --out same` while the first runs
    first = start("train", "--epochs", "1000", "--out", str(run / "r"), "--no-progress")
    try:  # config.json is written after the lock is taken: from then on the first process holds the directory
        wait_until((run / "r" / "config.json").exists, "the first run's config.json", proc=first)
        r = cli("train", "--epochs", "1", "--out", str(run / "r"))
        assert r.returncode == 2 and f"in use by another dgconv process (PID {first.pid})" in r.stderr
        r = cli("train", "--resume", str(run / "r"))
        assert r.returncode == 2 and "in use" in r.stderr or "no checkpoint" in r.stderr
    finally:
        first.kill()
        first.wait()
    assert "Traceback" not in r.stderr


def test_a_closing_writer_removes_its_lock_and_a_writer_that_opened_the_old_file_opens_the_new_one(tmp_path, monkeypatch):
    import fcntl

    w = RunWriter(tmp_path / "r")
    assert (tmp_path / "r" / ".lock").read_text().split()[0] == str(os.getpid())
    w.close()
    assert not (tmp_path / "r" / ".lock").exists() and (tmp_path / "r").is_dir()
    # another writer closes (removing .lock) between our open() and our flock(): we would lock a file nobody sees
    calls = []
    real = fcntl.flock

    def flock(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            (tmp_path / "r" / ".lock").unlink()
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with RunWriter(tmp_path / "r"):
        assert len(calls) == 2  # it noticed and took the lock of the file that is there now
        held = os.open(tmp_path / "r" / ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                real(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(held)


def test_folders_that_are_not_runs_are_never_written_or_deleted(tmp_path):
    """--resume FILE.pt in an ordinary folder, and a fresh --out at a user's folder, once overwrote config.json and
    deleted every .*.tmp there. Both are refused now, before anything is touched."""
    import shutil

    run = tmp_path / "r1"
    assert cli(*TRAIN[:2], "1", *TRAIN[3:], "--out", str(run)).returncode == 0
    user = tmp_path / "p"
    user.mkdir()
    (user / "config.json").write_text('{"my": 1}\n')
    (user / ".draft.tmp").write_text("n\n")
    shutil.copy(run / "last.pt", user / "dl.pt")
    before = {q.name: q.read_bytes() for q in user.iterdir()}
    r = cli("train", "--resume", str(user / "dl.pt"), "--epochs", "2")
    assert r.returncode == 2 and "is not a dgconv run directory" in r.stderr and "--init-from" in r.stderr
    r = cli(*TRAIN[:2], "1", *TRAIN[3:], "--out", str(user))
    assert r.returncode == 2 and "not empty and not a dgconv run directory (it holds .draft.tmp, config.json, dl.pt)" in r.stderr
    assert {q.name: q.read_bytes() for q in user.iterdir()} == before
    # inside a run, a file that merely looks like a temporary is the user's, not ours
    (run / ".notes.tmp").write_text("mine")
    assert cli("train", "--resume", str(run), "--epochs", "2", "--no-progress").returncode == 0
    assert (run / ".notes.tmp").read_text() == "mine"


def test_resume_writes_to_the_named_directory_only(tmp_path):
    a, b = tmp_path / "runA", tmp_path / "runB"
    assert cli(*TRAIN[:2], "1", *TRAIN[3:], "--seed", "3", "--out", str(a)).returncode == 0
    assert cli(*TRAIN[:2], "1", *TRAIN[3:], "--seed", "7", "--out", str(b)).returncode == 0
    b_files = {p.name: p.read_bytes() for p in b.iterdir() if p.is_file() and p.name != ".lock"}
    # a checkpoint whose recorded configuration names runB, resumed from runA
    ckpt = torch.load(a / "last.pt", weights_only=True)
    ckpt["config"]["out"] = str(b)
    torch.save(ckpt, a / "last.pt")
    r = cli("train", "--resume", str(a), "--epochs", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert [m["epoch"] for m in metrics(a)] == [1, 2] and load_run(a).config["seed"] == 3
    assert {p.name: p.read_bytes() for p in b.iterdir() if p.is_file() and p.name != ".lock"} == b_files
    r = cli("train", "--resume", str(a), "--out", str(b))
    assert r.returncode == 2 and "writes there" in r.stderr
    r = cli("train", "--resume", "")
    assert r.returncode == 2 and "no run directory given" in r.stderr
    r = cli("train", "--resume", str(a))
    assert r.returncode == 0 and "already finished its 2 epochs" in r.stdout and "--epochs 3" in r.stdout
    history = json.loads((a / "config.json").read_text())["history"]
    assert [h["from_epoch"] for h in history] == [1]  # the finished run was left as it was


def test_crafted_pickles_run_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    class Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    torch.save({"format": "dgconv.checkpoint/1", "model": Evil()}, tmp_path / "evil.pt")
    torch.save({"format": "dgconv.checkpoint/1", "model": Eval()}, tmp_path / "eval.pt")
    for f in ("evil.pt", "eval.pt"):
        for args in (["train", "--resume", str(tmp_path / f)], ["deploy", str(tmp_path / f), "--out", "x.pt"],
                     ["train", "--init-from", str(tmp_path / f), "--epochs", "1"]):
            r = cli(*args)
            assert r.returncode == 2 and "holds objects outside the weights-only format" in r.stderr
            assert "weights_only=False" not in r.stderr and "Traceback" not in r.stderr
            assert "safe_globals" not in r.stderr, r.stderr  # torch's advice to allow-list the global: never
    assert not (tmp_path / "pwned").exists()
    # a state dict whose values are not tensors
    from dgconv.models import create_model

    sd = create_model("g_resnext_digits", num_classes=10).state_dict()
    sd["conv1.weight"], sd["fc.bias"] = 3, "x"
    torch.save(sd, tmp_path / "odd.pt")
    r = cli("train", "--init-from", str(tmp_path / "odd.pt"), "--epochs", "1")
    assert r.returncode == 2 and "2 value(s) are not tensors (int, str; first: conv1.weight, fc.bias)" in r.stderr


def test_torn_and_malformed_run_files(tmp_path):
    run = tmp_path / "run"
    assert cli(*TRAIN[:2], "2", *TRAIN[3:], "--out", str(run)).returncode == 0
    path = run / "metrics.jsonl"
    good = path.read_text()
    config = (run / "config.json").read_bytes()
    lines = good.splitlines()
    # a line in the middle that is not JSON: refused before anything is written, file and line named
    path.write_text(lines[0][:50] + "\n" + lines[1] + "\n")
    r = cli("train", "--resume", str(run), "--epochs", "3")
    assert r.returncode == 2 and f"{path}:1 is not a JSON line" in r.stderr
    assert (run / "config.json").read_bytes() == config
    # a line without "epoch"
    path.write_text(json.dumps({"loss": 1}) + "\n" + lines[1] + "\n")
    r = cli("train", "--resume", str(run), "--epochs", "3")
    assert r.returncode == 2 and f"{path}:1 is not an epoch record" in r.stderr
    r = cli("report", str(run), "--out", str(tmp_path / "rep"))
    assert r.returncode == 2 and f"{path}:1" in r.stderr
    # a torn last line (a crash while it was appended) is repaired from the checkpoint, with a message
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    r = cli("train", "--resume", str(run), "--epochs", "3", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "dropped a torn final line" in r.stdout and "restored the line of epoch 2" in r.stdout
    assert [m["epoch"] for m in metrics(run)] == [1, 2, 3]
    # malformed config.json: every reader names the file
    (run / "config.json").write_text("{not json")
    for args in (["report", str(run), "--out", str(tmp_path / "rep")], ["profile", str(run)]):
        r = cli(*args)
        assert r.returncode == 2 and f"{run / 'config.json'} is not valid JSON" in r.stderr, args


def test_checkpoints_that_do_not_fit_are_clear_errors(tmp_path):
    run = tmp_path / "run"
    assert cli(*TRAIN[:2], "1", *TRAIN[3:], "--out", str(run)).returncode == 0
    ckpt = torch.load(run / "last.pt", weights_only=True)
    del ckpt["optimizer"]
    ckpt["model_kwargs"]["no_such_argument"] = 1
    torch.save(ckpt, tmp_path / "odd.pt")
    r = cli("deploy", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "d.pt"))
    assert r.returncode == 2 and "cannot be built" in r.stderr and "no_such_argument" in r.stderr
    del ckpt["model_kwargs"]["no_such_argument"]
    torch.save(ckpt, tmp_path / "odd.pt")
    assert cli("deploy", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "d.pt")).returncode == 0  # no optimizer needed
    torch.save(ckpt, run / "odd.pt")  # a resume reads checkpoints of a run directory only
    r = cli("train", "--resume", str(run / "odd.pt"), "--epochs", "2")
    assert r.returncode == 2 and "optimizer" in r.stderr and "Traceback" not in r.stderr


def test_file_system_errors_are_messages(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    r = cli(*TRAIN, "--out", str(tmp_path / "a_file"))
    assert r.returncode == 2 and "a file of that name is in the way" in r.stderr
    # a full disk, simulated: every write of a file's contents fails with ENOSPC
    import dgconv._files as files

    def full(self, b):  # the small JSON files fit; the checkpoint's tensor data does not
        if len(b) > 10000:
            self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise self.error
        return self.f.write(b)

    monkeypatch.setattr(files._Recorder, "write", full)
    r = cli(*TRAIN, "--out", str(tmp_path / "full"))
    assert r.returncode == 2 and "No space left on device" in r.stderr and "last.pt" in r.stderr
    assert "Traceback" not in r.stderr and temporaries(tmp_path / "full") == []


def test_deploy_and_report_file_errors_match_train(tmp_path):
    """Every command exits 2 for a path it cannot use and names that path, never our temporary beside it."""
    run = tmp_path / "run"
    assert cli(*TRAIN, "--out", str(run)).returncode == 0
    (tmp_path / "dir").mkdir()
    for args, named in [(("--out", str(tmp_path / "dir")), str(tmp_path / "dir")),
                        (("--out", "/proc/x.pt"), "/proc/x.pt"),
                        (("--out", str(tmp_path / "d.pt"), "--torchscript", "/proc/none/x.ts"), "/proc/none/x.ts")]:
        r = cli("deploy", str(run), *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().endswith(named) and ".tmp" not in r.stderr, r.stderr
    assert list((tmp_path / "dir").iterdir()) == []
    r = cli("deploy", str(run), "--out", str(tmp_path / "d.pt"), "--torchscript", str(tmp_path / "d.ts"))
    assert r.returncode == 0 and torch.jit.load(str(tmp_path / "d.ts"))(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    r = cli("report", str(tmp_path / "none"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 2 and str(tmp_path / "none") in r.stderr
    # a metrics line whose accuracy is null (hand-edited, or written by another tool): the file and line are named
    lines = (run / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["test_acc"] = None
    (run / "metrics.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    r = cli("report", str(run), "--out", str(tmp_path / "rep"))
    assert r.returncode == 2 and "metrics.jsonl:1" in r.stderr and "'test_acc' = null" in r.stderr, r.stderr


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs mount permissions; skipped without them)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_and_read_only_file_systems(tmpfs):
    r = cli(*TRAIN, "--out", str(tmpfs / "run"))  # a checkpoint of ~2 MB does not fit in 1 MiB
    assert r.returncode == 2 and "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert temporaries(tmpfs / "run") == []
    (tmpfs / "ro").mkdir()
    assert subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True).returncode == 0
    r = cli(*TRAIN, "--out", str(tmpfs / "ro" / "run"))
    assert r.returncode == 2 and "Read-only file system" in r.stderr and "Traceback" not in r.stderr


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert cli(*TRAIN[:2], "1", *TRAIN[3:], "--out", str(tmp_path / "run")).returncode == 0
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.jsonl", "groups.json", "last.pt", "best.pt"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o640, name


@pytest.mark.slow
def test_signals_stop_at_a_checkpoint_and_a_closed_pipe_does_not(tmp_path):
    term = start("train", "--epochs", "30", "--out", str(tmp_path / "term"), "--no-progress")
    early = start("train", "--epochs", "30", "--out", str(tmp_path / "early"))
    piped = start(*TRAIN, "--out", str(tmp_path / "piped"))
    wait_for_handlers(early)  # the first thing dgconv does; torch is still being imported then
    early.send_signal(signal.SIGINT)  # Ctrl-C in the first second
    wait_until((tmp_path / "term" / "metrics.jsonl").exists, "the first epoch of the run to stop", proc=term)
    term.send_signal(signal.SIGTERM)
    piped.stdout.readline()  # `dgconv train | head -1`: read one line, close the pipe
    piped.stdout.close()
    for p in (term, early, piped):
        p.wait(timeout=PATIENCE)
    err = term.stderr.read()
    assert term.returncode == 143 and "stopped by SIGTERM" in err and "continue with: dgconv train --resume" in err
    assert "Traceback" not in err and temporaries(tmp_path / "term") == []
    ckpt = load_checkpoint(tmp_path / "term" / "last.pt")
    assert [m["epoch"] for m in metrics(tmp_path / "term")] == list(range(1, ckpt["epoch"] + 1))
    err = early.stderr.read()
    assert early.returncode == 130 and "Traceback" not in err
    assert err.startswith("dgconv train: stopped by SIGINT;") and "nothing was" in err, err  # the command, not "?"
    assert not (tmp_path / "early").exists()  # stopped before its first epoch: nothing left behind
    assert not (tmp_path / "term" / ".lock").exists() and not (tmp_path / "piped" / ".lock").exists()
    assert piped.returncode == 0, piped.stderr.read()
    assert [m["epoch"] for m in metrics(tmp_path / "piped")] == [1, 2, 3]  # training went on


def test_out_of_memory_is_a_message_and_bugs_keep_their_traceback(monkeypatch):
    import dgconv.train.engine as engine

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "train", oom)
    r = cli("train")
    assert r.returncode == 1 and "out of memory" in r.stderr and "smaller --batch-size" in r.stderr

    def bug(*a, **k):
        raise RuntimeError("an unexpected failure")

    monkeypatch.setattr(engine, "train", bug)
    with pytest.raises(RuntimeError, match="an unexpected failure"):
        cli("train")


def test_a_run_brought_back_without_its_checkpoint_is_set_aside_not_refused(tmp_path):
    """GPU sessions bring back run directories without checkpoints: such a run cannot resume, and a fresh start in its
    directory is refused, so the sweep moves it to ``<name>.partial`` (one kept) and starts it again."""
    from dgconv.errors import RunDirError
    from dgconv.train.runs import (
        LAST,
        METRICS,
        finished_epochs,
        set_aside_unresumable,
    )

    run = tmp_path / "g-b32"
    assert set_aside_unresumable(run) is None  # nothing there
    run.mkdir()
    assert set_aside_unresumable(run) is None  # nothing recorded
    (run / METRICS).write_text(json.dumps({"epoch": 1, "test_acc": 0.5}) + "\n")
    (run / LAST).write_bytes(b"checkpoint")
    assert set_aside_unresumable(run) is None and run.is_dir()  # resumable: left alone
    (run / LAST).unlink()
    with RunWriter(run) as w, pytest.raises(RunDirError, match="no checkpoint"):
        w.check_fresh()
    for epochs in (1, 2):  # a second stale copy replaces the first
        if epochs == 2:
            run.mkdir()
            (run / METRICS).write_text("".join(json.dumps({"epoch": e, "test_acc": 0.5}) + "\n" for e in (1, 2)))
        aside = set_aside_unresumable(run)
        assert aside == tmp_path / "g-b32.partial" and not run.exists() and finished_epochs(aside) == epochs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g-b32.partial"]


def test_a_stop_signal_whose_exception_was_swallowed_still_stops_the_run():
    """Ctrl-C during start-up can land in a library's bare ``except`` (an early Ctrl-C once let the run train to the
    end, exit 0): the signal is kept and the trainer's next check raises it again."""
    from dgconv.errors import Interrupted
    from dgconv.train import interrupts

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        interrupts.install()
        interrupts.check()  # nothing received yet
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here (or before)
        except BaseException:  # noqa: BLE001 - what a careless library does
            pass
        with pytest.raises(Interrupted) as e:
            interrupts.check()
        assert e.value.exit_code == 130
        interrupts.install()  # a new command starts clean
        interrupts.check()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def test_a_checkpoint_never_chooses_to_download(tmp_path):
    """A crafted checkpoint whose config says download=true with data_dir elsewhere once made --resume create that
    folder and fetch CIFAR there; a resume now downloads only when the user says --download."""
    run = tmp_path / "run"
    assert cli(*TRAIN[:2], "1", *TRAIN[3:], "--out", str(run)).returncode == 0
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["config"].update(dataset="cifar10", download=True, data_dir=str(tmp_path / "elsewhere" / "deep"))
    torch.save(ckpt, run / "last.pt")
    r = cli("train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert r.returncode == 2 and "Expected a folder" in r.stderr  # it looked for the data, and fetched nothing
    assert not (tmp_path / "elsewhere").exists()


def test_a_lost_rank_is_one_line_with_the_resume_command(tmp_path, monkeypatch):
    """When another torchrun process dies, a survivor's collective fails inside gloo ('Connection closed by peer'); the
    survivor ends with one line naming the lost rank and the command that resumes the job, not gloo's traceback."""
    import dgconv.train.engine as engine
    from dgconv.train.distributed import DistEnv

    monkeypatch.setattr(engine, "init_distributed", lambda device=None: DistEnv(0, 2, 0, torch.device("cpu")))

    def collective_fails(cfg, env, writer, ckpt):
        if cfg.seed == 1:  # as if an epoch had been committed
            writer.last.write_bytes(b"a checkpoint")
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                           "[127.0.0.1]:29500")

    monkeypatch.setattr(engine, "_train", collective_fails)
    r = cli(*TRAIN, "--seed", "1", "--out", str(tmp_path / "ddp"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "rank 0 lost contact with rank 1 of this 2-process job" in r.stderr
    assert f"torchrun --nproc_per_node 2 -m dgconv train --resume {tmp_path / 'ddp'}" in r.stderr
    r = cli(*TRAIN, "--out", str(tmp_path / "ddp0"))  # lost during the first epoch: nothing to resume
    assert r.returncode == 2 and "no epoch had finished, so nothing was kept" in r.stderr
    assert not (tmp_path / "ddp0").exists()

    def a_bug(*a, **k):
        raise RuntimeError("an unexpected failure")

    monkeypatch.setattr(engine, "_train", a_bug)  # anything else keeps its traceback
    with pytest.raises(RuntimeError, match="an unexpected failure"):
        cli(*TRAIN, "--out", str(tmp_path / "ddp2"))
