"""The run directory: the one module that knows which files a run holds, how they are written and how they are read.

Layout (every file plain and documented, so a run can be read without dgconv)::

    config.json     {"format": "dgconv.run/1", "config": {TrainConfig}, "environment": {... "started", "argv"},
                     "num_classes", "input_size", "o", "train_images_per_epoch", "test_images",
                     "history": [{"resumed": time, "argv": [...], "from_epoch": E}, ...]}
    metrics.jsonl   one JSON object per finished epoch, "epoch" = 1, 2, ...
    groups.json     {"format": "dgconv.groups/1", "model", "groups": {layer: G}, "channels": {layer: [in, out]}}
    last.pt         checkpoint of the last finished epoch (``dgconv.train.checkpoint``; it also holds that epoch's
                    metrics line as "record" and the best epoch so far as "best_epoch")
    best.pt         checkpoint of the epoch with the best test accuracy (a hard link to that epoch's last.pt)
    .lock           the writer's lock (an OS file lock) and its PID, while a writer holds it (removed on close)
    tensorboard/    TensorBoard logs (optional)
    train.log       a sweep's capture of the run's console output

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

Readers (``dgconv report``, ``results``, ``deploy``, ``profile``, sweeps) use :func:`load_run`, the typed
:class:`Run`, :func:`read_groups` and :class:`RunName` -- no other module opens these files by name.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._faults import armed, fault, kill
from .._files import TEMP_SUFFIX, atomic_link, atomic_write, read_json, write_json, write_text
from ..errors import RunDirError, RunInUseError
from .interrupts import deferred

__all__ = [
    "CONFIG",
    "METRICS",
    "GROUPS",
    "LAST",
    "BEST",
    "LOCK",
    "LOG",
    "TENSORBOARD",
    "RUN_FORMAT",
    "GROUPS_FORMAT",
    "Run",
    "RunName",
    "set_aside_unresumable",
    "RunWriter",
    "load_run",
    "is_run",
    "is_dgconv_run",
    "read_groups",
    "groups_document",
    "read_metrics",
    "best_checkpoint",
    "checkpoint_path",
    "finished_epochs",
    "write_json",
    "write_text",
    "read_json",
    "iter_runs",
    "SWEEP",
    "RESULTS",
    "is_sweep",
]

_logger = logging.getLogger(__name__)

CONFIG, METRICS, GROUPS = "config.json", "metrics.jsonl", "groups.json"
SWEEP, RESULTS = "sweep.json", "results.md"  # a sweep directory: its record and its rendered results
LAST, BEST, LOCK, LOG, TENSORBOARD = "last.pt", "best.pt", ".lock", "train.log", "tensorboard"
RUN_FORMAT = "dgconv.run/1"
GROUPS_FORMAT = "dgconv.groups/1"


@dataclass
class _Metrics:
    rows: list[dict[str, Any]]
    torn_tail: bool  # the last line was cut short (a crash while appending it) and is left out of rows


def _parse_metrics(path: Path) -> _Metrics:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Metrics([], False)
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
    lines = data.split(b"\n")
    rows: list[dict[str, Any]] = []
    torn = False
    last_index = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if i == last_index and not data.endswith(b"\n"):
                torn = True  # a crash while the line was appended: repairable from the checkpoint
                continue
            raise RunDirError(f"{path}:{i + 1} is not a JSON line ({e}); fix or remove that line") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int) or isinstance(row.get("epoch"), bool):
            raise RunDirError(f"{path}:{i + 1} is not an epoch record (a JSON object with an integer 'epoch')")
        expected = len(rows) + 1
        if row["epoch"] != expected:
            raise RunDirError(f"{path}:{i + 1} records epoch {row['epoch']} where epoch {expected} was expected")
        rows.append(row)
    return _Metrics(rows, torn)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run, in order. A torn final line (a crash while it was written) is left out;
    any other malformed line is a :class:`RunDirError` naming the file and line."""
    return _parse_metrics(Path(run_dir) / METRICS).rows


def finished_epochs(run_dir: str | Path) -> int:
    """How many epochs a run has recorded (0 for a missing or empty metrics file)."""
    try:
        return len(read_metrics(run_dir))
    except RunDirError:
        return 0


