r"""Certificates for Gaussian-smoothed attribution maps (Levine, Singla & Feizi), as pure functions.

For any map :math:`h: \mathbb R^d \to [0, 1]^n` and its Gaussian smoothing
:math:`\bar h(x) = \mathbb E\, h(x + \varepsilon)`, :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)`,
:math:`\Phi^{-1}(\bar h_i)` is :math:`1/\sigma`-Lipschitz (Levine Lemma 1), which gives

* the **floor** (Def. 2.1): :math:`L(z) = \Phi(\Phi^{-1}(z) - 2\rho/\sigma)`; if
  :math:`L(\bar h_i(x)) > \bar h_j(x)` then :math:`\bar h_i(\tilde x) > \bar h_j(\tilde x)` for every
  :math:`\|\tilde x - x\|_2 \le \rho` (Thm. 1);
* the **empirical floor** (Def. 2.2) for a map :math:`\hat h` estimated from ``q`` samples:
  with the Hoeffding + union-bound margin :math:`c = \sqrt{\ln(2n/(1-p)) / (2q)}`,
  :math:`\hat L(z) = \Phi(\Phi^{-1}(z - c) - 2\rho/\sigma) - c` (Corollary 1; with probability
  at least ``p`` all ``n`` estimates are within ``c`` of the population map);
* the **top-K certificate** (Thm. 2, with the tight index of its proof): sorting the
  observed map :math:`h_{(1)} \ge h_{(2)} \ge \dots`,
  :math:`R_\text{cert} = \max\{i \le K : \hat L(h_{(i)}) > h_{(2K - i + 1)}\}` (0 if none). With
  probability at least ``p``, for every :math:`\tilde x` within :math:`\ell_2` distance
  :math:`\rho`, the top-K of :math:`\bar h(\tilde x)` shares at least :math:`R_\text{cert}`
  elements with the top-K of the observed map;
* the **certified rank** (Def. 3.1) and the Theorem 3 bound for Sparsified SmoothGrad.

All functions are batched over examples (maps are ``B x ...``) and run in torch, in float64
internally (float32 on devices without float64). They are public in
:mod:`captum_robust.attr.certify`; :class:`~captum_robust.attr.CertifiedTopK`
(:mod:`captum_robust.attr._core.certified_topk`) applies them to a smoothed attribution.
"""

from __future__ import annotations

import math
import numbers
from statistics import NormalDist
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.validation import (
    NONNEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    check_fraction,
    check_int,
    check_nonnegative,
    check_positive,
)
from captum_robust.attr._core._smoothing import ceil_fraction, check_values
from captum_robust.attr._core.tokens import check_token_mask

__all__ = [
    "hoeffding_margin",
    "n_samples_for_margin",
    "min_n_samples",
    "floor",
    "empirical_floor",
    "topk_certificate",
    "certified_radius",
    "certified_rank",
    "sparsified_rank_bound",
    "rank_bound",
    "resolve_k",
]

Scalar = Union[float, Tensor]
_STD_NORMAL = NormalDist()


# ---------------------------------------------------------------------------- helpers


def _work_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.device.type == "mps" else torch.float64


def _as_tensor(value: Scalar, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=like.dtype)
    return torch.tensor(value, device=like.device, dtype=like.dtype)


def _per_example(value: Scalar, name: str, batch: int, like: Tensor) -> Tensor:
    """A scalar or a (B,) tensor as a (B, 1) column broadcasting against B x n."""
    t = _as_tensor(value, like)
    if t.dim() == 0:
        return t.reshape(1, 1)
    if t.dim() == 1 and t.shape[0] in (1, batch):
        return t.reshape(-1, 1)
    raise ValueError(f"{name} must be a float or a tensor with one value per example ({batch}), got shape {tuple(t.shape)}")


def _flat_map(smoothed_map: Tensor, name: str = "smoothed_map") -> Tensor:
    if not isinstance(smoothed_map, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B x ...), got {type(smoothed_map).__name__}")
    if smoothed_map.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension and at least one map element (B x ...), "
                         f"got shape {tuple(smoothed_map.shape)}")
    flat = smoothed_map.detach().reshape(smoothed_map.shape[0], -1)
    flat = flat.to(_work_dtype(flat))
    if flat.numel():
        lo, hi = float(flat.min()), float(flat.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} must lie in [0, 1] (the certificate holds for smoothed maps of bounded functions), "
                f"got values in [{lo}, {hi}]"
            )
    return flat


