import pickle

import numpy as np
import pytest
import torch

from captum_robust.data import DataFormatError, load_npz


def test_round_trip_float_and_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 4, 6)).astype(np.float32)
    y = np.array([0, 9, 2, 11, 3], dtype=np.int32)
    np.savez(tmp_path / "f.npz", x=x, y=y, extra=np.arange(3))
    ds = load_npz(tmp_path / "f.npz")
    xs, ys = ds.tensors
    assert xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert torch.equal(xs, torch.from_numpy(x)) and ys.tolist() == [0, 9, 2, 11, 3]

    pixels = rng.integers(0, 256, size=(4, 7, 7), dtype=np.uint8)
    np.savez_compressed(tmp_path / "u.npz", x=pixels, y=np.arange(4, dtype=np.uint8))
    xs, ys = load_npz(str(tmp_path / "u.npz"), dtype=torch.float64).tensors
    assert xs.shape == (4, 1, 7, 7) and xs.dtype == torch.float64
    assert torch.equal(xs[:, 0], torch.from_numpy(pixels).double() / 255)  # bytes / 255 exactly
    assert float(xs.max()) <= 1 and ys.tolist() == [0, 1, 2, 3]


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((2, 4, 4), np.float32)}, "lacks the array(s) ['y']"),
        ({"images": np.zeros((2, 4, 4), np.float32), "labels": np.zeros(2, int)}, "['x', 'y']"),
        ({"x": np.zeros((2, 4), np.float32), "y": np.zeros(2, int)}, "N x C x H x W"),
        ({"x": np.zeros((0, 1, 4, 4), np.float32), "y": np.zeros(0, int)}, "no empty axis"),
        ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros(3, int)}, "1-D array of 2 labels"),
        ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros((2, 1), int)}, "1-D array of 2 labels"),
        ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros(2, np.float32)}, "integer labels"),
        ({"x": np.zeros((2, 4, 4), np.float32), "y": np.array([1, -1])}, "labels must be >= 0, found -1 at index 1"),
        ({"x": np.full((2, 4, 4), 2.0), "y": np.zeros(2, int)}, "[0, 1], got values in [2, 2]"),
        ({"x": np.full((2, 4, 4), np.nan), "y": np.zeros(2, int)}, "NaN"),
        ({"x": np.zeros((2, 4, 4), np.int64), "y": np.zeros(2, int)}, "got dtype int64"),
    ],
)
def test_format_errors_name_the_problem(tmp_path, arrays, message):
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataFormatError) as info:
        load_npz(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_pickled_content_is_refused(tmp_path):
    objects = np.empty(2, dtype=object)
    objects[:] = [{"a": 1}, None]
    path = _save(tmp_path / "obj.npz", x=np.zeros((2, 4, 4), np.float32), y=objects)
    with pytest.raises(DataFormatError, match="holds Python objects"):
        load_npz(path)
    # a plain pickle file, and a single .npy array, are not .npz archives
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DataFormatError, match="pickled content is refused"):
        load_npz(tmp_path / "p.npz")
    np.save(tmp_path / "single.npy", np.zeros((2, 4, 4)))
    with pytest.raises(DataFormatError, match="single array"):
        load_npz(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DataFormatError, match="cannot be read"):
        load_npz(tmp_path / "junk.npz")


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_npz(tmp_path)
    with pytest.raises(TypeError, match="dtype"):
        load_npz(tmp_path / "nope.npz", dtype=torch.int64)
    with pytest.raises(TypeError, match="path"):
        load_npz(3)


def test_uint64_labels_above_int64_are_refused_not_wrapped(tmp_path):
    # issue 18: torch.tensor(uint64, dtype=int64) wraps 2**64 - 1 to -1, a label the loader refuses
    x = np.zeros((3, 4, 4), np.uint8)
    path = _save(tmp_path / "u64.npz", x=x, y=np.array([1, 2**64 - 1, 2**63], dtype=np.uint64))
    with pytest.raises(DataFormatError) as info:
        load_npz(path)
    text = str(info.value)
    assert "fit int64" in text and "18446744073709551615 at index 1" in text and "2 such label(s)" in text
    assert str(path) in text
    # the largest int64 value still fits and is kept exactly (the model check rejects it later)
    path = _save(tmp_path / "ok.npz", x=x, y=np.array([1, 2, 2**63 - 1], dtype=np.uint64))
    assert load_npz(path).tensors[1].tolist() == [1, 2, 2**63 - 1]
