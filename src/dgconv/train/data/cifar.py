"""CIFAR-10/100: reading the official python pickle layout, and ``--download`` (fetch, verify, unpack).

The pickles are read with a restricted unpickler that accepts only the types the official files contain (dicts,
lists, strings, bytes, numbers and uint8 NumPy arrays); it never runs a general ``pickle.load`` on user files.

Nothing is downloaded unless asked for. The archive's MD5 is checked against the published value before anything
is unpacked; a mismatch removes the file and is an error. Unpacking refuses archive members that would land outside
the data folder. A folder that already holds the data is left alone.

``DGCONV_CIFAR_MIRROR`` replaces the base URL (``https://www.cs.toronto.edu/~kriz``) -- for an internal mirror, or
the tests' local server.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..._files import md5_file
from ...errors import DataError
from .tensors import TensorDataset

__all__ = ["load_cifar", "find_cifar_dir", "download_cifar", "ARCHIVES"]


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # Python 3 writes bytes this way at protocol 2; it only turns str into bytes
    }

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR pickle format")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a CIFAR python pickle batch: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python pickle batch (expected a dict, got {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def find_cifar_dir(name: str, data_dir: str | Path) -> Path:
    """The folder holding the official python batches: ``data_dir`` itself or its ``cifar-10-batches-py`` /
    ``cifar-100-python`` child. Raises :class:`DataError` describing the expected layout."""
    folder, train, test, meta, _, _ = _LAYOUT[name]
    root = Path(data_dir).expanduser()
    for cand in (root, root / folder):
        if all((cand / f).is_file() for f in [*train, *test, meta]):
            return cand
    expected = ", ".join([*train, *test, meta])
    raise DataError(
        f"{name}: no official python-pickle layout under {root}. Expected a folder '{folder}' (or the folder itself) "
        f"holding {expected} -- the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html, "
        f"as torchvision and Keras read it."
    )


def _batches(paths: list[Path], label_key: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for p in paths:
        if limit is not None and sum(len(x) for x in xs) >= limit:
            break  # the first `limit` images are already read
        d = _load_pickle(p)
        data, labels = d.get("data"), d.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{p}: 'data' must be a uint8 array of shape (N, 3072)")
        if labels is None or len(labels) != len(data):
            raise DataError(f"{p}: '{label_key}' must list one label per image")
        xs.append(torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32))
        ys.append(torch.as_tensor(np.asarray(labels, dtype=np.int64)))
    return torch.cat(xs), torch.cat(ys)


def load_cifar(name: str, data_dir: str | Path, limit_train: int | None = None, limit_test: int | None = None) -> TensorDataset:
    """CIFAR-10 or CIFAR-100 (fine labels) from the official python pickle layout under ``data_dir``.

    ``limit_train``/``limit_test`` keep the first images of each split (and read only the files they need); the
    normalisation statistics always come from the first 10,000 training images, limited or not.
    """
    if name not in _LAYOUT:
        raise DataError(f"unknown CIFAR variant {name!r}: use 'cifar10' or 'cifar100'")
    root = find_cifar_dir(name, data_dir)
    _, train, test, meta, label_key, names_key = _LAYOUT[name]
    train_x, train_y = _batches([root / f for f in train], label_key, None if limit_train is None else max(limit_train, 10000))
    test_x, test_y = _batches([root / f for f in test], label_key, limit_test)
    names = _load_pickle(root / meta).get(names_key)
    if not isinstance(names, list):
        raise DataError(f"{root / meta}: missing '{names_key}'")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    for y in (train_y, test_y):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{root}: labels outside 0..{len(classes) - 1}")
    xf = train_x[:10000].float() / 255
    mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
    std = tuple(xf.std(dim=(0, 2, 3)).tolist())
    ds = TensorDataset(name, train_x, train_y, test_x, test_y, classes, mean, std, 255.0, "crop_flip")
    return ds.subset(limit_train, limit_test) if limit_train or limit_test else ds


# ------------------------------------------------------------------------------------------------ download
_logger = logging.getLogger(__name__)

#: name -> (archive file, MD5 of the archive) as published on https://www.cs.toronto.edu/~kriz/cifar.html
ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}
BASE_URL = "https://www.cs.toronto.edu/~kriz"


def _safe_extract(archive: Path, dest: Path) -> None:
    root = dest.resolve()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            target = (dest / m.name).resolve()
            if root not in (target, *target.parents) or m.issym() or m.islnk() or m.isdev():
                raise DataError(f"{archive}: refusing to unpack {m.name!r} (outside {dest}, or a link or device)")
        tar.extractall(dest, members=members)  # noqa: S202 - every member checked above


def download_cifar(name: str, data_dir: str | Path, url: str | None = None, md5: str | None = None) -> Path:
    """Make ``data_dir`` hold CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``); return the batches' folder.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: the folder to put ``cifar-10-batches-py`` / ``cifar-100-python`` in (created).
        url: the archive's URL (default: the official one, or ``$DGCONV_CIFAR_MIRROR/<archive>``).
        md5: the archive's expected MD5 (default: the published one).

    Raises:
        DataError: unknown name, the download failed, the checksum does not match (the file is removed), or the
            archive does not unpack into the expected layout.
    """
    if name not in ARCHIVES:
        raise DataError(f"--download knows {sorted(ARCHIVES)}, not {name!r}")
    root = Path(data_dir).expanduser()
    try:
        return find_cifar_dir(name, root)
    except DataError:
        pass
    archive_name, official = ARCHIVES[name]
    base = os.environ.get("DGCONV_CIFAR_MIRROR", BASE_URL).rstrip("/")
    url = url or f"{base}/{archive_name}"
    expected = md5 or official
    root.mkdir(parents=True, exist_ok=True)
    archive = root / archive_name
    part = root / (archive_name + ".part")
    _logger.info("downloading %s to %s", url, archive)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:  # noqa: S310 - http(s) only
            shutil.copyfileobj(response, f, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {e}") from None
    got = md5_file(part)
    if got != expected:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: checksum mismatch (MD5 {got}, expected {expected}); the download was removed. "
                        f"Try again, or fetch the archive yourself and unpack it into {root}")
    os.replace(part, archive)
    _safe_extract(archive, root)
    archive.unlink()
    folder = find_cifar_dir(name, root)  # raises if the archive did not hold the official layout
    _logger.info("unpacked %s into %s", archive_name, folder)
    return folder
