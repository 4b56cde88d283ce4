r"""Rank measures over the masked-in entries of each map (``mask=`` of :func:`topk_intersection`,
:func:`topk_mask`, :func:`kendall_tau` and :func:`spearman`).

A mask ``B x n`` (or of the maps' shape; bool, or 0/1 integers such as a Hugging Face
``attention_mask``) marks the entries of each map that count, e.g. the real tokens of padded
sentences of different lengths in one batch. Every measure is then the unmasked measure of the
map restricted to its masked-in entries, example by example, all examples at once:

* top-k: the masked-out entries are placed after every real one (a stable descending sort);
  an example with fewer than ``k`` real entries has its ``n_b`` entries as its top set and its
  intersection is divided by :math:`\min(k, n_b)`;
* Kendall's tau and Spearman's rho: comparisons of all pairs of entries with a pair mask
  (:math:`O(n^2)` per map, rows processed in chunks of bounded memory): meant for token maps
  (tens to hundreds of entries), not for images.

Values at masked-out positions are ignored (they may be anything, also ``-inf`` or NaN).
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import torch
from torch import Tensor

from captum_robust.robust.discrepancy._checks import check_k, check_maps, check_same_shape, flatten_maps
from captum_robust.robust.discrepancy._checks import result_dtype, split_rows

__all__ = ["check_mask", "check_batched", "masked_maps", "masked_topk_mask", "masked_topk_intersection", "masked_kendall_tau", "masked_spearman"]

# elements of the B x n x n pair tensors computed at once
_PAIR_BUDGET = 1 << 22


def check_mask(mask: Any, maps: Tensor, name: str = "mask") -> Tensor:
    """``mask`` as a ``B x n`` bool tensor for the (flattened) ``maps``; ``TypeError``/``ValueError``
    naming the problem (not a tensor, float values, values other than 0/1, wrong shape or device,
    an example without any masked-in entry)."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool tensor (B x n, true = counted) or None, got {type(mask).__name__}")
    if mask.is_floating_point() or mask.is_complex():
        raise TypeError(f"{name} must be bool or 0/1 integers (true = counted), got dtype {mask.dtype}")
    n = math.prod(maps.shape[1:])
    if tuple(mask.shape) not in ((maps.shape[0], n), tuple(maps.shape)):
        raise ValueError(
            f"{name} must have shape {(maps.shape[0], n)} (one flag per map entry) or the maps' shape "
            f"{tuple(maps.shape)}, got {tuple(mask.shape)}"
        )
    if mask.device != maps.device:
        raise ValueError(f"{name} is on {mask.device} but the maps are on {maps.device}")
    if mask.dtype != torch.bool:
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"{name} must hold only 0 and 1 (or be bool)")
        mask = mask != 0
    mask = mask.reshape(maps.shape[0], n)
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{name} has no true entry in example {int(empty[0])}; every map needs one entry to compare")
    return mask


def check_batched(maps: Any, name: str) -> None:
    """The checks that come before the mask's: a tensor with a batch dimension."""
    if not isinstance(maps, Tensor) or maps.dim() < 2:
        check_maps(maps, name)  # raises the type or batch-dimension error


def masked_maps(maps: Tensor, mask: Tensor, name: str) -> Tensor:
    """``maps`` detached with the masked-out entries zeroed (so only the masked-in ones must be
    finite), checked, flattened to ``B x n``; ``mask`` is :func:`check_mask`'s."""
    zero = torch.zeros((), dtype=maps.dtype, device=maps.device)
    return flatten_maps(check_maps(torch.where(mask.reshape(maps.shape), maps.detach(), zero), name, floating=False))


def _masked_pair(maps_a: Any, maps_b: Any, mask: Any) -> Tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """Checked, flattened, detached maps (:func:`masked_maps`), the ``B x n`` mask and the result dtype."""
    check_batched(maps_a, "maps_a")
    check_batched(maps_b, "maps_b")
    check_same_shape(maps_a, maps_b, "maps_a", "maps_b")
    mask = check_mask(mask, maps_a)
    out_dtype = result_dtype(maps_a) if maps_a.is_floating_point() else result_dtype(maps_b)
    return masked_maps(maps_a, mask, "maps_a"), masked_maps(maps_b, mask, "maps_b"), mask, out_dtype


def masked_topk_mask(flat: Tensor, mask: Tensor, k: int) -> Tensor:
    """Top-``min(k, n_b)`` selection of each row among its masked-in entries (ties: lower index)."""
    n = flat.shape[1]
    vals = flat.to(torch.float64) if not flat.is_floating_point() else flat
    vals = vals.masked_fill(~mask, float("-inf"))
    # stable: equal values keep their order, so the lower index comes first; -inf (masked) go last,
    # after real values of -inf would too, but real values are finite
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    kb = torch.clamp(mask.sum(dim=1, keepdim=True), max=k)
    chosen = torch.arange(n, device=flat.device).expand_as(order) < kb
    return torch.zeros_like(mask).scatter_(1, order, chosen)


