"""captum_robust.data.load_image_folder (on tiny PNG/JPEG folders written with Pillow) and Normalize."""

import numpy as np
import pytest
import torch

from captum_robust.data import DataFormatError, Normalize, load_image_folder

Image = pytest.importorskip("PIL.Image")


def _pattern(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _write(root, cls, name, array, fmt="PNG"):
    folder = root / cls
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name, format=fmt)
    return folder / name


def test_labels_follow_sorted_class_names_and_pixels_are_exact(tmp_path):
    arrays = {("zebra", "b.png"): _pattern(5, 4, 0), ("ant", "2.png"): _pattern(5, 4, 1),
              ("ant", "1.PNG"): _pattern(5, 4, 2), ("moth", "x.png"): _pattern(5, 4, 3)}
    for (cls, name), a in arrays.items():
        _write(tmp_path, cls, name, a)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")  # ignored
    (tmp_path / "ant" / ".hidden.png").write_bytes(b"junk")  # hidden: ignored
    (tmp_path / "README.png").write_bytes(b"junk")  # not in a class folder: ignored
    ds = load_image_folder(tmp_path)
    assert ds.classes == ("ant", "moth", "zebra")
    assert ds.tensors[1].tolist() == [0, 0, 1, 2]
    order = [("ant", "1.PNG"), ("ant", "2.png"), ("moth", "x.png"), ("zebra", "b.png")]
    expected = torch.stack([torch.from_numpy(arrays[k]).permute(2, 0, 1) for k in order]).float() / 255
    assert ds.tensors[0].dtype == torch.float32 and ds.tensors[0].shape == (4, 3, 4, 5)
    assert torch.equal(ds.tensors[0], expected)  # PNG is lossless: exactly pixel / 255


def test_resize_shorter_side_and_center_crop_match_pillow(tmp_path):
    a = _pattern(30, 20, 4)
    _write(tmp_path, "c", "a.png", a)
    _write(tmp_path, "c", "b.png", _pattern(20, 40, 5))
    ds = load_image_folder(tmp_path, size=10, center_crop=True, dtype=torch.float64)
    assert ds.tensors[0].shape == (2, 3, 10, 10) and ds.tensors[0].dtype == torch.float64
    # hand-made reference: shorter side 20 -> 10 (30 x 20 -> 15 x 10), then the central 10 x 10
    ref = Image.fromarray(a).resize((15, 10), Image.BILINEAR, reducing_gap=None).crop((2, 0, 12, 10))
    assert torch.equal(ds.tensors[0][0], torch.from_numpy(np.array(ref)).permute(2, 0, 1).double() / 255)
    # an int crop after a resize (ImageNet's 256 -> 224 pattern)
    assert load_image_folder(tmp_path, size=12, center_crop=8).tensors[0].shape == (2, 3, 8, 8)


def test_grey_images_give_one_channel_unless_asked(tmp_path):
    g = _pattern(6, 6, 6, mode="L")
    _write(tmp_path, "a", "g.png", g)
    _write(tmp_path, "b", "g.jpg", _pattern(6, 6, 7, mode="L"), fmt="JPEG")
    ds = load_image_folder(tmp_path)
    assert ds.tensors[0].shape == (2, 1, 6, 6)
    assert torch.equal(ds.tensors[0][0, 0], torch.from_numpy(g).float() / 255)
    rgb = load_image_folder(tmp_path, channels=3)
    assert rgb.tensors[0].shape == (2, 3, 6, 6)
    assert torch.equal(rgb.tensors[0][0, 1], rgb.tensors[0][0, 0])  # grey -> RGB copies the plane
    # a colour image among grey ones makes the set RGB; channels=1 converts it to luma
    _write(tmp_path, "b", "c.png", _pattern(6, 6, 8))
    assert load_image_folder(tmp_path).tensors[0].shape == (3, 3, 6, 6)
    assert load_image_folder(tmp_path, channels=1).tensors[0].shape == (3, 1, 6, 6)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    _write(tmp_path, "a", "g.png", wide)
    x = load_image_folder(tmp_path).tensors[0]
    assert x.shape == (1, 1, 1, 4)
    assert (x.flatten() * 255).tolist() == [0.0, 4.0, 117.0, 255.0]  # round(v / 257)


def test_jpeg_is_read_close_to_its_source(tmp_path):
    flat = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    _write(tmp_path, "a", "x.jpeg", flat, fmt="JPEG")
    x = load_image_folder(tmp_path).tensors[0][0]
    assert (x - torch.tensor([200, 40, 90]).view(3, 1, 1) / 255).abs().max() < 4 / 255


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DataFormatError, match="has no class sub-folders"):
        load_image_folder(tmp_path)  # empty folder
    (tmp_path / "empty_class").mkdir()
    _write(tmp_path, "full", "a.png", _pattern(4, 4, 0))
    with pytest.raises(DataFormatError, match="empty_class' holds no image"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataFormatError, match=r"broken\.png' cannot be read as an image"):
        load_image_folder(tmp_path)
    _write(tmp_path, "empty_class", "broken.png", _pattern(6, 4, 1))
    with pytest.raises(DataFormatError, match=r"a\.png' is 4x4 pixels but '.*broken\.png' is 6x4: .*--center-crop"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=4, center_crop=True).tensors[0].shape == (2, 3, 4, 4)
    with pytest.raises(DataFormatError, match="smaller than the center crop of 9"):
        load_image_folder(tmp_path, center_crop=9)
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image_folder(tmp_path, channels=2)
    with pytest.raises(ValueError, match="size"):
        load_image_folder(tmp_path, size=0)


def test_normalize_wraps_the_model_without_copying_it():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.rand(2, 3, 6, 6)
    net(x)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    wrapped = Normalize(net, mean, std)
    ref = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(wrapped(x), ref, atol=1e-6)
    assert wrapped.model is net and list(wrapped.state_dict()) == ["model." + k for k in net.state_dict()]
    # gradients with respect to the pixels carry 1 / std: d/dx of sum(Normalize(Identity)(x)) = 1 / std
    xg = x.clone().requires_grad_(True)
    Normalize(torch.nn.Identity(), mean, std)(xg).sum().backward()
    assert torch.allclose(xg.grad[0, :, 0, 0], 1 / torch.tensor(std))
    with pytest.raises(ValueError, match="3 channel statistics but the inputs have shape"):
        wrapped(torch.rand(1, 1, 6, 6))
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize(net, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="one value per channel"):
        Normalize(net, (0.5, 0.5), (0.2,))
