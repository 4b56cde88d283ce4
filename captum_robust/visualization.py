"""Matplotlib figures for attribution maps.

Every function here builds and returns a :class:`matplotlib.figure.Figure` object directly
(never through :mod:`matplotlib.pyplot`), so nothing touches pyplot's global state, nothing
opens a window and everything works under the non-interactive ``Agg`` backend (servers, CI,
tests). Save a figure with :func:`save_figure`, or display it in a notebook by leaving it as
the last expression of a cell.

Example:
    >>> import torch
    >>> from captum_robust.models import Small
    >>> from captum_robust.attr import CAM, GradCAM
    >>> from captum_robust.visualization import plot_attributions, save_figure
    >>> model = Small().eval()
    >>> x = torch.rand(4, 1, 28, 28)
    >>> maps = {
    ...     "CAM": CAM(model, model.feature_layer, model.classifier).attribute(x, target=0),
    ...     "Grad-CAM": GradCAM(model, model.feature_layer).attribute(x, target=0),
    ... }
    >>> fig = plot_attributions(x, maps, labels=[0, 1, 2, 3])
    >>> len(fig.axes)  # 4 rows x (input + 2 methods)
    12
    >>> path = save_figure(fig, "out/attributions.png")  # doctest: +SKIP
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from captum_robust._utils.validation import Interval, check_int, check_number, check_positive

__all__ = ["plot_attributions", "save_figure"]

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- validation


def _as_images(images: Any) -> Tensor:
    """Return images as a detached float64 CPU tensor ``B x C x H x W`` with C in {1, 3}."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (or numpy array), got {type(images).__name__}")
    if images.dim() == 3:  # B x H x W grey-scale
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape B x 1 x H x W, B x 3 x H x W or B x H x W, got {tuple(images.shape)}"
        )
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")
    images = images.detach().to("cpu", torch.float64)
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