def resolve_k(k: Union[int, float], n_features: int) -> int:
    """``k`` as a count (int, 1..n) or a fraction of ``n_features`` (float in (0, 1], rounded up)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise TypeError(f"k must be an int count or a float fraction of the map size, got {type(k).__name__} {k!r}")
    if isinstance(k, numbers.Integral):
        kk = int(k)
        if not (1 <= kk <= n_features):
            raise ValueError(f"k must be in [1, {n_features}] (the number of map elements), got {k}")
        return kk
    return max(1, ceil_fraction(check_fraction(k, "k as a fraction of the map size"), n_features))


def resolve_token_k(k: Union[int, float], counts: Tensor) -> int:
    """``k`` for maps over tokens, with ``counts`` (B,) real tokens per example: a count must not
    exceed any example's real tokens; a fraction is taken of the *shortest* real length."""
    shortest = int(counts.min())
    if isinstance(k, numbers.Integral) and not isinstance(k, bool) and int(k) > shortest:
        bad = int((counts < int(k)).nonzero()[0])
        raise ValueError(
            f"k={int(k)} exceeds the {int(counts[bad])} real tokens of example {bad} (padding is never in a "
            f"top-k); pass k <= {shortest}, the shortest real length in the batch, or k as a fraction of it"
        )
    return resolve_k(k, shortest)


def _masked_for_sort(flat: Tensor, token_mask: Optional[Tensor]) -> Tensor:
    """``flat`` (B x T) with padding entries at ``-inf``: last in every order, never a competitor.
    ``token_mask`` is the bool B x T mask its callers have already checked
    (:func:`~captum_robust.attr._core.tokens.check_token_mask`)."""
    if token_mask is None:
        return flat
    return flat.masked_fill(~token_mask.to(flat.device), -math.inf)


# ---------------------------------------------------------------------------- scalar helpers


def hoeffding_margin(n_features: int, n_samples: Union[int, Tensor], confidence: float = 0.95) -> Scalar:
    r"""Hoeffding + union-bound estimation margin of an ``n_samples``-sample mean (Levine eq. A.14).

    .. math:: c = \sqrt{\frac{\ln(2n / (1 - p))}{2q}}

    With probability at least ``p`` every one of the ``n`` elements of a map averaged over
    ``q`` samples of a ``[0, 1]``-valued function is within ``c`` of its expectation.

    Args:
        n_features (int): number of map elements ``n``.
        n_samples (int or Tensor): number of samples ``q``.
        confidence (float): ``p`` in (0, 1). Default 0.95.

    Returns:
        float (or a tensor for tensor ``n_samples``).

    Example::

        >>> round(hoeffding_margin(224 * 224 * 3, 50, 0.95), 3)
        0.395
        >>> round(hoeffding_margin(224 * 224 * 3, 8192, 0.95), 4)
        0.0309
    """
    n = check_int(n_features, "n_features", 1)
    p = check_fraction(confidence, "confidence", OPEN_UNIT)
    log_term = math.log(2.0 * n / (1.0 - p))
    if isinstance(n_samples, Tensor):
        if bool((n_samples < 1).any()):
            raise ValueError("n_samples must be >= 1")
        return torch.sqrt(log_term / (2.0 * n_samples.double()))
    return math.sqrt(log_term / (2.0 * check_int(n_samples, "n_samples", 1)))


def n_samples_for_margin(margin: float, n_features: int, confidence: float = 0.95) -> int:
    r"""Smallest number of samples ``q`` whose :func:`hoeffding_margin` is at most ``margin``.

    .. math:: q = \left\lceil \frac{\ln(2n/(1-p))}{2 c^2} \right\rceil

    Example::

        >>> n_samples_for_margin(0.031, 224 * 224 * 3, 0.95)
        8123
    """
    n = check_int(n_features, "n_features", 1)
    p = check_fraction(confidence, "confidence", OPEN_UNIT)
    c = check_positive(margin, "margin")
    q = max(1, math.ceil(math.log(2.0 * n / (1.0 - p)) / (2.0 * c * c)))
    while q > 1 and hoeffding_margin(n, q - 1, p) <= c:  # guard against rounding in the ceiling
        q -= 1
    while hoeffding_margin(n, q, p) > c:
        q += 1
    return q


