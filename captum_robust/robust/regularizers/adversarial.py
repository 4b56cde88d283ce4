r"""Adversarial training objectives that *replace* the user's loss: Madry et al.'s PGD
adversarial training and TRADES (Zhang et al.).

Each is a :class:`~captum_robust.robust.regularizers.RobustTerm` whose ``forward(inputs,
target)`` returns the batch mean of the objective, differentiable with respect to the model's
parameters; the inner maximizations use :class:`~captum_robust.robust.attacks.PGD` and
:class:`~captum_robust.robust.attacks.AttributionPGD` on the unwrapped model (eval mode, frozen
parameters, everything restored), the final forward passes go through the model as given (a
``DistributedDataParallel`` wrapper included, so that the backward pass synchronises the
gradients) in the user's train/eval mode. Defensive distillation moved to
:mod:`captum_robust.robust.regularizers.distillation` (still importable from here).

**PGD adversarial training.** By Danskin's theorem the gradient of Madry et al.'s objective with
respect to :math:`\theta` is the gradient of the loss at the fixed maximizer: no gradient flows
through the attack (``x'`` is detached). The attack runs on the unwrapped model (:attr:`module`)
with frozen parameters, in eval mode (``eval_mode=True``, the default; ``eval_mode=False`` runs it
in the model's own mode -- BatchNorm batch statistics, as Madry et al.'s TensorFlow code did --
and restores the running statistics afterwards; Dropout then draws from the global RNG, not from
``generator``); nothing of the model's state changes. The final forward :math:`f_\theta(x')` goes
through :attr:`model` as given (with ``DistributedDataParallel`` that is the pass that synchronises
the gradients) in the user's current train/eval mode: Madry et al. train with the model in
training mode. ``eps == 0`` is the clean cross-entropy (no attack). The defaults are the MNIST
recipe of Madry et al. / Chen et al. / Boopathy et al.: :math:`\ell_\infty`, :math:`\epsilon = 0.3`,
40 steps of 0.01 with random start (CIFAR-10: ``eps=8/255, step_size=2/255, n_iterations=10``;
Boopathy et al. warm :math:`\epsilon` up with ``EpsilonSchedule(0.3, 2000, 8000)``).

**TRADES.** The value is the *batch mean* (the authors' code: ``KLDivLoss(sum) / B``, the same).
The gradient flows through both :math:`f_\theta(x)` and :math:`f_\theta(x')` (as in the authors'
code), not through the attack (:math:`x'` is detached). The inner maximum is found by
:class:`~captum_robust.robust.attacks.AttributionPGD` on the per-example KL (the clean distribution
held fixed during the search), on the unwrapped model with frozen parameters in eval mode
(``eval_mode=False``: the model's own mode, BatchNorm running statistics restored afterwards;
Zhang et al.'s code switches to eval mode for the attack). *Start:* Zhang et al. start at
:math:`x + 0.001\,\mathcal N(0, I)`; :class:`TRADESLoss` starts at a *uniform random point of the
ball* (AttributionPGD's random start) and keeps each example's best iterate (the highest KL; the
authors return the last one). The KL and its gradient vanish at :math:`x' = x`, so some random
start is needed; a uniform one of the whole ball explores more and, with best-iterate keeping,
never gives a smaller KL than the start. The two final forward passes, :math:`f_\theta(x)` and
:math:`f_\theta(x')`, go through :attr:`model` as given (``DistributedDataParallel`` included) in
the user's current mode, one batch each as in the authors' code (BatchNorm sees the clean and the
adversarial batch separately). ``eps == 0`` or ``beta == 0`` give the clean cross-entropy without
an attack (exact: the KL term and its gradient are zero at :math:`x' = x`). Defaults:
:math:`\epsilon = 0.3`, 40 steps of 0.01 (Zhang et al.'s MNIST attack); :math:`\beta = 6` is their
CIFAR-10 setting (1/λ = 6; their MNIST script uses :math:`\beta = 1`); CIFAR-10 used
``eps=0.031, step_size=0.007, n_iterations=10``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.geometry import BoundType
from captum_robust._utils.validation import check_int
from captum_robust.robust.regularizers._base import (EpsType, check_adversarial, check_num_classes, check_weight,
                                                    class_scores)
from captum_robust.robust.regularizers._base import check_teacher, teacher_logits  # noqa: F401  (re-exported)
from captum_robust.robust.regularizers._inner import AttackTerm, attack_state
from captum_robust.robust.regularizers.distillation import DistillationLoss  # noqa: F401  (its old home)

__all__ = ["PGDAdversarialLoss", "TRADESLoss", "DistillationLoss"]


def _misclassified(logits: Tensor, target: Tensor) -> float:
    return float((logits.detach().argmax(dim=1) != target).double().mean())


def _kl_rows(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-example :math:`\\mathrm{KL}(\\mathrm{softmax}(p) \\,\\|\\, \\mathrm{softmax}(q))`."""
    logp = F.log_softmax(logits_p, dim=1)
    return (logp.exp() * (logp - F.log_softmax(logits_q, dim=1))).sum(dim=1)


