r"""Attacks on attributions, and the classifier attacks they build on.

Captum-style classes constructed with the model and an attribution method, with
``perturb(inputs, target=..., additional_forward_args=...)`` returning the perturbed inputs
and a per-example result (a small dataclass of ``(B,)`` tensors):

* :class:`TopKAttack`, :class:`MassCenterAttack`, :class:`TargetedAttributionAttack` --
  Ghorbani et al.'s iterative feature-importance attacks (sign steps, prediction kept);
* :class:`AAI` -- Boopathy et al.'s attack against interpretability (eq. 15, top-k variant);
* :class:`ISA` -- Boopathy et al.'s interpretability sneaking attack (eq. 6, bisections);
* :class:`L2TopKAttack` -- Levine et al.'s l2 top-k attack (Algorithm 1);
* :class:`AttributionPGD` -- PGD ascent on any differentiable attribution objective (the inner
  maximizer of the robust-attribution regularizers);
* :class:`PGD` -- l-inf / l2 classifier attack with random start, restarts, best iterate;
* :func:`softplus_surrogate` -- a smooth copy of a ReLU model for the attack gradients;
* :class:`TokenSwapAttack` -- greedy nearest-neighbour token swaps on token models (a discrete
  adversary for text classifiers); :class:`TopKAttack` and :class:`L2TopKAttack` attack token
  models in their embedding space with ``embedding_layer=`` (the returned tensor is then the
  adversarial embeddings).

Naming rule (one for every attack):

* ``target`` is the class the attack is *about*: for the attacks on attribution maps the class
  whose map is attacked (default the prediction; the prediction is kept in any case); for
  :class:`PGD` the true label (untargeted, default the prediction) or, with ``targeted=True``,
  the class to reach; for :class:`ISA` (always targeted) the class :math:`y'` to reach, its
  clean class being ``label``; for :class:`AttributionPGD` whatever the objective reads.
  A class *to reach* is always called ``target`` and only appears in targeted attacks.
* ``result.accepted`` is each attack's own success flag: for the attacks on maps "an iterate
  that kept the prediction was found" -- also readable as ``result.prediction_kept`` --; for
  :class:`PGD` and :class:`ISA` "the attack succeeded" -- also ``result.succeeded`` (and the
  older ``result.success``). ``accepted`` stays for compatibility.
* ``random_start`` of :class:`PGD`, :class:`L2TopKAttack` and :class:`AttributionPGD`:
  ``True`` (default) starts the first run at the clean input (AttributionPGD: wherever the
  objective's gradient there is not zero), so the default is never weaker than no random
  start; ``"always"`` starts every run at a random point (the behaviour before issue 18).

Bad input is refused once, for every attack, before any model pass: an empty batch, inputs on
the ``meta`` device, NaN/inf or non-floating-point inputs, inputs whose dtype differs from the
model's parameters (``TypeError``), tensors in ``additional_forward_args`` with neither one row
nor one row per example, and NaN/inf model outputs at the clean inputs; iterates where the
model's outputs are not finite are never accepted nor counted as a success. Inputs created
under ``torch.inference_mode()`` are copied into normal tensors. A model in training mode runs
in eval mode for the call (with a warning when it has BatchNorm or Dropout) and is restored.

The attribution may be any attribution of :mod:`captum_robust.attr` whose ``attribute`` takes
``create_graph`` (Integrated Gradients, CAM, Grad-CAM, Grad-CAM++, the differentiable SmoothGrad
variants) or a plain callable ``(model, inputs, target) -> maps``. With ``surrogate=`` the
attack gradients come from the surrogate while predictions, acceptance and the reported maps
use the real model.

Example::

    >>> import torch
    >>> from captum_robust.models import Small
    >>> from captum_robust.attr import CAM
    >>> from captum_robust.robust.attacks import AAI, PGD
    >>> model = Small().eval()
    >>> x = torch.rand(2, 1, 28, 28)
    >>> x_map, map_result = AAI(model, CAM(model, model.feature_layer, model.classifier), n_iterations=10).perturb(x)
    >>> x_cls, cls_result = PGD(model, n_iterations=10).perturb(x)     # the classifier attack, for comparison
    >>> map_result.similarity.shape, cls_result.succeeded.shape
    (torch.Size([2]), torch.Size([2]))
"""

from captum_robust.robust.attacks._adapter import ghorbani_maps
from captum_robust.robust.attacks._results import (
    AttackResult,
    AttributionAttackResult,
    ISAResult,
    ObjectiveResult,
    PGDResult,
    TokenSwapResult,
)
from captum_robust.robust.attacks.aai import AAI
from captum_robust.robust.attacks.attribution_pgd import AttributionPGD
from captum_robust.robust.attacks.feature_importance import MassCenterAttack, TargetedAttributionAttack, TopKAttack
from captum_robust.robust.attacks.isa import ISA
from captum_robust.robust.attacks.l2_topk import L2TopKAttack
from captum_robust.robust.attacks.pgd import PGD
from captum_robust.robust.attacks.surrogate import softplus_surrogate
from captum_robust.robust.attacks.token_swap import TokenSwapAttack

__all__ = [
    "TopKAttack",
    "MassCenterAttack",
    "TargetedAttributionAttack",
    "AAI",
    "ISA",
    "L2TopKAttack",
    "AttributionPGD",
    "PGD",
    "softplus_surrogate",
    "ghorbani_maps",
    "AttackResult",
    "AttributionAttackResult",
    "ObjectiveResult",
    "PGDResult",
    "ISAResult",
    "TokenSwapAttack",
    "TokenSwapResult",
]
