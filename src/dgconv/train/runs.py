"""The run directory's contract and its readers: which files a run holds, what they contain, and how they are read
(:mod:`dgconv.train.rundir` is the one module that writes them).

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

Readers (``dgconv report``, ``results``, ``deploy``, ``profile``, sweeps) use :func:`load_run`, the typed
:class:`Run` and :func:`read_groups` -- no other module opens these files by name.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import TEMP_SUFFIX, read_json
from ..errors import RunDirError

__all__ = [
    "CONFIG", "METRICS", "GROUPS", "LAST", "BEST", "LOCK", "LOG", "TENSORBOARD", "RUN_FORMAT", "GROUPS_FORMAT",
    "SWEEP", "RESULTS", "Run", "set_aside_unresumable", "load_run", "is_run", "is_dgconv_run", "is_sweep",
    "read_groups", "read_structure", "groups_document", "read_metrics", "best_checkpoint", "checkpoint_path", "finished_epochs",
    "iter_runs", "default_run_dir", "is_run_file", "parse_metrics",
]

CONFIG, METRICS, GROUPS = "config.json", "metrics.jsonl", "groups.json"
SWEEP, RESULTS = "sweep.json", "results.md"  # a sweep directory: its record and its rendered results
LAST, BEST, LOCK, LOG, TENSORBOARD = "last.pt", "best.pt", ".lock", "train.log", "tensorboard"
RUN_FORMAT = "dgconv.run/1"
GROUPS_FORMAT = "dgconv.groups/1"


@dataclass
class _Metrics:
    rows: list[dict[str, Any]]
    torn_tail: bool  # the last line was cut short (a crash while appending it) and is left out of rows


#: Fields of an epoch record that are numbers when present (the readers plot and compare them).
NUMERIC_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "best_acc", "lr", "time", "step")
#: Fields that are fractions: a record outside [0, 1] was not written by dgconv.
FRACTION_FIELDS = ("train_acc", "test_acc", "best_acc")
#: The largest metrics file read: dgconv writes a few kilobytes an epoch, so this is tens of thousands of epochs.
MAX_METRICS_BYTES = 64 << 20


def _is_number(v: Any, fraction: bool = False) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or abs(v) > 1e15:
        return False
    return 0 <= v <= 1 if fraction else True


def parse_metrics(path: Path) -> _Metrics:
    try:
        size = path.stat().st_size
        if size > MAX_METRICS_BYTES:
            raise RunDirError(f"{path} is {size / 2**20:,.0f} MiB, more than any run writes (a few KB an epoch); "
                              f"not a dgconv metrics file")
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
        bad = next((k for k in NUMERIC_FIELDS if k in row and not _is_number(row[k], k in FRACTION_FIELDS)), None)
        if bad is not None:
            want = "a fraction in [0, 1]" if bad in FRACTION_FIELDS else "a finite number"
            raise RunDirError(f"{path}:{i + 1} has {bad!r} = {json.dumps(row[bad])[:40]}, where {want} was expected; "
                              f"fix or remove that line")
        expected = len(rows) + 1
        if row["epoch"] != expected:
            raise RunDirError(f"{path}:{i + 1} records epoch {row['epoch']} where epoch {expected} was expected")
        rows.append(row)
    return _Metrics(rows, torn)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run, in order. A torn final line (a crash while it was written) is left out;
    any other malformed line is a :class:`RunDirError` naming the file and line."""
    return parse_metrics(Path(run_dir) / METRICS).rows


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
def groups_document(groups: Mapping[str, int], channels: Mapping[str, list[int]], model_name: str | None,
                    structure: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``groups.json`` document: ``{"format", "model", "groups": {name: G}, "channels": {name: [in, out]}}``,
    plus ``"structure": {name: {"factors": [...], "gates": [...]}}`` (the learned channel order,
    :func:`dgconv.convert.freeze.structure_record`) when given."""
    doc = {"format": GROUPS_FORMAT, "model": model_name, "groups": dict(groups), "channels": {k: list(v) for k, v in channels.items()}}
    if structure is not None:
        doc["structure"] = {k: {"factors": list(v["factors"]), "gates": list(v["gates"])} for k, v in structure.items()}
    return doc


def read_structure(path: str | Path) -> tuple[str | None, dict[str, dict[str, list[Any]]]]:
    """The model name and the ``"structure"`` of a ``groups.json`` (or a run directory holding one): every learned
    layer's factor order and binary gates. Raises :class:`RunDirError` when the file has none (written before
    0.3, or by hand) or it is malformed."""
    p = Path(path)
    if p.is_dir():
        p = p / GROUPS
    if not p.is_file():
        raise RunDirError(f"no groups.json at {p}")
    doc = read_json(p, "groups.json")
    structure = doc.get("structure") if isinstance(doc, dict) else None
    if not isinstance(structure, dict) or not structure:
        raise RunDirError(f"{p} records no structure (the learned channel order; runs write it from dgconv 0.3 on)")
    for name, layer in structure.items():
        ok = (isinstance(layer, dict) and isinstance(layer.get("factors"), list) and isinstance(layer.get("gates"), list)
              and len(layer["factors"]) == len(layer["gates"])
              and all(isinstance(f, int) and not isinstance(f, bool) and f >= 2 for f in layer["factors"])
              and all(isinstance(g, bool) for g in layer["gates"]))
        if not ok:
            raise RunDirError(f"{p}: the structure of {name!r} is malformed (want factors >= 2 and as many boolean gates)")
    model = doc.get("model")
    return (model if isinstance(model, str) else None), structure


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
    if not spec:
        raise RunDirError(f"{p} names no layer's groups (an empty mapping would leave every layer as it is)")
    return spec


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


def default_run_dir(model: str, dataset: str) -> Path:
    """Where a run goes when no ``--out`` is given: ``runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


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


def best_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint of the run's best epoch: ``best.pt``, unless a crash between writing ``last.pt`` and
    ``best.pt`` left ``best.pt`` behind -- then ``last.pt``, which holds that same epoch."""
    run_dir = Path(run_dir)
    from .checkpoint import contents, saved_epoch

    last, best = run_dir / LAST, run_dir / BEST
    if not last.exists():
        return best
    ckpt = contents(last)
    want = ckpt.best_epoch
    if want is None:  # a checkpoint from dgconv 0.1: no record of the best epoch
        return best
    if want == ckpt.epoch and (not best.exists() or saved_epoch(best) != want):
        return last
    return best


def is_run_file(p: Path) -> bool:
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
    return p.is_file() and is_run_file(p)


def iter_runs(folder: str | Path) -> Iterator[Run]:
    """Every run directory directly under ``folder`` (sorted by name) that has recorded at least one epoch."""
    for d in sorted(Path(folder).iterdir()):
        if d.is_dir() and is_run(d):
            run = load_run(d)
            if run.metrics:
                yield run