# --------------------------------------------------------------------------- Madry


class PGDAdversarialLoss(AttackTerm):
    r"""Madry et al.'s adversarial training objective (Madry et al. 2018, eq. 2.1; the "Adv"
    baseline of Boopathy et al. and Chen et al.), a *whole* objective that replaces the loss:

    .. math::

        \mathcal L(\theta) = \frac1B \sum_{b=1}^B \ell\big(f_\theta(x'_b), y_b\big),
        \qquad x'_b \approx \arg\max_{\lVert x' - x_b \rVert \le \epsilon,\ x' \in \text{box}}
        \ell\big(f_\theta(x'), y_b\big),

    :math:`\ell` the cross-entropy, the inner maximum found by
    :class:`~captum_robust.robust.attacks.PGD` (:math:`\ell_\infty` sign steps or :math:`\ell_2`
    normalised steps, uniform random start, ``n_restarts`` runs, best iterate kept). The value
    is the *batch mean*; no gradient flows through the attack. Where the attack and the final
    forward run, and the MNIST/CIFAR-10 recipes: :mod:`~captum_robust.robust.regularizers.adversarial`.
    Common arguments (defaults: ``eps=0.3``, 40 steps of 0.01, ``"linf"``): :class:`RobustTerm`.

    Args:
        n_restarts (int): PGD runs from fresh random starts, >= 1 (the best is kept). Default 1.

    ``last_stats`` holds ``"loss_adv"`` (the returned mean) and ``"attack_success"`` (the fraction
    of the batch misclassified at :math:`x'` by the final, training forward pass).

    Example::

        >>> import torch, torch.nn as nn
        >>> from captum_robust.robust.regularizers.adversarial import PGDAdversarialLoss
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> objective = PGDAdversarialLoss(model, eps=0.3, n_iterations=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
        >>> loss = objective(x, y)          # replaces F.cross_entropy(model(x), y)
        >>> loss.backward()
        >>> bool((objective.last_adversarial - x).abs().max() <= 0.3 + 1e-6)
        True
        >>> clean = torch.nn.functional.cross_entropy(model(x), y)
        >>> bool(loss > clean)
        True
    """

    _second_order = False  # first-order attack and loss: a compiled model needs no warning

    def __init__(self, model: nn.Module, eps: EpsType = 0.3, step_size: float = 0.01, n_iterations: int = 40, *,
                 norm: str = "linf", n_restarts: int = 1, random_start: Union[bool, str] = True, auto_step: bool = True,
                 eval_mode: bool = True, generator: Optional[torch.Generator] = None, clip_min: BoundType = 0.0,
                 clip_max: BoundType = 1.0) -> None:
        super().__init__(model, eps, step_size=step_size, n_iterations=n_iterations, norm=norm, clip_min=clip_min,
                         clip_max=clip_max, random_start=random_start, auto_step=auto_step, eval_mode=eval_mode,
                         generator=generator)
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)

    def _attack(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        if eps == 0:
            return inputs.detach().clone()
        module = self.module
        # eval_mode=False: a plain callable, so that PGD does not switch the model to eval mode
        attacked: Any = module if self.eval_mode else module.__call__
        pgd = self.pgd(eps, model=attacked, n_restarts=self.n_restarts)
        with attack_state(module, self.eval_mode):
            x_adv, _ = pgd.perturb(inputs.detach(), target=target, generator=self.generator)
        return x_adv.detach()

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        x_adv = self._attack(inputs, target, eps)
        self.last_adversarial = x_adv
        loss, logits = self._objective(x_adv, target)
        self.last_stats = {"attack_success": _misclassified(logits, target), "loss_adv": float(loss.detach())}
        return loss

    def _objective(self, inputs_adv: Tensor, target: Tensor):
        logits = class_scores(self.model(inputs_adv))
        check_num_classes(target, logits.shape[1])
        return F.cross_entropy(logits, target), logits

    def objective_at(self, inputs: Tensor, target: Tensor, inputs_adv: Tensor) -> Tensor:
        r"""The objective at a given :math:`x'`: the batch mean of :math:`\ell(f(x'), y)`, through
        :attr:`model` in its current mode, differentiable with respect to the parameters (and
        to ``inputs_adv`` if it requires grad).

        Args:
            inputs (Tensor): the clean batch (checked, unused by the value).
            target (Tensor): the labels, ``(B,)`` integers.
            inputs_adv (Tensor): :math:`x'`, shaped like ``inputs``.

        Returns:
            Tensor: a 0-dim tensor.
        """
        inputs, y = self._check_inputs(inputs, target)
        return self._objective(check_adversarial(inputs, inputs_adv), y)[0]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, step_size={self.step_size}, n_iterations={self.n_iterations}, "
            f"norm={self.norm!r}, n_restarts={self.n_restarts}"
        )


