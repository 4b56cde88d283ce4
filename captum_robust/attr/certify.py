r"""Functional certificates for Gaussian-smoothed attribution maps (Levine, Singla & Feizi).

The floors, margins and certificates behind :class:`~captum_robust.attr.CertifiedTopK`,
usable on any batch of smoothed maps with values in [0, 1]:

* :func:`hoeffding_margin` -- estimation margin ``c`` of a ``q``-sample mean (eq. A.14);
* :func:`n_samples_for_margin` -- the ``q`` that reaches a margin;
* :func:`min_n_samples` -- the smallest ``q`` for which any certificate can be non-vacuous;
* :func:`floor` and :func:`empirical_floor` -- Def. 2.1 and 2.2;
* :func:`topk_certificate` -- Thm. 2 with the tight index of its proof;
* :func:`certified_radius` -- the largest radius at which Thm. 2 certifies ``m`` of the top K;
* :func:`certified_rank` -- Def. 3.1;
* :func:`sparsified_rank_bound` and :func:`rank_bound` -- Thm. 3 and its general form (eq. A.21);
* :func:`diagnose_certificate` (:class:`CertificateDiagnosis`) -- why a certificate is small and which
  ``n_samples``, ``sigma`` or ``rho`` would certify the median example (also ``TopKCertificate.diagnose``).

Example::

    >>> import torch
    >>> from captum_robust.attr import certify
    >>> c = certify.hoeffding_margin(n_features=784, n_samples=8192, confidence=0.95)
    >>> maps = torch.rand(4, 1, 28, 28)                   # any smoothed maps in [0, 1]
    >>> r = certify.topk_certificate(maps, k=0.2, rho=0.03, sigma=0.2, margin=c)   # (4,) int64, in [0, 157]
"""

from captum_robust.attr._core.certificates import (
    certified_radius,
    certified_rank,
    empirical_floor,
    floor,
    hoeffding_margin,
    min_n_samples,
    n_samples_for_margin,
    rank_bound,
    resolve_k,
    sparsified_rank_bound,
    topk_certificate,
)
from captum_robust.attr._core.certificate_diagnosis import CertificateDiagnosis, diagnose_certificate
from captum_robust.attr._core.certified_topk import TopKCertificate

__all__ = [
    "hoeffding_margin", "n_samples_for_margin", "min_n_samples", "floor", "empirical_floor", "topk_certificate",
    "certified_radius", "certified_rank", "sparsified_rank_bound", "rank_bound", "resolve_k", "TopKCertificate",
    "diagnose_certificate", "CertificateDiagnosis",
]
