"""Checkpoints: written atomically (temporary file, fsync, rename; :func:`atomic_write` serves every file a run
writes in place), read with ``weights_only=True``.

File-system failures (permission denied, disk full, read-only file system) surface as :class:`OSError` with the
path and the operating system's reason -- also from inside ``torch.save``, which otherwise reports a full disk as
``[enforce fail at inline_container.cc]``. Files are created with the process's umask (0644 by default), like any
other tool's.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts::

    {"format": "dgconv.checkpoint/1", "model_name": str, "num_classes": int, "model_kwargs": {...},
     "input_size": [C, H, W], "model": state_dict, "optimizer": state_dict, "epoch": completed epochs,
     "step": optimizer steps, "best_acc": float, "best_epoch": int, "constraint": {...}, "lookahead": {...} | None,
     "frozen": {layer: {"factors", "gates", "values"}} | None, "rng": {"torch": ByteTensor, "cuda": [...]},
     "config": {...}, "record": the metrics line of its epoch}

so it loads with ``torch.load(path, weights_only=True)`` without our code. This module is the only one that builds
that dict (:func:`build_checkpoint`) or reads its fields (:func:`contents`, :func:`saved_epoch`,
:func:`model_from_checkpoint`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write, with_path
from ..errors import DGConvError

__all__ = [
    "CheckpointError",
    "load_weights_only",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "FORMAT",
    "build_checkpoint",
    "Contents",
    "contents",
    "saved_epoch",
    "restore_rng",
]

FORMAT = "dgconv.checkpoint/1"


class CheckpointError(DGConvError, ValueError):
    """A checkpoint is missing, unreadable (corrupt or truncated), or not a dgconv checkpoint."""


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Write ``obj`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_weights_only(path: str | Path, what: str = "weights file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a :class:`CheckpointError` that says what is
    wrong -- missing, corrupt, or holding objects outside the weights-only format -- and never PyTorch's advice to
    retry with ``weights_only=False`` (that would run whatever code the file carries)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(str(e))
        if "GLOBAL" in detail or detail.startswith("Unsupported global"):
            raise CheckpointError(
                f"{path} is not a dgconv {what}: it holds objects outside the weights-only format, which dgconv "
                f"never unpickles (a dgconv {what} holds only tensors and plain data). Detail: {detail[:200]}"
            ) from None
        raise CheckpointError(f"{path} is not a readable {what} (corrupt or truncated?): {detail[:200]}") from None
    except OSError as e:
        raise with_path(e, path) from None
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path} is not a readable {what} (corrupt or truncated?): {type(e).__name__}: {str(e)[:300]}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dgconv checkpoint (on the CPU) with ``weights_only=True`` and check that it is one.

    Raises:
        CheckpointError: the file is missing, unreadable, or lacks the dgconv format marker and keys.
    """
    path = Path(path)
    obj = load_weights_only(path, "checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dgconv checkpoint (expected format {FORMAT!r}; a foreign file?)")
    missing = [k for k in ("model_name", "num_classes", "model", "epoch", "config") if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is an incomplete dgconv checkpoint: missing {missing}")
    return obj


def _unpickler_detail(message: str) -> str:
    """The reason inside torch's weights-only error message, without its advice to disable the safety check."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("WeightsUnpickler error:"):
            rest = ln.split(":", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            # torch goes on to advise allow-listing the global (add_safe_globals): for a crafted file that would
            # run its code, so only the global's name is kept
            return rest.split(" was not an allowed global")[0].split(". Please")[0]
    return next((ln for ln in lines if "weights_only" not in ln and "torch.load" not in ln), "unreadable pickle data")


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> torch.nn.Module:
    """Rebuild the model a checkpoint holds (a path or a dict from :func:`load_checkpoint`), weights loaded."""
    from ..models import create_model

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    kwargs = ckpt.get("model_kwargs", {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"the checkpoint's model_kwargs must be a mapping, got {type(kwargs).__name__}")
    try:
        model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **kwargs)
    except (TypeError, ValueError) as e:  # an unknown model, or arguments this version's builder does not take
        raise CheckpointError(f"the checkpoint's model {ckpt['model_name']!r} with {kwargs} cannot be built: {e}") from None
    if ckpt.get("frozen"):  # written after freeze_groups: rebuild that structure, its orders run as they were
        from ..convert.freeze import refreeze

        config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
        try:
            refreeze(model, ckpt["frozen"], orders=str(config.get("orders", "gather")))
        except ValueError as e:
            raise CheckpointError(f"the checkpoint's frozen grouping does not fit {ckpt['model_name']}: {e}") from None
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint's weights do not fit {ckpt['model_name']}: {e}") from None
    return model


def build_checkpoint(*, model_name: str, num_classes: int, model_kwargs: dict[str, Any], input_size: list[int],
                     model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int, best_acc: float,
                     best_epoch: int, constraint: dict[str, Any], lookahead: dict[str, Any] | None,
                     frozen: dict[str, Any] | None, config: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """The checkpoint of a run at the end of epoch ``epoch`` (the trainer's state; the random generators' states
    are taken here). :meth:`dgconv.train.rundir.RunWriter.commit_epoch` adds the epoch's metrics line."""
    return {
        "format": FORMAT, "model_name": model_name, "num_classes": num_classes, "model_kwargs": model_kwargs,
        "input_size": list(input_size), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "epoch": epoch, "step": step, "best_acc": best_acc, "best_epoch": best_epoch, "constraint": constraint,
        "lookahead": lookahead, "frozen": frozen,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else []},
        "config": config,
    }


