"""Tests for captum_robust.data: digits split/resize, IDX and CIFAR-10 binary parsers."""

import gzip
import math
import re
import struct

import numpy as np
import pytest
import sklearn.datasets
import torch

from captum_robust.data import (
    DataFormatError,
    _resize_bilinear,
    digits_loaders,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_mnist,
)

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


# --------------------------------------------------------------------------- file writers


def idx_bytes(magic, dims, payload):
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + bytes(payload)


def write(path, data, gz=False):
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_idx_pair(folder, images, labels, prefix="train", gz=False):
    """Write images (N x rows x cols uint8) and labels (N uint8) as IDX files."""
    ip = write(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, images.shape, images.tobytes()), gz)
    lp = write(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, labels.shape, labels.tobytes()), gz)
    return ip, lp


def random_idx(seed, n=7, rows=5, cols=4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, rows, cols), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def cifar_record(label, r, g, b):
    """One record written plane by plane: label byte, then R, G, B 32x32 planes, row-major."""
    return bytes([label]) + b"".join(bytes(int(v) for v in plane.reshape(-1)) for plane in (r, g, b))


def random_cifar(seed, n):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_cifar(folder, images, labels, name):
    data = b"".join(cifar_record(int(y), *x) for x, y in zip(images, labels))
    (folder / name).write_bytes(data)
    return folder / name


def write_cifar_all(folder, seed=0, per_batch=3):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        out[name] = random_cifar(seed + i, per_batch + i)  # different sizes per batch
        write_cifar(folder, *out[name], name)
    return out


def path_re(path):
    return re.escape(str(path))


# --------------------------------------------------------------------------- IDX round trip


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_idx_round_trip(tmp_path, loader, gz, train):
    images, labels = random_idx(seed=int(gz) + 2 * int(train), rows=5, cols=4)  # non-square: row/col order
    write_idx_pair(tmp_path, images, labels, "train" if train else "t10k", gz)
    # the other split's files carry different content and must not be read
    write_idx_pair(tmp_path, *random_idx(99, n=3), "t10k" if train else "train", gz)
    ds = loader(tmp_path, train=train)
    x, y = ds.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (7, 1, 5, 4)
    assert torch.equal(x[:, 0], torch.from_numpy(images.astype(np.float32) / np.float32(255)))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert x[0, 0, 1, 2] == float(np.float32(images[0, 1, 2]) / np.float32(255))


def test_idx_float64_and_str_path(tmp_path):
    images, labels = random_idx(3)
    write_idx_pair(tmp_path, images, labels)
    x, _ = load_mnist(str(tmp_path), dtype=torch.float64).tensors
    assert x.dtype == torch.float64
    assert torch.equal(x[:, 0], torch.from_numpy(images / 255.0))


def test_idx_plain_preferred_over_gz(tmp_path):
    plain, labels = random_idx(1)
    write_idx_pair(tmp_path, plain, labels, gz=False)
    write_idx_pair(tmp_path, 255 - plain, labels, gz=True)
    x, _ = load_mnist(tmp_path).tensors
    assert torch.equal(x[:, 0], torch.from_numpy(plain / 255.0).float())


def test_idx_gz_only_for_one_file(tmp_path):
    images, labels = random_idx(4)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, images.shape, images.tobytes()), gz=True)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, labels.shape, labels.tobytes()), gz=False)
    _, y = load_mnist(tmp_path).tensors
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


# --------------------------------------------------------------------------- IDX errors


def test_idx_missing_dir_and_file(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=path_re(missing)):
        load_mnist(missing)
    images, labels = random_idx(0)
    ip, lp = write_idx_pair(tmp_path, images, labels)
    lp.unlink()
    with pytest.raises(FileNotFoundError, match=path_re(lp)):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, train=False)
    with pytest.raises(NotADirectoryError, match=path_re(ip)):
        load_mnist(ip)


