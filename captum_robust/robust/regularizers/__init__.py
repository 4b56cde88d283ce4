r"""Training-time terms and robust objectives that drop into any training loop.

Every regularizer is a :class:`torch.nn.Module` built with the model; ``reg(inputs, target)``
returns a scalar (the batch mean), differentiable with respect to the model's parameters.

Terms to add to your own loss:

* :class:`IGNorm` -- Chen et al. 2019: :math:`\lambda \max_{x'} \lVert \mathrm{IG}^{\ell_y}(x, x') \rVert_1`;
* :class:`Int`, :class:`Int2`, :class:`IntOneClass` -- Boopathy et al. 2020, eq. 8-10: the
  worst-case (target-free) discrepancy of the class activation maps;
* :class:`SaliencyAlignment` -- Gali et al., eq. 7: match a frozen teacher's input gradient;
* :class:`InputGradientRegularizer` -- :math:`\lambda \lVert \nabla_x \ell \rVert_q^q`
  (Drucker & LeCun; Ross & Doshi-Velez; Chen Prop. 2);
* :class:`SaliencyStability` -- Levine et al., App. D, eq. D.1.

Whole objectives that replace your loss: :class:`IGSumNorm` (Chen), :class:`IntAdv`,
:class:`Int2Adv` (Boopathy), :class:`PGDAdversarialLoss` (Madry, :math:`\ell_\infty` and
:math:`\ell_2`), :class:`TRADESLoss` (Zhang et al.), :class:`DistillationLoss` (defensive
distillation). :class:`EpsilonSchedule` gives the warm-up of epsilon every paper uses.

Token models (text classifiers): :class:`IGNorm`, :class:`IGSumNorm`, :class:`InputGradientRegularizer` and
:class:`SaliencyStability` take ``embedding_layer=`` (e.g. ``model.bert.embeddings``) and are then
called with ``B x T`` token ids, ``additional_forward_args=(attention_mask,)`` and
``token_mask=attention_mask``; they work on the embedding output, train the embedding weights, and
never perturb padding (:mod:`~captum_robust.robust.regularizers._tokens`).

Where each lives: ``ig_norm`` (IG-Norm, IG-Sum-Norm), ``int_family`` (Int, Int2, IntOneClass)
and ``int_adversarial`` (IntAdv, Int2Adv) on the shared ``_int_base``, ``saliency``
(SaliencyAlignment, SaliencyStability), ``input_gradient``, ``adversarial`` (PGD-AT, TRADES),
``distillation``; ``_base`` holds :class:`RobustTerm`, the schedule and the argument checks,
``_inner`` the inner attack's settings, ``_tokens`` the token-model helpers. The old module
names ``chen``, ``boopathy`` and ``gradient`` re-export their classes.

Example::

    >>> import torch, torch.nn.functional as F
    >>> from captum_robust.models import Small
    >>> from captum_robust.robust.regularizers import EpsilonSchedule, Int
    >>> model = Small()
    >>> reg = Int(model, eps=EpsilonSchedule(0.3, warmup_steps=0, ramp_steps=10), n_iterations=2)
    >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    >>> x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    >>> loss = F.cross_entropy(model(x), y) + reg(x, y)
    >>> opt.zero_grad(); loss.backward(); opt.step()
    >>> sorted(reg.last_stats)[:3], reg.schedule.current_step
    (['attack_changed_prediction', 'discrepancy', 'eps'], 1)
"""

from captum_robust.robust.regularizers._base import EpsilonSchedule, RobustTerm
from captum_robust.robust.regularizers.adversarial import PGDAdversarialLoss, TRADESLoss
from captum_robust.robust.regularizers.distillation import DistillationLoss
from captum_robust.robust.regularizers.ig_norm import IGNorm, IGSumNorm
from captum_robust.robust.regularizers.input_gradient import InputGradientRegularizer
from captum_robust.robust.regularizers.int_adversarial import Int2Adv, IntAdv
from captum_robust.robust.regularizers.int_family import TUNED_GAMMA, Int, Int2, IntOneClass
from captum_robust.robust.regularizers.saliency import SaliencyAlignment, SaliencyStability

__all__ = [
    "IGNorm",
    "IGSumNorm",
    "Int",
    "Int2",
    "IntOneClass",
    "IntAdv",
    "Int2Adv",
    "SaliencyAlignment",
    "InputGradientRegularizer",
    "SaliencyStability",
    "PGDAdversarialLoss",
    "TRADESLoss",
    "DistillationLoss",
    "EpsilonSchedule",
    "RobustTerm",
    "TUNED_GAMMA",
]