def set_aside_unresumable(run_dir: str | Path) -> Path | None:
    """Move a run that recorded epochs but has no checkpoint to ``<name>.partial`` (replacing an older one) so the run
    can start again in its own directory; return the new path, or ``None`` when there was nothing to move.

    This is what a run stopped on another machine looks like once its directory came back without the checkpoint
    (GPU sessions bring back the JSON files only): it cannot resume, and a fresh start refuses recorded epochs.
    """
    path = Path(run_dir)
    if not path.is_dir() or (path / LAST).exists() or finished_epochs(path) == 0:
        return None
    aside = path.with_name(path.name + ".partial")
    if aside.exists():
        shutil.rmtree(aside)
    path.rename(aside)
    return aside


# ------------------------------------------------------------------------------------------------ groups
def groups_document(groups: Mapping[str, int], channels: Mapping[str, list[int]], model_name: str | None) -> dict[str, Any]:
    """The ``groups.json`` document: ``{"format", "model", "groups": {name: G}, "channels": {name: [in, out]}}``."""
    return {"format": GROUPS_FORMAT, "model": model_name, "groups": dict(groups), "channels": {k: list(v) for k, v in channels.items()}}


def read_groups(path: str | Path) -> dict[str, int]:
    """Read a group spec: a ``groups.json`` written by a run (or a run directory holding one), or a plain JSON
    mapping ``{module name: groups}``. Raises :class:`RunDirError` (a ``ValueError`` too) on anything else.

    Example::

        >>> import json, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.json"
        >>> _ = p.write_text(json.dumps({"layer1.0.conv2": 8}))
        >>> read_groups(p)
        {'layer1.0.conv2': 8}
    """
    p = Path(path)
    if p.is_dir():
        p = p / GROUPS
    if not p.is_file():
        raise RunDirError(f"no group spec at {p}")
    doc = read_json(p, "group spec")
    spec = doc.get("groups", doc) if isinstance(doc, dict) else None
    if not isinstance(spec, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1 for k, v in spec.items()
    ):
        raise RunDirError(f"{p} is not a group spec: expected {{module name: groups}} or a groups.json with a 'groups' mapping")
    return spec


# ------------------------------------------------------------------------------------------------ run names
_NAME = re.compile(
    r"^(?:(?P<family>[a-z][a-z0-9_]*)-g(?P<groups>\d+)|(?P<arm>g|star)(?:-(?P<cost>connections|macs|latency))?-b(?P<budget>[0-9.]+))"
    r"(?:-s(?P<seed>\d+))?$"
)


