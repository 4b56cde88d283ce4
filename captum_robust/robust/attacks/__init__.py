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
* :func:`softplus_surrogate` -- a smooth copy of a ReLU model for the attack gradients.

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
    >>> map_result.similarity.shape, cls_result.success.shape
    (torch.Size([2]), torch.Size([2]))
"""

from captum_robust.robust.attacks._adapter import ghorbani_maps
from captum_robust.robust.attacks._results import (
    AttackResult,
    AttributionAttackResult,
    ISAResult,
    ObjectiveResult,
    PGDResult,
)
from captum_robust.robust.attacks.aai import AAI
from captum_robust.robust.attacks.attribution_pgd import AttributionPGD
from captum_robust.robust.attacks.feature_importance import MassCenterAttack, TargetedAttributionAttack, TopKAttack
from captum_robust.robust.attacks.isa import ISA
from captum_robust.robust.attacks.l2_topk import L2TopKAttack
from captum_robust.robust.attacks.pgd import PGD
from captum_robust.robust.attacks.surrogate import softplus_surrogate

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
]