def _scalar_empirical_floor(z: float, ratio: float, c: float) -> float:
    """Empirical floor for Python floats (``ratio`` = 2 rho / sigma)."""
    u = z - c
    if u <= 0.0:
        return -c
    if u >= 1.0:
        return 1.0 - c
    return _STD_NORMAL.cdf(_STD_NORMAL.inv_cdf(u) - ratio) - c


def min_n_samples(n_features: int, rho: float, sigma: float, confidence: float = 0.95) -> int:
    r"""Smallest ``n_samples`` for which a top-K certificate *can* be non-vacuous.

    The most favourable map has values 1 and 0; its certificate is non-vacuous only if
    :math:`\hat L(1) = \Phi(\Phi^{-1}(1 - c) - 2\rho/\sigma) - c > 0`. This returns the smallest
    ``q`` whose margin ``c`` satisfies that (below it every certificate is vacuous, whatever
    the map).

    Example::

        >>> min_n_samples(784, rho=0.03, sigma=0.2)
        27
    """
    n = check_int(n_features, "n_features", 1)
    p = check_fraction(confidence, "confidence", OPEN_UNIT)
    r = check_nonnegative(rho, "rho")
    s = check_positive(sigma, "sigma")
    ratio = 2.0 * r / s

    def ok(q: int) -> bool:
        c = hoeffding_margin(n, q, p)
        return _scalar_empirical_floor(1.0, ratio, c) > 0.0

    # L(1) > 0 iff Phi^-1(1 - c) > rho / sigma iff c < Phi(-rho / sigma) (erfc: accurate far in the tail)
    c_star = 0.5 * math.erfc(r / s / math.sqrt(2.0))
    log_term = math.log(2.0 * n / (1.0 - p))
    if c_star <= 0.0 or log_term / (2.0 * c_star * c_star) > 2.0**62:
        raise ValueError(
            f"no practical n_samples gives a non-vacuous certificate at rho / sigma = {r / s:.4g}: the Hoeffding "
            f"margin would have to be below Phi(-rho/sigma) = {c_star:.3g}, which needs more than 2^62 samples; "
            "use a larger sigma or a smaller rho"
        )
    q = max(1, math.floor(log_term / (2.0 * c_star * c_star)))
    for _ in range(64):  # the closed form is exact up to rounding: a few steps settle it
        if q > 1 and ok(q - 1):
            q -= 1
        elif not ok(q):
            q += 1
        else:
            break
    return q


# ---------------------------------------------------------------------------- floors


def floor(z: Scalar, rho: Scalar, sigma: Scalar) -> Tensor:
    r"""Population floor (Levine Def. 2.1): :math:`L(z) = \Phi(\Phi^{-1}(z) - 2\rho/\sigma)`.

    If :math:`L(\bar h_i(x)) > \bar h_j(x)` for the population smoothed map, then
    :math:`\bar h_i(\tilde x) > \bar h_j(\tilde x)` for all :math:`\|\tilde x - x\|_2 \le \rho` (Thm. 1).

    Args:
        z (float or Tensor): values in [0, 1].
        rho (float or Tensor): :math:`\ell_2` radius, >= 0 (broadcast against ``z``).
        sigma (float or Tensor): smoothing standard deviation, > 0 (broadcast against ``z``).

    Returns:
        Tensor: ``L(z)``, same shape as the broadcast inputs, in ``z``'s floating dtype.

    Example::

        >>> floor(torch.tensor([0.5, 0.9]), rho=0.1, sigma=0.2)     # Phi(-1), Phi(1.2816 - 1)
        tensor([0.1587, 0.6109])
    """
    return empirical_floor(z, rho, sigma, 0.0)


