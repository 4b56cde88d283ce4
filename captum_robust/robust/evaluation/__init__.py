r"""Evaluation runners: attack the attributions of a data set and report how much they changed,
and remove-and-retrain (ROAR).

* :func:`attribution_robustness` (in :mod:`~captum_robust.robust.evaluation.robustness`) runs an
  attack on attributions over a data loader, measures the maps before and after, and adds the
  adversarial accuracy of the model under :class:`~captum_robust.robust.attacks.PGD` -- the
  protocol of Chen et al. (2019, Table 2) and Boopathy et al. (2020, Tables 1 and 3). It returns
  a :class:`RobustnessReport` (per-example records, an aggregate markdown table, JSON), with the
  first attacked examples in :class:`AttackedExamples` on request; :func:`summarize` gives its
  statistics. The stability metrics of :mod:`captum_robust.robust.stability` (names in
  :data:`STABILITY_MEASURES`) can be reported next to the attack measures.
* :func:`roar` (in :mod:`~captum_robust.robust.evaluation.roar`) measures faithfulness instead:
  RemOve And Retrain (Hooker et al., 2019; the evaluation of Zeng et al.) replaces the features an
  attribution ranks highest and reports the test accuracy of freshly retrained models
  (:class:`ROARResult`); :func:`top_fraction_mask`, :func:`remove_features` and
  :func:`replacement_values` (in :mod:`~captum_robust.robust.evaluation.removal`) are its
  building blocks.

Example::

    >>> from captum_robust.robust.evaluation import summarize
    >>> s = summarize([0.25, 0.5, 0.75, float("nan")])
    >>> s["n"], s["n_nan"], s["mean"], s["median"]
    (3, 1, 0.5, 0.5)
"""

from captum_robust.robust.evaluation._stats import summarize
from captum_robust.robust.evaluation.removal import remove_features, replacement_values, top_fraction_mask
from captum_robust.robust.evaluation.results import AttackedExamples, RobustnessReport
from captum_robust.robust.evaluation.roar import ROAR_FRACTIONS, ROARResult, roar
from captum_robust.robust.evaluation.robustness import STABILITY_MEASURES, attribution_robustness

__all__ = [
    "attribution_robustness",
    "STABILITY_MEASURES",
    "RobustnessReport",
    "AttackedExamples",
    "summarize",
    "roar",
    "ROARResult",
    "top_fraction_mask",
    "remove_features",
    "replacement_values",
    "ROAR_FRACTIONS",
]
