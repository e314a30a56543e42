"""Image folders (``DIR/train/<class>/*``, ``DIR/val/<class>/*``) through torchvision, at the data's own size.

Defaults follow the data, not ImageNet:

* **size and policy** (``--resize auto``): the images' native size is read from a sample of the training folder.
  Small images (at most 64 pixels on their longer side) train at their native size with the CIFAR recipe
  (``pad``: zero-pad by an eighth and random-crop back, evaluation as is); larger ones with the ImageNet recipe at the
  model's input size (``crop``: random-resized crop keeping at least ``--crop-scale`` 0.35 of the image -- ImageNet's
  0.08 is for 90-epoch schedules -- evaluation resize + centre crop). ``--resize stretch`` resizes
  every image to the size instead. ``--image-size`` sets the size for any policy.
* **channels**: grayscale folders train with 1 channel, anything else as RGB. Grayscale is read from the pixels,
  not the file mode: a folder of RGB (or palette) files whose three channels are equal is grayscale.
* **normalisation**: per-channel mean and standard deviation computed from (a sample of up to 2,000 of) the training
  images at the training size, recorded in ``config.json``; ``--mean``/``--std`` override them.
* **flips** (``--hflip auto``): random horizontal flips for colour images, none for grayscale ones (digits and
  documents change meaning when mirrored).
* **workers**: one fewer than the CPU cores this process may use (at most 8), so a 2-core machine runs 1 worker.
* **batch** (``--batch-size`` not given): a power of two between 32 and 256 that gives at least about 100 steps
  per epoch (ImageNet 256; 4,000 images 32).

Corrupt or unreadable images are **skipped and counted**, never fatal: a ten-hour ImageNet epoch should not die on
one truncated JPEG. So are images of more than :data:`MAX_PIXELS` pixels (decompression bombs: a 2.7 MB PNG can
claim 30000x30000), which are refused before they are decoded. Each epoch the trainer logs how many were skipped and
names the first few (``metrics.jsonl`` records ``skipped_images``). A folder (train or val) in which no image of a
sample can be read is an error before training.

Images are converted by their real range: 16-bit and 32-bit integer images (``I;16``, ``I``) are scaled by 65535 or
their own maximum, float images (``F``) by theirs, never clipped at 255. Every image is brought to the training size
(an image of another size among the others is resized, not a crash after the epoch). Symbolic links to folders are
followed once: a link back to a folder above it (a loop, which made ImageFolder list images many times under the
wrong class) is an error naming the link.

torchvision is optional: install the build that matches your torch (``pip install torchvision==X`` for the X paired
with your torch version; a bare ``pip install torchvision`` may replace torch). Shuffling is seeded by
``(seed, epoch)`` and sharded over processes.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ...errors import DataError
from .. import interrupts

__all__ = ["folder_loaders", "FolderLoader", "FolderInfo", "default_workers", "default_batch_size", "RESIZE_POLICIES", "HFLIP_MODES"]

RESIZE_POLICIES = ("auto", "pad", "crop", "stretch")
#: What ``--hflip`` accepts: ``auto`` flips colour images only, ``on`` and ``off`` say it for every folder.
HFLIP_MODES = ("auto", "on", "off")
#: Images with more pixels than this are skipped unread (Pillow's own limit only warns below twice it).
MAX_PIXELS = 89_478_485
SMALL = 64  # images no larger than this (longer side) train at their native size by default


def default_workers() -> int:
    """Data-loading workers when none are asked for: the usable CPU cores minus one for the training loop, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def _quiet_worker(worker_id: int) -> None:
    """A loading worker ignores Ctrl-C: the terminal sends SIGINT to the whole process group, and each worker
    printed a KeyboardInterrupt traceback while the trainer was already stopping at a checkpoint (it ends the
    workers itself). Nor does it report the trainer hanging up on it: a batch's shared memory is handed over by a
    thread of the worker (multiprocessing's resource sharer, which reports through ``sys.excepthook``), and it
    printed "Connection reset by peer" when the stopping trainer closed that connection mid-handshake."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _unless_trainer_hung_up  # what the resource sharer's thread reports through


def _unless_trainer_hung_up(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    import sys

    if issubclass(kind, (ConnectionError, EOFError)):
        return  # the trainer closed its end (it is stopping, or gone): nothing this worker should say
    sys.__excepthook__(kind, error, tb)


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


def _open(path: str, mode: str) -> Any:
    """A PIL image in ``mode``, upright by its EXIF orientation, or ``None`` when the file cannot be read as an image
    (or claims too many pixels)."""
    from PIL import Image, ImageOps

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            if img.width * img.height > MAX_PIXELS:
                return None
            img = ImageOps.exif_transpose(img)  # a photo stored sideways with an EXIF rotation is read upright
            return _to_8bit(img).convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _to_8bit(img: Any) -> Any:
    """``img`` with 16/32-bit integer or float pixels scaled to 8 bits by their real range (Pillow's ``convert``
    clips them at 255: a 16-bit image turned almost all white)."""
    if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return img
    import numpy as np
    from PIL import Image

    a = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        top = 65535.0
    elif img.mode == "I":
        top = 65535.0 if 255 < a.max() <= 65535 else max(float(a.max()), 1.0)
    else:  # float pixels: [0, 1] or [0, 255] as they come
        top = 1.0 if a.max() <= 1.0 else max(float(a.max()), 1.0)
    return Image.fromarray(np.clip(a / top * 255.0, 0, 255).round().astype(np.uint8), "L")


class _SkippingFolder:
    """``torchvision.datasets.ImageFolder`` whose unreadable images come back as ``(None, path)``."""

    def __init__(self, root: Path, mode: str, transform: Any) -> None:
        from torchvision import datasets

        self.folder = datasets.ImageFolder(str(root))  # only its scan (classes, samples) is used; images open here
        self.mode, self.transform = mode, transform
        self.classes = self.folder.classes

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        path, target = self.folder.samples[i]
        img = _open(path, self.mode)
        if img is None:
            return None, path
        return self.transform(img), target


def _collate(batch: list[tuple[Any, Any]]) -> tuple[Tensor, Tensor, list[str]]:
    good = [(x, y) for x, y in batch if x is not None]
    bad = [path for x, path in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


class FolderLoader:
    """Wraps a DataLoader with the ``len()`` / ``epoch(e)`` interface of :class:`dgconv.train.data.TensorLoader`; counts
    the images it skipped since :meth:`take_skipped` was last called."""

    def __init__(self, loader: DataLoader, sampler: DistributedSampler | _Shard, device: torch.device,
                 channels_last: bool, batch_size: int) -> None:
        self.loader, self.sampler, self.device, self.channels_last = loader, sampler, device, channels_last
        self.batch_size = batch_size
        self.size = len(loader.dataset)  #: examples in the split (all processes together)
        self._skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.loader)

    def take_skipped(self) -> list[str]:
        """The unreadable files met since the last call (and forget them)."""
        out, self._skipped = self._skipped, []
        return out

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches on the device. A stop signal that arrives while the DataLoader hands out a batch is
        raised once it has (:func:`dgconv.train.interrupts.deferred`): raised inside the DataLoader, it could leave
        the lock of a worker's index queue held, and the loader's shutdown then waited on it forever (1 Ctrl-C in
        26 beside two busy loops)."""
        self.sampler.set_epoch(epoch)
        with interrupts.deferred():
            batches = iter(self.loader)
        while True:
            with interrupts.deferred():
                try:
                    x, y, bad = next(batches)
                except StopIteration:
                    return
            self._skipped.extend(bad)
            if len(y) == 0:
                continue
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