def empirical_floor(z: Scalar, rho: Scalar, sigma: Scalar, margin: Scalar) -> Tensor:
    r"""Empirical floor (Levine Def. 2.2): :math:`\hat L(z) = \Phi(\Phi^{-1}(z - c) - 2\rho/\sigma) - c`.

    ``c`` is the estimation margin (:func:`hoeffding_margin`). Where ``z - c <= 0`` the
    result is ``-c`` (:math:`\Phi(-\infty) - c`), so no comparison with a non-negative value
    succeeds there; with ``margin = 0`` this is the population :func:`floor`.

    Args:
        z (float or Tensor): observed smoothed values in [0, 1].
        rho (float or Tensor): radius >= 0.
        sigma (float or Tensor): smoothing standard deviation > 0.
        margin (float or Tensor): ``c`` >= 0.

    Returns:
        Tensor in ``z``'s floating dtype (float64 for Python floats).

    Example::

        >>> empirical_floor(torch.tensor([1.0, 0.5, 0.03]), rho=0.0, sigma=1.0, margin=0.031)
        tensor([ 0.9380,  0.4380, -0.0310])
    """
    zt = z if isinstance(z, Tensor) else torch.tensor(float(z), dtype=torch.float64)
    out_dtype = zt.dtype if zt.is_floating_point() else torch.float64
    work = zt.detach().to(_work_dtype(zt)) if not zt.requires_grad else zt.to(_work_dtype(zt))
    if work.numel() and (bool((work < 0).any()) or bool((work > 1).any()) or not bool(torch.isfinite(work).all())):
        raise ValueError(
            f"z must lie in [0, 1], got values in [{float(work.min())}, {float(work.max())}]"
        )
    r = _as_tensor(check_values(rho, "rho", NONNEGATIVE), work)
    s = _as_tensor(check_values(sigma, "sigma", POSITIVE), work)
    c = _as_tensor(check_values(margin, "margin", NONNEGATIVE), work)
    u = (work - c).clamp(0.0, 1.0)
    out = torch.special.ndtr(torch.special.ndtri(u) - 2.0 * r / s) - c
    return out.to(out_dtype)


# ---------------------------------------------------------------------------- certificates


def _sorted_certificate(flat: Tensor, k: int, rho: Scalar, sigma: Scalar, margin: Scalar) -> Tuple[Tensor, Tensor]:
    """Return ``(R_cert (B,), stable descending order (B, n))`` for a B x n map in [0, 1]."""
    batch, n = flat.shape
    order = torch.sort(flat, dim=1, descending=True, stable=True)
    values = order.values
    up = values[:, :k]
    i = torch.arange(1, k + 1, device=flat.device)
    j = 2 * k - i + 1  # 1-based index of the competitor h_(2K-i+1)
    valid = j <= n
    down = values.gather(1, (j.clamp(max=n) - 1).expand(batch, k))
    # beyond the end of the map there is no competitor: any two K-subsets of n elements share
    # at least 2K - n elements, so those i are certified whatever the values.
    down = torch.where(valid, down, torch.full_like(down, -math.inf))
    r = _per_example(check_values(rho, "rho", NONNEGATIVE), "rho", batch, flat)
    s = _per_example(check_values(sigma, "sigma", POSITIVE), "sigma", batch, flat)
    c = _per_example(check_values(margin, "margin", NONNEGATIVE), "margin", batch, flat)
    lower = torch.special.ndtr(torch.special.ndtri((up - c).clamp(0.0, 1.0)) - 2.0 * r / s) - c
    ok = lower > down
    cert = torch.where(ok, i.expand(batch, k), torch.zeros_like(ok, dtype=torch.long)).amax(dim=1)
    return cert, order.indices


