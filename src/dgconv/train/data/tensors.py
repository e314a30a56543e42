"""A whole dataset in memory (:class:`TensorDataset`): uint8 images and labels, class names and the statistics
that normalise them. The digits and CIFAR readers build one; :mod:`dgconv.train.data.loaders` batches it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from ...errors import DataError

__all__ = ["TensorDataset"]


@dataclass
class TensorDataset:
    """A whole dataset in memory.

    Attributes:
        name: dataset name.
        train_x, test_x: uint8 images ``(N, C, H, W)``.
        train_y, test_y: int64 labels ``(N,)``.
        classes: class names.
        mean, std: per-channel statistics in the [0, 1] scale, for normalisation.
        scale: divide uint8 values by this to reach [0, 1] (255 for photos, 16 for digits).
        augment: ``"crop_flip"`` (CIFAR) or ``"none"``.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0
    augment: str = "none"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def with_statistics(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> TensorDataset:
        """The same data normalised with the given per-channel ``mean``/``std`` (in the [0, 1] scale) instead.

        Raises:
            DataError: a list of the wrong length.
        """
        if mean is None and std is None:
            return self
        c = self.input_size[0]
        mean, std = list(mean or self.mean), list(std or self.std)
        if len(mean) != c or len(std) != c:
            raise DataError(f"--mean/--std need {c} values for {self.name} ({c} channel{'s' * (c > 1)}), got "
                            f"{len(mean)} and {len(std)}")
        if any(not v > 0 for v in std):
            raise DataError(f"--std values must be positive, got {std}")
        return dataclasses.replace(self, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def subset(self, train: int | None = None, test: int | None = None) -> TensorDataset:
        """The first ``train``/``test`` examples (for smoke tests and quick runs)."""
        return TensorDataset(
            self.name,
            self.train_x[:train],
            self.train_y[:train],
            self.test_x[:test],
            self.test_y[:test],
            self.classes,
            self.mean,
            self.std,
            self.scale,
            self.augment,
        )
