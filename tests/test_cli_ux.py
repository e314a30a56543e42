"""What a user sees: --version, model listings, progress on a terminal, the final summary, TensorBoard logs,
--download (against a local server), profile of a run."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import pty
import re
import select
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dgconv import __version__
from tests.helpers import ENV, PATIENCE, cli


def test_version_and_model_listings():
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"dgconv {__version__}"
    r = cli("models", "g_*")
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert r.returncode == 0 and "g_resnext50" in names and all(n.startswith("g_") for n in names)
    r = cli("models", "zzz*")
    assert r.returncode == 2 and "no registered model matches 'zzz*'" in r.stderr and "dgconv models" in r.stderr
    r = cli("train", "--model", "g_resnext50_32x4d")
    assert r.returncode == 2 and "Did you mean: g_resnext50" in r.stderr and "`dgconv models` lists" in r.stderr


def test_progress_on_a_terminal_and_the_final_summary(tmp_path):
    """On a pseudo-terminal: a training bar with throughput and ETA, an evaluation bar; at the end the run directory
    and the next commands."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: dgconv train on the terminal
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "dgconv", "train", "--epochs", "1", "--limit-train", "320",
                                   "--batch-size", "32", "--out", "run"], {**ENV, "COLUMNS": "120"})
    out = b""
    deadline = time.time() + PATIENCE
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert re.search(r"epoch 1/1.*img/s", text), text[-2000:]
    assert re.search(r"<\d\d:\d\d", text)  # an ETA
    assert "eval" in text
    assert "run directory: run" in text and "dgconv report run" in text and "dgconv deploy run --best" in text
    # not on a terminal: no bars, one line per epoch
    r = subprocess.run([sys.executable, "-m", "dgconv", "train", "--epochs", "1", "--limit-train", "256", "--out",
                        str(tmp_path / "quiet")], capture_output=True, text=True, env=ENV, timeout=PATIENCE)
    assert r.returncode == 0 and "img/s" not in r.stdout + r.stderr and "epoch   1/1" in r.stdout


def test_tensorboard_logs_groups_zeta_and_gates(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = cli("train", "--epochs", "2", "--limit-train", "256", "--tensorboard", "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    scalars, hists = set(acc.Tags()["scalars"]), set(acc.Tags()["histograms"])
    assert {"zeta_over_o", "test_acc", "groups/layer1.0.conv2", "groups/layer3.0.conv2"} <= scalars
    assert "gates/layer2.0.conv2" in hists
    assert [e.step for e in acc.Scalars("groups/layer1.0.conv2")] == [1, 2]


def _fake_cifar_archive(path: Path) -> str:
    """A tar.gz in the official CIFAR-10 layout (a few images per batch); returns its MD5."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, obj):
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add(name, {b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2})
        add("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    path.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server for tmp_path/www (no internet in the tests)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verifies_the_checksum(tmp_path, server, monkeypatch):
    from dgconv.train.data import load_cifar
    from dgconv.train.data.cifar import download_cifar

    www, base = server
    md5 = _fake_cifar_archive(www / "cifar-10-python.tar.gz")
    folder = download_cifar("cifar10", tmp_path / "data", url=f"{base}/cifar-10-python.tar.gz", md5=md5)
    assert folder == tmp_path / "data" / "cifar-10-batches-py" and len(load_cifar("cifar10", tmp_path / "data").train_x) == 100
    assert not list((tmp_path / "data").glob("*.tar.gz*"))  # the archive is removed after unpacking
    # through the CLI, from a mirror whose archive does not match the published MD5: refused, nothing left behind
    monkeypatch.setenv("DGCONV_CIFAR_MIRROR", base)
    r = cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "other"), "--download", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "checksum mismatch" in r.stderr and "was removed" in r.stderr
    assert not any((tmp_path / "other").iterdir())
    r = cli("train", "--dataset", "digits", "--download")
    assert r.returncode == 2 and "not downloadable" in r.stderr
    # an archive whose members would land outside the folder is refused
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (www / "evil.tar.gz").write_bytes(evil.getvalue())
    from dgconv.train.data import DataError

    with pytest.raises(DataError, match="refusing to unpack"):
        download_cifar("cifar10", tmp_path / "e", url=f"{base}/evil.tar.gz", md5=hashlib.md5(evil.getvalue()).hexdigest())
    assert not (tmp_path / "escaped").exists()


def test_profile_of_a_run_uses_its_classes_and_input(tmp_path):
    assert cli("train", "--epochs", "1", "--limit-train", "128", "--out", str(tmp_path / "run")).returncode == 0
    r = cli("profile", str(tmp_path / "run"), "--no-layers")
    assert r.returncode == 0 and "10 classes" in r.stdout and "1x8x8" in r.stdout
    r2 = cli("deploy", str(tmp_path / "run"), "--out", str(tmp_path / "d.pt"))
    params = re.search(r"model total\s+[\d,]+ -> ([\d,]+)", r2.stdout).group(1)
    assert f"parameters deployed     {params}" in r.stdout  # profile and deploy count the same network
