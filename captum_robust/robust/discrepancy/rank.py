r"""Rank correlations between batches of attribution maps: Kendall's tau and Spearman's rho.

The top-k intersection (:mod:`~captum_robust.robust.discrepancy.topk`) and Ghorbani's center
of mass (:mod:`~captum_robust.robust.discrepancy.center`) have their own modules; they are
still importable from this one.

Every function takes maps ``B x ...`` (one map per example; everything after the batch
dimension is flattened, as every paper does) and returns one value per example, computed
on the maps' own device with batched tensor operations. The rank measures are exact:
:func:`kendall_tau` and :func:`spearman` equal ``scipy.stats.kendalltau`` and
``scipy.stats.spearmanr`` map by map, ties included.

How :func:`kendall_tau` is computed, in :math:`O(n \log n)` per map and without a Python
loop over maps:

1. sort the second map ``b`` once and replace it by its dense ranks (ties share a rank);
2. sort the pairs ``(a, rank_b)`` lexicographically (one sort of packed 64-bit keys); the
   tie counts in ``a``, in ``b`` and in both come from the group boundaries of the sorted rows;
3. the discordant pairs are the strict inversions of the ranks of ``b`` in that order. They
   are counted bit by bit, from the most significant bit of the rank down (an MSD radix
   sort that counts as it goes): while the sequence is stably partitioned on bit ``k``
   within the groups that share the higher bits, every element whose bit is 0 forms an
   inversion with each element of its group that precedes it with bit 1. One cumulative sum
   per bit counts them and one scatter performs the partition, so each of the
   :math:`\lceil \log_2 n \rceil` levels costs :math:`O(n)` for every map at once. With
   ordinal ranks (ties in ``b`` broken by position, so they are never counted) the groups
   are fixed blocks and need no bookkeeping; maps with few distinct values are instead
   counted on the dense ranks, in fewer levels.

On the CPU the sorts use NumPy (several times faster than
``torch.sort`` / ``torch.topk`` there; CPU tensors are viewed as arrays without a copy) and
rows are processed in cache-sized chunks; on other devices everything is torch, and nothing
goes to the host.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from captum_robust.robust.discrepancy._backend import CPU_CHUNK, DEVICE_CHUNK, numpy_backend
from captum_robust.robust.discrepancy._checks import rank_pair, split_rows
from captum_robust.robust.discrepancy.masked import masked_kendall_tau, masked_spearman

# the top-k and center-of-mass measures live in their own modules; importable from here as before
from captum_robust.robust.discrepancy.center import center_dislocation, center_of_mass  # noqa: F401
from captum_robust.robust.discrepancy.topk import topk_intersection, topk_mask  # noqa: F401

__all__ = ["kendall_tau", "spearman"]

_LOW32 = 0xFFFFFFFF
# The last level of the inversion count compares the pairs in blocks of 2**_BRUTE_BITS
# (cheaper than a radix pass only for a single bit), and the rows are padded to a multiple
# of _SEGMENT so the running counts can be summed in int32 segments without a copy.
_BRUTE_BITS = 1
_SEGMENT = 64
# Relative costs (measured on a CPU) that decide how the discordant pairs of maps with tied
# values are counted: a level of _count_inversions_dense costs about 1.75 levels of
# _count_inversions, and the extra sort that the latter needs about 2 levels.
_DENSE_LEVEL_COST = 1.75
_SORT_LEVELS = 2
_SMALL_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------- sorting helpers


def _sort_values(keys: Tensor, use_numpy: bool) -> Tensor:
    """Sort each row of an int64 tensor (values only)."""
    if use_numpy:
        return torch.from_numpy(np.sort(keys.numpy(), axis=1))
    return torch.sort(keys, dim=1).values


def _argsort(values: Tensor, use_numpy: bool) -> Tensor:
    """Row-wise argsort; the order among equal values is irrelevant to the callers."""
    if use_numpy:
        return torch.from_numpy(np.argsort(values.numpy(), axis=1))
    return torch.argsort(values, dim=1)


def _monotone_key(values: Tensor) -> Tensor:
    """Map float16/bfloat16/float32 values to int64 keys in [-2^31, 2^31) with the same order.

    Equal values get equal keys (``-0.0`` is turned into ``+0.0`` first)."""
    v = values.to(torch.float32) + 0.0
    bits = v.view(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return bits.to(torch.int64)


def _sorted_with_perm(values: Tensor, use_numpy: bool) -> Tuple[Tensor, Tensor]:
    """``(sorted keys, permutation)`` of each row; equal keys mark tied values."""
    n = values.shape[1]
    if values.dtype in _SMALL_FLOATS:
        # one sort of packed (value, index) keys gives both the order and the permutation
        idx = torch.arange(n, device=values.device, dtype=torch.int64)
        packed = _sort_values(torch.add(idx, _monotone_key(values), alpha=1 << 32), use_numpy)
        return packed >> 32, packed & _LOW32
    perm = _argsort(values, use_numpy)
    return values.gather(1, perm), perm


def _group_starts(sorted_keys: Tensor) -> Tensor:
    """``new[:, i]`` is True where a group of equal keys starts at position ``i + 1``."""
    return sorted_keys[:, 1:] != sorted_keys[:, :-1]


def _tied_pairs(new: Tensor) -> Tensor:
    """Number of pairs inside groups of equal keys, sum_g t_g (t_g - 1) / 2, per row."""
    m = new.shape[1]
    if m == 0:
        return torch.zeros(new.shape[0], dtype=torch.int64, device=new.device)
    pos = torch.arange(1, m + 1, device=new.device, dtype=torch.int64)
    start = torch.cummax(new * pos, dim=1).values  # (a product: torch.where on integers is slow on the CPU)
    return (pos - start).sum(dim=1)


def _dense_rank(values: Tensor, use_numpy: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Dense ranks (0-based, ties share a rank) in the original positions, the group-start
    flags of the sorted row and the number of distinct values per row."""
    sorted_keys, perm = _sorted_with_perm(values, use_numpy)
    new = _group_starts(sorted_keys)
    b, n = values.shape
    ranks_sorted = torch.zeros(b, n, dtype=torch.int64, device=values.device)
    torch.cumsum(new, dim=1, out=ranks_sorted[:, 1:])
    ranks = torch.empty_like(ranks_sorted).scatter_(1, perm, ranks_sorted)
    return ranks, new, ranks_sorted[:, -1] + 1


