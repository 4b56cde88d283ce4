"""What every loader of :mod:`captum_robust.data` shares: the class names, the format error and the argument checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import torch



PathLike = Union[str, "os.PathLike[str]"]

DIGITS_CLASSES: Tuple[str, ...] = tuple(str(i) for i in range(10))
MNIST_CLASSES: Tuple[str, ...] = DIGITS_CLASSES
FASHION_MNIST_CLASSES: Tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES: Tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

_NUM_CLASSES = 10
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE  # 3073 bytes: label, R plane, G plane, B plane


class DataFormatError(ValueError):
    """A data file exists but its content is not what the format requires."""


# --------------------------------------------------------------------------- validation


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype (e.g. torch.float32), got {dtype!r}")


def _check_dir(data_dir: PathLike, what: str) -> Path:
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path (str or os.PathLike), got {type(data_dir).__name__}")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} data_dir '{path}' does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} data_dir '{path}' is not a directory")
    return path