def _as_map(name: str, value: Any, batch: int) -> Tensor:
    """Return a map as a detached float64 CPU tensor ``B x 1 x H' x W'``."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"maps_by_method[{name!r}] must be a torch.Tensor, got {type(value).__name__}")
    shape = tuple(value.shape)
    if value.dim() == 3:
        value = value.unsqueeze(1)
    if value.dim() != 4 or value.shape[1] != 1:
        raise ValueError(
            f"maps_by_method[{name!r}] must have shape B x 1 x H' x W' or B x H' x W' (one map per "
            f"example; select a class first, e.g. attribute(..., target=...)), got {shape}"
        )
    if value.shape[0] != batch:
        raise ValueError(
            f"maps_by_method[{name!r}] has {value.shape[0]} maps but images has {batch} examples; "
            "they must match"
        )
    if value.shape[2] == 0 or value.shape[3] == 0:
        raise ValueError(f"maps_by_method[{name!r}] has an empty spatial size, shape {shape}")
    value = value.detach().to("cpu", torch.float64)
    if not torch.isfinite(value).all():
        raise ValueError(f"maps_by_method[{name!r}] contains NaN or infinite values")
    return value


def _as_class_list(name: str, value: Any, batch: int) -> Optional[List[Any]]:
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.detach().cpu().reshape(-1).tolist()
    elif isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist()
    else:
        value = list(value)
    if len(value) != batch:
        raise ValueError(f"{name} must have one entry per example ({batch}), got {len(value)}")
    return value


def _normalize(img: np.ndarray) -> np.ndarray:
    """Min-max scale an image to [0, 1] for display (a constant image becomes all zeros)."""
    low, high = float(img.min()), float(img.max())
    if high - low <= 0:
        return np.zeros_like(img)
    return (img - low) / (high - low)


# --------------------------------------------------------------------------- figures


def plot_attributions(
    images: Tensor,
    maps_by_method: Mapping[str, Tensor],
    labels: Optional[Sequence[Any]] = None,
    predictions: Optional[Sequence[Any]] = None,
    max_examples: int = 8,
    cmap: str = "jet",
    alpha: float = 0.5,
    class_names: Optional[Sequence[str]] = None,
    panel_size: float = 1.6,
) -> Figure:
    """Grid of attribution maps overlaid on their inputs: one row per example, one column per method.

    The first column shows the input (grey-scale for one channel, RGB for three; each image
    is min-max scaled for display). Each further column shows one method's map, upsampled
    to the image size with bilinear interpolation (``F.interpolate(mode="bilinear",
    align_corners=False)``) and drawn with ``cmap`` at opacity ``alpha`` over the image.
    Each map is coloured on its own scale (its minimum to its maximum), so colours compare
    *locations within* a map, not values across maps. Method names head the columns; the
    input column is titled with the label and prediction (in red when they differ).

    Args:
        images (Tensor): ``B x 1 x H x W``, ``B x 3 x H x W`` or ``B x H x W`` (any device,
            any float dtype).
        maps_by_method (dict[str, Tensor]): method name -> maps of shape ``B x 1 x H' x W'``
            or ``B x H' x W'`` (one map per example, e.g. ``attribute(x, target=y)``). The
            column order follows the dict's order.
        labels (sequence or Tensor, optional): true class of each example (``B`` entries).
        predictions (sequence or Tensor, optional): predicted class of each example.
        max_examples (int): show at most this many examples (the first ones). Default 8.
        cmap (str): matplotlib colormap for the maps. Default ``"jet"``.
        alpha (float): opacity of the map over the image, in [0, 1]. Default 0.5.
        class_names (sequence of str, optional): names to show instead of integer classes.
        panel_size (float): size of one panel in inches. Default 1.6.

    Returns:
        matplotlib.figure.Figure: ``rows x (1 + len(maps_by_method))`` axes, with
        ``rows = min(B, max_examples)``.

    Raises:
        ValueError: images not ``B x {1,3} x H x W`` (or ``B x H x W``); a map that is not one
            map per example or whose batch size differs from the images'; NaN/inf values;
            empty ``maps_by_method``; ``labels`` / ``predictions`` of the wrong length;
            ``max_examples`` < 1; ``alpha`` outside [0, 1].
        TypeError: arguments of the wrong type.

    Example:
        >>> import torch
        >>> from captum_robust.visualization import plot_attributions
        >>> x = torch.rand(3, 1, 28, 28)
        >>> fig = plot_attributions(x, {"random": torch.rand(3, 7, 7)}, labels=[1, 2, 3])
        >>> len(fig.axes)
        6
    """
    max_examples = check_int(max_examples, "max_examples", 1)
    alpha = check_number(alpha, "alpha", Interval(0, 1))
    panel_size = check_positive(panel_size, "panel_size")
    if not isinstance(maps_by_method, Mapping):
        raise TypeError(f"maps_by_method must be a dict of name -> Tensor, got {type(maps_by_method).__name__}")
    if len(maps_by_method) == 0:
        raise ValueError("maps_by_method is empty; pass at least one method's maps")

    imgs = _as_images(images)
    batch, _, height, width = imgs.shape
    maps: Dict[str, Tensor] = {str(k): _as_map(str(k), v, batch) for k, v in maps_by_method.items()}
    label_list = _as_class_list("labels", labels, batch)
    pred_list = _as_class_list("predictions", predictions, batch)

    rows = min(batch, max_examples)
    cols = 1 + len(maps)
    upsampled = {
        name: F.interpolate(m[:rows], size=(height, width), mode="bilinear", align_corners=False)[:, 0].numpy()
        for name, m in maps.items()
    }

    def class_name(c: Any) -> str:
        if class_names is not None and isinstance(c, numbers.Integral) and 0 <= int(c) < len(class_names):
            return str(class_names[int(c)])
        return str(c)

    fig = Figure(figsize=(panel_size * cols, panel_size * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        img = imgs[r].permute(1, 2, 0).numpy()  # H x W x C
        if img.shape[2] == 1:
            img = _normalize(img[:, :, 0])
            show = dict(cmap="gray", vmin=0.0, vmax=1.0)
        else:
            img = _normalize(img)
            show = {}
        ax = axes[r, 0]
        ax.imshow(img, interpolation="nearest", **show)
        parts = []
        if label_list is not None:
            parts.append(f"label {class_name(label_list[r])}")
        if pred_list is not None:
            parts.append(f"pred {class_name(pred_list[r])}")
        wrong = label_list is not None and pred_list is not None and label_list[r] != pred_list[r]
        title = ", ".join(parts) if parts else ("input" if r == 0 else "")
        if title:
            ax.set_title(title, fontsize=8, color="red" if wrong else "black")
        for c, name in enumerate(upsampled, start=1):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest", **show)
            ax.imshow(upsampled[name][r], cmap=cmap, alpha=alpha, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def save_figure(fig: Figure, path: PathLike, dpi: Optional[float] = 100, **savefig_kwargs: Any) -> Path:
    """Save a figure, creating the parent folders; the format follows the file suffix.

    Args:
        fig (matplotlib.figure.Figure): the figure to save.
        path (str or os.PathLike): where to write it (e.g. ``"out/attributions.png"``).
        dpi (float, optional): resolution in dots per inch. Default 100.
        **savefig_kwargs: passed on to :meth:`matplotlib.figure.Figure.savefig`.

    Returns:
        pathlib.Path: the path written.

    Raises:
        TypeError: ``fig`` is not a Figure or ``path`` is not a path.
        OSError: the folder cannot be created or the file cannot be written (e.g. a parent
            is an existing regular file).

    Example:
        >>> import torch
        >>> from captum_robust.visualization import plot_attributions, save_figure
        >>> fig = plot_attributions(torch.rand(2, 1, 8, 8), {"m": torch.rand(2, 1, 2, 2)})
        >>> save_figure(fig, "out/figure.png")  # doctest: +SKIP
        PosixPath('out/figure.png')
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib.figure.Figure, got {type(fig).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, **savefig_kwargs)
    return out