# --------------------------------------------------------------------------- inversions


def _count_inversions(perm: Tensor, use_int32: bool) -> Tensor:
    """Inversions ``#{i < j : p_i > p_j}`` of each row of ``perm``, a permutation of
    ``[0, N)`` with ``N`` a multiple of ``2**_BRUTE_BITS``, by an MSD radix partition that
    counts as it goes.

    Before the pass for bit ``k`` the row is stably sorted by ``p >> (k + 1)``: the values
    sharing those higher bits (group ``g``) sit in the block of positions
    ``[g 2^(k+1), (g+1) 2^(k+1))`` in their original order; every group but the last holds
    ``2^k`` values with bit ``k`` clear, then ``2^k`` with it set, and so does the last one
    whenever it holds any value with the bit set. An element whose bit ``k`` is 0 is inverted
    with every element of its block that precedes it with bit ``k`` equal to 1 (pairs that
    differ in a higher bit were counted before). With ``ones`` the running count of bit-1
    elements along the row and ``T`` their total, that is
    ``sum(ones) - T (T+1) / 2 - sum_g Z_g g 2^k`` (``Z_g`` bit-0 values in group g, known in
    closed form), so one cumulative sum and one reduction count a level, and a scatter to
    the stable-partition positions prepares the next level. The last ``_BRUTE_BITS`` levels
    (blocks of ``2**_BRUTE_BITS`` elements) are counted by comparing the pairs in each block.
    """
    rows, size = perm.shape
    device = perm.device
    levels = (size - 1).bit_length() if size > 1 else 0
    idx_dtype = torch.int32 if use_int32 else torch.int64
    inversions = torch.zeros(rows, dtype=torch.int64, device=device)
    brute = min(levels, _BRUTE_BITS)
    cur = perm.to(idx_dtype, copy=True)
    if levels > brute:
        pos = torch.arange(size, device=device, dtype=idx_dtype)
        nxt, bit, ones, dest, sel = (torch.empty_like(cur) for _ in range(5))
        segmented_sum = use_int32 and size % _SEGMENT == 0 and size * _SEGMENT < 2**31
        correction = 0
        for k in range(levels - 1, brute - 1, -1):
            half = 1 << k
            full, rest = divmod(size, 2 * half)
            total_ones = full * half + max(0, rest - half)
            zeros_weighted = half * half * (full * (full - 1) // 2) + min(half, rest) * full * half
            correction += total_ones * (total_ones + 1) // 2 + zeros_weighted
            torch.bitwise_right_shift(cur, k, out=bit)
            bit &= 1
            torch.cumsum(bit, dim=1, out=ones)
            if segmented_sum:  # int32 partial sums (no int64 copy of the row); no overflow
                inversions += ones.view(rows, -1, _SEGMENT).sum(dim=2, dtype=torch.int32).sum(dim=1)
            else:
                inversions += ones.sum(dim=1)
            # destination: bit 0 -> pos - ones + g 2^k, bit 1 -> ones + 2^k - 1 + g 2^k, i.e.
            # (pos + g 2^k - ones) + bit * (2 ones + 2^k - 1 - pos), in integer arithmetic
            # (torch.where on integer tensors is not vectorized on the CPU)
            torch.sub(pos + ((pos >> (k + 1)) << k), ones, out=dest)
            torch.add((half - 1) - pos, ones, alpha=2, out=sel)
            dest.addcmul_(bit, sel)
            nxt.scatter_(1, dest, cur)
            cur, nxt = nxt, cur
        inversions -= correction
    width = 1 << brute
    blocks = cur.view(rows, size // width, width)
    for offset in range(1, width):
        inversions += torch.count_nonzero(blocks[..., : width - offset] > blocks[..., offset:], dim=(1, 2))
    return inversions


def _count_inversions_dense(values: Tensor, num_values: int, use_int32: bool) -> Tensor:
    """Inversions ``#{i < j : v_i > v_j}`` of rows of values in ``[0, num_values)`` that may
    repeat (equal values are never inverted), by the same MSD radix partition as
    :func:`_count_inversions` in ``ceil(log2 num_values)`` levels: the cheaper method when a
    map has few distinct values (attribution maps with many exact zeros, rounded maps).

    The groups no longer have a fixed size, so their offsets come from the histogram of the
    values: with ``w[q]`` the number of values below ``q << k``, group ``g`` starts at
    ``w[2g]``, holds ``Z_g = w[2g+1] - w[2g]`` values with bit ``k`` clear and has ``O_g``
    values with bit ``k`` set before it; the count of a level is
    ``sum(ones) - T (T+1) / 2 - sum_g Z_g O_g`` and the partition needs one gather from the
    per-group table.
    """
    rows, size = values.shape
    device = values.device
    levels = (num_values - 1).bit_length() if num_values > 1 else 0
    inversions = torch.zeros(rows, dtype=torch.int64, device=device)
    if levels == 0 or size < 2:
        return inversions
    idx_dtype = torch.int32 if use_int32 else torch.int64
    width = 1 << levels
    counts = torch.zeros(rows, width, dtype=torch.int64, device=device)
    counts.scatter_add_(1, values, torch.ones_like(values))
    below = torch.zeros(rows, width + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, dim=1, out=below[:, 1:])
    cur = values.to(idx_dtype, copy=True)
    nxt, bit, ones, dest, sel = (torch.empty_like(cur) for _ in range(5))
    count_incl = torch.arange(1, size + 1, device=device, dtype=idx_dtype)
    minus_count = -count_incl
    segmented_sum = use_int32 and size % _SEGMENT == 0 and size * _SEGMENT < 2**31
    for k in range(levels - 1, -1, -1):
        w = below[:, :: 1 << k]
        d = w[:, 1:] - w[:, :-1]
        zeros_g, ones_g = d[:, 0::2], d[:, 1::2]
        ones_before = ones_g.cumsum(dim=1) - ones_g
        total = ones_g.sum(dim=1)
        inversions -= (zeros_g * ones_before).sum(dim=1) + total * (total + 1) // 2
        torch.bitwise_right_shift(cur, k, out=bit)
        bit &= 1
        torch.cumsum(bit, dim=1, out=ones)
        if segmented_sum:
            inversions += ones.view(rows, -1, _SEGMENT).sum(dim=2, dtype=torch.int32).sum(dim=1)
        else:
            inversions += ones.sum(dim=1)
        if k == 0:
            break
        table = torch.empty(rows, d.shape[1], dtype=idx_dtype, device=device)
        table[:, 0::2] = ones_before - 1
        table[:, 1::2] = w[:, 1:-1:2] - ones_before - 1
        # own count: ones if bit else (position + 1 - ones), in integer arithmetic
        torch.sub(count_incl, ones, out=dest)
        torch.add(minus_count, ones, alpha=2, out=sel)
        dest.addcmul_(bit, sel)
        torch.bitwise_right_shift(cur, k, out=sel)
        torch.gather(table, 1, sel, out=nxt)
        dest += nxt
        nxt.scatter_(1, dest, cur)
        cur, nxt = nxt, cur
    return inversions


# --------------------------------------------------------------------------- Kendall


def _kendall_counts(a: Tensor, b: Tensor, use_numpy: bool) -> Tuple[Tensor, ...]:
    """``(n_pairs, ties_a, ties_b, joint_ties, discordant, distinct_a, distinct_b)`` per row."""
    rows, n = a.shape
    device = a.device
    rank_b, new_b, distinct_b = _dense_rank(b, use_numpy)
    ties_b = _tied_pairs(new_b)
    if a.dtype in _SMALL_FLOATS:
        high = _monotone_key(a)
    else:
        high = _dense_rank(a, use_numpy)[0]
    pairs = _sort_values(torch.add(rank_b, high, alpha=1 << 32), use_numpy)  # by a, then by rank of b
    new_a = _group_starts(pairs >> 32)
    ties_a = _tied_pairs(new_a)
    joint = _tied_pairs(_group_starts(pairs))
    distinct_a = new_a.sum(dim=1) + 1
    # The discordant pairs are the strict inversions of the b-ranks in this order, padded
    # with larger values at the end (which add no inversion) to a multiple of _SEGMENT.
    ranks = pairs & _LOW32
    size = -(-n // _SEGMENT) * _SEGMENT
    seq = torch.arange(size, device=device, dtype=torch.int64)
    distinct = int(distinct_b.max())
    if distinct == n and bool((distinct_b == n).all()):
        # no ties in b: the ranks already form a permutation
        perm = seq.repeat(rows, 1)
        perm[:, :n] = ranks
        discordant = _count_inversions(perm, use_int32=use_numpy)
    elif _DENSE_LEVEL_COST * distinct.bit_length() < (size - 1).bit_length() + _SORT_LEVELS:
        # few distinct values: count on the values themselves, in fewer levels
        values = torch.full((rows, size), distinct, device=device, dtype=torch.int64)
        values[:, :n] = ranks
        discordant = _count_inversions_dense(values, distinct + 1, use_int32=use_numpy)
    else:
        # ordinal ranks instead, ties broken by the position in the order (so tied values
        # are never inverted): a permutation, whose radix groups are fixed blocks
        order = _sort_values(torch.add(seq[:n], ranks, alpha=1 << 32), use_numpy) & _LOW32
        perm = seq.repeat(rows, 1)
        perm[:, :n].scatter_(1, order, seq[:n].expand(rows, n))
        discordant = _count_inversions(perm, use_int32=use_numpy)
    total = torch.full((rows,), n * (n - 1) // 2, dtype=torch.int64, device=device)
    return total, ties_a, ties_b, joint, discordant, distinct_a, distinct_b


def kendall_tau(maps_a: Tensor, maps_b: Tensor, variant: str = "b", mask: Optional[Tensor] = None) -> Tensor:
    r"""Kendall's rank correlation between two batches of maps, map by map (tau-b with ties).

    With :math:`n_0 = n(n-1)/2` pairs of map elements, :math:`n_1` and :math:`n_2` the pairs
    tied in ``maps_a`` and in ``maps_b``, :math:`n_3` the pairs tied in both, and
    :math:`n_c, n_d` the concordant and discordant pairs:

    .. math::

        \tau_b = \frac{n_c - n_d}{\sqrt{(n_0 - n_1)(n_0 - n_2)}},
        \qquad n_c - n_d = n_0 - n_1 - n_2 + n_3 - 2 n_d .

    This is ``scipy.stats.kendalltau(a, b).statistic`` for every pair of flattened maps (to
    rounding), clipped to [-1, 1] like scipy. ``variant="c"`` gives Stuart's tau-c,
    :math:`2 (n_c - n_d) / (n^2 (m - 1) / m)` with :math:`m` the smaller number of distinct
    values, as ``scipy.stats.kendalltau(..., variant="c")``.

    Chen et al. (2019) and Boopathy et al. (2020, Table 3) report it between the maps of a
    clean and an attacked input, on the flattened maps (prepare them with
    :func:`~captum_robust.robust.discrepancy.prepare_maps` for the papers' conventions).

    Undefined cases return NaN, as scipy does: a map that is constant (every pair tied), or
    maps of a single element. Maps of two elements give +1 or -1 (or NaN when tied).

    The cost is :math:`O(n \log n)` per map, computed for the whole batch at once on the
    maps' device (see the module notes). The result is not differentiable (ranks are
    piecewise constant); it is returned without a graph.

    Args:
        maps_a (Tensor): maps ``B x ...`` (any number of dimensions after the batch one).
        maps_b (Tensor): maps of the same shape.
        variant (str): ``"b"`` (default) or ``"c"``.
        mask (Tensor, optional): ``B x n`` (or the maps' shape) bool, true for the entries that
            count (e.g. the real tokens of padded sentences): each example is measured on its
            masked-in entries only (``scipy.stats.kendalltau(a[m], b[m])``), all examples at
            once with a pair mask, in :math:`O(n^2)` per map (meant for token maps). Values at
            false entries are ignored. Default None: every entry.

    Returns:
        Tensor: ``B`` values in [-1, 1] (or NaN), in the maps' floating dtype.

    Raises:
        TypeError: not tensors, or complex/bool maps.
        ValueError: different shapes or devices, no batch dimension, NaN/inf values,
            unknown ``variant``.

    Example::

        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 2.0]])
        >>> b = torch.tensor([[1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
        >>> kendall_tau(a, b)
        tensor([ 0.6667, -0.8165])
    """
    if mask is not None:
        return masked_kendall_tau(maps_a, maps_b, variant, mask)
    a, b, out_dtype = rank_pair(maps_a, maps_b)
    if variant not in ("b", "c"):
        raise ValueError(f"variant must be 'b' or 'c' (as scipy.stats.kendalltau), got {variant!r}")
    with torch.no_grad():
        if a.dtype != b.dtype:
            common = torch.promote_types(a.dtype, b.dtype)
            if not (a.is_floating_point() and b.is_floating_point()):
                common = torch.float64  # integers compared with floats: keep them exact
            a, b = a.to(common), b.to(common)
        rows, n = a.shape
        use_numpy = numpy_backend(a)
        a, b = a.contiguous(), b.contiguous()
        bounds = split_rows(rows, n, CPU_CHUNK if use_numpy else DEVICE_CHUNK)
        parts = [_kendall_counts(a[r0:r1], b[r0:r1], use_numpy) for r0, r1 in zip(bounds[:-1], bounds[1:])]
        counts = [torch.cat(c) if len(parts) > 1 else c[0] for c in zip(*parts)] if parts else None
        if counts is None:  # an empty batch
            return torch.empty(0, dtype=out_dtype, device=maps_a.device)
        total, ties_a, ties_b, joint, dis, distinct_a, distinct_b = (c.to(torch.float64) for c in counts)
        con_minus_dis = total - ties_a - ties_b + joint - 2.0 * dis
        undefined = (ties_a == total) | (ties_b == total)
        if variant == "b":
            tau = con_minus_dis / torch.sqrt(total - ties_a) / torch.sqrt(total - ties_b)
        else:
            m = torch.minimum(distinct_a, distinct_b)
            tau = 2.0 * con_minus_dis / (n * n * (m - 1.0) / m)
        tau = torch.where(undefined, torch.full_like(tau, float("nan")), tau.clamp(-1.0, 1.0))
    return tau.to(out_dtype)


# --------------------------------------------------------------------------- Spearman


def _average_ranks(values: Tensor, use_numpy: bool) -> Tensor:
    """0-based average ranks (ties get the mean of their positions), float64."""
    sorted_keys, perm = _sorted_with_perm(values, use_numpy)
    rows, n = values.shape
    new = _group_starts(sorted_keys)
    pos = torch.arange(n, device=values.device, dtype=torch.int64)
    is_start = torch.ones(rows, n, dtype=torch.bool, device=values.device)
    is_start[:, 1:] = new
    is_end = torch.ones(rows, n, dtype=torch.bool, device=values.device)
    is_end[:, :-1] = new
    start = torch.cummax(is_start * pos, dim=1).values
    end = torch.cummin((n - is_end * (n - pos)).flip(1), dim=1).values.flip(1)
    avg = (start + end).to(torch.float64) * 0.5
    return torch.empty_like(avg).scatter_(1, perm, avg)


def spearman(maps_a: Tensor, maps_b: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    r"""Spearman's rank correlation between two batches of maps, map by map.

    The Pearson correlation of the ranks, where tied values get the average of the ranks
    they span, exactly as ``scipy.stats.spearmanr(a, b).statistic`` for every pair of
    flattened maps:

    .. math::

        \rho = \frac{\sum_i (r_i - \bar r)(s_i - \bar s)}
                    {\sqrt{\sum_i (r_i - \bar r)^2 \sum_i (s_i - \bar s)^2}} .

    A constant map (or a map of one element) gives NaN, as in scipy. Two sorts per map, no
    Python loop over maps; not differentiable (returned without a graph).

    Args:
        maps_a (Tensor): maps ``B x ...``.
        maps_b (Tensor): maps of the same shape.
        mask (Tensor, optional): as :func:`kendall_tau`'s: each example measured on its
            masked-in entries only (:math:`O(n^2)` per map). Default None: every entry.

    Returns:
        Tensor: ``B`` values in [-1, 1] (or NaN), in the maps' floating dtype.

    Raises:
        TypeError, ValueError: as :func:`kendall_tau`.

    Example::

        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> spearman(a, torch.tensor([[1.0, 3.0, 2.0, 4.0]]))
        tensor([0.8000])
    """
    if mask is not None:
        return masked_spearman(maps_a, maps_b, mask)
    a, b, out_dtype = rank_pair(maps_a, maps_b)
    with torch.no_grad():
        a, b = a.contiguous(), b.contiguous()
        if a.shape[0] == 0:
            return torch.empty(0, dtype=out_dtype, device=maps_a.device)
        use_numpy = numpy_backend(a)
        bounds = split_rows(a.shape[0], a.shape[1], CPU_CHUNK if use_numpy else DEVICE_CHUNK)
        rho = torch.cat(
            [_spearman_rows(a[r0:r1], b[r0:r1], use_numpy) for r0, r1 in zip(bounds[:-1], bounds[1:])]
        )
    return rho.to(out_dtype)


def _spearman_rows(a: Tensor, b: Tensor, use_numpy: bool) -> Tensor:
    ra = _average_ranks(a, use_numpy)
    rb = _average_ranks(b, use_numpy)
    center = (a.shape[1] - 1) / 2.0  # the mean of the ranks, ties or not
    ra -= center
    rb -= center
    num = (ra * rb).sum(dim=1)
    den = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    rho = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.full_like(num, float("nan")))
    return rho.clamp(-1.0, 1.0)