@dataclass
class FolderInfo:
    """What the folder turned out to be, and how it is read (recorded in ``config.json``)."""

    native_size: tuple[int, int]
    image_size: int
    policy: str
    channels: int
    mean: list[float]
    std: list[float]
    hflip: bool
    workers: int
    batch_size: int
    classes: list[str] = field(default_factory=list)


def _scan(root: Path, sample: int = 64) -> tuple[tuple[int, int], str]:
    """Median (height, width) of a sample of the folder's images and their PIL mode family ("L" or "RGB")."""
    from PIL import Image

    sizes, modes = [], []
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    step = max(1, len(files) // sample)
    for p in files[::step][:sample]:
        try:
            with Image.open(p) as img:
                if img.width * img.height > MAX_PIXELS:
                    continue
                sizes.append((img.height, img.width))
                modes.append("L" if img.mode in GRAY_MODES or _gray_content(img) else img.mode)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    if not sizes:
        raise DataError(f"imagefolder: no readable image in a sample of {root}")
    h = int(statistics.median(s[0] for s in sizes))
    w = int(statistics.median(s[1] for s in sizes))
    gray = all(m == "L" for m in modes)
    return (h, w), ("L" if gray else "RGB")


GRAY_MODES = ("L", "1", "I;16", "I;16B", "I;16L", "I;16N", "I", "F", "LA")


def _gray_content(img: Any, tolerance: int = 8) -> bool:
    """Whether a colour-mode image (RGB, RGBA, palette, CMYK...) holds only grays: every pixel's channels within
    ``tolerance`` of each other (JPEG rounding moves them a little). Many digit and document folders are exported
    as RGB; read as colour they trained with 3 channels and random mirror images (4,000 digits: 91 % train accuracy
    after 5 epochs, against 98 % as grayscale)."""
    import numpy as np

    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    return bool((a.max(axis=2) - a.min(axis=2)).max() <= tolerance)


def _check_links(root: Path) -> None:
    """Refuse a symbolic link to a folder that contains it (ImageFolder follows links, so a loop lists the same
    images again and again under the wrong class); other links to folders are followed once."""
    for folder, dirs, _ in os.walk(root, followlinks=False):
        for d in dirs:
            link = Path(folder) / d
            if link.is_symlink():
                target = link.resolve()
                here = link.parent.resolve()
                if here == target or target in here.parents:
                    raise DataError(f"imagefolder: {link} is a symbolic link to {target}, a folder above it (a loop); "
                                    f"remove it or point it elsewhere")


def _statistics(dataset: Any, limit: int = 2000) -> tuple[list[float], list[float]]:
    n = len(dataset)
    step = max(1, n // limit)
    xs = [dataset[i][0] for i in range(0, n, step)][:limit]
    xs = [x for x in xs if x is not None]
    if not xs:
        raise DataError("imagefolder: no readable training image to compute the normalisation from")
    x = torch.stack(xs)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()


def default_batch_size(n_train: int) -> int:
    """The global batch when none is given: about 100 steps per epoch or more, a power of two in [32, 256]
    (ImageNet: 256; 4,000 images: 32). Measured on four kinds of 4,000-image folders, 5 epochs
    (``benchmarks/bench_folder.py``): 100+ steps an epoch were at least as accurate as the 50 of 0.2 on each, at the
    same time per epoch (pen digits 99.4 against 98.1 %, scikit-learn's digits 98.9 against 98.5 %).

    >>> default_batch_size(1_281_167), default_batch_size(4000), default_batch_size(500)
    (256, 32, 32)
    """
    b = 32
    while b * 2 <= min(256, n_train / 100):
        b *= 2
    return b


def _check_layout(root: Path) -> tuple[tuple[int, int], str]:
    """``root/train`` and ``root/val`` exist, hold no link loops and no class folder that is another class's (a
    link to it), and their images are readable: the native size and mode of the training images."""
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(
                f"imagefolder: no '{split}' folder under {root}. Expected {root}/train/<class>/<image> and "
                f"{root}/val/<class>/<image> (the layout torchvision's ImageFolder reads)"
            )
    for split in ("train", "val"):
        _check_links(root / split)
        _check_class_folders(root / split)
    native, mode = _scan(root / "train")
    _scan(root / "val")  # a val split of unreadable images is an error now, not an accuracy of 0 after training
    return native, mode


def _check_class_folders(split: Path) -> None:
    """Refuse two class folders that are one folder (a symlink to a sibling class would train the same images
    under two labels)."""
    seen: dict[Path, str] = {}
    for d in sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith(".")):
        real = d.resolve()
        if real in seen:
            raise DataError(f"imagefolder: {d} is the same folder as {split / seen[real]} (a link): the same images "
                            f"would train under two labels; remove the link or copy the images")
        seen[real] = d.name


def _check_classes(train: list[str], val: list[str]) -> None:
    if len(train) < 2:
        raise DataError(f"imagefolder: train has {len(train)} class folder(s) ({', '.join(train) or 'none'}); a "
                        f"classifier needs at least 2 (every prediction would be right)")
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise DataError(f"imagefolder: the class folders of train and val differ: only in train {only_train or 'none'}, "
                        f"only in val {only_val or 'none'}")


def _transforms(cfg: Any, transforms: Any, native: tuple[int, int], mode: str, model_size: Sequence[int] | None
                ) -> tuple[str, int, int, bool, list[Any], list[Any]]:
    """The resize policy, size, channel count and flips of a folder, and its train and eval transforms (before
    ``ToTensor``)."""
    policy = cfg.resize
    if policy == "auto":
        policy = "pad" if max(native) <= SMALL else "crop"
    if cfg.image_size:
        size = int(cfg.image_size)
    elif policy == "pad" or (policy == "stretch" and max(native) <= SMALL):
        size = max(native)
    else:
        size = int(model_size[-1]) if model_size else 224
    channels = 1 if mode == "L" else 3
    hflip = {"on": True, "off": False, "auto": channels == 3}[cfg.hflip]
    flip = [transforms.RandomHorizontalFlip()] if hflip else []
    if policy == "pad":  # every image at the size, whatever its own (one 20x20 among 16x16 ones once broke a batch)
        base = [transforms.Resize((size, size))]
        train_tf = [*base, transforms.RandomCrop(size, padding=max(1, size // 8)), *flip]
        eval_tf = list(base)
    elif policy == "crop":
        train_tf = [transforms.RandomResizedCrop(size, scale=(float(cfg.crop_scale), 1.0)), *flip]
        eval_tf = [transforms.Resize(int(round(size * 256 / 224))), transforms.CenterCrop(size)]
    else:  # stretch
        train_tf = [transforms.Resize((size, size)), *flip]
        eval_tf = [transforms.Resize((size, size))]
    return policy, size, channels, hflip, train_tf, eval_tf


def folder_loaders(cfg: Any, env: Any, per_rank_batch: int | None, model_size: Sequence[int] | None = None
                   ) -> tuple[FolderLoader, FolderLoader, int, tuple[int, int, int], FolderInfo]:
    """Train and validation loaders of ``cfg.data_dir``, the class count, the input size and how it is read.
    ``per_rank_batch=None``: :func:`default_batch_size` of the (limited) training set, split over the processes."""
    try:
        from torchvision import transforms
    except Exception as e:  # ImportError, or a torchvision built for another torch
        raise DataError(
            f"--dataset imagefolder needs torchvision built for your torch {torch.__version__}: pip install "
            f"torchvision==<the version paired with it> ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    root = Path(cfg.data_dir).expanduser()
    native, mode = _check_layout(root)
    policy, size, channels, hflip, train_tf, eval_tf = _transforms(cfg, transforms, native, mode, model_size)
    to_tensor = transforms.ToTensor()
    try:
        plain = _SkippingFolder(root / "train", mode, transforms.Compose([*eval_tf, to_tensor]))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"imagefolder: {e}") from None
    mean, std = (list(cfg.mean), list(cfg.std)) if cfg.mean else _statistics(plain)
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"--mean/--std need {channels} values for these {'grayscale' if channels == 1 else 'RGB'} images, "
                        f"got {len(mean)} and {len(std)}")
    norm = transforms.Normalize(mean, std)
    try:
        train_set = _SkippingFolder(root / "train", mode, transforms.Compose([*train_tf, to_tensor, norm]))
        val_set = _SkippingFolder(root / "val", mode, transforms.Compose([*eval_tf, to_tensor, norm]))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"imagefolder: {e}") from None
    _check_classes(train_set.classes, val_set.classes)
    train_data: Any = train_set
    val_data: Any = val_set
    if cfg.limit_train:
        train_data = torch.utils.data.Subset(train_set, range(min(cfg.limit_train, len(train_set))))
    if cfg.limit_test:
        val_data = torch.utils.data.Subset(val_set, range(min(cfg.limit_test, len(val_set))))
    if per_rank_batch is None:
        per_rank_batch = max(1, default_batch_size(len(train_data)) // env.world_size)
    workers = default_workers() if cfg.workers is None else int(cfg.workers)
    tr_s = DistributedSampler(train_data, env.world_size, env.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    va_s = _Shard(len(val_data), env.rank, env.world_size)
    kw = dict(num_workers=workers, pin_memory=env.device.type == "cuda", persistent_workers=workers > 0, collate_fn=_collate,
              worker_init_fn=_quiet_worker if workers else None)
    train = DataLoader(train_data, per_rank_batch, sampler=tr_s, drop_last=True, **kw)
    val = DataLoader(val_data, per_rank_batch, sampler=va_s, **kw)
    if len(train) == 0:
        raise DataError(f"imagefolder: {len(train_data)} training images make no full batch of {per_rank_batch}")
    info = FolderInfo(native, size, policy, channels, [float(v) for v in mean], [float(v) for v in std], hflip, workers,
                      per_rank_batch * env.world_size, list(train_set.classes))
    return (
        FolderLoader(train, tr_s, env.device, cfg.channels_last, per_rank_batch),
        FolderLoader(val, va_s, env.device, cfg.channels_last, per_rank_batch),
        len(train_set.classes),
        (channels, size, size),
        info,
    )
