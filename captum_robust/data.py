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

Every loader returns a :class:`torch.utils.data.TensorDataset` of ``(images, labels)``:
floating-point images in ``[0, 1]`` shaped ``N x C x H x W`` and ``int64`` labels.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from captum_robust._utils.validation import OPEN_UNIT, check_fraction, check_int

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
]

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


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def _read_bytes(path: Path) -> bytes:
    """Read a file, decompressing it if its name ends in ``.gz``."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(f"'{path}' is not a valid, complete gzip file ({e}); download it again") from e


def _find(folder: Path, name: str, what: str) -> Path:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{what}: neither '{folder / name}' nor '{folder / name}.gz' exists")


def _parse_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file into a uint8 array, checking header and length."""
    buf = _read_bytes(path)
    header_len = 4 + 4 * ndim
    kind = "images" if ndim == 3 else "labels"
    if len(buf) < 4:
        raise DataFormatError(f"'{path}' has {len(buf)} bytes, too short for an IDX header")
    (got,) = struct.unpack(">I", buf[:4])
    if got != magic:
        hint = " (the file looks gzip-compressed: gunzip it or name it .gz)" if buf[:2] == b"\x1f\x8b" else ""
        raise DataFormatError(
            f"'{path}': expected IDX magic number 0x{magic:08X} (unsigned byte {kind}, {ndim} "
            f"dimension{'s' if ndim > 1 else ''}), got 0x{got:08X}{hint}"
        )
    if len(buf) < header_len:
        raise DataFormatError(
            f"'{path}' is truncated inside its header: {len(buf)} bytes, expected >= {header_len}"
        )
    dims = struct.unpack(f">{ndim}I", buf[4:header_len])
    if any(d == 0 for d in dims):
        raise DataFormatError(f"'{path}': expected every dimension >= 1, header says {dims}")
    expected = math.prod(dims)
    payload = len(buf) - header_len
    if payload != expected:
        problem = "truncated" if payload < expected else "too long"
        raise DataFormatError(
            f"'{path}' is {problem}: header dimensions {dims} need exactly {expected} data bytes "
            f"after the {header_len}-byte header, found {payload}"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header_len).reshape(dims)


_INT64_MAX = 2**63 - 1


def _check_labels(labels: np.ndarray, path: PathLike) -> None:
    bad = np.flatnonzero(labels >= _NUM_CLASSES)
    if bad.size:
        raise DataFormatError(
            f"'{path}': labels must be in 0..{_NUM_CLASSES - 1}, found {int(labels[bad[0]])} "
            f"at record {int(bad[0])} ({bad.size} out of range)"
        )


def _to_dataset(images: np.ndarray, labels: np.ndarray, dtype: torch.dtype) -> TensorDataset:
    x = torch.tensor(images, dtype=dtype).div_(255)  # copies out of the read-only buffer
    y = torch.tensor(labels, dtype=torch.int64)
    return TensorDataset(x, y)


def _load_idx_pair(data_dir: PathLike, train: bool, what: str, dtype: torch.dtype) -> TensorDataset:
    _check_dtype(dtype)
    folder = _check_dir(data_dir, what)
    prefix = "train" if train else "t10k"
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte", what)
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte", what)
    images = _parse_idx(images_path, _IDX_IMAGES_MAGIC, 3)
    labels = _parse_idx(labels_path, _IDX_LABELS_MAGIC, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{what}: '{images_path}' holds {images.shape[0]} images but '{labels_path}' holds "
            f"{labels.shape[0]} labels; expected the same count"
        )
    _check_labels(labels, labels_path)
    return _to_dataset(images[:, None], labels, dtype)


def load_mnist(data_dir: PathLike, train: bool = True, dtype: torch.dtype = torch.float32) -> TensorDataset:
    """MNIST from the original IDX files in ``data_dir``.

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``train=True``) or
    ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (``train=False``), each either
    plain or gzipped with a ``.gz`` suffix (the plain file is used when both exist). The
    header's magic number (0x00000803 images, 0x00000801 labels), dimensions and exact
    payload length are checked, as are the matching counts and the label range 0..9.

    Args:
        data_dir: folder holding the IDX files.
        train: the 60,000-image training set if True, else the 10,000-image test set.
        dtype: floating-point dtype of the images.

    Returns:
        TensorDataset: images ``N x 1 x rows x cols`` (28 x 28 for MNIST) equal to the stored
        bytes divided by 255, and int64 labels ``N``.

    Raises:
        FileNotFoundError: ``data_dir`` or a file is missing.
        DataFormatError: a corrupt or truncated gzip file, a wrong magic number, wrong
            dimensions, a payload length that does not match the header, differing image and
            label counts, or a label outside 0..9. The message names the file.

    Example:
        >>> from captum_robust.data import load_mnist
        >>> train_set = load_mnist("~/data/MNIST")  # doctest: +SKIP
        >>> train_set.tensors[0].shape  # doctest: +SKIP
        torch.Size([60000, 1, 28, 28])
    """
    return _load_idx_pair(data_dir, train, "MNIST", dtype)


