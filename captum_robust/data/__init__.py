"""Data sets for the examples, tests and benchmarks: nothing is downloaded at run time.

Two kinds of source are supported:

* **Embedded default** -- scikit-learn's handwritten digits (1,797 real 8x8 grey-scale
  images, shipped inside the scikit-learn package), served by :func:`load_digits` and
  :func:`digits_loaders`, optionally upsampled (bilinear) to the 28x28 resolution of MNIST.
  This works offline everywhere scikit-learn is installed.
* **Files the user already has** -- a folder of PNG/JPEG images in class sub-folders
  (:func:`load_image_folder`, read with Pillow), MNIST and Fashion-MNIST in the original IDX format
  (:func:`load_mnist`, :func:`load_fashion_mnist`), the *binary* version of CIFAR-10
  (:func:`load_cifar10`), and any image set saved as a NumPy ``.npz`` archive of arrays
  ``x`` and ``y`` (:func:`load_npz`). Point ``data_dir`` at the folder that holds them. Download them
  yourself beforehand, e.g. MNIST from a mirror of ``yann.lecun.com/exdb/mnist``,
  Fashion-MNIST from ``github.com/zalandoresearch/fashion-mnist`` and
  ``www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz`` (extract it).

The file parsers check every header field, the payload length and the label range, and
raise :class:`DataFormatError` (a :class:`ValueError`) naming the file and what was expected
rather than return a silently wrong array. Nothing is ever unpickled.

A third source is generated: :func:`make_token_task` draws a seeded synthetic text-classification
task (token ids, attention mask, labels) whose important tokens are known, for the token models
explained through ``embedding_layer=``.

Every loader returns a :class:`torch.utils.data.TensorDataset` of ``(images, labels)``:
floating-point images in ``[0, 1]`` shaped ``N x C x H x W`` and ``int64`` labels.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from captum_robust._utils.validation import OPEN_UNIT, check_fraction, check_int
from captum_robust.data._base import (  # noqa: F401  (re-exported)
    CIFAR10_CLASSES, DIGITS_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, DataFormatError, PathLike, _check_dtype,
    _NUM_CLASSES,
)
from captum_robust.data.files import load_cifar10, load_fashion_mnist, load_mnist, load_npz  # noqa: F401  (re-exported)
from captum_robust.data.images import IMAGE_EXTENSIONS, Normalize, load_image_folder  # noqa: F401  (re-exported)
from captum_robust.data.tokens import TokenTask, make_token_task  # noqa: F401  (re-exported)

__all__ = [
    "DataFormatError",
    "DigitsData",
    "load_digits",
    "digits_loaders",
    "load_mnist",
    "load_fashion_mnist",
    "load_cifar10",
    "load_npz",
    "load_image_folder",
    "IMAGE_EXTENSIONS",
    "Normalize",
    "DIGITS_CLASSES",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES",
    "TokenTask",
    "make_token_task",
]


class DigitsData(NamedTuple):
    """The scikit-learn digits split into a training and a test set.

    Attributes:
        train: ``TensorDataset`` of images ``N x 1 x size x size`` in ``[0, 1]`` and int64 labels.
        test: the held-out part, same layout.
        classes: the class names ``("0", ..., "9")``; label ``i`` is ``classes[i]``.
        image_shape: ``(1, size, size)``, the shape of one image.
    """

    train: TensorDataset
    test: TensorDataset
    classes: Tuple[str, ...]
    image_shape: Tuple[int, int, int]


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = bunch.images.astype(np.float64) / 16.0  # 0..16 -> [0, 1], exact in binary
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``B x C x H x W`` images to ``size x size``, clamped to [0, 1]."""
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0)