def topk_certificate(
    smoothed_map: Tensor, k: Union[int, float], rho: Scalar, sigma: Scalar, margin: Scalar = 0.0
) -> Tensor:
    r"""Certified top-K overlap of a smoothed map (Levine Thm. 2, with the proof's tight index).

    Sort each example's map in descending order, :math:`h_{(1)} \ge h_{(2)} \ge \dots \ge h_{(n)}`:

    .. math::

        R_\text{cert} = \max\{\, i \le K : \hat L(h_{(i)}) > h_{(2K - i + 1)} \,\}
        \quad (0 \text{ if none}),

    where :math:`\hat L` is :func:`empirical_floor`. The condition is monotone in ``i``, so
    :math:`R_\text{cert}` is also the number of ``i`` that satisfy it. With probability at
    least ``p`` (the confidence that gave ``margin``), for every :math:`\tilde x` with
    :math:`\|\tilde x - x\|_2 \le \rho`, the top-K elements of the population smoothed map
    :math:`\bar h(\tilde x)` include at least :math:`R_\text{cert}` of the top-K elements of the
    observed map (any tie-breaking: the certified comparisons are strict). Levine's
    statement uses :math:`h_{(2K-i)}`, slightly more conservative; the authors' code uses
    this index. Where :math:`2K - i + 1 > n` there is no competitor and the comparison
    holds (two K-subsets of n elements always share :math:`2K - n`).

    Args:
        smoothed_map (Tensor): B x ... maps with values in [0, 1] (flattened per example).
        k (int or float): ``K`` as a count in [1, n] or a fraction of n in (0, 1] (rounded up).
        rho (float or Tensor): :math:`\ell_2` radius >= 0, or one per example.
        sigma (float or Tensor): smoothing standard deviation > 0, or one per example
            (the one used to compute each map).
        margin (float or Tensor): estimation margin ``c`` (:func:`hoeffding_margin`); 0 for
            a population (exact) map. Default 0.

    Returns:
        Tensor: int64, shape (B,), the certified overlap in [0, K].

    Example::

        >>> m = torch.tensor([[1.0, 1.0, 0.9, 0.1, 0.0, 0.0]])
        >>> topk_certificate(m, k=2, rho=0.1, sigma=1.0, margin=0.0)
        tensor([2])
    """
    flat = _flat_map(smoothed_map)
    kk = resolve_k(k, flat.shape[1])
    cert, _ = _sorted_certificate(flat, kk, rho, sigma, margin)
    return cert


def certified_radius(
    smoothed_map: Tensor, k: Union[int, float], min_overlap: int, sigma: Scalar, margin: Scalar = 0.0
) -> Tensor:
    r"""The largest :math:`\ell_2` radius at which the top-K certificate (Levine Thm. 2) still
    certifies ``min_overlap`` of the top-K elements.

    :func:`topk_certificate` is monotone in ``i``, so :math:`R_\text{cert}(\rho) \ge m` iff the
    condition holds at :math:`i = m`: :math:`\Phi(\Phi^{-1}(h_{(m)} - c) - 2\rho/\sigma) - c >
    h_{(2K-m+1)}`, i.e. iff

    .. math::

        \rho < \rho^*_m = \frac{\sigma}{2}\left(\Phi^{-1}(h_{(m)} - c)
        - \Phi^{-1}(h_{(2K-m+1)} + c)\right).

    This returns :math:`\rho^*_m` (the supremum of the certified radii; 0 where not even
    :math:`\rho = 0` is certified; ``inf`` where :math:`2K - m + 1 > n`, since any two K-subsets
    of n elements share :math:`2K - n` elements, or where :math:`h_{(m)} - c = 1`).

    Args:
        smoothed_map (Tensor): B x ... maps with values in [0, 1] (flattened per example).
        k (int or float): ``K`` as a count in [1, n] or a fraction of n in (0, 1] (rounded up).
        min_overlap (int): ``m`` in [1, K].
        sigma (float or Tensor): smoothing standard deviation > 0, or one per example.
        margin (float or Tensor): estimation margin ``c`` (:func:`hoeffding_margin`). Default 0.

    Returns:
        Tensor: float64, shape (B,), on the map's device.

    Example::

        >>> m = torch.tensor([[0.9, 0.8, 0.3, 0.1]])
        >>> r = certified_radius(m, k=2, min_overlap=2, sigma=0.5)
        >>> bool(topk_certificate(m, 2, rho=0.99 * float(r), sigma=0.5) == 2)
        True
        >>> bool(topk_certificate(m, 2, rho=1.01 * float(r), sigma=0.5) == 2)
        False
    """
    flat = _flat_map(smoothed_map).double()
    batch, n = flat.shape
    kk = resolve_k(k, n)
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, numbers.Integral):
        raise TypeError(f"min_overlap must be an int in [1, K={kk}], got {type(min_overlap).__name__} {min_overlap!r}")
    if not 1 <= int(min_overlap) <= kk:
        raise ValueError(f"min_overlap must be in [1, K={kk}], got {min_overlap}")
    m = int(min_overlap)
    s = _per_example(check_values(sigma, "sigma", POSITIVE), "sigma", batch, flat).reshape(-1).double()
    c = _per_example(check_values(margin, "margin", NONNEGATIVE), "margin", batch, flat).reshape(-1).double()
    j = 2 * kk - m + 1
    if j > n:
        return torch.full((batch,), math.inf, dtype=torch.float64, device=flat.device)
    values = flat.sort(dim=1, descending=True).values
    up = torch.special.ndtri((values[:, m - 1] - c).clamp(0.0, 1.0))
    down = torch.special.ndtri((values[:, j - 1] + c).clamp(0.0, 1.0))
    radius = (s / 2 * (up - down)).expand(batch)
    return torch.where(torch.isnan(radius) | (radius < 0), torch.zeros_like(radius), radius)


