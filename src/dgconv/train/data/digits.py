"""The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from .tensors import TensorDataset

__all__ = ["load_digits"]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images (1797, 8, 8), targets (1797,))``, read from the CSV that ships inside
    scikit-learn without importing it (the import costs seconds; the file is what ``load_digits`` reads too)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the default dataset (digits) comes with scikit-learn: pip install 'dgconv[train]' (or scikit-learn)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        d = np.loadtxt(path, delimiter=",")
        return d[:, :-1].reshape(-1, 8, 8), d[:, -1]
    from sklearn.datasets import (
        load_digits as _sk_digits,  # a layout this shortcut does not know
    )

    d = _sk_digits()
    return d.images, d.target


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> TensorDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), split train/test.

    The data ships inside scikit-learn (no download). The split is stratified and fixed by ``seed``.
    """
    images, targets = _digits_arrays()
    x = torch.from_numpy(images.astype(np.uint8))[:, None]  # values 0..16
    y = torch.from_numpy(targets.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = round(len(idx) * test_fraction)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = torch.cat(train_idx)[torch.randperm(sum(len(i) for i in train_idx), generator=gen)]
    te = torch.cat(test_idx).sort().values
    xf = x[tr].float() / 16
    return TensorDataset(
        "digits", x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)],
        (xf.mean().item(),), (xf.std().item(),), scale=16.0, augment="none",
    )


