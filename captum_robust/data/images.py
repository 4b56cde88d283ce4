"""Folders of PNG/JPEG images in class sub-folders (Pillow), and the normalising model wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

from captum_robust._utils.validation import check_int
from captum_robust.data._base import DataFormatError, PathLike, _check_dir, _check_dtype

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
