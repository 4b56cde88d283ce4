"""The robustness side of explanations: measures, attacks and regularizers.

Subpackages (imported on demand, lower layers never import higher ones):

* :mod:`captum_robust.robust.discrepancy` -- how much did an attribution map change
  (rank correlations, top-k intersection, Boopathy et al.'s interpretation discrepancies);
* :mod:`captum_robust.robust.attacks` -- attacks on attributions (Ghorbani, Boopathy, Levine)
  and the classifier PGD they build on;
* :mod:`captum_robust.robust.stability` -- how much an attribution method's map moves under
  small random input noise (Max/Avg-Sensitivity, Local Lipschitz Estimate, RIS/ROS/RRS);
* :mod:`captum_robust.robust.evaluation` -- the attribution-robustness runner (attacks +
  measures -> per-example results, tables, JSON);
* :mod:`captum_robust.robust.regularizers` -- training-time terms and whole objectives that make
  attributions robust (IG-Norm, Int, PGD-AT, TRADES, ...), for any training loop.
"""