def masked_topk_intersection(maps_a: Any, maps_b: Any, k: int, mask: Any) -> Tensor:
    """:func:`~captum_robust.robust.discrepancy.topk_intersection` over the masked-in entries."""
    a, b, mask, out_dtype = _masked_pair(maps_a, maps_b, mask)
    k = check_k(k, a.shape[1])
    with torch.no_grad():
        shared = (masked_topk_mask(a, mask, k) & masked_topk_mask(b, mask, k)).sum(dim=1)
        kb = torch.clamp(mask.sum(dim=1), max=k)
    return shared.to(out_dtype) / kb.to(out_dtype)


def _signs(x: Tensor) -> Tensor:
    """``B x n x n`` int8: sign(x_i - x_j) by comparisons (exact, no rounding)."""
    xi, xj = x[:, :, None], x[:, None, :]
    return (xi > xj).to(torch.int8) - (xi < xj).to(torch.int8)


def _kendall_rows(a: Tensor, b: Tensor, mask: Tensor, variant: str) -> Tensor:
    n = a.shape[1]
    upper = torch.ones(n, n, dtype=torch.bool, device=a.device).triu(1)
    pairs = mask[:, :, None] & mask[:, None, :] & upper
    sa, sb = _signs(a), _signs(b)
    s = ((sa * sb).to(torch.int64) * pairs).sum(dim=(1, 2)).to(torch.float64)  # n_c - n_d
    untied_a = ((sa != 0) & pairs).sum(dim=(1, 2)).to(torch.float64)  # n_0 - n_1
    untied_b = ((sb != 0) & pairs).sum(dim=(1, 2)).to(torch.float64)  # n_0 - n_2
    undefined = (untied_a == 0) | (untied_b == 0)
    if variant == "b":
        tau = s / torch.sqrt(untied_a.clamp(min=1) * untied_b.clamp(min=1))
    else:
        # distinct values: entries with no equal masked-in entry before them
        lower = upper.transpose(0, 1)
        before = mask[:, None, :] & lower
        m_a = (mask & ~((sa == 0) & before).any(dim=2)).sum(dim=1).to(torch.float64)
        m_b = (mask & ~((sb == 0) & before).any(dim=2)).sum(dim=1).to(torch.float64)
        m = torch.minimum(m_a, m_b)
        nb = mask.sum(dim=1).to(torch.float64)
        tau = 2.0 * s / (nb * nb * (m - 1.0).clamp(min=1) / m)
    return torch.where(undefined, torch.full_like(tau, float("nan")), tau.clamp(-1.0, 1.0))


def masked_kendall_tau(maps_a: Any, maps_b: Any, variant: str, mask: Any) -> Tensor:
    """:func:`~captum_robust.robust.discrepancy.kendall_tau` over the masked-in entries."""
    a, b, mask, out_dtype = _masked_pair(maps_a, maps_b, mask)
    if variant not in ("b", "c"):
        raise ValueError(f"variant must be 'b' or 'c' (as scipy.stats.kendalltau), got {variant!r}")
    with torch.no_grad():
        n = a.shape[1]
        bounds = split_rows(a.shape[0], n * n, _PAIR_BUDGET)
        tau = torch.cat([_kendall_rows(a[r0:r1], b[r0:r1], mask[r0:r1], variant)
                         for r0, r1 in zip(bounds[:-1], bounds[1:])])
    return tau.to(out_dtype)


def _average_ranks(x: Tensor, mask: Tensor) -> Tensor:
    """0-based average ranks among the masked-in entries of each row (float64; 0 where masked out)."""
    xi, xj = x[:, :, None], x[:, None, :]
    valid = mask[:, None, :]
    below = ((xj < xi) & valid).sum(dim=2).to(torch.float64)
    equal = ((xj == xi) & valid).sum(dim=2).to(torch.float64)  # includes the entry itself
    return torch.where(mask, below + (equal - 1.0) / 2.0, torch.zeros_like(below))


def _spearman_rows(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    center = ((mask.sum(dim=1, keepdim=True) - 1) / 2.0).to(torch.float64)
    w = mask.to(torch.float64)
    ra = (_average_ranks(a, mask) - center) * w
    rb = (_average_ranks(b, mask) - center) * w
    num = (ra * rb).sum(dim=1)
    den = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    rho = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.full_like(num, float("nan")))
    return rho.clamp(-1.0, 1.0)


def masked_spearman(maps_a: Any, maps_b: Any, mask: Any) -> Tensor:
    """:func:`~captum_robust.robust.discrepancy.spearman` over the masked-in entries."""
    a, b, mask, out_dtype = _masked_pair(maps_a, maps_b, mask)
    with torch.no_grad():
        n = a.shape[1]
        bounds = split_rows(a.shape[0], n * n, _PAIR_BUDGET)
        rho = torch.cat([_spearman_rows(a[r0:r1], b[r0:r1], mask[r0:r1]) for r0, r1 in zip(bounds[:-1], bounds[1:])])
    return rho.to(out_dtype)
