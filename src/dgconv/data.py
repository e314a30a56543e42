"""Datasets and loaders: the embedded default (scikit-learn's digits), CIFAR-10/100 from the official python
pickle layout, and ImageNet-style folders through torchvision (optional).

In-memory datasets (digits, CIFAR) are held as uint8 tensors, moved to the training device once, and
augmented there on whole batches (random crop with 4-pixel zero padding and horizontal flip for CIFAR), so
a GPU never waits for a CPU loader. Their batch order and augmentation are functions of ``(seed, epoch,
rank)`` only, which makes resumed runs bit-identical to uninterrupted ones.

CIFAR pickles are read with a restricted unpickler that accepts only the types the official files contain
(dicts, lists, strings, bytes, numbers and uint8 NumPy arrays); it never runs a general ``pickle.load`` on
user files.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DGConvError

__all__ = [
    "DataError",
    "TensorDataset",
    "load_digits",
    "load_cifar",
    "find_cifar_dir",
    "TensorLoader",
    "augment_crop_flip",
    "DATASETS",
    "Loaders",
    "make_loaders",
]

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")


class DataError(DGConvError, ValueError):
    """A dataset is missing, malformed, or not what was asked for; the message says what was expected."""


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


# ------------------------------------------------------------------------------------------------ digits
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


# ------------------------------------------------------------------------------------------------ CIFAR
class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # Python 3 writes bytes this way at protocol 2; it only turns str into bytes
    }

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR pickle format")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a CIFAR python pickle batch: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python pickle batch (expected a dict, got {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def find_cifar_dir(name: str, data_dir: str | Path) -> Path:
    """The folder holding the official python batches: ``data_dir`` itself or its ``cifar-10-batches-py`` /
    ``cifar-100-python`` child. Raises :class:`DataError` describing the expected layout."""
    folder, train, test, meta, _, _ = _LAYOUT[name]
    root = Path(data_dir).expanduser()
    for cand in (root, root / folder):
        if all((cand / f).is_file() for f in [*train, *test, meta]):
            return cand
    expected = ", ".join([*train, *test, meta])
    raise DataError(
        f"{name}: no official python-pickle layout under {root}. Expected a folder '{folder}' (or the folder itself) "
        f"holding {expected} -- the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html, "
        f"as torchvision and Keras read it."
    )


def _batches(paths: list[Path], label_key: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for p in paths:
        if limit is not None and sum(len(x) for x in xs) >= limit:
            break  # the first `limit` images are already read
        d = _load_pickle(p)
        data, labels = d.get("data"), d.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{p}: 'data' must be a uint8 array of shape (N, 3072)")
        if labels is None or len(labels) != len(data):
            raise DataError(f"{p}: '{label_key}' must list one label per image")
        xs.append(torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32))
        ys.append(torch.as_tensor(np.asarray(labels, dtype=np.int64)))
    return torch.cat(xs), torch.cat(ys)


def load_cifar(name: str, data_dir: str | Path, limit_train: int | None = None, limit_test: int | None = None) -> TensorDataset:
    """CIFAR-10 or CIFAR-100 (fine labels) from the official python pickle layout under ``data_dir``.

    ``limit_train``/``limit_test`` keep the first images of each split (and read only the files they need); the
    normalisation statistics always come from the first 10,000 training images, limited or not.
    """
    if name not in _LAYOUT:
        raise DataError(f"unknown CIFAR variant {name!r}: use 'cifar10' or 'cifar100'")
    root = find_cifar_dir(name, data_dir)
    _, train, test, meta, label_key, names_key = _LAYOUT[name]
    train_x, train_y = _batches([root / f for f in train], label_key, None if limit_train is None else max(limit_train, 10000))
    test_x, test_y = _batches([root / f for f in test], label_key, limit_test)
    names = _load_pickle(root / meta).get(names_key)
    if not isinstance(names, list):
        raise DataError(f"{root / meta}: missing '{names_key}'")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    for y in (train_y, test_y):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{root}: labels outside 0..{len(classes) - 1}")
    xf = train_x[:10000].float() / 255
    mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
    std = tuple(xf.std(dim=(0, 2, 3)).tolist())
    ds = TensorDataset(name, train_x, train_y, test_x, test_y, classes, mean, std, 255.0, "crop_flip")
    return ds.subset(limit_train, limit_test) if limit_train or limit_test else ds


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


def make_loaders(cfg: Any, env: Any, model_size: Sequence[int] | None = None) -> Loaders:
    """Loaders for ``cfg.dataset`` (digits, CIFAR-10/100 in memory; image folders streamed), split over the
    processes of ``env``. ``model_size`` is the model's designed input size (image folders use it for large images)."""
    if cfg.dataset == "imagefolder":
        from .data_folder import folder_loaders

        per = None if cfg.batch_size == "auto" else cfg.batch_size // env.world_size
        train, test, classes, size, folder = folder_loaders(cfg, env, per, model_size)
        return Loaders(train, test, classes, size, {"source": "imagefolder", **dataclasses.asdict(folder)})
    per_rank = cfg.batch_size // env.world_size
    if cfg.dataset == "digits":
        ds = load_digits()
    elif cfg.dataset in ("cifar10", "cifar100"):
        if getattr(cfg, "download", False):
            from .download import download_cifar

            download_cifar(cfg.dataset, cfg.data_dir)
        ds = load_cifar(cfg.dataset, cfg.data_dir, cfg.limit_train, cfg.limit_test)
    else:
        raise DataError(f"unknown dataset {cfg.dataset!r}: choose from {list(DATASETS)}")
    if cfg.limit_train or cfg.limit_test:
        ds = ds.subset(cfg.limit_train, cfg.limit_test)
    ds = ds.with_statistics(getattr(cfg, "mean", None), getattr(cfg, "std", None))
    size = getattr(cfg, "image_size", None)
    args = (per_rank, env.device, cfg.seed, env.rank, env.world_size, cfg.channels_last, size,
            getattr(cfg, "crop_padding", 4))
    train, test = TensorLoader(ds, True, *args), TensorLoader(ds, False, *args)
    if len(train) == 0:
        raise DataError(f"{len(ds.train_x)} training examples make no full batch of {per_rank} per process")
    shape = (ds.input_size[0], size or ds.input_size[1], size or ds.input_size[2])
    info = {"source": cfg.dataset, "native_size": list(ds.input_size[1:]), "image_size": shape[-1],
            "mean": list(ds.mean), "std": list(ds.std), "augment": ds.augment,
            "crop_padding": getattr(cfg, "crop_padding", 4) if ds.augment != "none" else None}
    return Loaders(train, test, ds.num_classes, shape, info)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ batches
def augment_crop_flip(x: Tensor, gen: torch.Generator, pad: int = 4) -> Tensor:
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
        crop_padding: int = 4,
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