@pytest.mark.parametrize("cut", ["truncated", "corrupt", "not_gzip"])
def test_idx_bad_gzip(tmp_path, cut):
    images, labels = random_idx(0, n=50, rows=28, cols=28)
    ip, _ = write_idx_pair(tmp_path, images, labels, gz=True)
    data = ip.read_bytes()
    if cut == "truncated":
        data = data[: len(data) // 2]
    elif cut == "corrupt":
        data = data[:10] + bytes(b ^ 0xFF for b in data[10:-8]) + data[-8:]
    else:
        data = b"this is not gzip at all"
    ip.write_bytes(data)
    with pytest.raises(DataFormatError, match=path_re(ip) + ".*gzip"):
        load_mnist(tmp_path)


def test_idx_wrong_magic(tmp_path):
    images, labels = random_idx(0)
    ip, lp = write_idx_pair(tmp_path, images, labels)
    # swapped magic numbers: images file says "labels"
    ip.write_bytes(idx_bytes(LABELS_MAGIC, (images.size,), images.tobytes()))
    with pytest.raises(DataFormatError, match=path_re(ip) + ".*0x00000803.*got 0x00000801"):
        load_mnist(tmp_path)
    ip.write_bytes(idx_bytes(IMAGES_MAGIC, images.shape, images.tobytes()))
    lp.write_bytes(idx_bytes(0x00000C01, labels.shape, labels.tobytes()))  # int32 labels
    with pytest.raises(DataFormatError, match=path_re(lp) + ".*0x00000801"):
        load_mnist(tmp_path)
    # a gzip file without the .gz suffix: hint in the message
    lp.write_bytes(gzip.compress(idx_bytes(LABELS_MAGIC, labels.shape, labels.tobytes())))
    with pytest.raises(DataFormatError, match=path_re(lp) + ".*gzip-compressed"):
        load_mnist(tmp_path)


def test_idx_wrong_dims_and_short_header(tmp_path):
    images, labels = random_idx(0)
    ip, _ = write_idx_pair(tmp_path, images, labels)
    ip.write_bytes(idx_bytes(IMAGES_MAGIC, (7, 0, 4), b""))
    with pytest.raises(DataFormatError, match=path_re(ip) + ".*dimension"):
        load_mnist(tmp_path)
    ip.write_bytes(struct.pack(">II", IMAGES_MAGIC, 7))  # header stops after the first dimension
    with pytest.raises(DataFormatError, match=path_re(ip) + ".*header"):
        load_mnist(tmp_path)
    ip.write_bytes(b"\x00\x00")
    with pytest.raises(DataFormatError, match=path_re(ip)):
        load_mnist(tmp_path)


@pytest.mark.parametrize("delta", [-1, 1, -3, 5])
@pytest.mark.parametrize("which", ["images", "labels"])
def test_idx_payload_length_mismatch(tmp_path, delta, which):
    images, labels = random_idx(0)
    ip, lp = write_idx_pair(tmp_path, images, labels)
    path = ip if which == "images" else lp
    data = path.read_bytes()
    path.write_bytes(data[:delta] if delta < 0 else data + b"\x00" * delta)
    word = "truncated" if delta < 0 else "too long"
    with pytest.raises(DataFormatError, match=path_re(path) + f"' is {word}"):
        load_mnist(tmp_path)


def test_idx_count_mismatch(tmp_path):
    images, labels = random_idx(0, n=7)
    ip, lp = write_idx_pair(tmp_path, images, labels[:6])
    with pytest.raises(DataFormatError, match=path_re(ip) + ".*7 images.*" + path_re(lp) + ".*6 labels"):
        load_mnist(tmp_path)


def test_idx_label_out_of_range(tmp_path):
    images, labels = random_idx(0)
    labels[4] = 10
    _, lp = write_idx_pair(tmp_path, images, labels)
    with pytest.raises(DataFormatError, match=path_re(lp) + r".*0\.\.9.*found 10 at record 4"):
        load_mnist(tmp_path)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar_channel_order_by_hand(tmp_path):
    r, g, b = np.full((32, 32), 10), np.full((32, 32), 20), np.full((32, 32), 30)
    r[0, 1] = 200  # row 0, column 1: distinguishes row-major from column-major
    b[31, 0] = 255
    (tmp_path / "test_batch.bin").write_bytes(cifar_record(7, r, g, b))
    x, y = load_cifar10(tmp_path, train=False).tensors
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [7]
    assert x[0, 0, 0, 1] == 200 / 255 * torch.ones((), dtype=torch.float32)
    assert x[0, 0, 1, 0] == torch.tensor(10 / 255, dtype=torch.float32)
    assert x[0, 2, 31, 0] == 1.0 and x[0, 2, 0, 31] == torch.tensor(30 / 255, dtype=torch.float32)
    assert torch.equal(x[0, 1], torch.full((32, 32), 20 / 255, dtype=torch.float32))


@pytest.mark.parametrize("parent", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_cifar_round_trip(tmp_path, parent, train):
    folder = tmp_path / "cifar-10-batches-bin"
    written = write_cifar_all(folder)
    names = [f"data_batch_{k}.bin" for k in range(1, 6)] if train else ["test_batch.bin"]
    images = np.concatenate([written[n][0] for n in names])
    labels = np.concatenate([written[n][1] for n in names])
    x, y = load_cifar10(tmp_path if parent else folder, train=train).tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (len(labels), 3, 32, 32)
    assert len(labels) == (3 + 4 + 5 + 6 + 7 if train else 8)
    assert torch.equal(x, torch.from_numpy(images.astype(np.float32) / np.float32(255)))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def test_cifar_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=path_re(missing)):
        load_cifar10(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"test_batch\.bin in '" + path_re(empty)):
        load_cifar10(empty)

    folder = tmp_path / "bin"
    write_cifar_all(folder)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=path_re(folder / "data_batch_3.bin")):
        load_cifar10(folder)

    test_file = folder / "test_batch.bin"
    data = test_file.read_bytes()
    for bad in (data[:-1], data + b"\x00", b""):
        test_file.write_bytes(bad)
        with pytest.raises(DataFormatError, match=path_re(test_file) + ".*3073"):
            load_cifar10(folder, train=False)

    images, labels = random_cifar(0, 4)
    labels[2] = 10
    write_cifar(folder, images, labels, "test_batch.bin")
    with pytest.raises(DataFormatError, match=path_re(test_file) + ".*found 10 at record 2"):
        load_cifar10(folder, train=False)


