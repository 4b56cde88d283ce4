"""Moved: the certificate functions are in :mod:`captum_robust.attr._core.certificates` (public in
:mod:`captum_robust.attr.certify`), :class:`~captum_robust.attr.CertifiedTopK` and
:class:`~captum_robust.attr.TopKCertificate` in :mod:`captum_robust.attr._core.certified_topk`."""

from captum_robust.attr._core.certificates import certified_radius  # noqa: F401
from captum_robust.attr._core.certificates import certified_rank  # noqa: F401
from captum_robust.attr._core.certificates import empirical_floor  # noqa: F401
from captum_robust.attr._core.certificates import floor  # noqa: F401
from captum_robust.attr._core.certificates import hoeffding_margin  # noqa: F401
from captum_robust.attr._core.certificates import min_n_samples  # noqa: F401
from captum_robust.attr._core.certificates import n_samples_for_margin  # noqa: F401
from captum_robust.attr._core.certificates import rank_bound  # noqa: F401
from captum_robust.attr._core.certificates import resolve_k  # noqa: F401
from captum_robust.attr._core.certificates import sparsified_rank_bound  # noqa: F401
from captum_robust.attr._core.certificates import topk_certificate  # noqa: F401
from captum_robust.attr._core.certified_topk import CertifiedTopK, TopKCertificate  # noqa: F401
