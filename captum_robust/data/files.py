"""Loaders of files the user already has: MNIST and Fashion-MNIST (IDX), CIFAR-10 (binary) and NumPy ``.npz`` archives."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from captum_robust.data._base import DataFormatError, PathLike, _CIFAR_RECORD, _CIFAR_SIDE, _IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC, _NUM_CLASSES, _check_dir, _check_dtype

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
