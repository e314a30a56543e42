"""Where a sweep's runs execute: the local pool and submitit's local executor (real subprocesses, as Slurm jobs
would be), then a whole sweep through `dgconv sweep --launcher submitit --cluster local`."""

from __future__ import annotations

import json
import os
import time

import pytest

from dgconv.errors import ConfigError
from dgconv.lab.launchers import SubmititPool, make_launcher, stop
from tests.helpers import PATIENCE, cli, wait_until
from tests.train.test_data import HAS_CIFAR, SHARED

submitit = pytest.importorskip("submitit")


def test_submitit_pool_results_lost_jobs_and_stop(tmp_path):
    pool = SubmititPool(tmp_path / "jobs", cluster="local", poll=0.1)
    ok = pool.submit(abs, -3)
    lost = pool.submit(os._exit, 7)  # the job process dies without a result (as a pre-empted or killed job does)
    assert ok.result(timeout=PATIENCE) == 3
    assert lost.result(timeout=PATIENCE) == -1
    slow = pool.submit(time.sleep, 600)
    wait_until(lambda: slow.job_id and any((tmp_path / "jobs").glob(f"{slow.job_id}_*log.out")), "the job started")
    stop(pool)  # cancels the job (SIGINT to it here, SIGTERM under Slurm): a sweep's runs stop at a checkpoint
    assert slow.done() and slow.result() == -1  # stop() returns once the job has ended, without a result


def test_launcher_choices_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="unknown launcher 'ssh'"):
        make_launcher("ssh")
    with pytest.raises(ConfigError, match="need --launcher submitit"):
        make_launcher("local", parameters={"timeout_min": 5})
    with pytest.raises(ConfigError, match="slurm or local"):
        make_launcher("submitit", tmp_path, cluster="pbs")
    r = cli("sweep", "--protocol", "cpu", "--data-dir", str(tmp_path), "--out", str(tmp_path / "s"),
            "--slurm-partition", "gpu")
    assert r.returncode == 2 and "need --launcher submitit" in r.stderr
    r = cli("sweep", "--protocol", "cpu", "--data-dir", str(tmp_path), "--out", str(tmp_path / "s"),
            "--launcher", "submitit", "--slurm-option", "account")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
def test_a_sweep_through_submitit_local_jobs(tmp_path):
    """Every run a submitit job (a subprocess here, a Slurm job on a cluster): all finish, the results render, and a
    second invocation finds nothing to do."""
    out = tmp_path / "sweep"
    args = ["sweep", "--protocol", "cpu", "--data-dir", str(SHARED), "--out", str(out), "--epochs", "1",
            "--limit-train", "64", "--limit-test", "64", "--batch-size", "32", "--max-seeds", "1", "--parallel", "2",
            "--launcher", "submitit", "--cluster", "local", "--timeout-min", "30"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [d for d in out.iterdir() if (d / "config.json").exists()]
    assert len(runs) >= 8 and all(len((d / "metrics.jsonl").read_text().splitlines()) == 1 for d in runs)
    jobs = list((out / ".submitit").glob("*_result.pkl"))
    assert len(jobs) == len(runs)  # each run was a job of its own
    assert "Missing runs" not in (out / "results.md").read_text()
    before = {d.name: (d / "metrics.jsonl").stat().st_mtime for d in runs}
    assert cli(*args).returncode == 0
    assert {d.name: (d / "metrics.jsonl").stat().st_mtime for d in runs} == before
    assert json.loads((out / "sweep.json").read_text())["resumed"]
