r"""Measures between attribution maps: how much did an explanation change?

Pure functions on batched tensors (``B x ...``, one map per example), computed on the maps'
device, returning one value per example:

* rank measures -- :func:`kendall_tau` (tau-b, equal to ``scipy.stats.kendalltau``),
  :func:`spearman` (equal to ``scipy.stats.spearmanr``), :func:`topk_intersection`
  (with :func:`topk_mask`), :func:`center_of_mass` and :func:`center_dislocation`
  (Ghorbani et al. 2019); the first four take ``mask=`` (``B x n`` bool, the entries that count,
  e.g. the real tokens of padded sentences: each example is measured on its own entries);
* :func:`prepare_maps` -- the papers' map conventions (absolute value, channel reduction,
  normalization to sum ``H * W`` or to [0, 1], restriction to the top-k of a reference);
* interpretation discrepancies of Boopathy et al. (2020) -- :func:`lp_discrepancy` (eq. 3),
  :func:`two_class_discrepancy` (eq. 4), :func:`target_free_discrepancy` (eq. 7),
  :func:`normalized_discrepancy_score` and :func:`normalized_slope` (App. B);
* :func:`attribution_aware` (AA-Top-K, AA-Kendall, AA-Spearman; Gali et al. eq. 10-12),
  :func:`alignment` and :func:`binarized_alignment` (Etmann et al.; Gali et al. eq. 1, 4);
* :data:`MEASURES` and :func:`measure_function` -- the one registry of measure names that
  attacks, the evaluation runner and the CLI accept.

Example::

    >>> import torch
    >>> from captum_robust.robust.discrepancy import kendall_tau, topk_intersection, prepare_maps
    >>> clean, attacked = torch.rand(8, 3, 28, 28), torch.rand(8, 3, 28, 28)
    >>> s, s_adv = (prepare_maps(m, "sum", absolute=True, normalize="sum") for m in (clean, attacked))
    >>> tau = kendall_tau(s, s_adv)                  # 8 values
    >>> top = topk_intersection(s, s_adv, k=100)     # 8 values
"""

from captum_robust.robust.discrepancy.maps import prepare_maps
from captum_robust.robust.discrepancy.measures import (
    alignment,
    attribution_aware,
    binarized_alignment,
    lp_discrepancy,
    normalized_discrepancy_score,
    normalized_slope,
    target_free_discrepancy,
    two_class_discrepancy,
)
from captum_robust.robust.discrepancy.center import center_dislocation, center_of_mass
from captum_robust.robust.discrepancy.rank import kendall_tau, spearman
from captum_robust.robust.discrepancy.topk import topk_intersection, topk_mask
from captum_robust.robust.discrepancy.registry import MEASURES, measure_function

__all__ = [
    "kendall_tau", "spearman", "topk_intersection", "topk_mask", "center_of_mass", "center_dislocation",
    "prepare_maps",
    "lp_discrepancy", "two_class_discrepancy", "target_free_discrepancy", "normalized_discrepancy_score",
    "normalized_slope", "attribution_aware", "alignment", "binarized_alignment",
    "MEASURES", "measure_function",
]
