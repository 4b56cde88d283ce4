r"""The top-k measures: :func:`topk_mask` and :func:`topk_intersection` (Ghorbani et al. 2019).

The selection is :math:`O(n)` per map (no full sort) and deterministic: ties at the k-th value
go to the lower flat index. On the CPU it uses NumPy's partition a cache-sized chunk of rows at a
time; on other devices ``torch.kthvalue``, with nothing sent to the host.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from captum_robust.robust.discrepancy._backend import CPU_CHUNK, numpy_backend
from captum_robust.robust.discrepancy._checks import check_k, check_maps, flatten_maps, rank_pair, split_rows
from captum_robust.robust.discrepancy.masked import check_batched, check_mask, masked_maps, masked_topk_intersection
from captum_robust.robust.discrepancy.masked import masked_topk_mask

__all__ = ["topk_mask", "topk_intersection"]


def _topk_mask_torch(flat: Tensor, k: int) -> Tensor:
    n = flat.shape[1]
    threshold = torch.kthvalue(flat, n - k + 1, dim=1, keepdim=True).values
    above = flat > threshold
    tied = flat == threshold
    room = k - above.sum(dim=1, keepdim=True)
    return above | (tied & (torch.cumsum(tied, dim=1) <= room))


def _topk_mask_numpy(arr: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
    """Top-k mask of the rows of ``arr`` into ``out`` (NumPy, for CPU tensors): a selection of
    the k-th largest value, then, only in rows where values tie with it beyond k, the lowest
    tied indices (continuous maps almost never pay for the tie pass)."""
    n = arr.shape[1]
    threshold = np.partition(arr, n - k, axis=1)[:, n - k : n - k + 1]
    np.greater_equal(arr, threshold, out=out)
    selected = np.count_nonzero(out, axis=1)
    excess = selected > k
    if not excess.any():
        return out
    # in those rows only: of the elements tied with the threshold keep the lowest indices
    every_row = bool(excess.all())
    rows = slice(None) if every_row else np.flatnonzero(excess)  # a slice avoids copying
    sub = arr[rows]
    thr = threshold[rows]
    above = sub > thr
    tied = sub == thr
    room = k - np.count_nonzero(above, axis=1, keepdims=True)  # tied elements that fit
    keep = np.cumsum(tied, axis=1, dtype=np.int32) <= room
    np.logical_and(tied, keep, out=tied)
    np.logical_or(above, tied, out=tied)
    out[rows] = tied
    return out


def _as_numpy(flat: Tensor) -> np.ndarray:
    if flat.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds it exactly
        flat = flat.to(torch.float32)
    return flat.numpy()


def _topk_mask_flat(flat: Tensor, k: int) -> Tensor:
    """Top-k mask of each row (ties broken by the lower index). On the CPU, NumPy's
    selection, a row chunk at a time (cache-sized, so the passes over the masks are cheap)."""
    if not numpy_backend(flat):
        return _topk_mask_torch(flat, k)
    arr = _as_numpy(flat)
    out = np.empty(arr.shape, dtype=bool)
    bounds = split_rows(arr.shape[0], arr.shape[1], CPU_CHUNK)
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        _topk_mask_numpy(arr[r0:r1], k, out[r0:r1])
    return torch.from_numpy(out)


def _topk_shared(a: Tensor, b: Tensor, k: int) -> Tensor:
    """``|top-k(a) & top-k(b)|`` per row."""
    if not numpy_backend(a):
        return (_topk_mask_torch(a, k) & _topk_mask_torch(b, k)).sum(dim=1)
    an, bn = _as_numpy(a), _as_numpy(b)
    rows, n = an.shape
    shared = np.empty(rows, dtype=np.int64)
    bounds = split_rows(rows, n, CPU_CHUNK)
    step = max(r1 - r0 for r0, r1 in zip(bounds[:-1], bounds[1:])) if rows else 0
    mask_a = np.empty((step, n), dtype=bool)
    mask_b = np.empty((step, n), dtype=bool)
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        ma = _topk_mask_numpy(an[r0:r1], k, mask_a[: r1 - r0])
        mb = _topk_mask_numpy(bn[r0:r1], k, mask_b[: r1 - r0])
        np.logical_and(ma, mb, out=ma)
        shared[r0:r1] = np.count_nonzero(ma, axis=1)
    return torch.from_numpy(shared)


def topk_mask(maps: Tensor, k: int, mask: Optional[Tensor] = None) -> Tensor:
    r"""Boolean mask of the ``k`` largest elements of each map, with a deterministic tie rule.

    The selected set is the first ``k`` elements of a stable descending sort of the
    flattened map: every element larger than the k-th largest value, then, among the
    elements equal to it, those with the lowest flat indices. Computed with a selection
    (:math:`O(n)` per map), not a full sort.

    Args:
        maps (Tensor): maps ``B x ...`` (real, finite).
        k (int): number of elements to select, in ``[1, n]`` with ``n`` the elements per map.
        mask (Tensor, optional): ``B x n`` (or the maps' shape) bool, true for the entries that
            may be selected (e.g. the real tokens of padded sentences); an example with fewer
            than ``k`` of them gets all of them. Values at false entries are ignored. Default
            None: every entry.

    Returns:
        Tensor: a bool tensor of the maps' shape with exactly ``k`` True values per map
        (:math:`\min(k, n_b)` with a mask, ``n_b`` the masked-in entries of map ``b``).

    Example::

        >>> topk_mask(torch.tensor([[0.5, 2.0, 0.5, 1.0]]), k=2)
        tensor([[False,  True, False,  True]])
        >>> topk_mask(torch.tensor([[0.5, 2.0, 0.5, 1.0]]), k=3)
        tensor([[ True,  True, False,  True]])
    """
    if mask is not None:
        check_batched(maps, "maps")
        valid = check_mask(mask, maps)
        flat = masked_maps(maps, valid, "maps")
        with torch.no_grad():
            return masked_topk_mask(flat, valid, check_k(k, flat.shape[1])).reshape(maps.shape)
    check_maps(maps, "maps", floating=False)
    with torch.no_grad():
        flat = flatten_maps(maps.detach()).contiguous()
        k = check_k(k, flat.shape[1])
        if flat.shape[0] == 0:
            return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
        return _topk_mask_flat(flat, k).reshape(maps.shape)


def topk_intersection(maps_a: Tensor, maps_b: Tensor, k: int, mask: Optional[Tensor] = None) -> Tensor:
    r"""Fraction of the top-k elements two maps share: :math:`|T_k(a) \cap T_k(b)| / k`.

    The top-k intersection of Ghorbani et al. (2019), reported by Chen et al. (2019) between
    the maps of a clean and an attacked input (e.g. ``k = 100`` of the 784 pixels on MNIST).
    Ties at the k-th value are broken by the lower flat index (:func:`topk_mask`), so the
    result is deterministic. A map with itself gives 1; a map with distinct values against its
    negation (reversed ranking) gives :math:`\max(0, 2k - n) / k`.

    Args:
        maps_a (Tensor): maps ``B x ...``.
        maps_b (Tensor): maps of the same shape.
        k (int): size of the top sets, in ``[1, n]``.
        mask (Tensor, optional): ``B x n`` (or the maps' shape) bool, true for the entries that
            count (e.g. the real tokens of padded sentences of different lengths): each
            example is measured on its masked-in entries only, as if the others were not
            there; an example with :math:`n_b < k` of them compares top sets of size
            :math:`n_b` and divides by :math:`n_b`. Default None: every entry.

    Returns:
        Tensor: ``B`` values in [0, 1], in the maps' floating dtype.

    Raises:
        TypeError, ValueError: as :func:`kendall_tau`, and ``k`` outside ``[1, n]``.

    Example::

        >>> a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
        >>> topk_intersection(a, torch.tensor([[4.0, 1.0, 3.0, 2.0]]), k=2)
        tensor([0.5000])
        >>> topk_intersection(a, torch.tensor([[4.0, 1.0, 3.0, 2.0]]), k=2,
        ...                   mask=torch.tensor([[True, False, True, True]]))
        tensor([1.])
    """
    if mask is not None:
        return masked_topk_intersection(maps_a, maps_b, k, mask)
    a, b, out_dtype = rank_pair(maps_a, maps_b)
    with torch.no_grad():
        a, b = a.contiguous(), b.contiguous()
        k = check_k(k, a.shape[1])
        shared = _topk_shared(a, b, k)
    return shared.to(out_dtype) / k
