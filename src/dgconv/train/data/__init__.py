"""The data of a run: the embedded digits, CIFAR-10/100 (reading and ``--download``), image folders, and the
loaders that batch them (``make_loaders``). The names below are the package's public data API."""

from __future__ import annotations

from ...errors import DataError
from .cifar import download_cifar, find_cifar_dir, load_cifar
from .digits import load_digits
from .loaders import Loaders, TensorLoader, augment_crop_flip, make_loaders
from .tensors import TensorDataset

__all__ = ["DataError", "TensorDataset", "load_digits", "load_cifar", "find_cifar_dir", "download_cifar",
           "TensorLoader", "augment_crop_flip", "Loaders", "make_loaders"]
