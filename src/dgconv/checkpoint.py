"""Checkpoints: written atomically (temporary file, fsync, rename; :func:`atomic_write` serves every file a run
writes in place), read with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts::

    {"format": "dgconv.checkpoint/1", "model_name": str, "num_classes": int, "model_kwargs": {...},
     "model": state_dict,
     "optimizer": state_dict, "epoch": completed epochs, "step": optimizer steps, "best_acc": float,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]}, "config": {...}}

so it loads with ``torch.load(path, weights_only=True)`` without our code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["CheckpointError", "atomic_write", "save_checkpoint", "load_checkpoint", "model_from_checkpoint", "FORMAT"]

FORMAT = "dgconv.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable (corrupt or truncated), or not a dgconv checkpoint."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it and rename it over ``path``: a crash at any
    moment leaves either the old file or the new one, never a torn one or a stray temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Write ``obj`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dgconv checkpoint (on the CPU) with ``weights_only=True`` and check that it is one.

    Raises:
        CheckpointError: the file is missing, unreadable, or lacks the dgconv format marker and keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dgconv checkpoint (expected format {FORMAT!r}; a foreign file?)")
    missing = [k for k in ("model_name", "num_classes", "model", "epoch", "config") if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is an incomplete dgconv checkpoint: missing {missing}")
    return obj


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> torch.nn.Module:
    """Rebuild the model a checkpoint holds (a path or a dict from :func:`load_checkpoint`), weights loaded."""
    from .models import create_model

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], **ckpt.get("model_kwargs", {}))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint's weights do not fit {ckpt['model_name']}: {e}") from None
    return model
