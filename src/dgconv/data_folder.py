"""ImageNet-style folders (``DIR/train/<class>/*.jpg``, ``DIR/val/<class>/*.jpg``) through torchvision.

torchvision is an optional extra (``pip install 'dgconv[vision]'``, matching your torch build). Training uses
the paper's augmentation (random-resized crop to 224 and horizontal flip); evaluation resizes to 256 and
takes the 224 centre crop. Shuffling is seeded by ``(seed, epoch)`` and sharded over processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .data import DataError

__all__ = ["folder_loaders", "FolderLoader"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _Shard(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every evaluation image exactly once over all processes."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))

    def set_epoch(self, epoch: int) -> None:
        pass


class FolderLoader:
    """Wraps a DataLoader with the ``len()`` / ``epoch(e)`` interface of :class:`dgconv.data.TensorLoader`."""

    def __init__(self, loader: DataLoader, sampler: DistributedSampler | _Shard, device: torch.device, channels_last: bool) -> None:
        self.loader, self.sampler, self.device, self.channels_last = loader, sampler, device, channels_last
        self.size = len(loader.dataset)  #: examples in the split (all processes together)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.set_epoch(epoch)
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def folder_loaders(cfg: Any, env: Any, per_rank_batch: int) -> tuple[FolderLoader, FolderLoader, int, tuple[int, int, int]]:
    try:
        from torchvision import datasets, transforms
    except Exception as e:  # ImportError, or a torchvision built for another torch
        raise DataError(
            f"--dataset imagefolder needs torchvision matching your torch ({torch.__version__}): "
            f"pip install 'dgconv[vision]' ({type(e).__name__}: {e})"
        ) from None
    root = Path(cfg.data_dir).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(
                f"imagefolder: no '{split}' folder under {root}. Expected {root}/train/<class>/<image> and "
                f"{root}/val/<class>/<image> (the ImageNet layout torchvision's ImageFolder reads)"
            )
    norm = transforms.Normalize(MEAN, STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    eval_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])
    try:
        train_set = datasets.ImageFolder(str(root / "train"), train_tf)
        val_set = datasets.ImageFolder(str(root / "val"), eval_tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"imagefolder: {e}") from None
    if train_set.classes != val_set.classes:
        raise DataError(f"imagefolder: train has {len(train_set.classes)} classes and val {len(val_set.classes)}; they must match")
    if cfg.limit_train:
        train_set = torch.utils.data.Subset(train_set, range(min(cfg.limit_train, len(train_set))))
    if cfg.limit_test:
        val_set = torch.utils.data.Subset(val_set, range(min(cfg.limit_test, len(val_set))))
    tr_s = DistributedSampler(train_set, env.world_size, env.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    va_s = _Shard(len(val_set), env.rank, env.world_size)
    pin = env.device.type == "cuda"
    kw = dict(num_workers=cfg.workers, pin_memory=pin, persistent_workers=cfg.workers > 0)
    train = DataLoader(train_set, per_rank_batch, sampler=tr_s, drop_last=True, **kw)
    val = DataLoader(val_set, per_rank_batch, sampler=va_s, **kw)
    if len(train) == 0:
        raise DataError(f"imagefolder: {len(train_set)} training images make no full batch of {per_rank_batch}")
    return (
        FolderLoader(train, tr_s, env.device, cfg.channels_last),
        FolderLoader(val, va_s, env.device, cfg.channels_last),
        len(val_set.dataset.classes if isinstance(val_set, torch.utils.data.Subset) else val_set.classes),
        (3, 224, 224),
    )
