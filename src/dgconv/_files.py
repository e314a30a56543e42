"""Atomic file writes, for every file dgconv writes in place (checkpoints, run files, results, specs).

Pure standard library (no torch), so the modules that only handle files and names load in milliseconds.

File-system failures (permission denied, disk full, read-only file system) surface as :class:`OSError` with the
path and the operating system's reason -- also from inside ``torch.save``, which otherwise reports a full disk as
``[enforce fail at inline_container.cc]``. Files are created with the process's umask (0644 by default), like any
other tool's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ._faults import fault
from .errors import RunDirError

__all__ = ["atomic_write", "atomic_link", "md5_file", "write_text", "write_json", "read_json", "take_lock", "release_lock",
           "LockHeld", "TEMP_SUFFIX", "with_path"]

#: Temporaries of :func:`atomic_write` are named ``.<name>.<random>.tmp`` beside their target.
TEMP_SUFFIX = ".tmp"

_umask_lock = threading.Lock()


def _file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    with _umask_lock:
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


class _Recorder(io.RawIOBase):
    """A writable file that remembers the ``OSError`` its target raised (``torch.save`` replaces it by a
    ``RuntimeError`` without the reason)."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self.f = f
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def,override]
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise


def _temporary(path: Path) -> tuple[int, str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise with_path(e, path) from None
    os.fchmod(fd, _file_mode())
    return fd, tmp


def with_path(e: OSError, path: Path) -> OSError:
    """``e`` naming ``path``, the file the user asked for, never our temporary beside it (``mkstemp`` and
    ``os.replace`` name the temporary)."""
    if e.filename == str(path) and e.filename2 is None:
        return e
    return type(e)(e.errno, e.strerror or str(e), str(path))


def _sync_dir(folder: Path) -> None:
    try:  # make a rename durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it and rename it over ``path``: a crash at any
    moment leaves either the old file or the new one, never a torn one (a process killed mid-write leaves a
    ``.<name>.*.tmp`` temporary, which :mod:`dgconv.train.rundir` removes on the run's next start).

    Raises:
        OSError: the file system refused (its ``filename`` is set); nothing is left behind.
    """
    path = Path(path)

    def fill(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "wb") as f:
            rec = _Recorder(f)
            try:
                write(rec)  # type: ignore[arg-type]
            except RuntimeError:
                if rec.error is not None:  # torch.save hides the OSError of a full disk in a RuntimeError
                    raise rec.error from None
                raise
            f.flush()
            os.fsync(f.fileno())

    _replace_via_temporary(path, fill)


def atomic_link(source: str | Path, path: str | Path) -> None:
    """Make ``path`` an atomic copy of ``source``: a hard link when the file system has them (no bytes copied;
    ``source`` may be replaced later by :func:`atomic_write` without touching ``path``), else a full copy."""
    source, path = Path(source), Path(path)

    def fill(fd: int, tmp: str) -> None:
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())

    _replace_via_temporary(path, fill)


def _replace_via_temporary(path: Path, fill: Callable[[int, str], None]) -> None:
    """Create a temporary beside ``path``, let ``fill(fd, name)`` write it, rename it over ``path`` and make the
    rename durable; on any failure remove the temporary (an ``OSError`` gets ``path`` as its file name)."""
    fd, tmp = _temporary(path)
    try:
        fill(fd, tmp)
        fault(f"write:{path.name}")
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise with_path(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def md5_file(path: str | Path) -> str:
    """The MD5 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ plain files
def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (:func:`atomic_write`), creating its folder."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON, atomically."""
    write_text(path, json.dumps(doc, indent=2) + "\n")


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a :class:`~dgconv.errors.RunDirError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"no {what} at {path}") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise RunDirError(f"{path} is not a text file") from None
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------------ lock files
class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is the PID it wrote (or ``"unknown"``)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def take_lock(path: str | Path) -> int:
    """Hold an exclusive OS file lock (``flock``) on ``path``, created if missing, with this process's PID and the
    time written in it; returns the descriptor (closing it releases the lock, as does the process ending).

    A holder that closes removes the file (:func:`release_lock`); if that happens between our ``open`` and our
    ``flock``, we would hold a lock on a file nobody sees, so the lock is taken again on the file now at ``path``.
    Raises :class:`LockHeld` when another process holds it, :class:`OSError` when the file cannot be created. Where
    the platform has no ``flock`` the file is written and nothing is locked."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None  # type: ignore[assignment]
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:  # pragma: no cover
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            raise LockHeld(holder[0] if holder else "unknown") from None
        if _same_file(fd, path):
            break
        os.close(fd)
    else:  # pragma: no cover - a hundred holders closing in turn
        raise LockHeld("unknown (the lock file kept being replaced)")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    return fd


def release_lock(fd: int, path: str | Path) -> None:
    """Remove the lock file (if it is still the one ``fd`` holds) and release the lock."""
    try:
        if _same_file(fd, Path(path)):
            Path(path).unlink(missing_ok=True)
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open descriptor ``fd`` is the file now at ``path``."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
