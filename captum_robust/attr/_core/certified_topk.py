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

**Token models** (``embedding_layer=``, see :meth:`SmoothGradBase.attribute
<captum_robust.attr._core.smoothgrad.SmoothGradBase.attribute>`): the map elements are the
real tokens and the ball is in the space of the embedding output. With probability at least
``confidence``, for every ``B``-th embedding tensor :math:`\tilde e` with
:math:`\|\tilde e - e(x_b)\|_2 \le \rho` (the whole ``T x D`` tensor, padding positions
included, as the noise is), the top-K real tokens of the population map at :math:`\tilde e`
share at least ``overlap[b]`` tokens with the observed top-K. Padding is never in a top-K
(``top_k`` lists real tokens only), ``K`` may not exceed any example's real token count, and a
fractional ``K`` is taken of the *shortest* real length in the batch. The Hoeffding margin
counts the largest number of real tokens in the batch as ``n``: padding entries are exactly 0
in every sample and in the population map (no estimation error, so they need no share of the
union bound), and an example with fewer real tokens only gets a larger (safe) margin.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_robust._utils.validation import (
    OPEN_UNIT,
    TargetType,
    TensorOrTuple,
    check_fraction,
    check_int,
    check_nonnegative,
)
from captum_robust.attr._core._inputs import prepare_inputs
from captum_robust.attr._core._smoothing import check_token_call, smooth, token_inputs, token_sigmas, unflatten
from captum_robust.attr._core.certificates import (
    _flat_map,
    _masked_for_sort,
    _scalar_empirical_floor,
    _sorted_certificate,
    certified_rank,
    hoeffding_margin,
    resolve_k,
    resolve_token_k,
)
from captum_robust.attr._core.certificate_diagnosis import CertificateDiagnosis, diagnose_certificate, vacuous_message
from captum_robust.attr._core.smoothgrad import SmoothGradBase
from captum_robust.attr._core.tokens import TokenBatch

__all__ = ["TopKCertificate", "CertifiedTopK"]


