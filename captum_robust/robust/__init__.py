"""The robustness side of explanations: measures, attacks and regularizers.

Subpackages (imported on demand, lower layers never import higher ones):

* :mod:`captum_robust.robust.discrepancy` -- how much did an attribution map change
  (rank correlations, top-k intersection, Boopathy et al.'s interpretation discrepancies);
* ``captum_robust.robust.attacks`` -- attacks on attributions;
* ``captum_robust.robust.regularizers`` -- training-time terms that make attributions robust.
"""