def load_digits(
    size: int = 28,
    test_fraction: float = 0.2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> DigitsData:
    """The scikit-learn handwritten digits as a stratified train/test split.

    The 1,797 8x8 images (pixel values 0..16) are scaled to ``[0, 1]`` by dividing by 16,
    resized to ``size x size`` with bilinear interpolation
    (``F.interpolate(mode="bilinear", align_corners=False)``, computed in float64) when
    ``size != 8``, clamped to ``[0, 1]`` and cast to ``dtype``. The split is stratified by
    class and fully determined by ``seed``.

    Args:
        size: side length of the returned images, an integer >= 1 (28 matches MNIST,
            8 gives the original pixels).
        test_fraction: fraction of the 1,797 images held out, in (0, 1); both parts must
            keep at least one image of every class.
        seed: seed of the split, an integer in [0, 2**32 - 1]. Same seed, same split.
        dtype: floating-point dtype of the images.

    Returns:
        DigitsData: ``(train, test, classes, image_shape)``; ``train`` and ``test`` are
        ``TensorDataset`` s of images ``N x 1 x size x size`` and int64 labels in 0..9.

    Raises:
        ValueError: ``size`` < 1, ``test_fraction`` outside (0, 1) or so extreme that a
            split lacks a class, ``seed`` out of range.
        TypeError: an argument of the wrong type.

    Example:
        >>> from captum_robust.data import load_digits
        >>> data = load_digits(size=28, seed=0)
        >>> x, y = data.train[0]
        >>> tuple(x.shape), data.image_shape, len(data.train) + len(data.test)
        ((1, 28, 28), (1, 28, 28), 1797)
    """
    check_int(size, "size", 1)
    check_int(seed, "seed", 0, 2**32 - 1)
    _check_dtype(dtype)
    check_fraction(test_fraction, "test_fraction", OPEN_UNIT)

    images, labels = _sklearn_digits()
    n = len(labels)
    n_test = math.ceil(test_fraction * n)  # how scikit-learn rounds
    if n_test < _NUM_CLASSES or n - n_test < _NUM_CLASSES:
        low, high = _NUM_CLASSES / n, 1 - _NUM_CLASSES / n
        raise ValueError(
            f"test_fraction must leave at least {_NUM_CLASSES} of the {n} images (one per class) "
            f"in each split, i.e. lie in about [{low:.4f}, {high:.4f}], got {test_fraction!r}"
        )

    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=n_test, stratify=labels, random_state=int(seed)
    )

    x = _resize_bilinear(torch.tensor(images).unsqueeze(1), size).to(dtype)  # float64 until here
    y = torch.from_numpy(labels.copy())

    def part(idx: np.ndarray) -> TensorDataset:
        idx_t = torch.from_numpy(idx)
        return TensorDataset(x[idx_t], y[idx_t])

    return DigitsData(part(train_idx), part(test_idx), DIGITS_CLASSES, (1, size, size))


def digits_loaders(
    batch_size: int = 64,
    size: int = 28,
    seed: int = 0,
    test_fraction: float = 0.2,
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
) -> Tuple[DataLoader, DataLoader]:
    """Data loaders over :func:`load_digits`: shuffled training set, ordered test set.

    The training loader shuffles with its own ``torch.Generator`` seeded by ``seed``, so the
    sequence of batches is reproducible and independent of the global RNG.

    Args:
        batch_size: examples per batch, an integer >= 1 (the last batch may be smaller).
        size: image side length, passed to :func:`load_digits`.
        seed: seed of both the split and the shuffling, an integer in [0, 2**32 - 1].
        test_fraction: held-out fraction, passed to :func:`load_digits`.
        dtype: floating-point dtype of the images.
        num_workers: ``DataLoader`` worker processes, an integer >= 0.

    Returns:
        tuple: ``(train_loader, test_loader)`` yielding ``(images, labels)`` batches of shape
        ``B x 1 x size x size`` and ``B``.

    Raises:
        ValueError: as :func:`load_digits`, or ``batch_size`` < 1, ``num_workers`` < 0.

    Example:
        >>> from captum_robust.data import digits_loaders
        >>> train_loader, test_loader = digits_loaders(batch_size=32, size=28)
        >>> x, y = next(iter(train_loader))
        >>> tuple(x.shape), tuple(y.shape)
        ((32, 1, 28, 28), (32,))
    """
    check_int(batch_size, "batch_size", 1)
    check_int(num_workers, "num_workers", 0)
    data = load_digits(size=size, test_fraction=test_fraction, seed=seed, dtype=dtype)
    generator = torch.Generator().manual_seed(int(seed))
    train_loader = DataLoader(
        data.train, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers
    )
    test_loader = DataLoader(data.test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, test_loader