def load_fashion_mnist(
    data_dir: PathLike, train: bool = True, dtype: torch.dtype = torch.float32
) -> TensorDataset:
    """Fashion-MNIST from its IDX files in ``data_dir``.

    Fashion-MNIST uses the same file names and format as MNIST, so this reads exactly like
    :func:`load_mnist`; point ``data_dir`` at the Fashion-MNIST folder. Class names are in
    :data:`FASHION_MNIST_CLASSES`.

    Args:
        data_dir: folder holding the Fashion-MNIST IDX files (plain or ``.gz``).
        train: the training set if True, else the test set.
        dtype: floating-point dtype of the images.

    Returns:
        TensorDataset: images ``N x 1 x 28 x 28`` in ``[0, 1]`` and int64 labels ``N``.

    Raises:
        FileNotFoundError: ``data_dir`` or a file is missing.
        DataFormatError: any format error listed in :func:`load_mnist`.

    Example:
        >>> from captum_robust.data import load_fashion_mnist, FASHION_MNIST_CLASSES
        >>> test_set = load_fashion_mnist("~/data/fashion", train=False)  # doctest: +SKIP
        >>> FASHION_MNIST_CLASSES[int(test_set[0][1])]  # doctest: +SKIP
        'Ankle boot'
    """
    return _load_idx_pair(data_dir, train, "Fashion-MNIST", dtype)


# --------------------------------------------------------------------------- CIFAR-10 (binary version)


def _cifar_folder(data_dir: PathLike) -> Path:
    folder = _check_dir(data_dir, "CIFAR-10")
    for candidate in (folder, folder / "cifar-10-batches-bin"):
        if (candidate / "test_batch.bin").is_file() or (candidate / "data_batch_1.bin").is_file():
            return candidate
    for candidate in (folder, folder / "cifar-10-batches-py"):
        is_py = candidate.name == "cifar-10-batches-py" and candidate.is_dir()
        if is_py or (candidate / "data_batch_1").is_file():
            raise DataFormatError(
                f"CIFAR-10: '{candidate}' is the Python (pickle) version, which captum_robust does not "
                f"load; download the binary version (cifar-10-binary.tar.gz) and point data_dir at "
                f"its 'cifar-10-batches-bin' folder"
            )
    raise FileNotFoundError(
        f"CIFAR-10: expected data_batch_1.bin .. data_batch_5.bin and test_batch.bin in '{folder}' "
        f"or in '{folder / 'cifar-10-batches-bin'}'"
    )


def load_cifar10(data_dir: PathLike, train: bool = True, dtype: torch.dtype = torch.float32) -> TensorDataset:
    """CIFAR-10 from the *binary* version (``cifar-10-binary.tar.gz``, extracted).

    Reads ``data_batch_1.bin`` .. ``data_batch_5.bin`` (``train=True``) or ``test_batch.bin``
    from ``data_dir`` or from ``data_dir/cifar-10-batches-bin``. Each record is one label
    byte followed by 3,072 pixel bytes: the red, green and blue 32x32 planes, row-major.
    The Python (pickle) version is refused: nothing is unpickled.

    Args:
        data_dir: the ``cifar-10-batches-bin`` folder or its parent.
        train: the 50,000-image training set if True, else the 10,000-image test set.
        dtype: floating-point dtype of the images.

    Returns:
        TensorDataset: images ``N x 3 x 32 x 32`` (channels R, G, B) equal to the stored bytes
        divided by 255, and int64 labels ``N``; class names are in :data:`CIFAR10_CLASSES`.

    Raises:
        FileNotFoundError: ``data_dir`` or a batch file is missing.
        DataFormatError: a file whose size is not a positive multiple of the 3,073-byte
            record, a label outside 0..9, or ``data_dir`` holding the pickle version.

    Example:
        >>> from captum_robust.data import load_cifar10
        >>> test_set = load_cifar10("~/data", train=False)  # doctest: +SKIP
        >>> test_set.tensors[0].shape  # doctest: +SKIP
        torch.Size([10000, 3, 32, 32])
    """
    _check_dtype(dtype)
    folder = _cifar_folder(data_dir)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10: '{path}' does not exist")
        buf = path.read_bytes()
        if len(buf) == 0 or len(buf) % _CIFAR_RECORD:
            raise DataFormatError(
                f"CIFAR-10: '{path}' has {len(buf)} bytes, expected a positive multiple of the "
                f"{_CIFAR_RECORD}-byte record (1 label byte + 3x32x32 pixel bytes)"
            )
        records = np.frombuffer(buf, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
        _check_labels(records[:, 0], path)
        labels.append(records[:, 0])
        images.append(records[:, 1:].reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE))
    return _to_dataset(np.concatenate(images), np.concatenate(labels), dtype)


