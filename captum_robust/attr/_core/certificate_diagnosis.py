r"""Why a top-K certificate is small, and what would make it larger (Levine Thm. 2, Cor. 1).

The certificate at overlap ``m`` holds when the ``m``-th largest smoothed value :math:`a = h_{(m)}`,
lowered by the sampling margin ``c``, stays above the :math:`(2K - m + 1)`-th,
:math:`b = h_{(2K-m+1)}`, raised by ``c``, after a shift of :math:`2\rho/\sigma` in probit units:

.. math::

    D(c) = \Phi^{-1}(a - c) - \Phi^{-1}(b + c) > \frac{2\rho}{\sigma}.

``D`` decreases in ``c``, so for the *same smoothed values* three things follow in closed
form: the largest margin that would certify (hence the ``n_samples`` that reaches it,
:func:`~captum_robust.attr.certify.n_samples_for_margin`), the smallest ``sigma`` that certifies
with the current margin, :math:`2\rho / D(c)`, and the largest certified radius,
:math:`\sigma D(c) / 2`. A larger sigma also smooths the map itself (usually flattening it),
so the sigma here is a lower bound on what is needed; the n_samples assumes the estimates stay
where they are (more samples move them by at most the margin).

:func:`diagnose_certificate` computes these per example; :class:`CertificateDiagnosis`
holds them, concatenates batches and writes the explanation a report prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from captum_robust._utils.validation import OPEN_UNIT, check_fraction, check_int
from captum_robust.attr._core.certificates import (
    _flat_map,
    _masked_for_sort,
    _per_example,
    _sorted_certificate,
    hoeffding_margin,
    min_n_samples,
    resolve_k,
    resolve_token_k,
)
from captum_robust.attr._core.tokens import check_token_mask
from captum_robust.attr._core._smoothing import check_values
from captum_robust._utils.validation import NONNEGATIVE, POSITIVE

__all__ = ["CertificateDiagnosis", "diagnose_certificate", "vacuous_message"]

_STD_NORMAL = NormalDist()
_TENSOR_FIELDS = ("overlap", "upper", "lower", "gap", "max_margin", "n_samples_needed", "sigma_needed", "radius", "sigma")


def vacuous_message(n_features: int, n_samples: int, rho: float, sigma: float, confidence: float) -> str:
    """The warning of a certificate that is vacuous for every map: why, and which n_samples,
    sigma or rho would help (computed; never raises)."""
    c = float(hoeffding_margin(n_features, n_samples, confidence))
    text = (
        f"n_samples={n_samples} makes every top-k certificate vacuous for rho={rho}, sigma={sigma:.4g}, "
        f"n={n_features}, confidence={confidence} (the Hoeffding margin {c:.3f} leaves no room: even a map of "
        "exact 1s and 0s is not certified)"
    )
    try:
        text += f"; the smallest useful n_samples is {min_n_samples(n_features, rho, sigma, confidence)} (Levine used 8192)"
    except ValueError:
        text += f"; no practical n_samples helps at rho/sigma = {rho / sigma:.4g} (it needs more than 2^62)"
    if c < 0.5:
        z = _STD_NORMAL.inv_cdf(1.0 - c)  # the largest rho/sigma any map certifies with margin c
        text += f"; with n_samples={n_samples}, sigma above {rho / z:.4g} or rho below {sigma * z:.4g} can certify"
    else:
        text += f"; with n_samples={n_samples} no sigma or rho helps (the margin is at least 0.5)"
    return text + ". The maps and a vacuous (zero) certificate are returned."


@dataclass(frozen=True)
class CertificateDiagnosis:
    r"""Per example, why the top-K certificate at overlap ``min_overlap`` holds or fails, and what would help.

    Every tensor attribute is (B,), float64 unless stated; values assume the smoothed map keeps
    its values (see the module documentation).

    Attributes:
        overlap (Tensor): int64, the certified overlap :math:`R_\text{cert}` at ``rho``.
        upper (Tensor): :math:`a = h_{(m)}`, the ``min_overlap``-th largest smoothed value.
        lower (Tensor): :math:`b = h_{(2K-m+1)}` (``-inf`` where :math:`2K - m + 1 > n`: no competitor).
        gap (Tensor): ``upper - lower``; the margin takes ``2 * margin`` of it before ``rho`` does.
        max_margin (Tensor): the largest sampling margin at which overlap ``min_overlap`` is certified
            at ``rho`` and ``sigma`` (0 where even an exact map is not; ``inf`` where always).
        n_samples_needed (Tensor): the smallest ``n_samples`` whose margin is below ``max_margin``
            (``inf`` where no number of samples helps: the gap itself is too small for ``rho / sigma``).
        sigma_needed (Tensor): the smallest noise level that certifies with the current margin
            (``inf`` where the margin alone leaves no room; a lower bound, see above).
        radius (Tensor): the largest certified radius with the current margin (0 where none).
        sigma (Tensor): the noise level each map was computed with.
        k, min_overlap, n_features, n_samples (int); rho, margin, confidence (float): the settings.
    """

    overlap: Tensor
    upper: Tensor
    lower: Tensor
    gap: Tensor
    max_margin: Tensor
    n_samples_needed: Tensor
    sigma_needed: Tensor
    radius: Tensor
    sigma: Tensor
    k: int
    min_overlap: int
    n_features: int
    n_samples: int
    rho: float
    margin: float
    confidence: float

    @property
    def certified(self) -> Tensor:
        """Bool (B,): overlap ``min_overlap`` is certified at ``rho``."""
        return self.overlap >= self.min_overlap

    @staticmethod
    def cat(diagnoses: Sequence["CertificateDiagnosis"]) -> "CertificateDiagnosis":
        """Join the diagnoses of several batches (same settings) into one."""
        if not diagnoses:
            raise ValueError("diagnoses must hold at least one CertificateDiagnosis")
        first = diagnoses[0]
        values: Dict[str, Any] = {f.name: getattr(first, f.name) for f in fields(first)}
        for name in _TENSOR_FIELDS:
            values[name] = torch.cat([getattr(d, name).cpu() for d in diagnoses])
        return CertificateDiagnosis(**values)

    def summary(self) -> Dict[str, Any]:
        """The numbers the explanation quotes: counts and the median example's requirements.

        The "median" of a requirement is the value that at least half of the examples meet
        (the ``ceil(B/2)``-th smallest), so e.g. ``n_samples_needed`` certifies half the examples.
        """
        b = int(self.overlap.shape[0])

        def median(t: Tensor) -> float:
            return float(t.double().sort().values[max(0, math.ceil(b / 2) - 1)]) if b else math.nan

        return {
            "examples": b,
            "certified": int(self.certified.sum()),
            "zero": int((self.overlap == 0).sum()),
            "min_overlap": self.min_overlap,
            "k": self.k,
            "rho": self.rho,
            "margin": self.margin,
            "n_samples": self.n_samples,
            "median_sigma": median(self.sigma),
            "median_gap": median(-self.gap) * -1.0 if b else math.nan,
            "median_max_margin": median(-self.max_margin) * -1.0 if b else math.nan,
            "median_n_samples_needed": median(self.n_samples_needed),
            "median_sigma_needed": median(self.sigma_needed),
            "median_radius": median(-self.radius) * -1.0 if b else math.nan,
        }

    def explanation(self) -> str:
        """A paragraph for a report: why the certificates are what they are, and what would help."""
        s = self.summary()
        m, k = self.min_overlap, self.k
        head = (
            f"{s['examples'] - s['certified']} of {s['examples']} examples have fewer than {m} of the top-{k} "
            f"certified at rho={self.rho:g} ({s['zero']} have none)."
        )
        why = (
            f" The certificate compares h_({m}), the smoothed value of rank {m}, with h_({2 * k - m + 1}), "
            f"the value of rank 2K-{m}+1: after the sampling margin c={self.margin:.4f} (n_samples={self.n_samples}, "
            f"confidence {self.confidence:g}) is taken from the first and added to the second, their probits must "
            f"still differ by more than 2 rho / sigma = {2 * self.rho / s['median_sigma']:.3g}. The median gap "
            f"h_({m}) - h_({2 * k - m + 1}) is {s['median_gap']:.4f}"
            + (" (less than 2c: the margin alone closes it)." if s["median_gap"] <= 2 * self.margin else ".")
        )
        q, sg = s["median_n_samples_needed"], s["median_sigma_needed"]
        helps: List[str] = []
        if math.isfinite(q):
            helps.append(f"n_samples >= {int(q)} (margin below {s['median_max_margin']:.4f})")
        if math.isfinite(sg):
            helps.append(f"sigma >= {sg:.4g} with n_samples={self.n_samples} (a lower bound: a larger sigma "
                         "also flattens the map)")
        if s["median_radius"] > 0:
            helps.append(f"a radius rho below {s['median_radius']:.4g}")
        if helps:
            what = " What certifies the median example (same smoothed values): " + ", or ".join(helps) + "."
        else:
            what = (
                " No n_samples or sigma certifies the median example at these values: even an exact map does not "
                "separate h_(m) from h_(2K-m+1) by 2 rho / sigma; a sparser map (smaller sparsity), a smaller K or a "
                "smaller rho would."
            )
        return head + why + what

    def to_dict(self) -> Dict[str, Any]:
        """Plain Python values: per-example lists, the settings and :meth:`summary` (JSON-ready; inf as "inf")."""
        def plain(v: Any) -> Any:
            if isinstance(v, Tensor):
                return [x if not isinstance(x, float) or math.isfinite(x) else str(x) for x in v.tolist()]
            return v

        out = {f.name: plain(getattr(self, f.name)) for f in fields(self)}
        out["summary"] = {key: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                          for key, v in self.summary().items()}
        out["explanation"] = self.explanation()
        return out


def diagnose_certificate(
    smoothed_map: Tensor, k: Union[int, float], rho: float, sigma: Union[float, Tensor], n_samples: int,
    confidence: float = 0.95, min_overlap: int = 1, token_mask: Optional[Tensor] = None,
) -> CertificateDiagnosis:
    r"""Per example, what limits the top-K certificate of ``smoothed_map`` and what would lift it.

    Args:
        smoothed_map (Tensor): B x ... maps in [0, 1] averaged over ``n_samples`` noisy samples.
        k (int or float): ``K`` as a count or a fraction of the map size.
        rho (float): the :math:`\ell_2` radius >= 0.
        sigma (float or Tensor): the noise level of each map (a float or (B,)).
        n_samples (int): the number of samples the maps were averaged over (gives the margin).
        confidence (float): ``p`` in (0, 1). Default 0.95.
        min_overlap (int): the overlap ``m`` in [1, K] to explain. Default 1 (a non-zero certificate).
        token_mask (Tensor, optional): B x T bool, False at padding, for per-token maps (the
            SmoothGrad family with ``embedding_layer=``): padding is not a map element (never a
            competitor), ``K`` as a fraction is taken of the shortest real length, and the margin
            counts the largest number of real tokens, as :class:`~captum_robust.attr.CertifiedTopK`
            does. Default None.

    Returns:
        CertificateDiagnosis

    Example::

        >>> import torch
        >>> m = torch.tensor([[0.9, 0.8, 0.3, 0.1]])
        >>> d = diagnose_certificate(m, k=2, rho=0.4, sigma=0.5, n_samples=100)
        >>> int(d.overlap), int(d.n_samples_needed)       # margin 0.159 is too large; 203 samples suffice
        (0, 203)
        >>> round(float(d.sigma_needed), 4), round(float(d.radius), 4)   # or sigma 0.62, or rho < 0.32
        (0.6197, 0.3228)
    """
    flat = _flat_map(smoothed_map).double()
    batch, n_map = flat.shape
    if token_mask is not None:
        token_mask = check_token_mask(token_mask, flat)
        counts = token_mask.sum(dim=1)
        n, kk = int(counts.max()), resolve_token_k(k, counts)  # the margin's n: real tokens (see CertifiedTopK)
    else:
        counts = torch.full((batch,), n_map, dtype=torch.long, device=flat.device)
        n, kk = n_map, resolve_k(k, n_map)
    m = check_int(min_overlap, "min_overlap", 1, kk)
    p = check_fraction(confidence, "confidence", OPEN_UNIT)
    q = check_int(n_samples, "n_samples", 1)
    r = float(check_values(rho, "rho", NONNEGATIVE))
    c = float(hoeffding_margin(n, q, p))
    s = _per_example(check_values(sigma, "sigma", POSITIVE), "sigma", batch, flat).reshape(-1).expand(batch).double()
    sortable = _masked_for_sort(flat, token_mask)
    overlap, order = _sorted_certificate(sortable, kk, r, s.to(flat.dtype), c)
    values = sortable.gather(1, order)
    j = 2 * kk - m + 1
    a = values[:, m - 1]
    alone = j > counts  # no competitor h_(2K-m+1): any two K-subsets share 2K - n_real elements
    b = values[:, min(j, n_map) - 1].masked_fill(alone, -math.inf)
    ratio = 2.0 * r / s

    def probit_gap(cc: Tensor) -> Tensor:
        """D(c) (-inf where a - c <= 0 or b + c >= 1; +inf without competitor)."""
        up = torch.special.ndtri((a - cc).clamp(0.0, 1.0))
        down = torch.special.ndtri((b + cc).clamp(0.0, 1.0))
        d = up - down
        return torch.where(alone, math.inf, torch.where(torch.isnan(d), torch.full_like(d, -math.inf), d))

    zero = torch.zeros_like(a)
    d_now, d_exact = probit_gap(zero + c), probit_gap(zero)
    # the largest margin that still certifies: bisection on the decreasing D(c) - ratio
    lo, hi = zero.clone(), torch.where(alone, 1.0, ((a - b) / 2).clamp(min=0.0))
    for _ in range(60):
        mid = (lo + hi) / 2
        good = probit_gap(mid) > ratio
        lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
    can = d_exact > ratio
    max_margin = torch.where(alone, math.inf, torch.where(can, lo, zero))
    log_term = math.log(2.0 * n / (1.0 - p))
    needed = torch.where(
        max_margin > 0, torch.floor(log_term / (2.0 * max_margin.clamp(min=1e-300) ** 2)) + 1,
        torch.full_like(a, math.inf),
    )
    needed = torch.where(torch.isinf(max_margin), torch.ones_like(a), needed)
    sigma_needed = torch.where(d_now > 0, 2.0 * r / d_now.clamp(min=1e-300), torch.full_like(a, math.inf))
    radius = torch.where(d_now > 0, s * d_now / 2.0, zero)
    return CertificateDiagnosis(
        overlap=overlap.cpu(), upper=a.cpu(), lower=b.cpu(), gap=(a - b).cpu(), max_margin=max_margin.cpu(),
        n_samples_needed=needed.cpu(), sigma_needed=sigma_needed.cpu(), radius=radius.cpu(), sigma=s.cpu(),
        k=kk, min_overlap=m, n_features=n, n_samples=q, rho=r, margin=c, confidence=p,
    )