def test_cifar_python_version_refused(tmp_path):
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(b"\x80\x04 not unpickled")
    for where in (tmp_path, py):
        with pytest.raises(DataFormatError, match=path_re(py) + ".*binary version"):
            load_cifar10(where)


# --------------------------------------------------------------------------- digits


def sorted_rows(images, labels):
    """Rows (64 pixels + label) in lexicographic order: the split undone as a multiset."""
    rows = np.concatenate([images.reshape(len(labels), -1), labels.reshape(-1, 1)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def bilinear_matrix(n_in, n_out):
    """PyTorch's bilinear weights (align_corners=False) as an n_out x n_in matrix, by hand."""
    m = np.zeros((n_out, n_in))
    for j in range(n_out):
        src = max((j + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(src)
        i1 = min(i0 + 1, n_in - 1)
        w = src - i0
        m[j, i0] += 1 - w
        m[j, i1] += w
    return m


def test_digits_size8_is_sklearn_over_16():
    data = load_digits(size=8, seed=0)
    sk = sklearn.datasets.load_digits()
    assert len(data.train) + len(data.test) == 1797
    assert len(data.test) == math.ceil(0.2 * 1797)
    x = torch.cat([data.train.tensors[0], data.test.tensors[0]])
    y = torch.cat([data.train.tensors[1], data.test.tensors[1]])
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert data.image_shape == (1, 8, 8) and data.classes == tuple("0123456789")
    np.testing.assert_array_equal(sorted_rows(x.numpy().astype(np.float64), y.numpy()),
                                  sorted_rows(sk.data / 16.0, sk.target))


@pytest.mark.parametrize("size", [28, 16, 5])
def test_digits_resize_is_bilinear(size):
    small = load_digits(size=8, seed=1, dtype=torch.float64).test.tensors[0]
    big = load_digits(size=size, seed=1, dtype=torch.float64)
    x = big.test.tensors[0]
    assert x.shape == (len(small), 1, size, size) and big.image_shape == (1, size, size)
    m = bilinear_matrix(8, size)
    expected = np.einsum("ij,bjk,lk->bil", m, small[:, 0].numpy(), m)
    np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=0, atol=1e-12)
    assert x.min() >= 0 and x.max() <= 1


def test_resize_of_constant_is_constant():
    for c in (0.0, 0.37, 1.0):
        out = _resize_bilinear(torch.full((2, 1, 8, 8), c, dtype=torch.float64), 28)
        assert out.shape == (2, 1, 28, 28)
        torch.testing.assert_close(out, torch.full_like(out, c), rtol=0, atol=1e-15)


def test_digits_split_deterministic_and_stratified():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    for part in ("train", "test"):
        for t_a, t_b in zip(getattr(a, part).tensors, getattr(b, part).tensors):
            assert torch.equal(t_a, t_b)
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    counts = np.bincount(sklearn.datasets.load_digits().target, minlength=10)
    for data in (a, c):
        n_test = np.bincount(data.test.tensors[1].numpy(), minlength=10)
        n_train = np.bincount(data.train.tensors[1].numpy(), minlength=10)
        assert (n_test > 0).all() and (n_train > 0).all()
        np.testing.assert_array_equal(n_test + n_train, counts)
        assert np.abs(n_test - 0.2 * counts).max() <= 1


def test_digits_test_fraction_and_dtype():
    data = load_digits(size=8, test_fraction=0.5, dtype=torch.float64)
    assert len(data.test) == 899 and len(data.train) == 898
    assert data.train.tensors[0].dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"size": 0}, ValueError, r"size must be an int >= 1, got size=0"),
        ({"size": -3}, ValueError, r"size .*-3"),
        ({"size": 2.5}, TypeError, r"size .*2\.5"),
        ({"test_fraction": 0.0}, ValueError, r"test_fraction must be in \(0, 1\), got 0\.0"),
        ({"test_fraction": 1.0}, ValueError, r"test_fraction .*1\.0"),
        ({"test_fraction": float("nan")}, ValueError, r"test_fraction .*nan"),
        ({"test_fraction": 0.001}, ValueError, r"test_fraction .*each split.*0\.001"),
        ({"test_fraction": 0.999}, ValueError, r"test_fraction .*each split.*0\.999"),
        ({"seed": -1}, ValueError, r"seed .*-1"),
        ({"dtype": torch.int64}, TypeError, r"dtype"),
    ],
)
def test_digits_argument_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        load_digits(**kwargs)


def test_digits_loaders():
    train_loader, test_loader = digits_loaders(batch_size=100, size=28, seed=3)
    data = load_digits(size=28, seed=3)
    batches = list(train_loader)
    assert [len(yb) for _, yb in batches] == [100] * 14 + [37]
    assert all(xb.shape == (len(yb), 1, 28, 28) for xb, yb in batches)
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert not torch.equal(ys, data.train.tensors[1])  # shuffled
    assert torch.equal(ys.sort().values, data.train.tensors[1].sort().values)  # a permutation
    again = next(iter(digits_loaders(batch_size=100, size=28, seed=3)[0]))
    assert torch.equal(again[0], batches[0][0]) and torch.equal(again[1], batches[0][1])
    torch.manual_seed(123)  # the global RNG does not matter
    again = next(iter(digits_loaders(batch_size=100, size=28, seed=3)[0]))
    assert torch.equal(again[1], batches[0][1])
    test_batches = list(test_loader)
    assert [len(yb) for _, yb in test_batches] == [100] * 3 + [60]
    assert torch.equal(torch.cat([b[0] for b in test_batches]), data.test.tensors[0])  # not shuffled
    with pytest.raises(ValueError, match="batch_size .*0"):
        digits_loaders(batch_size=0)
