"""Datasets: digits split, CIFAR pickles (shared copy; skipped where absent), the restricted unpickler,
and on-device augmentation against a per-image reference."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dgconv.train.data import (
    DataError,
    TensorLoader,
    augment_crop_flip,
    find_cifar_dir,
    load_cifar,
    load_digits,
)

SHARED = Path(os.environ.get("DGCONV_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
HAS_CIFAR = (SHARED / "cifar-10-batches-py" / "data_batch_1").is_file()


def test_digits_split_is_stratified_and_fixed():
    a, b = load_digits(), load_digits()
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape[1:] == (1, 8, 8) and a.train_x.dtype == torch.uint8
    assert len(a.train_x) + len(a.test_x) == 1797 and a.num_classes == 10
    counts = torch.bincount(a.test_y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37
    assert int(a.train_x.max()) == 16


@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 copy not present (set DGCONV_SHARED_DATA)")
def test_cifar10_from_the_shared_folder():
    ds = load_cifar("cifar10", SHARED)  # the parent folder works
    assert find_cifar_dir("cifar10", SHARED / "cifar-10-batches-py") == SHARED / "cifar-10-batches-py"
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.num_classes == 10
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    assert torch.equal(torch.bincount(ds.train_y), torch.full((10,), 5000))
    # the first image equals the raw bytes of the first row of data_batch_1 (channel-major 32x32 planes)
    with open(SHARED / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")  # trusted shared test data
    np.testing.assert_array_equal(ds.train_x[0].numpy().reshape(-1), raw[b"data"][0])
    assert 0.4 < ds.mean[0] < 0.55 and 0.2 < ds.std[0] < 0.3


def test_missing_or_malformed_folder_says_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="data_batch_1.*test_batch.*batches.meta"):
        load_cifar("cifar10", tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a CIFAR python pickle batch"):
        load_cifar("cifar10", tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(good, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"], b"x": _Evil()}, protocol=2))
    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system|refusing to load nt.system"):
        load_cifar("cifar10", tmp_path)
    assert not (tmp_path / "pwned").exists()
    # and the well-formed files load
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    ds = load_cifar("cifar10", tmp_path)
    assert ds.classes == ["a", "b"] and len(ds.train_x) == 10


def test_non_uint8_data_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    bad = {b"data": np.zeros((2, 3072), np.float64), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(bad, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    with pytest.raises(DataError, match="uint8"):
        load_cifar("cifar10", tmp_path)


def test_crop_flip_equals_per_image_reference():
    x = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    out = augment_crop_flip(x, torch.Generator().manual_seed(3), pad=2)
    gen = torch.Generator().manual_seed(3)  # same draws, in the same order
    dy = torch.randint(0, 5, (6,), generator=gen)
    dx = torch.randint(0, 5, (6,), generator=gen)
    flip = torch.rand(6, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        crop = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        expected = crop.flip(-1) if flip[i] else crop
        assert torch.equal(out[i], expected)


def test_loader_is_deterministic_and_shards_cover_the_data():
    ds = load_digits().subset(train=100, test=37)
    dev = torch.device("cpu")
    a = [y for _, y in TensorLoader(ds, True, 8, dev, seed=1).epoch(2)]
    b = [y for _, y in TensorLoader(ds, True, 8, dev, seed=1).epoch(2)]
    c = [y for _, y in TensorLoader(ds, True, 8, dev, seed=1).epoch(3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not all(torch.equal(u, v) for u, v in zip(a, c))
    seen = torch.cat([y for r in range(3) for _, y in TensorLoader(ds, False, 5, dev, rank=r, world_size=3).epoch(0)])
    assert len(seen) == 37 and torch.equal(seen.sort().values, ds.test_y.sort().values)
    x, _ = next(TensorLoader(ds, True, 8, dev).epoch(0))
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 1.0


@pytest.mark.parametrize("augment,channels_last,nhwc", [("crop_flip", False, True), ("none", False, False),
                                                        ("none", True, True)])
def test_test_batches_come_in_the_training_batches_layout(augment, channels_last, nhwc):
    """The crop makes training batches NHWC; test batches follow, so a model evaluates in the layout it trains in.
    Only the layout changes: the values are the normalised images."""
    import dataclasses

    d = load_digits().subset(train=40, test=13)  # three channels (one is ambiguous: both layouts at once)
    ds = dataclasses.replace(d, train_x=torch.cat([d.train_x, 16 - d.train_x, d.train_x // 2], 1),
                             test_x=torch.cat([d.test_x, 16 - d.test_x, d.test_x // 2], 1),
                             mean=d.mean * 3, std=d.std * 3, augment=augment)
    dev = torch.device("cpu")
    for train in (True, False):
        for x, _ in TensorLoader(ds, train, 8, dev, channels_last=channels_last).epoch(0):
            assert x.is_contiguous(memory_format=torch.channels_last) == nhwc
            assert x.is_contiguous() != nhwc
    x = torch.cat([x for x, _ in TensorLoader(ds, False, 8, dev, channels_last=channels_last).epoch(0)])
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    torch.testing.assert_close(x, (ds.test_x.float() / ds.scale - mean) / std)


# ------------------------------------------------------------------------------------------------ image folders
# What the folder reader does with odd images, tested on its helpers (PIL only; training on folders needs torchvision
# and runs in tests/test_ecosystem.py).
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose data is one empty row (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def test_sixteen_bit_and_float_images_are_scaled_by_their_range_not_clipped(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from dgconv.train.data.folder import _open

    a = np.full((8, 8), 16384, dtype=np.uint16)  # a quarter of the 16-bit range
    a[:4] = 65535
    Image.fromarray(a).save(tmp_path / "16.png")  # mode I;16
    img = np.asarray(_open(str(tmp_path / "16.png"), "L"))
    assert img[:4].min() == 255 and img[4:].max() == round(16384 / 65535 * 255)  # 64, not 255 (clipped)
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(f).save(tmp_path / "f.tif")  # mode F
    g = np.asarray(_open(str(tmp_path / "f.tif"), "L"))
    assert g.min() == 0 and g.max() == 255 and 100 < g.mean() < 155
    rgb = np.asarray(_open(str(tmp_path / "16.png"), "RGB"))
    assert rgb.shape == (8, 8, 3) and rgb[4:, :, 0].max() == 64


def test_bombs_are_skipped_unread_and_unreadable_splits_refused(tmp_path):
    pytest.importorskip("PIL.Image")
    from dgconv.train.data.folder import _open, _scan

    (tmp_path / "bomb.png").write_bytes(_png_header(30000, 30000))  # 270 bytes claiming 900 M pixels
    assert _open(str(tmp_path / "bomb.png"), "L") is None  # skipped (and counted by the loader), not decoded
    val = tmp_path / "val" / "a"
    val.mkdir(parents=True)
    (val / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (val / "bomb.png").write_bytes(_png_header(30000, 30000))
    with pytest.raises(DataError, match="no readable image in a sample of"):
        _scan(tmp_path / "val")


def test_a_symlink_loop_is_refused_with_its_path_and_other_links_are_followed(tmp_path):
    from dgconv.train.data.folder import _check_links

    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "elsewhere" / "more").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "extra").symlink_to(tmp_path / "elsewhere")  # followed once: fine
    _check_links(tmp_path / "train")
    (tmp_path / "train" / "cat" / "loop").symlink_to("..")
    with pytest.raises(DataError, match=r"cat/loop is a symbolic link to .*train, a folder above it \(a loop\)"):
        _check_links(tmp_path / "train")


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_grayscale_is_read_from_the_pixels_not_the_file_mode(tmp_path, fmt):
    """RGB or palette files whose channels are equal are a grayscale folder (1 channel, no flips by default);
    one colour image among them makes it RGB."""
    from PIL import Image

    from dgconv.train.data.folder import _scan

    rng = np.random.default_rng(0)
    folder = tmp_path / "gray" / "a"
    folder.mkdir(parents=True)
    for i in range(6):
        g = rng.integers(0, 256, (20, 20), dtype=np.uint8)
        img = Image.fromarray(np.stack([g] * 3, -1), "RGB")
        (Image.fromarray(g, "L").convert("P") if i % 2 and fmt == "png" else img).save(folder / f"{i}.{fmt}")
    assert _scan(tmp_path / "gray") == ((20, 20), "L")
    colour = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(colour, "RGB").save(folder / f"colour.{fmt}")
    assert _scan(tmp_path / "gray") == ((20, 20), "RGB")
