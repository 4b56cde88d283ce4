r"""Certified top-K robustness of a smoothed attribution (Levine, Singla & Feizi, Thm. 2, Def. 3.1).

:class:`CertifiedTopK` wraps a method of the SmoothGrad family, draws the noise itself and
returns the smoothed maps with a :class:`TopKCertificate`; the certificate functions it
applies are in :mod:`captum_robust.attr._core.certificates` (public in
:mod:`captum_robust.attr.certify`).

**Which sigma.** When the noise level differs between input tensors, the smallest sigma of
each example enters the certificate (sound: the whitened perturbation has norm at most
``rho / sigma_min``). The certificate compares with the population map smoothed with the
*same* absolute sigma (``certificate.sigma``): with ``relative_sigma=True``, recompute maps at
perturbed inputs with a method built with ``sigma=certificate.sigma``, not with their own range.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor

from captum_robust._utils.validation import (
    OPEN_UNIT,
    TargetType,
    TensorOrTuple,
    check_fraction,
    check_int,
    check_nonnegative,
)
from captum_robust.attr._core._inputs import prepare_inputs
from captum_robust.attr._core._smoothing import smooth, unflatten
from captum_robust.attr._core.certificates import (
    _flat_map,
    _scalar_empirical_floor,
    _sorted_certificate,
    certified_rank,
    hoeffding_margin,
    resolve_k,
)
from captum_robust.attr._core.certificate_diagnosis import CertificateDiagnosis, diagnose_certificate, vacuous_message
from captum_robust.attr._core.smoothgrad import SmoothGradBase

__all__ = ["TopKCertificate", "CertifiedTopK"]


@dataclass(frozen=True)
class TopKCertificate:
    r"""The result of :meth:`CertifiedTopK.attribute`.

    With probability at least ``confidence`` (over the noise), for every example ``b`` and
    every :math:`\tilde x` with :math:`\|\tilde x - x_b\|_2 \le \rho`, the top-``k`` elements of
    the population smoothed map :math:`\bar h(\tilde x)` (smoothed with ``sigma[b]``) include
    at least ``overlap[b]`` of the observed map's top-``k`` elements ``top_k[b]``.

    Attributes:
        overlap (Tensor): int64 (B,), the certified overlap :math:`R_\text{cert}` in [0, k].
        k (int): the K of top-K.
        n_features (int): number of map elements per example (all input tensors together).
        rho (float): the certified :math:`\ell_2` radius.
        sigma (Tensor): (B,) the absolute noise standard deviation used for each example's map.
        margin (float): Hoeffding margin ``c`` of the estimate.
        confidence (float): ``p``.
        n_samples (int): number of noisy samples of the map.
        top_k (Tensor): int64 (B, k) flat indices of the observed top-k, in descending order
            (ties to the lowest index).
        method (str): the smoothed attribution's class name.
    """

    overlap: Tensor
    k: int
    n_features: int
    rho: float
    sigma: Tensor
    margin: float
    confidence: float
    n_samples: int
    top_k: Tensor
    method: str

    @property
    def fraction(self) -> Tensor:
        """``overlap / k`` (float), the quantity Levine plots."""
        return self.overlap.double() / self.k

    @property
    def trivial(self) -> int:
        """The overlap every pair of top-k sets has anyway, ``max(0, 2k - n)``."""
        return max(0, 2 * self.k - self.n_features)

    @property
    def vacuous(self) -> Tensor:
        """Bool (B,): the certificate says no more than :attr:`trivial`."""
        return self.overlap <= self.trivial

    def diagnose(self, maps: TensorOrTuple, min_overlap: int = 1) -> CertificateDiagnosis:
        """Why this certificate is what it is, and which ``n_samples``, ``sigma`` or ``rho`` would certify
        ``min_overlap`` of the top-k (per example and for the median example; see
        :func:`~captum_robust.attr.certify.diagnose_certificate`). ``maps`` are the smoothed maps
        returned with the certificate (a tuple for tuple inputs); ``.explanation()`` gives the text."""
        flat = maps if isinstance(maps, Tensor) else torch.cat([m.reshape(m.shape[0], -1) for m in maps], dim=1)
        return diagnose_certificate(flat, self.k, self.rho, self.sigma, self.n_samples, self.confidence, min_overlap)

    def to_dict(self) -> Dict[str, Any]:
        """Plain Python values (lists, floats), for JSON reports."""
        return {
            "method": self.method,
            "overlap": self.overlap.tolist(),
            "fraction": self.fraction.tolist(),
            "k": self.k,
            "n_features": self.n_features,
            "rho": self.rho,
            "sigma": self.sigma.tolist(),
            "margin": self.margin,
            "confidence": self.confidence,
            "n_samples": self.n_samples,
        }


class CertifiedTopK(Attribution):
    r"""A smoothed attribution map with its certified top-K robustness (Levine Thm. 2, Def. 3.1, Thm. 3).

    Wraps a method of the SmoothGrad family (any
    :class:`~captum_robust.attr._core.smoothgrad.SmoothGradBase` whose base map lies in
    [0, 1]) and draws the noise itself, so the ``sigma`` and ``n_samples`` in the certificate
    are always those the map was computed with. For a map :math:`\hat h(x)` averaged over
    ``q`` samples, with :math:`c = \sqrt{\ln(2n/(1-p))/(2q)}` and
    :math:`\hat L(z) = \Phi(\Phi^{-1}(z - c) - 2\rho/\sigma) - c`:

    .. math::

        R_\text{cert} = \max\{\, i \le K : \hat L(h_{(i)}) > h_{(2K - i + 1)} \,\}.

    With probability at least ``confidence``, every :math:`\tilde x` within :math:`\ell_2`
    distance ``rho`` of ``x`` has a population smoothed map whose top-K shares at least
    :math:`R_\text{cert}` elements with the observed top-K. Levine found the scaled and
    quadratic maps' certificates vacuous and the sparsified ones not. Which sigma enters the
    certificate (several input tensors, ``relative_sigma``): see the module documentation.

    Args:
        smoothed_attribution (SmoothGradBase): the smoothed method (its ``sigma`` and
            ``n_samples`` are used).
        k (int or float): ``K`` as a count, or a fraction of the map size (rounded up;
            Levine used 0.2).
        rho (float): :math:`\ell_2` radius >= 0, in the units of the model's input.
        confidence (float): ``p`` in (0, 1). Default 0.95.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import SparsifiedSmoothGrad, CertifiedTopK
        >>> model = Small().eval()
        >>> ssg = SparsifiedSmoothGrad(model, sparsity=0.1, sigma=0.2, n_samples=2048)
        >>> cert_topk = CertifiedTopK(ssg, k=0.2, rho=0.03)
        >>> maps, cert = cert_topk.attribute(torch.rand(2, 1, 28, 28), target=[3, 1],
        ...                                  generator=torch.Generator().manual_seed(0))
        >>> cert.k, cert.overlap.shape           # certified top-157 overlap per image in cert.overlap
        (157, torch.Size([2]))
    """

    def __init__(
        self, smoothed_attribution: SmoothGradBase, k: Union[int, float], rho: float, confidence: float = 0.95
    ) -> None:
        if not isinstance(smoothed_attribution, SmoothGradBase):
            raise TypeError(
                "smoothed_attribution must be a ScaledSmoothGrad, QuadraticSmoothGrad, SparsifiedSmoothGrad, "
                f"RelaxedSparsifiedSmoothGrad or another SmoothGradBase subclass, got {type(smoothed_attribution).__name__}"
            )
        super().__init__(smoothed_attribution.forward_func)
        self.smoothed_attribution = smoothed_attribution
        if isinstance(k, bool) or not isinstance(k, numbers.Real):
            raise TypeError(f"k must be an int count or a float fraction, got {type(k).__name__} {k!r}")
        if isinstance(k, numbers.Integral) and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not isinstance(k, numbers.Integral):
            resolve_k(k, 1)  # checks the fraction's range
        self.k = k
        self.rho = check_nonnegative(rho, "rho")
        self.confidence = check_fraction(confidence, "confidence", OPEN_UNIT)

    def has_convergence_delta(self) -> bool:
        return False

    def _maps(
        self, inputs: TensorOrTuple, target: TargetType, additional_forward_args: Any, n_samples: Optional[int],
        internal_batch_size: Optional[int], generator: Optional[torch.Generator], show_progress: bool, stacklevel: int,
    ) -> Tuple[bool, Tuple[Tensor, ...], Tensor, Tensor, int, float, int]:
        is_tuple, inputs_t, _, args = prepare_inputs(inputs, self.smoothed_attribution.forward_func,
                                                     additional_forward_args)
        smoothed = self.smoothed_attribution
        n = sum(t[0].numel() for t in inputs_t)
        kk = resolve_k(self.k, n)
        q = smoothed.n_samples if n_samples is None else check_int(n_samples, "n_samples", 1)
        margin = hoeffding_margin(n, int(q), self.confidence)
        sigma = smoothed.smoothing_sigma(inputs_t)
        best_sigma = float(sigma.max())
        ratio = 2.0 * self.rho / best_sigma
        if _scalar_empirical_floor(1.0, ratio, margin) <= 0.0 and kk > max(0, 2 * kk - n):
            warnings.warn(vacuous_message(n, int(q), self.rho, best_sigma, self.confidence), UserWarning,
                          stacklevel=stacklevel)
        (mean,), sigma_used, q_used = smooth(
            (smoothed,), inputs_t, target, args, int(q), internal_batch_size, generator,
            False, None, show_progress,
        )
        return is_tuple, inputs_t, mean, sigma_used, q_used, margin, kk

    @log_usage()
    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        n_samples: Optional[int] = None, internal_batch_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None, show_progress: bool = False,
    ) -> Tuple[TensorOrTuple, TopKCertificate]:
        r"""Compute the smoothed maps and their top-K certificates.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): floating-point model inputs, batch first.
            target: as in the wrapped method (fixed per example, or ``None`` for the argmax
                class of each noisy sample).
            additional_forward_args (Any, optional): extra model arguments.
            n_samples (int, optional): overrides the wrapped method's ``n_samples``; the
                certificate uses the number actually drawn.
            internal_batch_size (int, optional): rows per forward/backward pass.
            generator (torch.Generator, optional): source of the noise.
            show_progress (bool): a tqdm bar over the chunks of samples. Default False.

        Returns:
            tuple: ``(maps, certificate)``: the smoothed maps shaped like the inputs, and a
            :class:`TopKCertificate`.

        Warns:
            UserWarning: when ``n_samples`` is so small that every certificate is vacuous
            (the message names the smallest useful ``n_samples``).
        """
        is_tuple, inputs_t, mean, sigma, q, margin, kk = self._maps(
            inputs, target, additional_forward_args, n_samples, internal_batch_size, generator, show_progress, 5
        )
        flat = _flat_map(mean, "the smoothed map")
        cert, order = _sorted_certificate(flat, kk, self.rho, sigma.to(flat.dtype), margin)
        certificate = TopKCertificate(
            overlap=cert,
            k=kk,
            n_features=flat.shape[1],
            rho=self.rho,
            sigma=sigma.detach(),
            margin=float(margin),
            confidence=self.confidence,
            n_samples=q,
            top_k=order[:, :kk],
            method=type(self.smoothed_attribution).__name__,
        )
        return unflatten(mean, inputs_t, is_tuple), certificate

    def certified_rank(
        self, inputs: TensorOrTuple, index: Union[None, int, Tensor] = None, target: TargetType = None,
        additional_forward_args: Any = None, n_samples: Optional[int] = None, internal_batch_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None, show_progress: bool = False,
    ) -> Tuple[TensorOrTuple, Tensor]:
        r"""Smoothed maps and the certified ranks (Levine Def. 3.1) of chosen elements.

        Args:
            inputs: as in :meth:`attribute`.
            index (int, Tensor or None): flat element indices (all input tensors
                concatenated): an int, a (B,) or (B, m) tensor, or None for every element.
            target: as in :meth:`attribute`, and so are ``additional_forward_args``,
                ``n_samples``, ``internal_batch_size``, ``generator`` and ``show_progress``.

        Returns:
            tuple: ``(maps, ranks)``; ``ranks`` is int64 shaped like ``index`` ((B,) for
            an int, (B, n) for None): with probability at least ``confidence`` each
            element's rank in the population map of any input within ``rho`` is at most
            its certified rank.
        """
        is_tuple, inputs_t, mean, sigma, _, margin, _ = self._maps(
            inputs, target, additional_forward_args, n_samples, internal_batch_size, generator, show_progress, 4
        )
        ranks = certified_rank(mean, index, self.rho, sigma.to(torch.float64), margin)
        return unflatten(mean, inputs_t, is_tuple), ranks