@dataclass(frozen=True)
class RunName:
    """The name of a run inside a sweep directory, and what it says about the run.

    ``arm``: ``"plain"`` (a network with ``value`` groups in every group convolution; named by its ``family``,
    e.g. ``resnext-g32``), ``"g"`` (groups learned under budget ``b = value``: ``g-b32``, ``g-macs-b32``) or
    ``"star"`` (ResNeXt* -- a plain network built from the groups a ``"g"`` run learned, trained from scratch:
    ``star-b32``, ``star-macs-b32``). ``cost`` is the budget's cost measure (omitted from the name for the paper's
    ``connections``); a seed other than 0 is appended as ``-s<seed>``.

    Example::

        >>> str(RunName("g", 32, cost="macs", seed=1))
        'g-macs-b32-s1'
        >>> RunName.parse("resnext-g32")
        RunName(arm='plain', value=32, cost='connections', seed=0, family='resnext')
    """

    arm: str
    value: float
    cost: str = "connections"
    seed: int = 0
    family: str = "resnext"

    def __post_init__(self) -> None:
        if self.arm not in ("plain", "g", "star"):
            raise ValueError(f"run arm must be 'plain', 'g' or 'star', got {self.arm!r}")

    def __str__(self) -> str:
        seed = f"-s{self.seed}" if self.seed else ""
        if self.arm == "plain":
            return f"{self.family}-g{int(self.value)}{seed}"
        cost = "" if self.cost == "connections" else f"-{self.cost}"
        return f"{self.arm}{cost}-b{self.value:g}{seed}"

    @property
    def source(self) -> RunName:
        """For a ``"star"`` run, the ``"g"`` run whose learned groups it trains (same budget, cost and seed)."""
        return RunName("g", self.value, self.cost, self.seed, self.family)

    @classmethod
    def parse(cls, name: str) -> RunName | None:
        """The :class:`RunName` a directory name spells, or ``None`` for any other name."""
        m = _NAME.match(name)
        if m is None:
            return None
        seed = int(m["seed"] or 0)
        if m["family"]:
            if m["family"] in ("g", "star"):
                return None
            return cls("plain", int(m["groups"]), seed=seed, family=m["family"])
        try:
            value = float(m["budget"])
        except ValueError:
            return None
        value = int(value) if value.is_integer() else value
        return cls(m["arm"], value, m["cost"] or "connections", seed)


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class Run:
    """The files of one run directory, parsed (what ``report``, ``results`` and sweeps read).

    Attributes:
        path: the run directory.
        config: the training configuration (``TrainConfig`` fields).
        environment: where and when it ran (versions, device, ``started``, ``argv``).
        metrics: the epoch records (``metrics.jsonl``), in order.
        groups, channels: ``groups.json`` (learned groups; empty for a run without DGConv layers).
        input_size, num_classes: what the model was built for.
        history: resumptions (``{"resumed", "argv", "from_epoch"}``), oldest first.
        extra: every other top-level field of ``config.json`` (``o``, ``test_images``, ...).
    """

    path: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    metrics: list[dict[str, Any]]
    groups: dict[str, int]
    channels: dict[str, list[int]]
    input_size: tuple[int, ...]
    num_classes: int
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The directory's name."""
        return self.path.name

    @property
    def run_name(self) -> RunName | None:
        """What the directory's name says (sweeps name their runs with :class:`RunName`), or ``None``."""
        return RunName.parse(self.path.name)

    @property
    def label(self) -> str:
        """A short legend entry: ``name: model b=... seed ...``."""
        c = self.config
        b = c.get("budget")
        extra = f" b={b:g}" if isinstance(b, (int, float)) and not isinstance(b, bool) else ""
        cost = c.get("cost")
        if extra and cost and cost != "connections":
            extra += f" ({cost})"
        seed = f" seed {c.get('seed')}" if c.get("seed") else ""
        return f"{self.path.name}: {c.get('model', '?')}{extra}{seed}"

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch record (empty before the first epoch ends)."""
        return self.metrics[-1] if self.metrics else {}

    @property
    def epochs(self) -> int:
        """Epochs the configuration asks for."""
        return int(self.config.get("epochs") or 0)

    @property
    def finished(self) -> bool:
        """Whether every configured epoch has a record."""
        return bool(self.metrics) and len(self.metrics) >= self.epochs

    @property
    def train_seconds(self) -> float:
        """Sum of the epochs' wall times."""
        return float(sum(m.get("time", 0.0) for m in self.metrics))

    def checkpoint(self, best: bool = False) -> Path:
        """The path of the run's ``last.pt`` (or the consistent best checkpoint, :func:`best_checkpoint`)."""
        return best_checkpoint(self.path) if best else checkpoint_path(self.path)


