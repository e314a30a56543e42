"""Loaders: a run's datasets as batches, split over processes -- the embedded digits and CIFAR-10/100 in memory
(:mod:`~dgconv.train.data.digits`, :mod:`~dgconv.train.data.cifar`), ImageNet-style folders streamed through
torchvision (:mod:`~dgconv.train.data.folder`, optional).

In-memory datasets are held as uint8 tensors, moved to the training device once, and augmented there on whole
batches (random crop with 4-pixel zero padding and horizontal flip for CIFAR), so a GPU never waits for a CPU
loader. Their batch order and augmentation are functions of ``(seed, epoch, rank)`` only, which makes resumed runs
bit-identical to uninterrupted ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...errors import DataError
from ..config import CROP_PADDING, DATASET_DEFAULTS, TrainConfig
from ..distributed import DistEnv
from .cifar import download_cifar, load_cifar
from .digits import load_digits
from .tensors import TensorDataset

__all__ = ["TensorLoader", "augment_crop_flip", "Loaders", "make_loaders"]


# ------------------------------------------------------------------------------------------------ loaders
@dataclass
class Loaders:
    """The train and test loaders of a run, its class count, the input size the model sees, and a record of how
    the data is read (for ``config.json``)."""

    train: Any
    test: Any
    num_classes: int
    input_size: tuple[int, int, int]
    info: dict[str, Any]


def make_loaders(cfg: TrainConfig, env: DistEnv, model_size: Sequence[int] | None = None) -> Loaders:
    """Loaders for ``cfg.dataset`` (digits, CIFAR-10/100 in memory; image folders streamed), split over the
    processes of ``env``. ``model_size`` is the model's designed input size (image folders use it for large images)."""
    if cfg.dataset == "imagefolder":
        from .folder import folder_loaders

        per = None if cfg.batch_size == "auto" else cfg.batch_size // env.world_size
        train, test, classes, size, folder = folder_loaders(cfg, env, per, model_size)
        return Loaders(train, test, classes, size, {"source": "imagefolder", **dataclasses.asdict(folder)})
    per_rank = cfg.batch_size // env.world_size
    if cfg.dataset == "digits":
        ds = load_digits()
    elif cfg.dataset in ("cifar10", "cifar100"):
        if cfg.download:
            download_cifar(cfg.dataset, cfg.data_dir)
        ds = load_cifar(cfg.dataset, cfg.data_dir, cfg.limit_train, cfg.limit_test)
    else:
        raise DataError(f"unknown dataset {cfg.dataset!r}: choose from {list(DATASET_DEFAULTS)}")
    if cfg.limit_train or cfg.limit_test:
        ds = ds.subset(cfg.limit_train, cfg.limit_test)
    ds = ds.with_statistics(cfg.mean, cfg.std)
    size = cfg.image_size
    args = (per_rank, env.device, cfg.seed, env.rank, env.world_size, cfg.channels_last, size,
            cfg.crop_padding)
    train, test = TensorLoader(ds, True, *args), TensorLoader(ds, False, *args)
    if len(train) == 0:
        raise DataError(f"{len(ds.train_x)} training examples make no full batch of {per_rank} per process")
    shape = (ds.input_size[0], size or ds.input_size[1], size or ds.input_size[2])
    info = {"source": cfg.dataset, "native_size": list(ds.input_size[1:]), "image_size": shape[-1],
            "mean": list(ds.mean), "std": list(ds.std), "augment": ds.augment,
            "crop_padding": cfg.crop_padding if ds.augment != "none" else None}
    return Loaders(train, test, ds.num_classes, shape, info)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ batches
def augment_crop_flip(x: Tensor, gen: torch.Generator, pad: int = CROP_PADDING) -> Tensor:
    """Random crop with ``pad``-pixel zero padding and random horizontal flip, per image, on x's device.

    The result is NHWC in memory (``channels_last``; the crop gathers whole pixels). Convolutions follow their input's
    layout, and on CPU this one is the faster: a ResNeXt step of batch 128 at 32x32 measured 287 ms NHWC against 495
    ms NCHW (2-core AMD EPYC). DGConv keeps it too."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device)
    flip = torch.rand(n, generator=gen, device=gen.device) < 0.5
    dy, dx, flip = dy.to(x.device), dx.to(x.device), flip.to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2)


class TensorLoader:
    """Batches of a :class:`TensorDataset` split, on a device, deterministic in ``(seed, epoch, rank)``.

    Args:
        ds: the dataset.
        train: the training split (shuffled, augmented, incomplete last batch dropped) or the test split.
        batch_size: per-process batch size.
        device: where batches live (the split is copied there once).
        seed: base seed.
        rank, world_size: shard of the data for distributed training (each rank sees ``ceil(N / world)``
            examples per epoch; the permutation is padded by wrapping, as ``DistributedSampler`` does).
        channels_last: return batches in ``torch.channels_last`` memory format. Without it, batches of a dataset
            with crop augmentation are NHWC all the same (the crop gathers whole pixels), and so are its test
            batches: the model evaluates in the layout it trains in (on the 2-core EPYC guest a ResNeXt evaluation
            ran 1.36x faster NHWC than NCHW).
        image_size: resize every batch to ``image_size x image_size`` (bilinear, after augmentation); ``None``:
            the dataset's own size.
        crop_padding: zero padding of the random crop (CIFAR augmentation); 0 keeps only the flips.
    """

    def __init__(
        self,
        ds: TensorDataset,
        train: bool,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        image_size: int | None = None,
        crop_padding: int = CROP_PADDING,
    ) -> None:
        self.x = (ds.train_x if train else ds.test_x).to(device)
        self.y = (ds.train_y if train else ds.test_y).to(device)
        self.train = train
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.augment = ds.augment if train else "none"
        self.nhwc = channels_last or ds.augment != "none"  # the training batches' layout, for both splits
        self.image_size = image_size if image_size and image_size != ds.input_size[-1] else None
        self.crop_padding = int(crop_padding)
        self.mean = torch.tensor(ds.mean, device=device).view(1, -1, 1, 1) * ds.scale
        self.std = torch.tensor(ds.std, device=device).view(1, -1, 1, 1) * ds.scale
        n = len(self.x)
        self.size = n  #: examples in the split (all processes together)
        self.per_rank = math.ceil(n / world_size) if train else len(range(rank, n, world_size))

    def __len__(self) -> int:
        if self.train:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def _indices(self, epoch: int) -> Tensor:
        n = len(self.x)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        total = self.per_rank * self.world_size
        if total > n:
            perm = torch.cat([perm, perm[: total - n]])
        return perm[self.rank : total : self.world_size]

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(images, labels)``: float images normalised by the dataset statistics, on the device."""
        idx = self._indices(epoch).to(self.device)
        gen = None
        if self.augment != "none":
            gen = torch.Generator(device=self.device).manual_seed((self.seed * 1_000_003 + epoch) * 4099 + self.rank)
        for b in range(len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.x.index_select(0, sel)
            if gen is not None:
                x = augment_crop_flip(x, gen, self.crop_padding)
            x = (x.float() - self.mean) / self.std
            if self.image_size is not None:
                x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                                    align_corners=False)
            if self.nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y.index_select(0, sel)
