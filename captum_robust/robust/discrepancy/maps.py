r"""Preparing attribution maps the way each paper compares them.

The papers do not compare raw attributions:

* Chen et al. (2019) and Ghorbani et al. (2019) take the absolute value of the map, sum it
  over the colour channels and scale it so that every map sums to the number of pixels
  ``H * W`` before measuring top-k intersection, Kendall's tau or the mass center
  (``prepare_maps(m, reduce_channels="sum", absolute=True, normalize="sum")``);
* Boopathy et al. (2020) compare the raw, signed true-class CAM (no preparation at all);
* figures usually scale each map by its largest value or to [0, 1].

:func:`prepare_maps` does these steps in a fixed order (absolute value, channel reduction,
normalization, restriction to the top-k of a reference map), batched and differentiable, so
attacks can use the prepared map as an objective.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from captum_robust._utils.validation import check_choice
from captum_robust.robust.discrepancy._checks import check_k, check_maps, check_same_shape
from captum_robust.robust.discrepancy.topk import topk_mask

__all__ = ["prepare_maps"]

_REDUCTIONS = (None, "sum", "mean", "max")
_NORMALIZATIONS = (None, "sum", "minmax", "max")


def _prepare(maps: Tensor, reduce_channels: Optional[str], channel_dim: int, absolute: bool, normalize: Optional[str]) -> Tensor:
    out = maps.abs() if absolute else maps
    if reduce_channels == "sum":
        out = out.sum(dim=channel_dim)
    elif reduce_channels == "mean":
        out = out.mean(dim=channel_dim)
    elif reduce_channels == "max":
        out = out.amax(dim=channel_dim)
    if normalize is None:
        return out
    flat = out.reshape(out.shape[0], -1)
    shape = (out.shape[0],) + (1,) * (out.dim() - 1)
    if normalize == "sum":
        with torch.no_grad():
            if bool((flat < 0).any()):
                raise ValueError(
                    "normalize='sum' scales non-negative maps to sum to their number of elements, but the "
                    f"maps have negative values (minimum {float(flat.min()):.6g}); use absolute=True or "
                    "normalize='max' / 'minmax'"
                )
        total = flat.sum(dim=1)
        scale = torch.where(total > 0, flat.shape[1] / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total))
        return out * scale.reshape(shape)
    if normalize == "max":
        peak = flat.abs().amax(dim=1)
        scale = torch.where(peak > 0, 1.0 / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(peak))
        return out * scale.reshape(shape)
    low = flat.amin(dim=1)
    span = flat.amax(dim=1) - low
    scale = torch.where(span > 0, 1.0 / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(span))
    return (out - low.reshape(shape)) * scale.reshape(shape)


def prepare_maps(
    maps: Tensor,
    reduce_channels: Optional[str] = None,
    channel_dim: int = 1,
    absolute: bool = False,
    normalize: Optional[str] = None,
    reference: Optional[Tensor] = None,
    k: Optional[int] = None,
    keep_shape: bool = False,
) -> Tensor:
    r"""Prepare a batch of attribution maps for comparison, as the papers do.

    The steps, in this order, each optional:

    1. ``absolute=True``: :math:`|I|`;
    2. ``reduce_channels``: ``"sum"``, ``"mean"`` or ``"max"`` over ``channel_dim``
       (e.g. ``B x 3 x H x W -> B x H x W``);
    3. ``normalize``: ``"sum"`` scales each (non-negative) map so it sums to its number of
       elements, :math:`S = n \, I / \sum_i I_i` (Chen et al. 2019, Ghorbani et al. 2019: ``n = H W``);
       ``"max"`` divides by the largest absolute value; ``"minmax"`` maps to [0, 1]. A map that
       cannot be scaled (all zeros, or constant for ``"minmax"``) becomes all zeros;
    4. with ``reference`` and ``k``: keep only the positions of the ``k`` largest elements of
       the reference map, prepared by the same steps 1-3 (ties broken by the lower flat index,
       :func:`~captum_robust.robust.discrepancy.topk_mask`). Returns the ``B x k`` selected
       values in flat-index order, or with ``keep_shape=True`` the prepared maps with zeros
       elsewhere. This is how a measure is restricted to the pixels that mattered in the
       clean map (Ghorbani's top-k objective sums :math:`S(\tilde x)` over the top-k of
       :math:`S(x)`).

    Paper conventions: Chen / Ghorbani, ``prepare_maps(ig, reduce_channels="sum",
    absolute=True, normalize="sum")``; Boopathy, the raw signed CAM (no call needed).

    Differentiable with respect to ``maps`` (the top-k positions are chosen without
    gradient); the caller's tensors are not modified.

    Args:
        maps (Tensor): maps ``B x ...`` (floating point, finite).
        reduce_channels (str, optional): ``None`` (default), ``"sum"``, ``"mean"`` or ``"max"``.
        channel_dim (int): the channel dimension for ``reduce_channels`` (default 1, as in
            ``B x C x H x W``); must not be the batch dimension.
        absolute (bool): take the absolute value first. Default False.
        normalize (str, optional): ``None`` (default), ``"sum"``, ``"max"`` or ``"minmax"``.
        reference (Tensor, optional): maps of the same shape as ``maps`` whose top-k positions
            select the output (e.g. the clean maps when ``maps`` are the attacked ones).
        k (int, optional): number of positions, in ``[1, n]`` with ``n`` the elements of a
            prepared map; required with ``reference``.
        keep_shape (bool): with ``reference``, return full maps (zeros outside the top-k)
            instead of the ``B x k`` values.

    Returns:
        Tensor: the prepared maps (``B x ...`` without the reduced dimension), or ``B x k``.

    Raises:
        TypeError: ``maps`` not a floating-point tensor.
        ValueError: unknown option, ``channel_dim`` out of range or the batch dimension,
            NaN/inf, negative values with ``normalize="sum"``, ``reference`` of another shape,
            ``k`` missing or outside ``[1, n]``.

    Example::

        >>> ig = torch.randn(2, 3, 28, 28)                  # e.g. Integrated Gradients
        >>> s = prepare_maps(ig, reduce_channels="sum", absolute=True, normalize="sum")
        >>> s.shape, round(float(s[0].sum()), 3)
        (torch.Size([2, 28, 28]), 784.0)
        >>> top = prepare_maps(ig, "sum", absolute=True, reference=ig, k=100)
        >>> top.shape
        torch.Size([2, 100])
    """
    check_maps(maps, "maps")
    check_choice(reduce_channels, "reduce_channels", _REDUCTIONS)
    check_choice(normalize, "normalize", _NORMALIZATIONS)
    if reduce_channels is not None:
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise TypeError(f"channel_dim must be an int, got {channel_dim!r}")
        dim = channel_dim + maps.dim() if channel_dim < 0 else channel_dim
        if not 1 <= dim < maps.dim():
            raise ValueError(
                f"channel_dim must name a dimension after the batch one, in [1, {maps.dim() - 1}] "
                f"(or negative), for maps of shape {tuple(maps.shape)}; got {channel_dim}"
            )
        channel_dim = dim
    if reference is None and k is not None:
        raise ValueError("k restricts the maps to the top-k of a reference map: pass reference= as well")
    if keep_shape and reference is None:
        raise ValueError("keep_shape applies to the top-k restriction: pass reference= and k=")
    out = _prepare(maps, reduce_channels, channel_dim, absolute, normalize)
    if reference is None:
        return out
    check_maps(reference, "reference")
    check_same_shape(maps, reference, "maps", "reference")
    if k is None:
        raise ValueError("reference= needs k=, the number of top positions to keep")
    n = math.prod(out.shape[1:])
    k = check_k(k, n)
    with torch.no_grad():
        ref = _prepare(reference.detach(), reduce_channels, channel_dim, absolute, normalize)
        mask = topk_mask(ref, k)
    if keep_shape:
        return out * mask.to(out.dtype)
    return out.reshape(out.shape[0], -1)[mask.reshape(out.shape[0], -1)].reshape(out.shape[0], k)
