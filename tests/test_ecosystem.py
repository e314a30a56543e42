"""dgconv in the torchvision / timm world: image folders at their own size (corrupt images skipped), pretrained
ResNet(X)t weights as a start, groupify and deploy of torchvision and timm networks, our models in timm's registry.

These need torchvision (and timm) built for the installed torch; CI runs them in a second environment that has
them (``.ci/run``), and they skip elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dgconv import DGConv2d, create_model, deploy, groupify
from dgconv.layer.conv import dgconv_layers
from tests.helpers import ENV, PATIENCE, catches, children, cli, metrics, wait_for_handlers, wait_until

pytestmark = pytest.mark.ecosystem


def tv():
    return pytest.importorskip("torchvision", exc_type=ImportError)


def timm():
    return pytest.importorskip("timm", exc_type=ImportError)


def write_folder(root: Path, size: tuple[int, int], n: int, mode: str = "L", classes: int = 3, seed: int = 0) -> None:
    """A small image folder: class c has a bright square at a class-specific place (learnable), plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in (("train", n), ("val", max(2, n // 4))):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 60, (h, w, 3 if mode == "RGB" else 1), dtype=np.uint8)
                y0 = (c * h) // classes
                img[y0: y0 + h // classes, : w // 2] = 230
                Image.fromarray(img.squeeze(-1) if mode == "L" else img, mode).save(d / f"{i}.png")


def test_a_folder_of_small_images_trains_at_its_native_size(tmp_path):
    tv()
    write_folder(tmp_path / "data", (28, 28), 24, "L")
    (tmp_path / "data" / "val" / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # every val image is read
    r = cli("train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--model", "g_resnext_cifar_tiny",
            "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    data = cfg["data"]
    assert data["native_size"] == [28, 28] and data["image_size"] == 28 and data["policy"] == "pad"
    assert data["channels"] == 1 and cfg["input_size"] == [1, 28, 28] and data["hflip"] is False
    assert len(data["mean"]) == 1 and 0 < data["mean"][0] < 1 and data["workers"] >= 0
    row = metrics(tmp_path / "run")[0]
    assert row["skipped_images"] == 1 and "broken.png" in r.stderr and "unreadable" in r.stderr
    # mean/std of the wrong length, and an ImageNet model on 28x28 images: a warning with the fix
    r = cli("train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--model", "g_resnext_cifar_tiny",
            "--mean", "0.5", "0.5", "0.5", "--std", "0.2", "0.2", "0.2", "--epochs", "1", "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and "need 1 values" in r.stderr
    r = cli("train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--model", "g_resnext50",
            "--epochs", "1", "--batch-size", "16", "--limit-train", "16", "--out", str(tmp_path / "r3"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "designed for 224x224 inputs and the data is 28x28" in r.stderr


def test_large_colour_images_use_the_imagenet_recipe_at_the_models_size(tmp_path):
    tv()
    write_folder(tmp_path / "data", (80, 96), 8, "RGB", classes=2)
    r = cli("train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--model", "g_resnext_cifar_tiny",
            "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data["policy"] == "crop" and data["image_size"] == 32 and data["channels"] == 3 and data["hflip"] is True
    r = cli("train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--model", "g_resnext_cifar_tiny",
            "--image-size", "48", "--resize", "stretch", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "r2"),
            "--no-progress")
    assert r.returncode == 0 and json.loads((tmp_path / "r2" / "config.json").read_text())["input_size"] == [3, 48, 48]


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_init_from_pretrained_resnext_and_resnet_state_dicts(tmp_path, source):
    """A ResNeXt-50 / ResNet-50 state_dict of torchvision or timm starts our G-network with its function unchanged."""
    if source == "torchvision":
        models = tv().models
        nets = {"g_resnext50": models.resnext50_32x4d(num_classes=10), "g_resnet50": models.resnet50(num_classes=10)}
    else:
        t = timm()
        nets = {"g_resnext50": t.create_model("resnext50_32x4d", num_classes=10),
                "g_resnet50": t.create_model("resnet50", num_classes=10)}
    from dgconv.train.pretrained import load_pretrained

    x = torch.randn(2, 3, 64, 64)
    for name, net in nets.items():
        net.eval()
        torch.save({"state_dict": net.state_dict()}, tmp_path / f"{name}.pth")
        ours = create_model(name, num_classes=10).eval()
        notes = load_pretrained(ours, tmp_path / f"{name}.pth")
        assert any("became DGConv layers" in n for n in notes)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), net(x), rtol=1e-4, atol=1e-4)
        assert all(torch.all(m.gate.abs() == 1.0) for _, m in dgconv_layers(ours))
        # another class count: the classifier starts fresh, said so
        fresh = create_model(name, num_classes=7)
        assert any("classifier fc left at its fresh initialisation" in n for n in load_pretrained(fresh, tmp_path / f"{name}.pth"))
    # a state_dict of another architecture: the first mismatches, counted
    from dgconv.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"does not fit this model: \d+ missing from the file"):
        load_pretrained(create_model("g_resnext101", num_classes=10), tmp_path / "g_resnext50.pth")


TV_MODELS = ["resnext50_32x4d", "mobilenet_v2", "regnet_x_400mf"]
TIMM_MODELS = ["resnext26ts", "regnetx_002", "mobilenetv3_small_050", "tf_mobilenetv3_small_minimal_100"]


def _check_groupify_and_deploy(net: nn.Module, size: int = 64) -> tuple[int, int]:
    net.eval()
    x = torch.randn(2, 3, size, size)
    g, report = groupify(net, report=True)
    g.eval()
    assert report.converted, "nothing converted"
    with torch.no_grad():
        torch.testing.assert_close(g(x), net(x), rtol=1e-4, atol=1e-4)  # function preserved
    gen = torch.Generator().manual_seed(0)
    for _, m in dgconv_layers(g):  # learned, non-adjacent groupings
        m.gate.data = torch.randn(len(m.factors), generator=gen) * torch.tensor(
            [0.0 if h else 1.0 for h in m.held]) + torch.tensor([1.0 if h else 0.0 for h in m.held])
    d, summary = deploy(g, summary=True)
    assert not any(isinstance(m, DGConv2d) for m in d.modules())
    with torch.no_grad():
        torch.testing.assert_close(d.eval()(x), g(x), rtol=1e-4, atol=1e-4)  # deploy exact
    return len(report.converted), len(report.skipped)


@pytest.mark.parametrize("name", TV_MODELS)
def test_groupify_and_deploy_torchvision_models(name):
    models = tv().models
    converted, skipped = _check_groupify_and_deploy(getattr(models, name)(num_classes=10))
    assert converted > 0 and skipped == 0


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_groupify_and_deploy_timm_models(name, caplog):
    t = timm()
    converted, skipped = _check_groupify_and_deploy(t.create_model(name, num_classes=10))
    assert converted > 0
    if name.startswith("tf_"):  # TF "same" padding lives in Conv2dSame.forward: left as it was, and listed
        assert skipped > 0 and "left" in caplog.text and "Conv2dSame" in caplog.text


def test_timm_builds_our_models_after_an_explicit_import_only():
    """``import dgconv.models.timm`` registers our models with timm (in either order with timm); ``import dgconv``
    alone does not touch timm."""
    timm()
    for order in ("import dgconv.models.timm, timm", "import timm, dgconv.models.timm"):
        code = f"{order}; m = timm.create_model('g_resnext_cifar_tiny', num_classes=10); print(type(m).__name__, m.fc.out_features)"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PATIENCE)
        assert r.returncode == 0 and r.stdout.split() == ["ResNet", "10"], r.stderr
    code = "import sys, dgconv, timm; assert not timm.is_model('g_resnext_cifar_tiny'); assert 'dgconv.models.timm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=PATIENCE)


def test_odd_images_train_and_a_symlink_loop_stops_before_training(tmp_path):
    """One image of another size in val (once: 'stack expects each tensor to be equal size' after the epoch) is
    resized; a decompression bomb is skipped and counted; a 16-bit folder trains; a loop is an error before any
    training and leaves no run directory."""
    tv()
    from PIL import Image

    from tests.train.test_data import _png_header

    data = tmp_path / "data"
    write_folder(data, (16, 16), 16, "L", classes=2)
    Image.fromarray(np.full((20, 20), 200, dtype=np.uint8)).save(data / "val" / "class0" / "big.png")
    (data / "train" / "class1" / "bomb.png").write_bytes(_png_header(30000, 30000))
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(data), "--model", "g_resnext_cifar_tiny", "--epochs",
            "1", "--batch-size", "8", "--no-progress"]
    r = cli(*args, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert metrics(tmp_path / "run")[0]["skipped_images"] == 1 and "bomb.png" in r.stderr
    deep = tmp_path / "deep"
    write_folder(deep, (16, 16), 8, "L", classes=2)
    for png in deep.rglob("*.png"):  # the same images as 16-bit PNGs
        a = np.asarray(Image.open(png), dtype=np.uint16) * 257
        Image.fromarray(a).save(png)
    r = cli(*args[:4], str(deep), *args[5:], "--out", str(tmp_path / "run16"))
    assert r.returncode == 0, r.stderr
    assert 0.05 < json.loads((tmp_path / "run16" / "config.json").read_text())["data"]["mean"][0] < 0.6  # not all white
    (data / "train" / "class0" / "loop").symlink_to("..")
    r = cli(*args, "--out", str(tmp_path / "looped"))
    assert r.returncode == 2 and "class0/loop is a symbolic link" in r.stderr and "(a loop)" in r.stderr
    assert not (tmp_path / "looped").exists()


def test_ctrl_c_with_loading_workers_is_one_line(tmp_path):
    """The terminal's Ctrl-C reaches the whole process group: the loading workers ignore it (each printed a
    KeyboardInterrupt traceback) and the trainer stops with its one line."""
    tv()
    import os
    import signal

    write_folder(tmp_path / "data", (16, 16), 64, "L", classes=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgconv", "train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"),
         "--model", "g_resnext_cifar_tiny", "--epochs", "1000", "--batch-size", "8", "--workers", "2", "--no-progress",
         "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        wait_for_handlers(proc)
        wait_until(lambda: sum(catches(c, signal.SIGINT, "SigIgn") for c in children(proc.pid)) >= 2,
                   "two loading workers that ignore SIGINT", proc=proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "stopped by SIGINT" in err


@pytest.mark.parametrize("case", ["class link", "one class", "differing classes"])
def test_image_folder_layouts_that_would_train_silently_wrong_are_one_line(tmp_path, case):
    """A class folder that is a link to another class (the same images under two labels), a single class (loss 0,
    accuracy 1.0), train and val with other classes (a stray .ipynb_checkpoints): one line naming what is wrong,
    before any training, and no run directory."""
    tv()
    data = tmp_path / "data"
    write_folder(data, (16, 16), 8, "L", classes=1 if case == "one class" else 3)
    if case == "class link":
        (data / "train" / "class2").rename(tmp_path / "gone")
        (data / "train" / "class2").symlink_to(data / "train" / "class0", target_is_directory=True)
        words = ["same folder as", "two labels"]
    elif case == "one class":
        words = ["1 class folder(s) (class0)", "at least 2"]
    else:
        (data / "val" / ".ipynb_checkpoints").mkdir()
        (data / "val" / ".ipynb_checkpoints" / "x.png").write_bytes((data / "val" / "class0" / "0.png").read_bytes())
        words = ["only in val ['.ipynb_checkpoints']"]
    r = cli("train", "--dataset", "imagefolder", "--data-dir", str(data), "--model", "g_resnext_cifar_tiny", "--epochs",
            "1", "--batch-size", "8", "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert not (tmp_path / "run").exists()


def test_image_folders_read_photos_upright_by_their_exif_orientation(tmp_path):
    tv()
    from PIL import Image

    from dgconv.train.data.folder import _open

    img = Image.new("L", (4, 2), 0)
    img.putpixel((0, 0), 255)  # top-left bright, 4 wide and 2 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "p.jpg", exif=exif, quality=100)
    shown = _open(str(tmp_path / "p.jpg"), "L")
    assert shown.size == (2, 4)  # upright: 2 wide, 4 high
