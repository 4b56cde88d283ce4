r"""Chen et al.'s robust attribution regularization: :class:`IGNorm` (a term) and
:class:`IGSumNorm` (an objective) -- Chen, Wu, Rastogi, Liang, Jha, "Robust Attribution
Regularization", NeurIPS 2019, eq. 4 and sec. 4.

Both penalise the size of the Integrated Gradients of the *loss* along the straight path from
the clean input :math:`x` to a worst-case point :math:`x'` of the :math:`\epsilon`-ball:

.. math::

    \mathrm{IG}^{\ell_y}_i(x, x') = (x'_i - x_i) \int_0^1
        \frac{\partial \ell_y(x + t(x' - x))}{\partial x_i}\, dt, \qquad
    \sum_i \mathrm{IG}^{\ell_y}_i(x, x') = \ell_y(x') - \ell_y(x),

with :math:`\ell_y(x) = \mathrm{CE}(f(x), y)`. The inner maximization is projected gradient
ascent (:class:`~captum_robust.robust.attacks.AttributionPGD`) from a random start --
mandatory, since at :math:`x' = x` the IG and its gradient vanish -- with a coarser quadrature
(``attack_n_steps``, ``attack_method``; Chen: 10 points, right Riemann) than the outer term
(``n_steps``, ``method``; Chen: 50). ``n_restarts`` runs keep, per example, the point with the
highest attack objective. The outer term is then computed at the returned, detached
:math:`x'` with a fresh pass that is differentiable with respect to the parameters.

**Special cases** (Chen sec. 3; checked in the tests):

* Prop. 1: with ``size="sum"`` and :math:`\lambda = 1`, completeness gives
  :math:`\ell(x) + \mathrm{sum}\,\mathrm{IG}^{\ell_y}(x, x') = \ell(x')`: IG-Norm plus the
  loss is Madry et al.'s adversarial loss (to quadrature accuracy).
* Prop. 2: with one path point at :math:`x` (``n_steps=attack_n_steps=1``,
  ``method=attack_method="riemann_left"``, Chen's eq. 3), an :math:`\ell_\infty` ball inside
  the data box and :math:`\lambda = \lambda'/\epsilon`, IG-Norm equals
  :class:`~captum_robust.robust.regularizers.InputGradientRegularizer` ``(lam=`` :math:`\lambda'`
  ``, q=1)`` (the maximum :math:`\epsilon \lVert \nabla_x \ell(x) \rVert_1` is reached at every
  corner of the ball, where the attack ends).
* Theorem 3: for a linear model with loss :math:`g(-y\langle w, x\rangle)`, :math:`g` convex
  and non-decreasing, and an :math:`\ell_\infty` ball,
  :math:`\max_{x'} \lVert \mathrm{IG} \rVert_1 = g(z + \epsilon\lVert w\rVert_1) - g(z)`,
  :math:`z = -y\langle w, x\rangle`, at :math:`x' = x - y\epsilon\,\mathrm{sign}(w)`. IG-Norm's
  objective also has local maxima at the other corners of the ball, where sign-PGD stops (each
  run ends at the corner of its random start's orthant), so more ``n_restarts`` help. The *exact*
  :math:`\lVert\mathrm{IG}\rVert_1` at the returned point never exceeds the maximum, nor does
  the value computed with an accurate quadrature (``method="gausslegendre"``: within 1e-10 at 48
  points); the value computed with the default right-Riemann sums can: along the path to
  :math:`x'` the loss's slope :math:`g'` increases (:math:`g` convex), so the right sum
  overestimates its integral. Measured on this linear model at the maximizer (400 examples,
  ``tests/robust/regularizers/test_hardening.py``): with :math:`d = 4`, :math:`\epsilon = 0.1`
  the 50-point outer value exceeds the maximum by up to 0.35% and the 10-point attack objective
  by up to 1.8%; with :math:`d = 16`, :math:`\epsilon = 0.3`, by up to 2.0% and 9.8%. A
  training term does not need the exact value; use ``method="gausslegendre"`` where it is
  reported or compared with a bound. IG-Sum-Norm's bracket has a unique maximum.

**Quadrature: why right Riemann.** :class:`~captum_robust.attr.BatchedIntegratedGradients`, an
attribution method, defaults to Captum's Gauss-Legendre rule; the regularizers reproduce a
paper's training and default to that paper's code, so that its :math:`\lambda`, :math:`\epsilon`
and step counts carry over: Chen et al.'s code sums the gradients at
:math:`x + \frac{k}{m}(x' - x)`, :math:`k = 1..m` (right Riemann; :math:`m = 50` for the term,
10 in the attack). ``method=`` / ``attack_method=`` take any of the IG methods. (Captum's
``riemann_trapezoid`` weights sum to :math:`(m - 1)/m`, not 1: at 50 points its values are 2%
low, whatever the model.)

**Batch mean.** Both values are means over the batch. Chen's code sums its loss and terms over
the batch (``tf.reduce_sum``): :math:`B` times this value, the same balance, so ``lam`` and
``beta`` are Chen's :math:`\lambda` and :math:`\beta`; only the overall scale differs
(immaterial with Adam, which Chen used; with SGD Chen's learning rate is ``lr * B`` here).

**ReLU networks.** The attack differentiates the IG, i.e. takes second derivatives of the
network, which vanish almost everywhere through ReLU: the attack gradient keeps only the
first-order terms (the Jacobian, plus the curvature of the softmax cross-entropy) and does not
see how the activation pattern would move. ``surrogate=`` (e.g. ``softplus_surrogate(model)``,
sharing the weights) gives the attack a smooth copy; the outer term always uses the real model.

**IG-Sum-Norm.** Chen's size function for IG-Sum-Norm is :math:`\mathrm{sum} + \beta\lVert\cdot\rVert_1`
with :math:`\lambda = 1`; by completeness, :math:`\ell(x) + \mathrm{sum}\,\mathrm{IG} = \ell(x')`, so the
objective is :math:`\ell(x') + \beta\, s(\mathrm{IG})`, which :class:`IGSumNorm` computes. Its inner
maximization ascends that bracket as :class:`IGNorm`'s attack does (attack quadrature, surrogate if
given, eval mode, best of ``n_restarts`` runs). The loss part :math:`\ell(x', y)` of the returned value
goes through ``model`` as passed (possibly ``DistributedDataParallel``-wrapped, in the user's train/eval
mode: that forward is what makes DDP synchronise the gradients); the IG part goes through the inner
module in the attribution mode (eval mode unless ``eval_mode=False``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.validation import classification_outputs
from captum_robust.attr._core.tokens import TokenBatch
from captum_robust.robust.regularizers._base import (
    EpsType,
    check_adversarial,
    check_num_classes,
    check_token_adversarial,
    check_weight,
)
from captum_robust.robust.regularizers._loss_ig import LossIGTerm
from captum_robust.robust.regularizers._tokens import check_relative_eps, eps_embedding, refuse_token_arguments

__all__ = ["IGNorm", "IGSumNorm"]

# --------------------------------------------------------------------------- IG-Norm


class IGNorm(LossIGTerm):
    r"""Chen et al.'s IG-Norm regularization term (Chen eq. 4, sec. 4): the size of the Integrated
    Gradients of the loss from :math:`x` to the worst point of the :math:`\epsilon`-ball,

    .. math::

        R(x, y) = \lambda \cdot \frac1B \sum_{b=1}^B s\big(\mathrm{IG}^{\ell_y}(x_b, x'_b)\big), \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert x' - x_b \rVert \le \epsilon}
            s\big(\mathrm{IG}^{\ell_y}(x_b, x')\big),

    :math:`s = \lVert\cdot\rVert_1` (``size="l1"``) or :math:`\mathrm{sum}` (``size="sum"``). Add it to your
    loss: Chen's objective is :math:`\ell(x, y) + R(x, y)` (MNIST: :math:`\epsilon = 0.3`, :math:`\lambda = 1`).
    At :math:`\epsilon = 0` the term is an exact zero without a graph (no attack). The attack, the
    quadratures, the batch mean, ReLU networks and the special cases (Prop. 1, Prop. 2, Theorem 3):
    :mod:`captum_robust.robust.regularizers.ig_norm`. Common arguments: see :class:`RobustTerm`.

    Args:
        lam (float): :math:`\lambda \ge 0`. Default 1.
        n_steps, method: the outer term's path points (default 50, Chen) and quadrature, one of
            :class:`~captum_robust.attr.BatchedIntegratedGradients`' methods (``"riemann_right"``, Chen's code,
            unlike IG's Gauss-Legendre default: the module docstring says why, and by how much the right
            sum can exceed the exact value).
        attack_n_steps, attack_method: the attack's quadrature. Default 10, ``"riemann_right"`` (Chen).
        n_iterations, step_size, norm: the attack: 40 steps of 0.01 (Chen, MNIST), ``"linf"``.
        n_restarts (int): attack runs per call (the best point kept per example), >= 1. Default 1.
        size (str): ``"l1"`` (default) or ``"sum"``.
        internal_batch_size (int, "auto" or None): rows (path points x examples) per IG chunk, both IG passes.
        surrogate (nn.Module, optional): smooth copy used for the attack gradients.
        embedding_layer (nn.Module, optional): token models: the module embedding the ids (e.g.
            ``model.bert.embeddings``). The call then takes ``B x T`` ids (with ``additional_forward_args``
            and ``token_mask``), :math:`x` is their embeddings :math:`e` and :math:`x' = e + \delta` with
            :math:`\delta` in the ``eps``-ball of the ``T x D`` embedding tensor (absolute, embedding
            units), zero at padding, no data box: the IG path runs from :math:`e` to :math:`e'`
            (:mod:`~captum_robust.robust.regularizers._tokens`). ``last_adversarial`` holds :math:`e'`.
        relative_eps (bool): token models: ``eps`` and ``step_size`` as fractions of each example's
            embedding size (linf: the root mean square coordinate of its real tokens' embeddings; l2:
            about the norm of its real embeddings); ``last_stats["eps_embedding"]`` holds the mean
            absolute radius. Default False (absolute).

    ``last_stats`` holds ``"ig_norm"`` (mean :math:`s(\mathrm{IG})` at :math:`x'`, outer quadrature, without
    :math:`\lambda`) and ``"attack_objective"`` (mean attack objective at :math:`x'`, attack quadrature).

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from captum_robust.robust.regularizers import IGNorm
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 3))
        >>> reg = IGNorm(model, eps=0.1, n_steps=10, n_iterations=5, step_size=0.05,
        ...              generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> loss = F.cross_entropy(model(x), y) + reg(x, y)
        >>> loss.backward()
        >>> reg.last_stats["ig_norm"] > 0, bool((reg.last_adversarial - x).abs().max() <= 0.1 + 1e-6)
        (True, True)
    """

    def __init__(self, model: nn.Module, eps: EpsType = 0.3, lam: float = 1.0, *, n_steps: int = 50,
                 method: str = "riemann_right", attack_n_steps: int = 10, attack_method: str = "riemann_right",
                 n_iterations: int = 40, step_size: float = 0.01, norm: str = "linf", n_restarts: int = 1,
                 size: str = "l1", internal_batch_size: Union[None, int, str] = None,
                 surrogate: Optional[nn.Module] = None, auto_step: bool = True, eval_mode: bool = True,
                 generator: Optional[torch.Generator] = None, clip_min: Any = 0.0, clip_max: Any = 1.0,
                 random_start: Union[bool, str] = True, embedding_layer: Optional[nn.Module] = None,
                 relative_eps: bool = False) -> None:
        super().__init__(model, eps, n_steps=n_steps, method=method, attack_n_steps=attack_n_steps,
                         attack_method=attack_method, n_iterations=n_iterations, step_size=step_size, norm=norm,
                         n_restarts=n_restarts, size=size, internal_batch_size=internal_batch_size,
                         surrogate=surrogate, auto_step=auto_step, eval_mode=eval_mode, generator=generator,
                         clip_min=clip_min, clip_max=clip_max, random_start=random_start)
        self.lam = check_weight(lam, "lam")
        self._use_embedding_layer(embedding_layer, surrogate)
        self.relative_eps = check_relative_eps(relative_eps, embedding_layer)

    def _stationary_start(self) -> bool:
        return True  # IG(x, x) = 0 and the gradient of its size vanishes there

    def _attack_objective(self, model: nn.Module, tokens: bool = False) -> Callable[..., Tensor]:
        def objective(x_adv: Tensor, x: Tensor, y: Tensor, args: Any) -> Tensor:
            x_adv, x, forward_args = self._attack_point(x_adv, x, args, tokens)
            ig = self._loss_ig(model, x, y, x_adv, self.attack_n_steps, self.attack_method, forward_args)
            return self._size(ig)

        return objective

    def objective_at(self, inputs: Tensor, target: Any, inputs_adv: Tensor, additional_forward_args: Any = None,
                     token_mask: Any = None) -> Tensor:
        r"""The outer term at a given :math:`x'`: :math:`\lambda \cdot \mathrm{mean}_b\,
        s(\mathrm{IG}^{\ell_y}(x_b, x'_b))` with ``n_steps`` / ``method``, through the model in
        the attribution mode, differentiable with respect to the parameters.

        Args:
            inputs (Tensor): the clean batch :math:`x`.
            target (Tensor): labels, integer ``(B,)``.
            inputs_adv (Tensor): the points :math:`x'`, shaped like ``inputs`` (token models: the
                ``B x T x D`` embeddings :math:`e'`, see :meth:`size_at`).
            additional_forward_args, token_mask: as in :meth:`forward` (token models only).

        Returns:
            Tensor: a 0-dim tensor.
        """
        return self.lam * self.size_at(inputs, target, inputs_adv, additional_forward_args, token_mask).mean()

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        if eps == 0:
            self.last_adversarial = inputs.detach().clone()
            self.last_stats = {"ig_norm": 0.0, "attack_objective": 0.0}
            return torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        x_adv, attack_value = self._attack(inputs, target, eps)
        size = self._size_at(inputs, target, x_adv)
        self.last_adversarial = x_adv
        self.last_stats = {"ig_norm": float(size.detach().mean()), "attack_objective": float(attack_value.mean())}
        return self.lam * size.mean()

    def _forward_tokens(self, tokens: TokenBatch, target: Tensor, eps: float) -> Tensor:
        e0 = tokens.embeddings.detach()
        if eps == 0:
            self.last_adversarial = e0.clone()
            self.last_stats = {"ig_norm": 0.0, "attack_objective": 0.0, "eps_embedding": 0.0}
            return torch.zeros((), dtype=e0.dtype, device=e0.device)
        e_adv, attack_value = self._attack(e0, target, eps, tokens)
        size = self._token_size_at(tokens, target, e_adv)
        self.last_adversarial = e_adv
        self.last_stats = {"ig_norm": float(size.detach().mean()), "attack_objective": float(attack_value.mean()),
                           "eps_embedding": eps_embedding(eps, tokens, self.norm, self.relative_eps)}
        return self.lam * size.mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lam={self.lam}, size={self.size!r}, n_steps={self.n_steps}"


# --------------------------------------------------------------------------- IG-Sum-Norm


class IGSumNorm(LossIGTerm):
    r"""Chen et al.'s IG-Sum-Norm objective (sec. 4): the adversarial loss plus the size of the
    Integrated Gradients of the loss, maximized together,

    .. math::

        L(x, y) = \frac1B \sum_{b=1}^B \Big[\ell(x'_b, y_b)
            + \beta\, s\big(\mathrm{IG}^{\ell_y}(x_b, x'_b)\big)\Big], \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert x' - x_b \rVert \le \epsilon}
            \Big[\ell(x', y_b) + \beta\, s\big(\mathrm{IG}^{\ell_y}(x_b, x')\big)\Big],

    :math:`s = \lVert\cdot\rVert_1` by default. A *whole objective*: use it instead of your loss
    (MNIST: :math:`\epsilon = 0.3`, :math:`\beta = 0.1`). With :math:`\beta = 0` it is Madry et al.'s PGD
    adversarial loss; at :math:`\epsilon = 0` it is :math:`\ell(x, y)` (no attack). Which pass runs where
    (the loss through ``model`` as passed, the IG through the inner module), the batch mean and ReLU
    networks: :mod:`captum_robust.robust.regularizers.ig_norm`.

    Args:
        beta (float): :math:`\beta \ge 0`. Default 0.1 (Chen, MNIST).

    The other arguments (names and defaults) are :class:`IGNorm`'s; the common ones are documented on
    :class:`RobustTerm`. ``last_stats`` holds ``"loss_adv"`` (mean :math:`\ell(x', y)`), ``"ig_norm"``
    (mean :math:`s(\mathrm{IG})` at :math:`x'`, outer quadrature) and ``"attack_objective"``.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from captum_robust.robust.regularizers import IGSumNorm
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 3))
        >>> objective = IGSumNorm(model, eps=0.1, beta=0.1, n_steps=10, n_iterations=5,
        ...                       step_size=0.05, generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> loss = objective(x, y)          # replaces the cross-entropy
        >>> loss.backward()
        >>> s = objective.last_stats
        >>> abs(s["value"] - (s["loss_adv"] + 0.1 * s["ig_norm"])) < 1e-5
        True
    """

    def __init__(self, model: nn.Module, eps: EpsType = 0.3, beta: float = 0.1, *, n_steps: int = 50,
                 method: str = "riemann_right", attack_n_steps: int = 10, attack_method: str = "riemann_right",
                 n_iterations: int = 40, step_size: float = 0.01, norm: str = "linf", n_restarts: int = 1,
                 size: str = "l1", internal_batch_size: Union[None, int, str] = None,
                 surrogate: Optional[nn.Module] = None, auto_step: bool = True, eval_mode: bool = True,
                 generator: Optional[torch.Generator] = None, clip_min: Any = 0.0, clip_max: Any = 1.0,
                 random_start: Union[bool, str] = True, embedding_layer: Optional[nn.Module] = None,
                 relative_eps: bool = False) -> None:
        super().__init__(model, eps, n_steps=n_steps, method=method, attack_n_steps=attack_n_steps,
                         attack_method=attack_method, n_iterations=n_iterations, step_size=step_size, norm=norm,
                         n_restarts=n_restarts, size=size, internal_batch_size=internal_batch_size,
                         surrogate=surrogate, auto_step=auto_step, eval_mode=eval_mode, generator=generator,
                         clip_min=clip_min, clip_max=clip_max, random_start=random_start)
        self.beta = check_weight(beta, "beta")
        self._use_embedding_layer(embedding_layer, surrogate)
        self.relative_eps = check_relative_eps(relative_eps, embedding_layer)

    def _attack_objective(self, model: nn.Module, tokens: bool = False) -> Callable[..., Tensor]:
        def objective(x_adv: Tensor, x: Tensor, y: Tensor, args: Any) -> Tensor:
            x_adv, x, forward_args = self._attack_point(x_adv, x, args, tokens)
            loss = F.cross_entropy(classification_outputs(model(x_adv, *forward_args)), y, reduction="none")
            if self.beta == 0:
                return loss
            ig = self._loss_ig(model, x, y, x_adv, self.attack_n_steps, self.attack_method, forward_args)
            return loss + self.beta * self._size(ig)

        return objective

    def _parts(self, inputs: Tensor, y: Tensor, inputs_adv: Tensor, with_ig: bool = True) -> Tuple[Tensor, Tensor]:
        """Per-example ``l(x', y)`` (through ``self.model``, user's mode) and ``s(IG)``."""
        logits = classification_outputs(self.model(inputs_adv))
        check_num_classes(y, logits.shape[1])
        loss_adv = F.cross_entropy(logits, y, reduction="none")
        if not with_ig:
            return loss_adv, torch.zeros_like(loss_adv)
        if self.beta == 0:  # the IG part does not enter the value: report it, without its graph
            size = self._size_at(inputs.detach(), y, inputs_adv.detach()).detach()
        else:
            size = self._size_at(inputs, y, inputs_adv)
        return loss_adv, size

    def objective_at(self, inputs: Tensor, target: Any, inputs_adv: Tensor, additional_forward_args: Any = None,
                     token_mask: Any = None) -> Tensor:
        r"""The objective at a given :math:`x'`: :math:`\mathrm{mean}_b [\ell(x'_b, y_b) +
        \beta\, s(\mathrm{IG}^{\ell_y}(x_b, x'_b))]`, differentiable with respect to the
        parameters (the loss part through ``model`` in its current mode, the IG part through
        the inner module in the attribution mode).

        Args:
            inputs (Tensor): the clean batch :math:`x`.
            target (Tensor): labels, integer ``(B,)``.
            inputs_adv (Tensor): the points :math:`x'`, shaped like ``inputs`` (token models: the
                ``B x T x D`` embeddings :math:`e'`, see :meth:`IGNorm.size_at`).
            additional_forward_args, token_mask: as in :meth:`forward` (token models only).

        Returns:
            Tensor: a 0-dim tensor.
        """
        if self.embedding_layer is not None:
            tokens, y = self._check_tokens(inputs, target, additional_forward_args, token_mask)
            loss_adv, size = self._token_parts(tokens, y, check_token_adversarial(tokens, inputs_adv))
            return (loss_adv + self.beta * size).mean()
        refuse_token_arguments(additional_forward_args, token_mask)
        inputs, y = self._check_inputs(inputs, target)
        inputs_adv = check_adversarial(inputs, inputs_adv, strict=True)
        loss_adv, size = self._parts(inputs, y, inputs_adv)
        return (loss_adv + self.beta * size).mean()

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        if eps == 0:
            loss_adv, size = self._parts(inputs, target, inputs, with_ig=False)
            value = loss_adv.mean()
            self.last_adversarial = inputs.detach().clone()
            loss = float(value.detach())
            self.last_stats = {"loss_adv": loss, "ig_norm": 0.0, "attack_objective": loss}
            return value
        x_adv, attack_value = self._attack(inputs, target, eps)
        loss_adv, size = self._parts(inputs, target, x_adv)
        value = (loss_adv + self.beta * size).mean()
        self.last_adversarial = x_adv
        self.last_stats = {
            "loss_adv": float(loss_adv.detach().mean()),
            "ig_norm": float(size.detach().mean()),
            "attack_objective": float(attack_value.mean()),
        }
        return value

    def _token_parts(self, tokens: TokenBatch, y: Tensor, embeddings_adv: Tensor,
                     with_ig: bool = True) -> Tuple[Tensor, Tensor]:
        r""":meth:`_parts` on token embeddings: the loss at :math:`e + \delta` (:math:`\delta = e' - e`
        detached, so it reaches the embedding weights through :math:`e`) through the embedding-replaced
        model in the user's mode, and the IG size (:meth:`_token_size_at`)."""
        e = tokens.embeddings
        logits = classification_outputs(tokens.model(e + (embeddings_adv - e).detach(), *tokens.forward_args))
        loss_adv = F.cross_entropy(logits, y, reduction="none")
        if not with_ig:
            return loss_adv, torch.zeros_like(loss_adv)
        if self.beta == 0:
            return loss_adv, self._token_size_at(tokens, y, embeddings_adv).detach()
        return loss_adv, self._token_size_at(tokens, y, embeddings_adv)

    def _forward_tokens(self, tokens: TokenBatch, target: Tensor, eps: float) -> Tensor:
        e0 = tokens.embeddings.detach()
        if eps == 0:
            loss_adv, _ = self._token_parts(tokens, target, e0, with_ig=False)
            value = loss_adv.mean()
            self.last_adversarial = e0.clone()
            loss = float(value.detach())
            self.last_stats = {"loss_adv": loss, "ig_norm": 0.0, "attack_objective": loss, "eps_embedding": 0.0}
            return value
        e_adv, attack_value = self._attack(e0, target, eps, tokens)
        loss_adv, size = self._token_parts(tokens, target, e_adv)
        value = (loss_adv + self.beta * size).mean()
        self.last_adversarial = e_adv
        self.last_stats = {
            "loss_adv": float(loss_adv.detach().mean()),
            "ig_norm": float(size.detach().mean()),
            "attack_objective": float(attack_value.mean()),
            "eps_embedding": eps_embedding(eps, tokens, self.norm, self.relative_eps),
        }
        return value

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}, size={self.size!r}, n_steps={self.n_steps}"
