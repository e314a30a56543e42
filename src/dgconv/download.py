"""``--download``: fetch CIFAR-10/100 (python version) from the University of Toronto, verify, unpack.

Nothing is downloaded unless asked for. The archive's MD5 is checked against the published value before anything
is unpacked; a mismatch removes the file and is an error. Unpacking refuses archive members that would land outside
the data folder. A folder that already holds the data is left alone.

``DGCONV_CIFAR_MIRROR`` replaces the base URL (``https://www.cs.toronto.edu/~kriz``) -- for an internal mirror, or
the tests' local server.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ._files import md5_file
from .data import DataError, find_cifar_dir

__all__ = ["download_cifar", "ARCHIVES"]

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
