r"""Chen et al.'s robust attribution regularization: IG-Norm (a term) and IG-Sum-Norm (an objective).

Both penalise the size of the Integrated Gradients of the *loss* along the straight path from
the clean input :math:`x` to a worst-case point :math:`x'` of the :math:`\epsilon`-ball
(Chen et al., "Robust Attribution Regularization", NeurIPS 2019, eq. 4 and sec. 4):

.. math::

    \mathrm{IG}^{\ell_y}_i(x, x') = (x'_i - x_i) \int_0^1
        \frac{\partial \ell_y(x + t(x' - x))}{\partial x_i}\, dt, \qquad
    \sum_i \mathrm{IG}^{\ell_y}_i(x, x') = \ell_y(x') - \ell_y(x),

with :math:`\ell_y(x) = \mathrm{CE}(f(x), y)`. The inner maximization is projected gradient
ascent (:class:`~captum_robust.robust.attacks.AttributionPGD`) from a random start, with a
coarser quadrature than the outer (training) term; the outer term is then computed at the
returned, detached :math:`x'` with a fresh pass that is differentiable with respect to the
parameters.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.validation import check_finite, check_int_range, classification_outputs
from captum_robust.attr import BatchedIntegratedGradients
from captum_robust.attr._core._quadrature import SUPPORTED_METHODS
from captum_robust.robust.attacks import AttributionPGD
from captum_robust.robust.attacks.base import Box, attack_mode, check_norm
from captum_robust.robust.regularizers._base import EpsType, RobustTerm, check_num_classes, check_weight

__all__ = ["IGNorm", "IGSumNorm"]

SIZES: Tuple[str, ...] = ("l1", "sum")


# --------------------------------------------------------------------------- argument checks


def _check_quadrature(method: Any, n_steps: Any, method_name: str, steps_name: str) -> Tuple[str, int]:
    if not isinstance(method, str) or method not in SUPPORTED_METHODS:
        raise ValueError(f"{method_name} must be one of {SUPPORTED_METHODS}, got {method!r}")
    low = 2 if method == "riemann_trapezoid" else 1
    n = check_int_range(n_steps, steps_name, low)
    return method, n


def _check_positive(value: Any, name: str) -> float:
    v = check_weight(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return v


def _check_internal_batch_size(value: Any) -> Union[None, int, str]:
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"internal_batch_size must be None, 'auto' or an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"internal_batch_size must be None, 'auto' or an int >= 1, got {value}")
    return value


def _check_adversarial(inputs: Tensor, inputs_adv: Any) -> Tensor:
    if not isinstance(inputs_adv, Tensor):
        raise TypeError(f"inputs_adv must be a tensor shaped like inputs, got {type(inputs_adv).__name__}")
    if inputs_adv.shape != inputs.shape or inputs_adv.dtype != inputs.dtype or inputs_adv.device != inputs.device:
        raise ValueError(
            f"inputs_adv must have the shape, dtype and device of inputs ({tuple(inputs.shape)}, {inputs.dtype}, "
            f"{inputs.device}), got ({tuple(inputs_adv.shape)}, {inputs_adv.dtype}, {inputs_adv.device})"
        )
    check_finite(inputs_adv, "inputs_adv")
    return inputs_adv


def _per_example(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((v.shape[0],) + (1,) * (like.dim() - 1))


# --------------------------------------------------------------------------- shared machinery


class _LossIGTerm(RobustTerm):
    """What IG-Norm and IG-Sum-Norm share: the IG of the loss, its size, the inner attack."""

    def __init__(
        self,
        model: nn.Module,
        eps: EpsType,
        *,
        n_steps: int,
        method: str,
        attack_n_steps: int,
        attack_method: str,
        n_iterations: int,
        step_size: float,
        norm: str,
        n_restarts: int,
        size: str,
        internal_batch_size: Union[None, int, str],
        surrogate: Optional[nn.Module],
        auto_step: bool,
        eval_mode: bool,
        generator: Optional[torch.Generator],
        clip_min: Any,
        clip_max: Any,
    ) -> None:
        super().__init__(model, eps, auto_step=auto_step, eval_mode=eval_mode, generator=generator)
        self.method, self.n_steps = _check_quadrature(method, n_steps, "method", "n_steps")
        self.attack_method, self.attack_n_steps = _check_quadrature(
            attack_method, attack_n_steps, "attack_method", "attack_n_steps"
        )
        self.n_iterations = check_int_range(n_iterations, "n_iterations", 1)
        self.step_size = _check_positive(step_size, "step_size")
        self.norm = check_norm(norm)
        self.n_restarts = check_int_range(n_restarts, "n_restarts", 1)
        if not isinstance(size, str) or size not in SIZES:
            raise ValueError(f"size must be one of {SIZES} ('l1': Chen's ||.||_1, 'sum': Prop. 1), got {size!r}")
        self.size = size
        self.internal_batch_size = _check_internal_batch_size(internal_batch_size)
        if surrogate is not None and not isinstance(surrogate, nn.Module):
            raise TypeError(
                "surrogate must be an nn.Module (e.g. softplus_surrogate(model)) or None, "
                f"got {type(surrogate).__name__}"
            )
        # not a submodule: the regularizer owns neither the model nor its smooth copy
        object.__setattr__(self, "_surrogate", surrogate)
        Box(clip_min, clip_max)  # validates the bounds now rather than at the first call
        self.clip_min = clip_min
        self.clip_max = clip_max

    @property
    def surrogate(self) -> Optional[nn.Module]:
        """The smooth copy whose gradients the inner attack uses (None: the model itself)."""
        return self._surrogate  # type: ignore[attr-defined]

    # ----------------------------------------------------------------- IG of the loss

    def _loss_ig(
        self, model: nn.Module, inputs: Tensor, target: Tensor, inputs_adv: Tensor, n_steps: int, method: str
    ) -> Tensor:
        r""":math:`\mathrm{IG}^{\ell_y}(x, x')` (differentiable: ``create_graph=True``)."""
        checked = []

        def loss(r: Tensor, t: Tensor) -> Tensor:
            logits = classification_outputs(model(r))
            if not checked:  # once per call (one device sync), not per chunk
                check_num_classes(t, logits.shape[1])
                checked.append(True)
            return F.cross_entropy(logits, t, reduction="none")

        ig = BatchedIntegratedGradients(loss)
        return ig.attribute(
            inputs_adv,
            baselines=inputs,
            target=None,
            additional_forward_args=(target,),
            n_steps=n_steps,
            method=method,
            internal_batch_size=self.internal_batch_size,
            create_graph=True,
        )

    def _size(self, ig: Tensor) -> Tensor:
        flat = ig.flatten(1)
        return flat.abs().sum(dim=1) if self.size == "l1" else flat.sum(dim=1)

    def size_at(self, inputs: Tensor, target: Any, inputs_adv: Tensor) -> Tensor:
        r"""Per-example :math:`s(\mathrm{IG}^{\ell_y}(x, x'))` with the outer quadrature
        (``n_steps``, ``method``), through the model (not the surrogate) in the attribution
        mode; differentiable with respect to the parameters (and to the inputs).

        Args:
            inputs (Tensor): the clean batch :math:`x`, ``B x ...``.
            target (Tensor): labels, integer ``(B,)``.
            inputs_adv (Tensor): the end points :math:`x'`, shaped like ``inputs``.

        Returns:
            Tensor: shape ``(B,)``.
        """
        y = self._check_inputs(inputs, target)
        _check_adversarial(inputs, inputs_adv)
        return self._size_at(inputs, y, inputs_adv)

    def _size_at(self, inputs: Tensor, y: Tensor, inputs_adv: Tensor) -> Tensor:
        with self.attribution_mode():
            ig = self._loss_ig(self.module, inputs, y, inputs_adv, self.n_steps, self.method)
        return self._size(ig)

    # ----------------------------------------------------------------- inner attack

    def _attack_objective(self, model: nn.Module) -> Callable[..., Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextlib.contextmanager
    def _surrogate_mode(self) -> Iterator[None]:
        if self.surrogate is None:
            yield
            return
        with attack_mode(self.surrogate, eval_mode=self.eval_mode, warn=False):
            yield

    def _attack(self, inputs: Tensor, y: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
        """Best of ``n_restarts`` AttributionPGD runs per example: ``(x', objective)``."""
        model = self.surrogate if self.surrogate is not None else self.module
        attacker = AttributionPGD(
            self.module,
            self._attack_objective(model),
            eps=eps,
            step_size=self.step_size,
            n_iterations=self.n_iterations,
            norm=self.norm,
            random_start=True,
            keep_best=True,
            eval_mode=self.eval_mode,
            clip_min=self.clip_min,
            clip_max=self.clip_max,
        )
        best_x: Optional[Tensor] = None
        best_value: Optional[Tensor] = None
        with self._surrogate_mode():
            for _ in range(self.n_restarts):
                x_adv, result = attacker.perturb(inputs, target=y, generator=self.generator)
                value = result.objective
                if best_x is None or best_value is None:
                    best_x, best_value = x_adv, value
                    continue
                better = value > best_value
                best_x = torch.where(_per_example(better, x_adv), x_adv, best_x)
                best_value = torch.where(better, value, best_value)
        assert best_x is not None and best_value is not None
        return best_x.detach(), best_value.detach()


# --------------------------------------------------------------------------- IG-Norm


class IGNorm(_LossIGTerm):
    r"""Chen et al.'s IG-Norm regularization term: the size of the Integrated Gradients of the
    loss from :math:`x` to the worst point of the :math:`\epsilon`-ball,

    .. math::

        R(x, y) = \lambda \cdot \frac1B \sum_{b=1}^B
            s\big(\mathrm{IG}^{\ell_y}(x_b, x'_b)\big), \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert x' - x_b \rVert \le \epsilon}
            s\big(\mathrm{IG}^{\ell_y}(x_b, x')\big),

    with :math:`s = \lVert\cdot\rVert_1` (``size="l1"``, IG-Norm, Chen eq. 4 and sec. 4) or
    :math:`s = \mathrm{sum}` (``size="sum"``). Add it to your loss: Chen's IG-Norm objective
    is :math:`\ell(x, y) + R(x, y)` (MNIST: :math:`\epsilon = 0.3`, :math:`\lambda = 1`).

    **Inner maximization**: :class:`~captum_robust.robust.attacks.AttributionPGD`
    (``n_iterations`` steps of ``step_size``, ``norm`` ball, data box
    ``[clip_min, clip_max]``) from a random start -- mandatory, since at :math:`x' = x` the IG
    and its gradient vanish -- with ``attack_n_steps`` path points (``attack_method``; Chen
    used 10, right Riemann); ``n_restarts`` runs (fresh random starts from the same
    ``generator``) keep, per example, the point with the highest attack objective. The outer
    term then uses ``n_steps`` path points (``method``; Chen: 50, right Riemann) at the
    returned, detached :math:`x'` (:attr:`last_adversarial`), in a fresh pass through the model
    that is differentiable with respect to the parameters (:meth:`objective_at`).
    ``internal_batch_size`` bounds the memory of both IG passes (rows of path points x
    examples; see :class:`~captum_robust.attr.BatchedIntegratedGradients`).

    **Special cases** (Chen sec. 3; checked in the tests):

    * Prop. 1: with ``size="sum"`` and :math:`\lambda = 1`, completeness gives
      :math:`\ell(x) + \mathrm{sum}\,\mathrm{IG}^{\ell_y}(x, x') = \ell(x')`, so
      :math:`\ell + R` is Madry et al.'s adversarial loss (to quadrature accuracy).
    * Prop. 2: with one path point the IG is :math:`(x' - x) \odot \nabla \ell` at the one
      point (``riemann_left``: at :math:`x`, Chen's eq. 3; ``riemann_right``: at :math:`x'`);
      with ``n_steps=attack_n_steps=1``, ``method=attack_method="riemann_left"``, an
      :math:`\ell_\infty` ball inside the data box and :math:`\lambda = \lambda'/\epsilon`,
      :math:`R` equals
      :class:`~captum_robust.robust.regularizers.gradient.InputGradientRegularizer`
      ``(lam=`` :math:`\lambda'` ``, q=1)`` (the maximum
      :math:`\epsilon \lVert \nabla_x \ell(x) \rVert_1` is reached at every corner of the
      ball, where the attack ends).
    * Theorem 3: for a linear model with loss :math:`g(-y\langle w, x\rangle)`, :math:`g`
      convex and non-decreasing, and an :math:`\ell_\infty` ball,
      :math:`\max_{x'} \lVert \mathrm{IG} \rVert_1 = g(z + \epsilon\lVert w\rVert_1) - g(z)`,
      :math:`z = -y\langle w, x\rangle`, at :math:`x' = x - y\epsilon\,\mathrm{sign}(w)`.
      The objective has local maxima at the other corners of the ball, where sign-PGD
      stops: every coordinate gains by moving away from :math:`x`, so each run ends at the
      corner of the orthant of its random start. Measured on a 4-feature model (400
      examples, :math:`\epsilon = 0.1`): one run attains the maximum for 6-7% of the examples
      (:math:`\approx 2^{-d}`), 8 restarts for 41%; the mean value is 0.90 of the maximum with
      one run, 0.98 with 8. More ``n_restarts`` help; the value never exceeds the maximum.

    **Batch mean**: the value is the *mean* over the batch. Chen's code sums both the
    cross-entropy and the IG term over the batch (``tf.reduce_sum``): its objective is
    :math:`B` times :math:`(\text{mean CE} + \lambda\,\text{mean } s)`, so with the usual
    batch-mean cross-entropy, ``lam`` = Chen's :math:`\lambda` keeps the same balance; only the
    overall scale differs by :math:`B` (immaterial with Adam, which Chen used; with SGD, Chen's
    learning rate corresponds to ``lr * B`` here). If you *sum* your loss over the batch, use
    ``lam`` = :math:`\lambda B` for the same term.

    **ReLU networks**: the attack gradient differentiates the IG, i.e. takes second
    derivatives of the network, and through ReLU these vanish almost everywhere: the attack
    gradient keeps only the first-order terms (the network's Jacobian, plus the curvature of
    the softmax cross-entropy) and does not see how the activation pattern would move.
    ``surrogate=`` (e.g. ``softplus_surrogate(model)``, sharing the weights) gives the attack
    a smooth copy; the outer term always uses the real model.

    Args:
        model (nn.Module): the classifier being trained (logits ``B x C``); may be wrapped in
            ``DistributedDataParallel`` (the attack and IG passes use the inner module).
        eps (float or EpsilonSchedule): ball radius :math:`\epsilon \ge 0`. Default 0.3.
            At :math:`\epsilon = 0` the term is an exact zero, a constant without a graph (no
            attack is run).
        lam (float): :math:`\lambda \ge 0`. Default 1.
        n_steps (int): path points of the outer term. Default 50 (Chen).
        method (str): quadrature of the outer term, one of ``riemann_left``,
            ``riemann_right`` (default, Chen's code), ``riemann_middle``,
            ``riemann_trapezoid``, ``gausslegendre``.
        attack_n_steps (int): path points in the attack. Default 10 (Chen).
        attack_method (str): quadrature in the attack. Default ``riemann_right``.
        n_iterations (int): attack steps, >= 1. Default 40 (Chen, MNIST).
        step_size (float): attack step, > 0. Default 0.01.
        norm (str): ``"linf"`` (default, Chen) or ``"l2"``.
        n_restarts (int): attack runs per call, >= 1. Default 1.
        size (str): ``"l1"`` (default) or ``"sum"``.
        internal_batch_size (int, "auto" or None): rows per IG chunk. Default None.
        surrogate (nn.Module, optional): smooth copy used for the attack gradients.
        auto_step (bool): step an :class:`EpsilonSchedule` after each call in training mode.
        eval_mode (bool): run the attack and IG passes with BatchNorm/Dropout in eval mode.
            Default True.
        generator (torch.Generator, optional): randomness of the random starts.
        clip_min, clip_max (float, Tensor or None): the data box. Default [0, 1].

    Attributes:
        last_adversarial (Tensor): :math:`x'` of the last call (detached).
        last_stats (dict): ``"value"``, ``"eps"``, ``"ig_norm"`` (mean :math:`s(\mathrm{IG})`
            at :math:`x'` with the outer quadrature, without :math:`\lambda`) and
            ``"attack_objective"`` (the mean attack objective at :math:`x'`, attack quadrature,
            surrogate if given).

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from captum_robust.robust.regularizers.chen import IGNorm
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 3))
        >>> reg = IGNorm(model, eps=0.1, n_steps=10, n_iterations=5, step_size=0.05,
        ...              generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> loss = F.cross_entropy(model(x), y) + reg(x, y)
        >>> loss.backward()
        >>> reg.last_stats["ig_norm"] > 0, bool((reg.last_adversarial - x).abs().max() <= 0.1 + 1e-6)
        (True, True)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: EpsType = 0.3,
        lam: float = 1.0,
        *,
        n_steps: int = 50,
        method: str = "riemann_right",
        attack_n_steps: int = 10,
        attack_method: str = "riemann_right",
        n_iterations: int = 40,
        step_size: float = 0.01,
        norm: str = "linf",
        n_restarts: int = 1,
        size: str = "l1",
        internal_batch_size: Union[None, int, str] = None,
        surrogate: Optional[nn.Module] = None,
        auto_step: bool = True,
        eval_mode: bool = True,
        generator: Optional[torch.Generator] = None,
        clip_min: Any = 0.0,
        clip_max: Any = 1.0,
    ) -> None:
        super().__init__(
            model,
            eps,
            n_steps=n_steps,
            method=method,
            attack_n_steps=attack_n_steps,
            attack_method=attack_method,
            n_iterations=n_iterations,
            step_size=step_size,
            norm=norm,
            n_restarts=n_restarts,
            size=size,
            internal_batch_size=internal_batch_size,
            surrogate=surrogate,
            auto_step=auto_step,
            eval_mode=eval_mode,
            generator=generator,
            clip_min=clip_min,
            clip_max=clip_max,
        )
        self.lam = check_weight(lam, "lam")

    def _attack_objective(self, model: nn.Module) -> Callable[..., Tensor]:
        def objective(x_adv: Tensor, x: Tensor, y: Tensor, args: Any) -> Tensor:
            ig = self._loss_ig(model, x, y, x_adv, self.attack_n_steps, self.attack_method)
            return self._size(ig)

        return objective

    def objective_at(self, inputs: Tensor, target: Any, inputs_adv: Tensor) -> Tensor:
        r"""The outer term at a given :math:`x'`: :math:`\lambda \cdot \mathrm{mean}_b\,
        s(\mathrm{IG}^{\ell_y}(x_b, x'_b))` with ``n_steps`` / ``method``, through the model in
        the attribution mode, differentiable with respect to the parameters.

        Args:
            inputs (Tensor): the clean batch :math:`x`.
            target (Tensor): labels, integer ``(B,)``.
            inputs_adv (Tensor): the points :math:`x'`, shaped like ``inputs``.

        Returns:
            Tensor: a 0-dim tensor.
        """
        return self.lam * self.size_at(inputs, target, inputs_adv).mean()

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

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lam={self.lam}, size={self.size!r}, n_steps={self.n_steps}"


# --------------------------------------------------------------------------- IG-Sum-Norm


class IGSumNorm(_LossIGTerm):
    r"""Chen et al.'s IG-Sum-Norm objective (sec. 4): the adversarial loss plus the size of
    the Integrated Gradients of the loss, maximized together,

    .. math::

        L(x, y) = \frac1B \sum_{b=1}^B \Big[\ell(x'_b, y_b)
            + \beta\, s\big(\mathrm{IG}^{\ell_y}(x_b, x'_b)\big)\Big], \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert x' - x_b \rVert \le \epsilon}
            \Big[\ell(x', y_b) + \beta\, s\big(\mathrm{IG}^{\ell_y}(x_b, x')\big)\Big],

    :math:`s = \lVert\cdot\rVert_1` by default (Chen's size function
    :math:`\mathrm{sum} + \beta\lVert\cdot\rVert_1` with :math:`\lambda = 1`, using
    completeness: :math:`\ell(x) + \mathrm{sum}\,\mathrm{IG} = \ell(x')`). This is a *whole
    objective*: use it instead of your loss (MNIST: :math:`\epsilon = 0.3`,
    :math:`\beta = 0.1`). With :math:`\beta = 0` it is Madry et al.'s PGD adversarial loss.

    The inner maximization is :class:`~captum_robust.robust.attacks.AttributionPGD` on the
    bracket (attack quadrature, surrogate if given, eval mode), random start, best of
    ``n_restarts`` runs; on a linear model the bracket has a unique maximum (Chen Theorem 3
    for both parts), unlike IG-Norm's. The loss part :math:`\ell(x', y)` of the returned value
    goes through ``model`` as passed (possibly ``DistributedDataParallel``-wrapped, in the
    user's train/eval mode: that forward is what makes DDP synchronise the gradients); the IG
    part goes through the inner module in the attribution mode (eval mode unless
    ``eval_mode=False``). At :math:`\epsilon = 0` the value is :math:`\ell(x, y)` (no attack;
    :math:`\mathrm{IG}(x, x) = 0`).

    **Batch mean**: the value is the *mean* over the batch. Chen's code sums
    :math:`\ell(x') + \beta \lVert \mathrm{IG} \rVert_1` over the batch, i.e. :math:`B` times
    this value: ``beta`` = Chen's :math:`\beta` (the balance is the same), and with SGD Chen's
    learning rate corresponds to ``lr * B`` here (Adam, which Chen used, is insensitive to the
    scale).

    **ReLU networks**: second derivatives through ReLU vanish almost everywhere, so the attack
    gradient of the IG part keeps only first-order terms of the network; pass ``surrogate=``
    (e.g. ``softplus_surrogate(model)``) for a smooth copy used by the attack only.

    Args:
        model (nn.Module): the classifier being trained.
        eps (float or EpsilonSchedule): ball radius. Default 0.3.
        beta (float): :math:`\beta \ge 0`. Default 0.1 (Chen, MNIST).
        n_steps, method (int, str): the outer quadrature, as in :class:`IGNorm` (50, right Riemann).
        attack_n_steps, attack_method (int, str): the attack's quadrature (10, right Riemann).
        n_iterations, step_size, norm, n_restarts: the attack, as in :class:`IGNorm`.
        size (str): ``"l1"`` (default) or ``"sum"``.
        internal_batch_size, surrogate, auto_step, eval_mode, generator: as in :class:`IGNorm`.
        clip_min, clip_max (float, Tensor or None): the data box. Default [0, 1].

    Attributes:
        last_adversarial (Tensor): :math:`x'` of the last call (detached).
        last_stats (dict): ``"value"``, ``"eps"``, ``"loss_adv"`` (mean :math:`\ell(x', y)`),
            ``"ig_norm"`` (mean :math:`s(\mathrm{IG})` at :math:`x'`, outer quadrature) and
            ``"attack_objective"``.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from captum_robust.robust.regularizers.chen import IGSumNorm
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

    def __init__(
        self,
        model: nn.Module,
        eps: EpsType = 0.3,
        beta: float = 0.1,
        *,
        n_steps: int = 50,
        method: str = "riemann_right",
        attack_n_steps: int = 10,
        attack_method: str = "riemann_right",
        n_iterations: int = 40,
        step_size: float = 0.01,
        norm: str = "linf",
        n_restarts: int = 1,
        size: str = "l1",
        internal_batch_size: Union[None, int, str] = None,
        surrogate: Optional[nn.Module] = None,
        auto_step: bool = True,
        eval_mode: bool = True,
        generator: Optional[torch.Generator] = None,
        clip_min: Any = 0.0,
        clip_max: Any = 1.0,
    ) -> None:
        super().__init__(
            model,
            eps,
            n_steps=n_steps,
            method=method,
            attack_n_steps=attack_n_steps,
            attack_method=attack_method,
            n_iterations=n_iterations,
            step_size=step_size,
            norm=norm,
            n_restarts=n_restarts,
            size=size,
            internal_batch_size=internal_batch_size,
            surrogate=surrogate,
            auto_step=auto_step,
            eval_mode=eval_mode,
            generator=generator,
            clip_min=clip_min,
            clip_max=clip_max,
        )
        self.beta = check_weight(beta, "beta")

    def _attack_objective(self, model: nn.Module) -> Callable[..., Tensor]:
        def objective(x_adv: Tensor, x: Tensor, y: Tensor, args: Any) -> Tensor:
            loss = F.cross_entropy(classification_outputs(model(x_adv)), y, reduction="none")
            if self.beta == 0:
                return loss
            ig = self._loss_ig(model, x, y, x_adv, self.attack_n_steps, self.attack_method)
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

    def objective_at(self, inputs: Tensor, target: Any, inputs_adv: Tensor) -> Tensor:
        r"""The objective at a given :math:`x'`: :math:`\mathrm{mean}_b [\ell(x'_b, y_b) +
        \beta\, s(\mathrm{IG}^{\ell_y}(x_b, x'_b))]`, differentiable with respect to the
        parameters (the loss part through ``model`` in its current mode, the IG part through
        the inner module in the attribution mode).

        Args:
            inputs (Tensor): the clean batch :math:`x`.
            target (Tensor): labels, integer ``(B,)``.
            inputs_adv (Tensor): the points :math:`x'`, shaped like ``inputs``.

        Returns:
            Tensor: a 0-dim tensor.
        """
        y = self._check_inputs(inputs, target)
        _check_adversarial(inputs, inputs_adv)
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

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}, size={self.size!r}, n_steps={self.n_steps}"
