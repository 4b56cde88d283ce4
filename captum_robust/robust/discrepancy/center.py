r"""Ghorbani et al.'s (2019) mass center of a map and the dislocation between two maps' centers."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_robust.robust.discrepancy._checks import check_maps, check_pair

__all__ = ["center_of_mass", "center_dislocation"]


def center_of_mass(maps: Tensor) -> Tensor:
    r"""Mass center of each map: the map-weighted mean coordinate (Ghorbani et al. 2019).

    For a non-negative map :math:`S` over a grid of coordinates :math:`p`,

    .. math::

        C(S) = \frac{\sum_p S_p \, p}{\sum_p S_p},

    one coordinate per dimension after the batch one, in index units (row, column for
    ``B x H x W`` maps). Ghorbani's mass-center attack moves this point; reduce the channels
    first (``B x H x W``; :func:`~captum_robust.robust.discrepancy.prepare_maps`), otherwise
    the channel index counts as a coordinate. Differentiable with respect to the maps.

    A map with zero total mass has no center: its row is NaN.

    Args:
        maps (Tensor): non-negative maps ``B x S_1 x ... x S_d`` (floating point).

    Returns:
        Tensor: ``B x d`` coordinates, in the maps' dtype.

    Raises:
        ValueError: negative values (take the absolute value first), NaN/inf, no batch dim.

    Example::

        >>> s = torch.zeros(1, 3, 4); s[0, 2, 1] = 1.0; s[0, 0, 3] = 1.0
        >>> center_of_mass(s)
        tensor([[1., 2.]])
    """
    check_maps(maps, "maps")
    with torch.no_grad():
        if maps.numel() and bool((maps < 0).any()):
            raise ValueError(
                f"maps must be non-negative for a center of mass, got a minimum of {float(maps.min()):.6g}; "
                "take the absolute value first (prepare_maps(..., absolute=True))"
            )
    mass = maps.flatten(1).sum(dim=1)
    dims = list(range(1, maps.dim()))
    coords = []
    for d in dims:
        others = [e for e in dims if e != d]
        marginal = maps.sum(dim=others) if others else maps
        grid = torch.arange(maps.shape[d], device=maps.device, dtype=maps.dtype)
        coords.append((marginal * grid).sum(dim=1))
    centers = torch.stack(coords, dim=1)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    return torch.where((mass > 0)[:, None], centers / safe[:, None], torch.full_like(centers, float("nan")))


def center_dislocation(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    r"""Euclidean distance between the mass centers of two batches of maps,
    :math:`\lVert C(S_a) - C(S_b) \rVert_2` (Ghorbani et al. 2019).

    The measure Ghorbani's mass-center attack increases, in index units (pixels for
    ``B x H x W`` maps). Differentiable with respect to both maps.

    Args:
        maps_a (Tensor): non-negative maps ``B x S_1 x ... x S_d``.
        maps_b (Tensor): maps of the same shape.

    Returns:
        Tensor: ``B`` distances (NaN where a map has zero mass).

    Example::

        >>> a = torch.zeros(1, 4, 4); a[0, 0, 0] = 1.0
        >>> b = torch.zeros(1, 4, 4); b[0, 3, 3] = 2.0
        >>> center_dislocation(a, b)
        tensor([4.2426])
    """
    check_pair(maps_a, maps_b, "maps_a", "maps_b")
    diff = center_of_mass(maps_a) - center_of_mass(maps_b)
    return torch.sqrt((diff * diff).sum(dim=1))