@dataclass(frozen=True)
class TopKCertificate:
    r"""The result of :meth:`CertifiedTopK.attribute`.

    With probability at least ``confidence`` (over the noise), for every example ``b`` and
    every :math:`\tilde x` with :math:`\|\tilde x - x_b\|_2 \le \rho`, the top-``k`` elements of
    the population smoothed map :math:`\bar h(\tilde x)` (smoothed with ``sigma[b]``) include
    at least ``overlap[b]`` of the observed map's top-``k`` elements ``top_k[b]``. For token
    ids, :math:`\tilde x` is an embedding tensor (``T x D``) within ``rho`` of the example's
    embeddings and the elements are its real tokens (``token_mask``).

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
            (ties to the lowest index); token positions for token ids, never padding.
        method (str): the smoothed attribution's class name.
        token_mask (Tensor or None): (B, T) bool, the real tokens of a token model
            (``embedding_layer=``; ``n_features`` is then the largest real token count, the
            ``n`` of the margin); None for float inputs.
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
    token_mask: Optional[Tensor] = None

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
        """Bool (B,): the certificate says no more than :attr:`trivial` (for token models, no more
        than ``max(0, 2k - n_real)`` with each example's own number of real tokens)."""
        if self.token_mask is not None:
            n_real = self.token_mask.sum(dim=1).to(self.overlap.device)
            return self.overlap <= (2 * self.k - n_real).clamp(min=0)
        return self.overlap <= self.trivial

    def diagnose(self, maps: TensorOrTuple, min_overlap: int = 1) -> CertificateDiagnosis:
        """Why this certificate is what it is, and which ``n_samples``, ``sigma`` or ``rho`` would certify
        ``min_overlap`` of the top-k (per example and for the median example; see
        :func:`~captum_robust.attr.certify.diagnose_certificate`). ``maps`` are the smoothed maps
        returned with the certificate (a tuple for tuple inputs); ``.explanation()`` gives the text."""
        flat = maps if isinstance(maps, Tensor) else torch.cat([m.reshape(m.shape[0], -1) for m in maps], dim=1)
        return diagnose_certificate(flat, self.k, self.rho, self.sigma, self.n_samples, self.confidence, min_overlap,
                                    token_mask=self.token_mask)

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
            **({} if self.token_mask is None else {"token_counts": self.token_mask.sum(dim=1).tolist()}),
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
    certificate (several input tensors, ``relative_sigma``), and what it means for token ids
    (``embedding_layer=``: the ball is in embedding space, the elements are the real tokens):
    see the module documentation.

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
        embedding_layer: Optional[nn.Module] = None, token_mask: Any = None,
    ) -> Tuple[Any, Tensor, Tensor, int, float, int, Optional[Tensor]]:
        """``(how to shape the maps, mean B x n, sigma (B,), q, margin, k, token mask)``; the first is
        ``(is_tuple, inputs)`` for float inputs and None for token ids (maps B x T as they are)."""
        check_token_call(embedding_layer, token_mask)
        smoothed = self.smoothed_attribution
        # the vacuous warning points at the user's line: _smooth, _maps, attribute, log_usage's wrapper, caller
        run = (n_samples, internal_batch_size, generator, show_progress, stacklevel)
        if embedding_layer is None:
            is_tuple, inputs_t, _, args = prepare_inputs(inputs, smoothed.forward_func, additional_forward_args)
            n = sum(t[0].numel() for t in inputs_t)
            sigma = smoothed.smoothing_sigma(inputs_t)
            return ((is_tuple, inputs_t),) + self._smooth(inputs_t, target, args, n, resolve_k(self.k, n), sigma,
                                                          run, None) + (None,)
        with token_inputs(smoothed, inputs, additional_forward_args, embedding_layer, token_mask) as tb:
            mask, emb = tb.mask, tb.embeddings
            counts = torch.full(emb.shape[:1], emb.shape[1], device=emb.device) if mask is None else mask.sum(dim=1)
            # the margin's n: the most real tokens of an example (padding entries are exact zeros)
            n, kk = int(counts.max()), resolve_token_k(self.k, counts)
            sigma = token_sigmas(smoothed.sigma, smoothed.relative_sigma, emb, mask)
            return (None,) + self._smooth((emb,), target, None, n, kk, sigma, run, tb) + (mask,)

    def _smooth(
        self, inputs_t: Tuple[Tensor, ...], target: TargetType, args: Any, n: int, kk: int, sigma: Tensor,
        run: Tuple[Any, ...], tokens: Optional[TokenBatch],
    ) -> Tuple[Tensor, Tensor, int, float, int]:
        """The smoothed map and what its certificate needs (warns when every certificate is vacuous)."""
        n_samples, internal_batch_size, generator, show_progress, stacklevel = run
        smoothed = self.smoothed_attribution
        q = smoothed.n_samples if n_samples is None else check_int(n_samples, "n_samples", 1)
        margin = hoeffding_margin(n, int(q), self.confidence)
        best_sigma = float(sigma.max())
        ratio = 2.0 * self.rho / best_sigma
        if _scalar_empirical_floor(1.0, ratio, margin) <= 0.0 and kk > max(0, 2 * kk - n):
            warnings.warn(vacuous_message(n, int(q), self.rho, best_sigma, self.confidence), UserWarning,
                          stacklevel=stacklevel)
        (mean,), sigma_used, q_used = smooth(
            (smoothed,), inputs_t, target, args, int(q), internal_batch_size, generator,
            False, None, show_progress, tokens=tokens,
        )
        return mean, sigma_used, q_used, margin, kk

    @log_usage()
    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        n_samples: Optional[int] = None, internal_batch_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None, show_progress: bool = False,
        embedding_layer: Optional[nn.Module] = None, token_mask: Optional[Tensor] = None,
    ) -> Tuple[TensorOrTuple, TopKCertificate]:
        r"""Compute the smoothed maps and their top-K certificates.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): floating-point model inputs, batch first
                (with ``embedding_layer``: one ``B x T`` tensor of token ids).
            target: as in the wrapped method (fixed per example, or ``None`` for the argmax
                class of each noisy sample).
            additional_forward_args (Any, optional): extra model arguments.
            n_samples (int, optional): overrides the wrapped method's ``n_samples``; the
                certificate uses the number actually drawn.
            internal_batch_size (int, optional): rows per forward/backward pass.
            generator (torch.Generator, optional): source of the noise.
            show_progress (bool): a tqdm bar over the chunks of samples. Default False.
            embedding_layer (nn.Module, optional): for token models, the embedding module
                (as in :meth:`SmoothGradBase.attribute
                <captum_robust.attr._core.smoothgrad.SmoothGradBase.attribute>`): the noise and
                the ``rho`` ball live in the space of its output (the whole ``T x D`` tensor),
                the map elements are the real tokens (module documentation). Default None.
            token_mask (Tensor, optional): ``B x T``, 1 for real tokens, 0 for padding; only
                with ``embedding_layer``. Default None (every token real).

        Returns:
            tuple: ``(maps, certificate)``: the smoothed maps shaped like the inputs (``B x T``
            for token ids), and a :class:`TopKCertificate`.

        Raises:
            ValueError: with ``embedding_layer``, when ``k`` (a count) exceeds the number of
                real tokens of some example (the message names it).

        Warns:
            UserWarning: when ``n_samples`` is so small that every certificate is vacuous
            (the message names the smallest useful ``n_samples``).
        """
        shape, mean, sigma, q, margin, kk, mask = self._maps(
            inputs, target, additional_forward_args, n_samples, internal_batch_size, generator, show_progress, 5,
            embedding_layer, token_mask,
        )
        flat = _flat_map(mean, "the smoothed map")
        # padding sorts last (-inf): never in top_k, never a competitor
        cert, order = _sorted_certificate(_masked_for_sort(flat, mask), kk, self.rho, sigma.to(flat.dtype), margin)
        certificate = TopKCertificate(
            overlap=cert,
            k=kk,
            n_features=flat.shape[1] if mask is None else int(mask.sum(dim=1).max()),
            rho=self.rho,
            sigma=sigma.detach(),
            margin=float(margin),
            confidence=self.confidence,
            n_samples=q,
            top_k=order[:, :kk],
            method=type(self.smoothed_attribution).__name__,
            token_mask=mask,
        )
        return _shaped(mean, shape), certificate

    def certified_rank(
        self, inputs: TensorOrTuple, index: Union[None, int, Tensor] = None, target: TargetType = None,
        additional_forward_args: Any = None, n_samples: Optional[int] = None, internal_batch_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None, show_progress: bool = False,
        embedding_layer: Optional[nn.Module] = None, token_mask: Optional[Tensor] = None,
    ) -> Tuple[TensorOrTuple, Tensor]:
        r"""Smoothed maps and the certified ranks (Levine Def. 3.1) of chosen elements.

        Args:
            inputs: as in :meth:`attribute`.
            index (int, Tensor or None): flat element indices (all input tensors
                concatenated): an int, a (B,) or (B, m) tensor, or None for every element.
            target: as in :meth:`attribute`, and so are ``additional_forward_args``,
                ``n_samples``, ``internal_batch_size``, ``generator``, ``show_progress``,
                ``embedding_layer`` and ``token_mask`` (token indices then; padding is not
                ranked, ranks are at most the example's number of real tokens, which is also
                what a padding index gets).

        Returns:
            tuple: ``(maps, ranks)``; ``ranks`` is int64 shaped like ``index`` ((B,) for
            an int, (B, n) for None): with probability at least ``confidence`` each
            element's rank in the population map of any input within ``rho`` is at most
            its certified rank.
        """
        shape, mean, sigma, _, margin, _, mask = self._maps(
            inputs, target, additional_forward_args, n_samples, internal_batch_size, generator, show_progress, 4,
            embedding_layer, token_mask,
        )
        ranks = certified_rank(mean, index, self.rho, sigma.to(torch.float64), margin, token_mask=mask)
        return _shaped(mean, shape), ranks


def _shaped(mean: Tensor, shape: Any) -> TensorOrTuple:
    """The B x n maps shaped like the inputs (``shape`` = ``(is_tuple, inputs)``), or as they are (tokens)."""
    return mean if shape is None else unflatten(mean, shape[1], shape[0])