def certified_rank(
    smoothed_map: Tensor,
    index: Union[None, int, Tensor],
    rho: Scalar,
    sigma: Scalar,
    margin: Scalar = 0.0,
    token_mask: Optional[Tensor] = None,
) -> Tensor:
    r"""Certified rank of map elements (Levine Def. 3.1).

    For element ``i``, the smallest ``k`` with :math:`\hat L(h_i) \ge h_{(k)}`: with
    probability at least ``p``, for every :math:`\|\tilde x - x\|_2 \le \rho` the population
    map :math:`\bar h(\tilde x)` puts element ``i`` at least as high as every element that
    had rank ``k`` or lower in the observed map, so its rank there is at most ``k``. If no
    such ``k`` exists, ``n`` is returned (nothing is certified).

    Args:
        smoothed_map (Tensor): B x ... maps in [0, 1].
        index (int, Tensor or None): flat element indices: an int (the same for every
            example), a (B,) tensor, a (B, m) tensor, or None for every element.
        rho, sigma, margin: as in :func:`topk_certificate`.
        token_mask (Tensor, optional): B x n, 0 (False) at padding tokens of a per-token map:
            padding is not ranked (never above an element; ranks are capped at the number of
            real tokens, returned for padding indices). Default None.

    Returns:
        Tensor: int64 ranks (1 = top), shaped like ``index`` ((B,) for an int, the map's
        shape for None).

    Example::

        >>> m = torch.tensor([[1.0, 0.6, 0.5, 0.0]])
        >>> certified_rank(m, 0, rho=0.0, sigma=1.0)        # L(1) = 1 >= h_(1)
        tensor([1])
        >>> certified_rank(m, 0, rho=0.5, sigma=1.0, margin=0.1)   # L = Phi(1.2816 - 1) - 0.1 = 0.51
        tensor([3])
    """
    flat = _flat_map(smoothed_map)
    batch, n = flat.shape
    if index is None:
        idx = torch.arange(n, device=flat.device).expand(batch, n)
        out_shape = smoothed_map.shape
    elif isinstance(index, Tensor):
        if index.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
            raise TypeError(f"index must be an integer tensor, got dtype {index.dtype}")
        idx = index.to(device=flat.device, dtype=torch.long)
        out_shape = idx.shape
        if idx.dim() == 1:
            idx = idx.unsqueeze(1)
        if idx.dim() != 2 or idx.shape[0] != batch:
            raise ValueError(f"index must have shape (B,) or (B, m) with B = {batch}, got {tuple(index.shape)}")
    elif isinstance(index, numbers.Integral) and not isinstance(index, bool):
        idx = torch.full((batch, 1), int(index), device=flat.device, dtype=torch.long)
        out_shape = torch.Size([batch])
    else:
        raise TypeError(f"index must be None, an int or an integer tensor, got {type(index).__name__}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"index holds {int(idx.min())}..{int(idx.max())}, outside the map's range [0, {n - 1}]")
    r = _per_example(check_values(rho, "rho", NONNEGATIVE), "rho", batch, flat)
    s = _per_example(check_values(sigma, "sigma", POSITIVE), "sigma", batch, flat)
    c = _per_example(check_values(margin, "margin", NONNEGATIVE), "margin", batch, flat)
    if token_mask is not None:
        token_mask = check_token_mask(token_mask, flat)  # 0/1 (an attention_mask) or bool, B x n
    z = flat.gather(1, idx)
    lower = torch.special.ndtr(torch.special.ndtri((z - c).clamp(0.0, 1.0)) - 2.0 * r / s) - c
    ascending = _masked_for_sort(flat, token_mask).sort(dim=1).values  # padding (-inf) is never greater
    n_le = torch.searchsorted(ascending.contiguous(), lower.contiguous(), right=True)  # elements <= lower
    n_greater = n - n_le
    real = n if token_mask is None else token_mask.sum(dim=1, keepdim=True)
    rank = torch.minimum(n_greater + 1, torch.as_tensor(real, device=flat.device))
    if token_mask is not None:
        rank = torch.where(token_mask.gather(1, idx), rank, real)
    return rank.reshape(out_shape)


def rank_bound(profile: Tensor, threshold: int, rho: Scalar, sigma: Scalar, margin: Scalar = 0.0) -> Tensor:
    r"""General rank certificate of Levine Thm. 3 (appendix A.1, eq. A.21).

    For a base map that depends only on ranks, :math:`h_i(x) = f(\mathrm{rank}(g(x), i))` with
    ``f`` non-negative and non-increasing (``profile[r - 1] = f(r)``, values in [0, 1]): if
    the median over the samples of the rank of element ``i`` is at most ``T``
    (``threshold``), then

    .. math:: \mathrm{rank}_\text{cert}(x, i) \le \left\lceil \frac{\sum_{r=1}^n f(r)}{\hat L(f(T)/2)} \right\rceil,

    capped at ``n`` (and ``n`` when :math:`\hat L(f(T)/2) \le 0`). The proof shows that strictly
    fewer than :math:`\sum f / \hat L` elements exceed :math:`\hat L(f(T)/2)`; as ranks are
    integers the bound is the ceiling of the paper's ratio.

    Args:
        profile (Tensor): 1-D, ``f(1), ..., f(n)``, non-increasing, in [0, 1].
        threshold (int): ``T`` in [1, n].
        rho, sigma, margin: as in :func:`topk_certificate` (floats or (B,) tensors).

    Returns:
        Tensor: int64, the bound (0-dim, or (B,) for per-example sigma/rho/margin).
    """
    if not isinstance(profile, Tensor) or profile.dim() != 1 or profile.numel() == 0:
        raise ValueError("profile must be a non-empty 1-D tensor f(1), ..., f(n)")
    f = profile.detach().to(_work_dtype(profile))
    n = f.numel()
    if bool((f < 0).any()) or bool((f > 1).any()) or bool((f[1:] > f[:-1]).any()):
        raise ValueError("profile must be non-increasing with values in [0, 1]")
    check_int(threshold, "threshold", 1, n)
    z = (f[threshold - 1] / 2.0).reshape(())
    lower = empirical_floor(z, rho, sigma, margin)
    total = f.sum()
    ratio = total / torch.where(lower > 0, lower, torch.ones_like(lower))
    bound = torch.ceil(ratio - 1e-9 * ratio.abs().clamp(min=1.0))
    bound = torch.where(lower > 0, bound.clamp(max=n), torch.full_like(bound, n))
    return bound.to(torch.long)


def sparsified_rank_bound(
    n_features: int, sparsity: float, rho: Scalar, sigma: Scalar, margin: Scalar = 0.0
) -> Tensor:
    r"""Theorem 3 of Levine for Sparsified SmoothGrad: a bound on certified ranks.

    With :math:`m = \lceil \tau n \rceil`: if the median over the samples of the rank of
    element ``i`` in :math:`|g(x + \varepsilon)|` is at most ``m`` -- equivalently, its smoothed
    Sparsified SmoothGrad value is at least 1/2 -- then

    .. math:: \mathrm{rank}_\text{cert}(x, i) \le \left\lceil \frac{\lceil \tau n \rceil}{\hat L(1/2)} \right\rceil

    (capped at ``n``). For :math:`\rho \ll \sigma` and many samples :math:`\hat L(1/2) \to 1/2`,
    so with :math:`\tau = K / (2n)` elements of median rank at most ``K/2`` stay certifiably in
    the top ``K``.

    Example::

        >>> int(sparsified_rank_bound(1000, 0.05, rho=0.0, sigma=1.0))   # 50 / L(1/2) = 50 / 0.5
        100
    """
    n = check_int(n_features, "n_features", 1)
    m = ceil_fraction(check_fraction(sparsity, "sparsity"), n)
    profile = torch.zeros(n, dtype=torch.float64)
    profile[:m] = 1.0
    return rank_bound(profile, m, rho, sigma, margin)