@dataclass(frozen=True)
class Contents:
    """A checkpoint's fields, read and checked (:func:`contents`); ``None``/empty where an older checkpoint lacks
    one."""

    model_name: str
    num_classes: int
    epoch: int
    config: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, ...] | None = None
    step: int = 0
    best_acc: float = 0.0
    best_epoch: int | None = None
    constraint: dict[str, Any] = field(default_factory=dict)
    lookahead: dict[str, Any] | None = None
    frozen: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def contents(ckpt: dict[str, Any] | str | Path) -> Contents:
    """The fields of a checkpoint (a path, or a dict from :func:`load_checkpoint`), each checked for its kind.

    Raises:
        CheckpointError: a field of the wrong kind (a crafted or damaged file), named.
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    kinds: dict[str, Any] = {"model_name": str, "num_classes": int, "epoch": int, "config": dict, "model": dict,
                             "optimizer": dict, "model_kwargs": dict, "input_size": (list, tuple), "step": int,
                             "best_acc": (int, float), "best_epoch": int, "constraint": dict, "lookahead": dict,
                             "frozen": dict, "rng": dict, "record": dict}
    values: dict[str, Any] = {}
    for name, kind in kinds.items():
        value = ckpt.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise CheckpointError(f"the checkpoint's {name} is a {type(value).__name__}, not what dgconv writes there")
        values[name] = tuple(value) if name == "input_size" else value
    missing = [k for k in ("model_name", "num_classes", "epoch", "config", "model") if k not in values]
    if missing:
        raise CheckpointError(f"an incomplete dgconv checkpoint: missing {missing}")
    if values.get("frozen") == {}:
        values["frozen"] = None
    return Contents(**values)


def saved_epoch(path: str | Path) -> int | None:
    """The epoch a checkpoint file ends, or ``None`` when it is not a readable dgconv checkpoint."""
    try:
        return contents(path).epoch
    except CheckpointError:
        return None


def restore_rng(state: Contents, cuda: bool) -> None:
    """Put the random generators back where the checkpoint left them (a resumed run repeats the original)."""
    torch.set_rng_state(state.rng["torch"])
    if cuda and state.rng.get("cuda"):
        torch.cuda.set_rng_state_all(state.rng["cuda"])