# --------------------------------------------------------------------------- NumPy .npz (any image set)


def load_npz(path: PathLike, dtype: torch.dtype = torch.float32) -> TensorDataset:
    """Images and labels from a NumPy ``.npz`` archive with arrays ``x`` and ``y``.

    ``x`` holds ``N x C x H x W`` (or ``N x H x W`` grey-scale, given a channel axis) images,
    either floating point with values in ``[0, 1]`` or ``uint8`` (divided by 255); ``y``
    holds ``N`` integer labels >= 0. Other arrays in the archive are ignored. The archive is
    opened with ``np.load(path, allow_pickle=False)``: object arrays (which would need
    unpickling) are refused. Write one with
    ``np.savez("test.npz", x=images, y=labels)``.

    Args:
        path: the ``.npz`` file.
        dtype: floating-point dtype of the returned images.

    Returns:
        TensorDataset: images ``N x C x H x W`` in ``[0, 1]`` and int64 labels ``N``.

    Raises:
        FileNotFoundError: ``path`` does not exist (or is a folder).
        DataFormatError: not an ``.npz`` archive (e.g. a single ``.npy`` array or another
            file), a missing ``x`` or ``y``, an object (pickled) array, ``x`` not 3-D or 4-D
            or empty, ``x`` of another dtype than float / uint8, float values outside
            ``[0, 1]`` or not finite, ``y`` not a 1-D integer array of ``N`` labels, a
            negative label, or a ``uint64`` label above the int64 range (which would wrap to a
            negative label). The message names the file.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from captum_robust.data import load_npz
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.npz")
        >>> np.savez(path, x=np.zeros((2, 8, 8), dtype=np.uint8), y=np.array([3, 1]))
        >>> ds = load_npz(path)
        >>> tuple(ds.tensors[0].shape), ds.tensors[1].tolist()
        ((2, 1, 8, 8), [3, 1])
    """
    import zipfile

    _check_dtype(dtype)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path (str or os.PathLike), got {type(path).__name__}")
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a directory, not an .npz file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"npz file '{file}' {what}")
    try:
        archive = np.load(file, allow_pickle=False)
    except ValueError as e:  # a pickled (object) .npy, or unreadable content
        raise DataFormatError(
            f"'{file}' is not an .npz archive of plain arrays ({e}); pickled content is refused"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"'{file}' cannot be read as an .npz archive: {e}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataFormatError(
            f"'{file}' holds a single array, not an .npz archive; save one with np.savez(path, x=images, y=labels)"
        )
    with archive:
        missing = [key for key in ("x", "y") if key not in archive.files]
        if missing:
            raise DataFormatError(
                f"'{file}' lacks the array(s) {missing}: expected 'x' (images) and 'y' (labels), found {archive.files}"
            )
        arrays = {}
        for key in ("x", "y"):
            try:
                arrays[key] = archive[key]
            except ValueError as e:  # object arrays need allow_pickle
                raise DataFormatError(
                    f"'{file}': array '{key}' holds Python objects ({e}); only plain numeric arrays are loaded "
                    "(nothing is unpickled)"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise DataFormatError(f"'{file}': array '{key}' cannot be read: {e}") from None
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or 0 in x.shape:
        raise DataFormatError(
            f"'{file}': 'x' must have shape N x C x H x W or N x H x W with no empty axis, got {x.shape}"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataFormatError(
            f"'{file}': 'y' must be a 1-D array of {x.shape[0]} labels (one per image in 'x'), got shape {y.shape}"
        )
    if y.dtype.kind not in "iu":
        raise DataFormatError(f"'{file}': 'y' must hold integer labels, got dtype {y.dtype}")
    if y.size and int(y.min()) < 0:
        bad = int(np.flatnonzero(y < 0)[0])
        raise DataFormatError(f"'{file}': labels must be >= 0, found {int(y[bad])} at index {bad}")
    if y.size and int(y.max()) > _INT64_MAX:  # uint64 labels that int64 would wrap to negative values
        huge = np.flatnonzero(y > np.uint64(_INT64_MAX))
        raise DataFormatError(
            f"'{file}': labels must be class indices that fit int64, found {int(y[huge[0]])} at index "
            f"{int(huge[0])} ({huge.size} such label(s) in 'y', dtype {y.dtype}); store class indices 0..C-1"
        )
    if x.dtype == np.uint8:
        images = torch.tensor(x, dtype=dtype).div_(255)
    elif x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataFormatError(f"'{file}': 'x' holds NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataFormatError(
                f"'{file}': float images must lie in [0, 1], got values in [{lo:g}, {hi:g}] "
                "(scale them, or store uint8 pixels 0..255)"
            )
        images = torch.tensor(x, dtype=dtype)
    else:
        raise DataFormatError(
            f"'{file}': 'x' must be floating point in [0, 1] or uint8 0..255, got dtype {x.dtype}"
        )
    return TensorDataset(images, torch.tensor(y, dtype=torch.int64))


# --------------------------------------------------------------------------- image folders

#: the file name endings :func:`load_image_folder` reads (case-insensitive); other files are ignored
IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


def load_image_folder(
    path: PathLike, size: Optional[int] = None, center_crop: Union[bool, int] = False,
    channels: Optional[int] = None, dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    """PNG/JPEG images in class sub-folders ``path/<class>/<image>``, read with Pillow.

    The layout of torchvision's ``ImageFolder``: the sorted names of the sub-folders are the
    classes (label 0 for the first), the images of each class are taken in sorted file-name
    order, files ending in anything but :data:`IMAGE_EXTENSIONS` and hidden entries are
    ignored. Resizing follows the usual ImageNet evaluation transform
    (``Resize(size)`` then ``CenterCrop``): the shorter side is resized to ``size``
    (bilinear, Pillow's antialiasing) keeping the aspect ratio, then, with ``center_crop``,
    the central square is kept.

    Args:
        path: the folder holding one sub-folder per class.
        size: the shorter side after resizing, in pixels; None keeps the files' sizes.
        center_crop: True crops the central ``size x size`` square (needs ``size`` or images
            of one size), an int crops a square of that side. False keeps the whole
            (resized) image. Without a crop every image must end up with the same height
            and width.
        channels: 3 (RGB) or 1 (grey: Pillow's ``L``, ITU-R 601 luma); None takes 1 when
            every image is grey-scale and 3 otherwise. Transparency is dropped.
        dtype: floating-point dtype of the returned images.

    Returns:
        TensorDataset: images ``N x C x H x W`` with values ``pixel / 255`` in ``[0, 1]`` and
        int64 labels; its ``classes`` attribute holds the class names in label order.

    Raises:
        FileNotFoundError, NotADirectoryError: ``path`` does not exist or is a file.
        DataFormatError: no class sub-folders, a class folder without images, an image Pillow
            cannot read (the message names the file), or images of different sizes without
            a common ``size`` and crop.

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> from captum_robust.data import load_image_folder
        >>> root = tempfile.mkdtemp()
        >>> for name, colour in [("cat", (255, 0, 0)), ("dog", (0, 0, 255))]:
        ...     os.makedirs(os.path.join(root, name))
        ...     Image.new("RGB", (40, 30), colour).save(os.path.join(root, name, "a.png"))
        >>> ds = load_image_folder(root, size=16, center_crop=True)
        >>> tuple(ds.tensors[0].shape), ds.tensors[1].tolist(), ds.classes
        ((2, 3, 16, 16), [0, 1], ('cat', 'dog'))
    """
    _check_dtype(dtype)
    if size is not None:
        check_int(size, "size", 1)
    if not isinstance(center_crop, bool):
        check_int(center_crop, "center_crop", 1)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey-scale), 3 (RGB) or None (from the images), got {channels!r}")
    root = _check_dir(path, "image folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataFormatError(
            f"image folder '{root}' has no class sub-folders: expected '{root}/<class>/<image>.png' (or .jpg), one "
            "sub-folder per class"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (root / name).iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataFormatError(
                f"class folder '{root / name}' holds no image ({', '.join(IMAGE_EXTENSIONS)}); remove it or add images"
            )
        files += found
        labels += [label] * len(found)
    pictures = [_read_image(f, size) for f in files]
    if channels is None:
        channels = 1 if all(p.mode in _GREY_MODES for p in pictures) else 3
    arrays = []
    for f, picture in zip(files, pictures):
        picture = picture.convert("L" if channels == 1 else "RGB")
        if center_crop is not False:
            # True: a size x size square (without size: the first image's shorter side)
            side = size if center_crop is True else center_crop
            side = min(pictures[0].size) if side is None else side
            w, h = picture.size
            if side > min(w, h):
                raise DataFormatError(f"'{f}' is {w}x{h} pixels, smaller than the center crop of {side}")
            left, top = (w - side) // 2, (h - side) // 2
            picture = picture.crop((left, top, left + side, top + side))
        arrays.append(np.asarray(picture, dtype=np.uint8).reshape(picture.size[1], picture.size[0], channels))
    first = arrays[0].shape
    for f, a in zip(files, arrays):
        if a.shape != first:
            raise DataFormatError(
                f"'{f}' is {a.shape[1]}x{a.shape[0]} pixels{' after resizing' if size else ''} but '{files[0]}' is "
                f"{first[1]}x{first[0]}: "
                "images of one data set need one size; pass a size with center_crop=True (CLI: --image-size PX "
                "--center-crop)"
            )
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(dtype).div_(255)
    dataset = TensorDataset(images.contiguous(), torch.tensor(labels, dtype=torch.int64))
    dataset.classes = tuple(classes)
    return dataset


def _read_image(file: Path, size: Optional[int]):
    """One image with Pillow, decoded now (Pillow is lazy), the shorter side resized to ``size``."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise ImportError("load_image_folder needs Pillow: pip install pillow") from None
    try:
        with Image.open(file) as opened:
            picture = opened.copy() if opened.mode != "P" else opened.convert("RGBA")
            picture.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataFormatError(f"'{file}' cannot be read as an image by Pillow: {e}") from None
    if picture.mode.startswith("I"):  # 16-bit grey PNG: 0..65535 -> 0..255 (Pillow's convert("L") would clip)
        wide = np.asarray(picture, dtype=np.float64)
        picture = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    if picture.mode == "RGBA" and all(lo == hi for lo, hi in picture.getextrema()[:3]):
        picture = picture.convert("LA")  # a grey palette image
    if size is not None:
        w, h = picture.size
        scale = size / min(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        if new != (w, h):
            if picture.mode in ("1", "F", "P;L"):
                picture = picture.convert("L")
            picture = picture.resize(new, Image.BILINEAR, reducing_gap=None)
    return picture


class Normalize(torch.nn.Module):
    """``model((x - mean) / std)`` per channel: run a model trained on normalised inputs on
    pixels in ``[0, 1]``.

    Attacks, certificates and stability metrics then act on pixels: an l-inf ball of radius
    ``eps``, an l2 radius ``rho``, the ``[0, 1]`` box and the smoothing noise ``sigma`` are all in
    pixel units, whatever the model's normalisation (the usual ImageNet statistics are
    ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)``). Attributions are
    with respect to the pixels too (gradients carry the ``1 / std`` factor). The wrapped
    model is ``self.model``, so its layers keep their objects (``layer=`` arguments and
    hooks work unchanged) and the state_dict of the wrapper is ``model.*``.

    Args:
        model: the module that expects normalised inputs ``N x C x H x W``.
        mean: per-channel means, one number per channel (or one for all).
        std: per-channel standard deviations, each > 0, as many as ``mean``.

    Example:
        >>> import torch
        >>> from captum_robust.data import Normalize
        >>> net = Normalize(torch.nn.Identity(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> net(torch.ones(1, 3, 1, 1)).flatten().tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(self, model: torch.nn.Module, mean, std) -> None:
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        stats = []
        for name, value in (("mean", mean), ("std", std)):
            t = torch.as_tensor(value, dtype=torch.float64).flatten()
            if t.numel() == 0 or not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} must hold one finite number per channel, got {value!r}")
            stats.append(t)
        if stats[0].numel() != stats[1].numel():
            raise ValueError(f"mean and std must have one value per channel each, got {stats[0].numel()} means and "
                             f"{stats[1].numel()} standard deviations")
        if bool((stats[1] <= 0).any()):
            raise ValueError(f"std must be > 0 for every channel, got {std!r}")
        self.model = model
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        self.register_buffer("mean", stats[0].to(dtype).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", stats[1].to(dtype).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        n = self.mean.shape[1]
        if x.dim() != 4 or (n != 1 and x.shape[1] != n):
            raise ValueError(f"Normalize has {n} channel statistics but the inputs have shape {tuple(x.shape)}; "
                             f"expected N x {n} x H x W")
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype), *args, **kwargs)