def is_sweep(path: str | Path) -> bool:
    """Whether ``path`` is a sweep directory (it has a ``sweep.json``)."""
    return (Path(path) / SWEEP).is_file()


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (it has a ``config.json``)."""
    return (Path(path) / CONFIG).is_file()


def _require(doc: Any, key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if not isinstance(doc, dict) or key not in doc or not isinstance(doc[key], kind):
        raise RunDirError(f"{path} is malformed: expected a field {key!r} of type {getattr(kind, '__name__', kind)}")
    return doc[key]


def load_run(path: str | Path) -> Run:
    """Parse a run directory. A missing directory or ``config.json``, or any malformed file, is a
    :class:`RunDirError` that names the file (and line)."""
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"{p} is not a run directory (no such directory)")
    cpath = p / CONFIG
    if not cpath.is_file():
        raise RunDirError(f"{p} is not a run directory: no {CONFIG}")
    doc = read_json(cpath, CONFIG)
    config = _require(doc, "config", dict, cpath)
    for key in ("model", "dataset", "epochs"):
        if key not in config:
            raise RunDirError(f"{cpath} is malformed: its 'config' has no {key!r}")
    env = doc.get("environment", {})
    if not isinstance(env, dict):
        raise RunDirError(f"{cpath} is malformed: 'environment' must be an object")
    rows = read_metrics(p)
    groups: dict[str, int] = {}
    channels: dict[str, list[int]] = {}
    gpath = p / GROUPS
    if gpath.exists():
        gdoc = read_json(gpath, GROUPS)
        groups = read_groups(gpath)
        channels = gdoc.get("channels", {}) if isinstance(gdoc, dict) and isinstance(gdoc.get("channels", {}), dict) else {}
    elif rows and isinstance(rows[-1].get("groups"), dict):
        groups = rows[-1]["groups"]
    size = doc.get("input_size") or []
    if not isinstance(size, list) or not all(isinstance(s, int) for s in size):
        raise RunDirError(f"{cpath} is malformed: 'input_size' must be a list of integers")
    history = doc.get("history", [])
    extra = {k: v for k, v in doc.items() if k not in ("config", "environment", "input_size", "num_classes", "history", "format")}
    try:
        num_classes = int(doc.get("num_classes", 0))
    except (TypeError, ValueError):
        raise RunDirError(f"{cpath} is malformed: 'num_classes' must be an integer") from None
    return Run(p, config, env, rows, groups, channels, tuple(size), num_classes,
               history if isinstance(history, list) else [], extra)


def checkpoint_path(source: str | Path, best: bool = False) -> Path:
    """The checkpoint a run directory's name resolves to (``last.pt``, or with ``best`` the consistent best one),
    or ``source`` itself when it is a checkpoint file. ``--resume ''`` and other empty paths are refused."""
    if not str(source).strip():
        raise RunDirError("no run directory given (an empty path)")
    p = Path(source)
    if p.is_dir():
        return best_checkpoint(p) if best else p / LAST
    return p


def _epoch_of(path: Path) -> int | None:
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        return int(load_checkpoint(path)["epoch"])
    except CheckpointError:
        return None


def best_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint of the run's best epoch: ``best.pt``, unless a crash between writing ``last.pt`` and
    ``best.pt`` left ``best.pt`` behind -- then ``last.pt``, which holds that same epoch."""
    run_dir = Path(run_dir)
    from .checkpoint import load_checkpoint

    last, best = run_dir / LAST, run_dir / BEST
    if not last.exists():
        return best
    ckpt = load_checkpoint(last)
    want = ckpt.get("best_epoch")
    if want is None:  # a checkpoint from dgconv 0.1: no record of the best epoch
        return best
    if int(want) == int(ckpt["epoch"]) and (not best.exists() or _epoch_of(best) != int(want)):
        return last
    return best


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
        lock = self.path / LOCK
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, a warning
            fcntl = None  # type: ignore[assignment]
        for _ in range(100):  # a closing writer may remove .lock between our open and our flock: open it again
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise _os_error(e, "create the lock file") from None
            if fcntl is None:  # pragma: no cover
                _logger.warning("no file locks on this platform: make sure one process at a time writes %s", self.path)
                self._lock_fd = fd
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").split()
                os.close(fd)
                pid = holder[0] if holder else "unknown"
                raise RunInUseError(
                    f"{self.path} is in use by another dgconv process (PID {pid}); wait for it to finish, stop it, "
                    f"or choose another --out"
                ) from None
            if _same_file(fd, lock):
                break
            os.close(fd)
        else:  # pragma: no cover - a hundred writers closing in turn
            raise RunInUseError(f"{self.path}: could not take its lock (other writers kept replacing {LOCK})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._lock_fd = fd

    def close(self, discard: bool = False) -> None:
        """Release the lock and remove ``.lock``.

        ``discard``: the run failed or was stopped; if it committed no epoch, also remove what this writer made --
        the folders it created (with everything in them), or else the fresh ``config.json`` it wrote."""
        if self._lock_fd is None:
            return
        try:
            if discard and self.committed_epoch is None and not self.has_checkpoint() and not _parse_metrics(
                    self.path / METRICS).rows:
                if self.created is not None:
                    self._remove_created()
                elif self._wrote_config:
                    (self.path / CONFIG).unlink(missing_ok=True)
            if _same_file(self._lock_fd, self.path / LOCK):
                (self.path / LOCK).unlink(missing_ok=True)
        except OSError as e:  # leaving a file behind is no reason to hide the run's own outcome
            _logger.warning("could not tidy %s: %s", self.path, e.strerror or e)
        finally:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

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
        stray = [p for p in self.path.glob(".*" + TEMP_SUFFIX) if p.is_file() and _ours(p)]
        for p in stray:
            p.unlink(missing_ok=True)
        return stray

    # -------------------------------------------------------------------------------- recovery
    def check_fresh(self) -> None:
        """Refuse to start a new run over an existing one (a checkpoint, or recorded epochs), or in a folder that
        holds anything but a dgconv run (nothing there is touched)."""
        foreign = sorted(p.name for p in self.path.iterdir() if not _ours(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise RunDirError(
                f"{self.path} is not empty and not a dgconv run directory (it holds {shown}); choose a new or empty "
                f"folder for --out"
            )
        if self.has_checkpoint():
            raise RunDirError(f"{self.path} already holds a run ({LAST}); pass --resume {self.path} or choose another --out")
        if _parse_metrics(self.path / METRICS).rows:
            raise RunDirError(
                f"{self.path} holds the metrics of a run but no checkpoint; choose another --out (or delete "
                f"{self.path / METRICS} if that run is of no use)"
            )

    def recover(self, ckpt: dict[str, Any] | None, source: Path | None = None) -> list[str]:
        """Make the directory consistent with the checkpoint the run continues from (``None``: a fresh start;
        ``source``: the file it was read from, by default ``last.pt``).

        Removes stray temporaries, keeps the metrics lines up to the checkpoint's epoch (re-appending that
        epoch's line from the checkpoint when a crash lost or tore it), and re-links ``best.pt`` when a crash
        left it one epoch behind. Returns one message per repair (empty when nothing was needed).
        Raises :class:`RunDirError` for a malformed metrics file that is not a torn final line.
        """
        notes = [f"removed {p.name}, a temporary left by a killed write" for p in self.remove_temporaries()]
        parsed = _parse_metrics(self.path / METRICS)
        epoch = int(ckpt["epoch"]) if ckpt is not None else 0
        rows = parsed.rows[:epoch]
        if parsed.torn_tail:
            notes.append(f"dropped a torn final line of {self.path / METRICS} (a crash while it was written)")
        if ckpt is not None and len(rows) < epoch:
            record = ckpt.get("record")
            if len(rows) == epoch - 1 and isinstance(record, dict) and record.get("epoch") == epoch:
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
        if ckpt is not None and ckpt.get("best_epoch") is not None:
            want = int(ckpt["best_epoch"])
            if want == epoch and (not self.best.exists() or _epoch_of(self.best) != want):
                atomic_link(source or self.last, self.best)
                notes.append(f"{BEST} was behind the metrics (a crash between the two checkpoints); re-linked it to epoch {want}")
        return notes

    # -------------------------------------------------------------------------------- files
    def write_config(self, doc: dict[str, Any], resumed_from: int | None = None) -> None:
        """Write ``config.json``. A resumed run keeps the original ``started`` time and ``argv`` and appends
        ``{"resumed", "argv", "from_epoch"}`` to ``history``."""
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
                doc["history"] = [*history, {"resumed": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": list(sys.argv),
                                             "from_epoch": resumed_from}]
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


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open descriptor ``fd`` is the file now at ``path``."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _ours(p: Path) -> bool:
    """Whether ``p``, inside a folder where a fresh run starts, is something a dgconv run (or the sweep that started
    it) writes: its files, its lock, temporaries of its atomic writes, TensorBoard logs, the sweep's log."""
    name = p.name
    if name in (LOCK, LOG, METRICS, GROUPS, LAST, BEST, TENSORBOARD):
        return True
    if name == CONFIG:
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("format") == RUN_FORMAT
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and any(
        name.startswith(f".{target}.") for target in (CONFIG, METRICS, GROUPS, LAST, BEST))


def is_dgconv_run(path: str | Path) -> bool:
    """Whether ``path`` is a folder that a dgconv run wrote (its ``config.json`` has dgconv's format)."""
    p = Path(path) / CONFIG
    return p.is_file() and _ours(p)


def iter_runs(folder: str | Path) -> Iterator[Run]:
    """Every run directory directly under ``folder`` (sorted by name) that has recorded at least one epoch."""
    for d in sorted(Path(folder).iterdir()):
        if d.is_dir() and is_run(d):
            run = load_run(d)
            if run.metrics:
                yield run
