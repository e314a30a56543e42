"""Writing a run directory: the one module that writes a run's files (:class:`RunWriter`); the layout and the readers
are :mod:`dgconv.train.runs`.

Ownership: one process writes a run directory at a time. :class:`RunWriter` takes an exclusive ``flock`` on
``.lock`` before it touches anything; the kernel releases it when the process ends, however it ends. A second
writer gets :class:`~dgconv.errors.RunInUseError` naming the holder's PID. A writer that closes removes ``.lock``
(a writer that opened the old file just before checks, once it holds the lock, that the file is still the one at
``.lock``, and tries again if not); a killed one leaves it, unheld and harmless.

A fresh run starts only in a missing or empty folder, or in a dgconv run directory that recorded no epoch: a
folder holding anything else is refused before anything in it is written or deleted. A run that fails or is
stopped before its first epoch is committed leaves nothing behind: :meth:`RunWriter.close` with ``discard=True``
removes the folders it created and the files it wrote.

Crash consistency: each epoch is committed in this order -- ``last.pt`` (atomic), ``best.pt`` (atomic link),
the metrics line, ``groups.json`` (atomic). A crash can therefore leave (a) a stray temporary, (b) ``best.pt``
one step behind ``last.pt``, (c) the metrics file without the checkpoint's epoch, or with that line torn.
:meth:`RunWriter.recover` repairs all three from ``last.pt`` when the run starts again (saying what it
repaired); anything else malformed is an error that names the file and line. :func:`best_checkpoint` resolves
``best.pt`` the same way for readers of a run that was not resumed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .._faults import armed, fault, kill
from .._files import (
    TEMP_SUFFIX,
    LockHeld,
    atomic_link,
    atomic_write,
    read_json,
    release_lock,
    take_lock,
    write_json,
)
from ..errors import RunDirError, RunInUseError
from .checkpoint import Contents, saved_epoch
from .interrupts import deferred
from .runs import (
    BEST,
    CONFIG,
    GROUPS,
    LAST,
    LOCK,
    METRICS,
    RUN_FORMAT,
    TENSORBOARD,
    is_run_file,
    parse_metrics,
)

__all__ = ["RunWriter"]

_logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ writing
def _os_error(e: OSError, what: str) -> RunDirError:
    where = f" {e.filename}" if e.filename else ""
    return RunDirError(f"cannot {what}{where}: {e.strerror or e}")


class RunWriter:
    """The process that writes a run directory: its lock, recovery after a crash, and every file it writes.

    Args:
        path: the run directory (created if missing).

    Use as a context manager (or call :meth:`close`); the lock is also released when the process ends.

    Example::

        >>> import tempfile
        >>> from dgconv.train.runs import load_run
        >>> with RunWriter(tempfile.mkdtemp()) as w:
        ...     w.write_config({"config": {"model": "m", "dataset": "d", "epochs": 1}})
        ...     w.append_metrics({"epoch": 1, "test_acc": 0.5})
        >>> load_run(w.path).final["test_acc"]
        0.5
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self.committed_epoch: int | None = None  #: the last epoch :meth:`commit_epoch` finished in this process
        self.created: Path | None = None  #: the top-most folder this writer created (None: the run directory existed)
        self._wrote_config = False  # a fresh config.json of this process (removed by a discarding close)
        self._mkdir()
        try:
            self._lock()
        except BaseException:
            self._remove_created()
            raise

    # -------------------------------------------------------------------------------- ownership
    def _mkdir(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"cannot use {self.path} as a run directory: a file of that name is in the way")
        missing = [p for p in (self.path, *self.path.parents) if not os.path.lexists(p)]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunDirError(f"cannot create {self.path}: a file is in the way") from None
        except OSError as e:
            raise _os_error(e, "create the run directory") from None
        self.created = missing[-1] if missing else None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirError(f"cannot write into {self.path}: permission denied")

    def _lock(self) -> None:
        try:
            self._lock_fd = take_lock(self.path / LOCK)
        except LockHeld as e:
            raise RunInUseError(
                f"{self.path} is in use by another dgconv process (PID {e.holder}); wait for it to finish, stop it, "
                f"or choose another --out"
            ) from None
        except OSError as e:
            raise _os_error(e, "create the lock file") from None

    def close(self, discard: bool = False) -> None:
        """Release the lock and remove ``.lock``.

        ``discard``: the run failed or was stopped; if it committed no epoch, also remove what this writer made --
        the folders it created (with everything in them), or else the fresh ``config.json`` it wrote."""
        if self._lock_fd is None:
            return
        try:
            if discard and self.committed_epoch is None and not self.has_checkpoint() and not parse_metrics(
                    self.path / METRICS).rows:
                if self.created is not None:
                    self._remove_created()
                elif self._wrote_config:
                    (self.path / CONFIG).unlink(missing_ok=True)
        except OSError as e:  # leaving a file behind is no reason to hide the run's own outcome
            _logger.warning("could not tidy %s: %s", self.path, e.strerror or e)
        finally:
            fd, self._lock_fd = self._lock_fd, None
            try:
                release_lock(fd, self.path / LOCK)  # removes .lock (if still ours), then releases the flock
            except OSError as e:
                _logger.warning("could not remove %s: %s", self.path / LOCK, e.strerror or e)

    def _remove_created(self) -> None:
        """Remove the run directory and the empty parents this writer created (nothing that existed before)."""
        if self.created is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        folder = self.path
        while folder != self.created:
            folder = folder.parent
            try:
                folder.rmdir()  # only if empty: another run may have started beside ours meanwhile
            except OSError:
                break
        self.created = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- paths and state
    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    def has_checkpoint(self) -> bool:
        return self.last.exists()

    def remove_temporaries(self) -> list[Path]:
        """Delete the ``.<name>.*.tmp`` files that killed writes of this directory's run files left behind (no other
        file, whatever its name); return them."""
        stray = [p for p in self.path.glob(".*" + TEMP_SUFFIX) if p.is_file() and is_run_file(p)]
        for p in stray:
            p.unlink(missing_ok=True)
        return stray

    # -------------------------------------------------------------------------------- recovery
    def check_fresh(self) -> None:
        """Refuse to start a new run over an existing one (a checkpoint, or recorded epochs), or in a folder that
        holds anything but a dgconv run (nothing there is touched)."""
        foreign = sorted(p.name for p in self.path.iterdir() if not is_run_file(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise RunDirError(
                f"{self.path} is not empty and not a dgconv run directory (it holds {shown}); choose a new or empty "
                f"folder for --out"
            )
        if self.has_checkpoint():
            raise RunDirError(f"{self.path} already holds a run ({LAST}); pass --resume {self.path} or choose another --out")
        if parse_metrics(self.path / METRICS).rows:
            raise RunDirError(
                f"{self.path} holds the metrics of a run but no checkpoint; choose another --out (or delete "
                f"{self.path / METRICS} if that run is of no use)"
            )

    def recover(self, ckpt: Contents | None, source: Path | None = None) -> list[str]:
        """Make the directory consistent with the checkpoint the run continues from (``None``: a fresh start;
        ``source``: the file it was read from, by default ``last.pt``).

        Removes stray temporaries, keeps the metrics lines up to the checkpoint's epoch (re-appending that
        epoch's line from the checkpoint when a crash lost or tore it), and re-links ``best.pt`` when a crash
        left it one epoch behind. Returns one message per repair (empty when nothing was needed).
        Raises :class:`RunDirError` for a malformed metrics file that is not a torn final line.
        """
        notes = [f"removed {p.name}, a temporary left by a killed write" for p in self.remove_temporaries()]
        parsed = parse_metrics(self.path / METRICS)
        epoch = ckpt.epoch if ckpt is not None else 0
        rows = parsed.rows[:epoch]
        if parsed.torn_tail:
            notes.append(f"dropped a torn final line of {self.path / METRICS} (a crash while it was written)")
        if ckpt is not None and len(rows) < epoch:
            record = ckpt.record
            if len(rows) == epoch - 1 and record.get("epoch") == epoch:
                rows.append(record)
                notes.append(f"restored the line of epoch {epoch} in {self.path / METRICS} from {LAST}")
            else:
                raise RunDirError(
                    f"{self.path / METRICS} records {len(parsed.rows)} epochs but {LAST} is at epoch {epoch}, and the "
                    f"missing lines cannot be restored from it"
                )
        if rows != parsed.rows or parsed.torn_tail:
            dropped = len(parsed.rows) - len(rows)
            if dropped > 0:
                notes.append(f"dropped {dropped} metrics line(s) past the checkpoint's epoch {epoch}")
            self._rewrite_metrics(rows)
        if ckpt is not None and ckpt.best_epoch is not None:
            want = ckpt.best_epoch
            if want == epoch and (not self.best.exists() or saved_epoch(self.best) != want):
                atomic_link(source or self.last, self.best)
                notes.append(f"{BEST} was behind the metrics (a crash between the two checkpoints); re-linked it to epoch {want}")
        return notes

    # -------------------------------------------------------------------------------- files
    def write_config(self, doc: dict[str, Any], resumed_from: int | None = None) -> None:
        """Write ``config.json``. A resumed run keeps the original ``started`` time and ``argv`` and appends
        ``{"resumed", "argv", "from_epoch"}`` to ``history`` (with ``"epochs": [before, after]`` when the resume
        changed the schedule's length)."""
        doc = {"format": RUN_FORMAT, **doc}
        cpath = self.path / CONFIG
        if resumed_from is not None and cpath.exists():
            try:
                old = read_json(cpath, CONFIG)
            except RunDirError as e:
                _logger.warning("%s; writing a new one", e)
                old = {}
            if isinstance(old, dict):
                env = dict(doc.get("environment", {}))
                old_env = old.get("environment", {}) if isinstance(old.get("environment"), dict) else {}
                for key in ("started", "argv"):
                    if key in old_env:
                        env[key] = old_env[key]
                doc["environment"] = env
                history = old.get("history", []) if isinstance(old.get("history"), list) else []
                entry: dict[str, Any] = {"resumed": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": list(sys.argv),
                                         "from_epoch": resumed_from}
                before = (old.get("config") or {}).get("epochs") if isinstance(old.get("config"), dict) else None
                after = (doc.get("config") or {}).get("epochs")
                if before is not None and before != after:  # the schedule changed: config.json alone cannot replay it
                    entry["epochs"] = [before, after]
                doc["history"] = [*history, entry]
        fresh = resumed_from is None and not cpath.exists()
        try:
            write_json(cpath, doc)
        except OSError as e:
            raise _os_error(e, "write") from None
        self._wrote_config = self._wrote_config or fresh

    def _rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        try:
            atomic_write(self.path / METRICS, lambda f: f.write(text.encode()))
        except OSError as e:
            raise _os_error(e, "write") from None

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch record (one JSON line, flushed and fsynced)."""
        line = (json.dumps(record) + "\n").encode()
        try:
            with open(self.path / METRICS, "ab") as f:
                if armed("commit:torn"):  # the reliability tests: a crash halfway through the line
                    f.write(line[: len(line) // 2])
                    f.flush()
                    kill()
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise _os_error(e, "append to") from None

    def write_groups(self, doc: dict[str, Any]) -> None:
        """Write ``groups.json`` (see :func:`groups_document`)."""
        try:
            write_json(self.path / GROUPS, doc)
        except OSError as e:
            raise _os_error(e, "write") from None

    def commit_epoch(self, ckpt: dict[str, Any], record: dict[str, Any], best: bool, groups: dict[str, Any] | None) -> None:
        """Commit one finished epoch, crash-consistently (see the module docstring): ``last.pt`` (holding
        ``record``), ``best.pt`` when ``best``, the metrics line, ``groups.json``. Signals wait until it is done."""
        from .checkpoint import save_checkpoint

        with deferred():
            try:
                save_checkpoint({**ckpt, "record": record}, self.last)
                fault("commit:last")
                if best:
                    atomic_link(self.last, self.best)
            except OSError as e:
                raise _os_error(e, "write the checkpoint") from None
            self.append_metrics(record)
            fault("commit:metrics")
            if groups is not None:
                self.write_groups(groups)
            self.committed_epoch = int(record["epoch"])