# --------------------------------------------------------------------------- TRADES


class TRADESLoss(AttackTerm):
    r"""TRADES (Zhang et al., ICML 2019, sec. 4 and Algorithm 1), a *whole* objective that
    replaces the loss:

    .. math::

        \mathcal L(\theta) = \frac1B \sum_{b=1}^B \Big[ \ell\big(f_\theta(x_b), y_b\big)
            + \beta\, \mathrm{KL}\big(\sigma(f_\theta(x_b)) \,\big\|\, \sigma(f_\theta(x'_b))\big) \Big],
        \qquad x'_b \approx \arg\max_{\lVert x' - x_b \rVert \le \epsilon,\ x' \in \text{box}}
        \mathrm{KL}\big(\sigma(f_\theta(x_b)) \,\|\, \sigma(f_\theta(x'))\big),

    :math:`\ell` the cross-entropy, :math:`\sigma` the softmax,
    :math:`\mathrm{KL}(p \| q) = \sum_c p_c \log(p_c / q_c)`; the value is the *batch mean*. The
    attack starts at a uniform random point of the ball and keeps each example's best iterate
    (Zhang et al.: :math:`x + 0.001\,\mathcal N(0, I)`, last iterate); why, where each pass runs,
    and the recipes: :mod:`~captum_robust.robust.regularizers.adversarial`. Common arguments
    (defaults: ``eps=0.3``, 40 steps of 0.01, ``"linf"``): :class:`RobustTerm`.

    Args:
        beta (float): :math:`\beta \ge 0`. Default 6.0 (Zhang et al., CIFAR-10).

    ``last_stats`` holds ``"loss_natural"`` (mean cross-entropy at :math:`x`), ``"kl"`` (mean KL,
    unweighted) and ``"attack_success"`` (fraction misclassified at :math:`x'` by the final forward pass).

    Example::

        >>> import torch, torch.nn as nn, torch.nn.functional as F
        >>> from captum_robust.robust.regularizers.adversarial import TRADESLoss
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> objective = TRADESLoss(model, eps=0.3, beta=6.0, n_iterations=5,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
        >>> loss = objective(x, y)
        >>> loss.backward()
        >>> stats = objective.last_stats
        >>> abs(stats["value"] - (stats["loss_natural"] + 6.0 * stats["kl"])) < 1e-5
        True
    """

    _second_order = False  # first-order attack and loss: a compiled model needs no warning

    def __init__(self, model: nn.Module, eps: EpsType = 0.3, beta: float = 6.0, step_size: float = 0.01,
                 n_iterations: int = 40, *, norm: str = "linf", random_start: Union[bool, str] = True,
                 auto_step: bool = True, eval_mode: bool = True, generator: Optional[torch.Generator] = None,
                 clip_min: BoundType = 0.0, clip_max: BoundType = 1.0) -> None:
        super().__init__(model, eps, step_size=step_size, n_iterations=n_iterations, norm=norm, clip_min=clip_min,
                         clip_max=clip_max, random_start=random_start, auto_step=auto_step, eval_mode=eval_mode,
                         generator=generator)
        self.beta = check_weight(beta, "beta")

    def _stationary_start(self) -> bool:
        return True  # the KL and its gradient vanish at x' = x

    def _attack(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        if eps == 0 or self.beta == 0:
            return inputs.detach().clone()
        module = self.module
        x = inputs.detach()
        with attack_state(module, self.eval_mode):
            with torch.no_grad():
                clean = class_scores(module(x)).detach()

            def kl_objective(x_adv: Tensor, x_clean: Tensor, y: Any, args: Any) -> Tensor:
                return _kl_rows(clean, class_scores(module(x_adv)))

            inner = self.attribution_pgd(kl_objective, eps, keep_best=True)
            x_adv, _ = inner.perturb(x, target=target, generator=self.generator)
        return x_adv.detach()

    def _objective(self, inputs: Tensor, target: Tensor, inputs_adv: Optional[Tensor]) -> Dict[str, Any]:
        logits = class_scores(self.model(inputs))
        check_num_classes(target, logits.shape[1])
        natural = F.cross_entropy(logits, target)
        if inputs_adv is None:
            kl = torch.zeros((), dtype=natural.dtype, device=natural.device)
            logits_adv = logits
        else:
            logits_adv = class_scores(self.model(inputs_adv))
            kl = _kl_rows(logits, logits_adv).mean()
        return {"value": natural + self.beta * kl, "natural": natural, "kl": kl, "logits_adv": logits_adv}

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        x_adv = self._attack(inputs, target, eps)
        self.last_adversarial = x_adv
        skip = eps == 0 or self.beta == 0
        parts = self._objective(inputs, target, None if skip else x_adv)
        self.last_stats = {
            "loss_natural": float(parts["natural"].detach()),
            "kl": float(parts["kl"].detach()),
            "attack_success": _misclassified(parts["logits_adv"], target),
        }
        return parts["value"]

    def objective_at(self, inputs: Tensor, target: Tensor, inputs_adv: Tensor) -> Tensor:
        r"""The TRADES objective at a given :math:`x'`: the batch mean of
        :math:`\ell(f(x), y) + \beta\,\mathrm{KL}(\sigma(f(x)) \| \sigma(f(x')))`, through
        :attr:`model` in its current mode, differentiable with respect to the parameters.

        Args:
            inputs (Tensor): the clean batch :math:`x`.
            target (Tensor): the labels, ``(B,)`` integers.
            inputs_adv (Tensor): :math:`x'`, shaped like ``inputs``.

        Returns:
            Tensor: a 0-dim tensor.
        """
        inputs, y = self._check_inputs(inputs, target)
        return self._objective(inputs, y, check_adversarial(inputs, inputs_adv))["value"]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, beta={self.beta}, step_size={self.step_size}, "
            f"n_iterations={self.n_iterations}, norm={self.norm!r}"
        )
