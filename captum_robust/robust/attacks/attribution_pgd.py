r"""Projected gradient ascent on any differentiable attribution objective.

The inner maximizer of the robust-attribution regularizers: Chen, Wu, Rastogi, Liang, Jha,
"Robust Attribution Regularization", NeurIPS 2019 (IG-Norm, eq. 3); Boopathy et al.,
"Proper Network Interpretability Helps Adversarial Robustness in Classification", ICML 2020
(the discrepancy of eq. 9).

Like any PGD it finds a local maximum: :math:`\lVert \mathrm{IG}^{\ell_y}(x, \tilde x) \rVert_1`
alone, for instance, has one at nearly every corner of a small :math:`\ell_\infty` ball (each
coordinate gains by moving away from :math:`x` in either direction), so where the random start
lands matters; adding the loss itself (IG-Sum-Norm) makes the maximum unique on a linear model
(see the tests). A random start is mandatory for objectives that vanish at
:math:`\tilde x = x`, such as the IG of the loss from :math:`x` to :math:`\tilde x` (Chen et
al. sec. 4): the default ``random_start=True`` starts exactly those examples (zero gradient at
the clean input) at a random point and the others at the clean input.

During the search the ``forward_func`` (if an ``nn.Module``) runs in eval mode with frozen
parameters (``eval_mode=False`` keeps its mode; unlike the attacks on attributions, a model in
training mode is expected here -- the search runs inside a training loop -- and gives no
warning); nothing of the model's state, parameter gradients included, changes. The objective
usually closes over a model of its own (the same one, or a smooth copy): put that one in the
wanted mode yourself.

Example: Chen et al.'s IG-Norm inner maximization::

    >>> import torch, torch.nn.functional as F
    >>> from captum_robust.models import Small
    >>> from captum_robust.attr import BatchedIntegratedGradients
    >>> from captum_robust.robust.attacks import AttributionPGD
    >>> model = Small().eval()
    >>> loss_ig = BatchedIntegratedGradients(lambda r, t: F.cross_entropy(model(r), t, reduction="none"))
    >>> def ig_norm(x_adv, x, y, args):     # Chen's || IG^{l_y}(x, x') ||_1
    ...     ig = loss_ig.attribute(x_adv, baselines=x, additional_forward_args=(y,),
    ...                            n_steps=10, method="riemann_right", create_graph=True)
    ...     return ig.abs().flatten(1).sum(dim=1)
    >>> inner = AttributionPGD(model, ig_norm, eps=0.3, step_size=0.01, n_iterations=5)
    >>> x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    >>> x_adv, result = inner.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
    >>> bool((result.norm <= 0.3 + 1e-6).all())
    True
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.geometry import BoundType, Box, Tensors, check_norm, detach_all, per_example, project
from captum_robust._utils.geometry import random_in_ball
from captum_robust._utils.geometry import steepest_step
from captum_robust._utils.validation import TensorOrTuple, check_bool, check_int, check_nonnegative, check_positive
from captum_robust.robust.attacks._base import Attack, AttackCall, CleanBatch, attack_mode, clean_batch
from captum_robust.robust.attacks._base import clean_predictions, filled, finite_rows, forward, input_gradients, progress, unformat
from captum_robust.robust.attacks._base import warn_zero_gradient
from captum_robust.robust.attacks._loop import BestIterateTracker, check_random_start, sign_step_loop
from captum_robust.robust.attacks._results import ObjectiveResult

__all__ = ["AttributionPGD"]


class AttributionPGD(Attack):
    r"""Projected gradient *ascent* on a differentiable objective of the clean and perturbed
    inputs -- the inner maximizer of the robust-attribution regularizers.

    For a per-example objective :math:`J(\tilde x; x, y)` (any differentiable function, e.g. the
    IG-Norm term :math:`\lVert \mathrm{IG}^{\ell_y}(x, \tilde x) \rVert_1` of Chen et al. eq. 3,
    or the discrepancy :math:`\tilde{\mathcal D}(x, \tilde x)` of Boopathy et al. eq. 9), it
    approximates :math:`\max_{\lVert \tilde x - x \rVert \le \epsilon} J` from a random start by

    .. math::

        \tilde x \leftarrow \Pi_{\text{box}} \Pi_{B_\epsilon(x)} \big(\tilde x + \alpha\, s\big),
        \qquad s = \mathrm{sign}(\nabla J) \ (\ell_\infty), \quad s = \nabla J / \lVert \nabla J \rVert_2 \ (\ell_2)

    (local maxima and the model's mode: see the module docstring). Each example keeps its best
    iterate (``keep_best``) or returns the last one, detached: compute the training term on it
    with a fresh, differentiable pass. The result's ``objective`` is NaN where not evaluated
    (``keep_best=False``; no iterate kept the prediction under ``keep_prediction``).

    Args:
        forward_func (nn.Module or callable): the classifier, used for the predictions (and,
            with ``keep_prediction``, the acceptance of iterates).
        objective (callable): ``(inputs_adv, inputs, target, additional_forward_args) -> (B,)``:
            inputs in the user's format, ``perturb``'s target as ``(B,)`` classes (or ``None``).
        eps, step_size (float): :math:`\epsilon \ge 0` and :math:`\alpha > 0`. Default 0.3, 0.01.
        n_iterations (int): >= 1. Default 40 (Chen, Boopathy on MNIST).
        norm (str): ``"linf"`` (default) or ``"l2"``.
        random_start (bool or str): ``True`` (default): start at the clean input, except for
            the examples where the objective's gradient there is exactly zero (a stationary
            start, such as Chen's :math:`\lVert \mathrm{IG}^{\ell_y}(x, \tilde x) \rVert_1` or an
            :math:`\ell_1` discrepancy at :math:`\tilde x = x`), which start at a uniform random
            point of the ball (one extra gradient pass decides); ``"always"``: every example at a
            random point (the behaviour before issue 18); ``False``: at the clean input. The
            clean start is never weaker than no random start, where the gradient allows a step
            (for why a random start is weaker, see :class:`~captum_robust.robust.attacks.PGD`).
        keep_best (bool): return each example's best iterate (default) or the last one.
        keep_prediction (bool): only iterates keeping the clean prediction count (with ``keep_best``).
        eval_mode (bool): run ``forward_func`` in eval mode during the search. Default True.
        clip_min, clip_max (float, Tensor, tuple or None): the data box. Default [0, 1].

    Example (the module docstring has Chen's IG-Norm as the objective)::

        >>> import torch, torch.nn.functional as F
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.attacks import AttributionPGD
        >>> model = Small().eval()
        >>> def loss(x_adv, x, y, args):      # any (B,) objective: here the loss of the label
        ...     return F.cross_entropy(model(x_adv), y, reduction="none")
        >>> inner = AttributionPGD(model, loss, eps=0.3, step_size=0.01, n_iterations=5)
        >>> x_adv, result = inner.perturb(torch.rand(4, 1, 28, 28), target=torch.tensor([0, 1, 2, 3]))
        >>> bool((result.norm <= 0.3 + 1e-6).all())
        True
    """

    def __init__(
        self, forward_func: Callable[..., Any], objective: Callable[..., Tensor], eps: float = 0.3,
        step_size: float = 0.01, n_iterations: int = 40, *, norm: str = "linf", random_start: Union[bool, str] = True,
        keep_best: bool = True, keep_prediction: bool = False, eval_mode: bool = True, clip_min: BoundType = 0.0,
        clip_max: BoundType = 1.0,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be an nn.Module or a callable, got {type(forward_func).__name__}")
        if not callable(objective):
            raise TypeError(f"objective must be a callable (inputs_adv, inputs, target, args) -> (B,), got {type(objective).__name__}")
        self.forward_func = forward_func
        self.objective = objective
        self.eps = check_nonnegative(eps, "eps")
        self.step_size = check_positive(step_size, "step_size")
        self.n_iterations = check_int(n_iterations, "n_iterations", 1)
        self.norm = check_norm(norm)
        self.random_start = check_random_start(random_start)
        self.keep_best = check_bool(keep_best, "keep_best")
        self.keep_prediction = check_bool(keep_prediction, "keep_prediction")
        self.eval_mode = check_bool(eval_mode, "eval_mode")
        self.box = Box(clip_min, clip_max)

    def _models(self) -> Tuple[Any, ...]:
        return (self.forward_func,)

    def _value(self, x: Tuple[Tensor, ...], xs: Tuple[Tensor, ...], is_tuple: bool, target: Optional[Tensor], raw_args: Any) -> Tensor:
        value = self.objective(unformat(x, is_tuple), unformat(xs, is_tuple), target, raw_args)
        if not isinstance(value, Tensor) or value.shape != (xs[0].shape[0],):
            raise ValueError(
                f"objective must return one value per example, shape ({xs[0].shape[0]},), got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
            )
        return value

    def _attack(self, call: AttackCall) -> Tuple[TensorOrTuple, ObjectiveResult]:
        clean = clean_batch(call.inputs, call.additional_forward_args, self.box, call.generator)
        xs, args, is_tuple = clean.xs, clean.args, clean.is_tuple
        with attack_mode(self.forward_func, eval_mode=self.eval_mode, warn=False):
            _, pred0, tgt = clean_predictions(self.forward_func, clean, call.target, default_prediction=False)
            eps, alpha = filled(self.eps, xs[0]), filled(self.step_size, xs[0])
            # the start of the search is the first candidate (accepted unless it changed the prediction)
            trackers = []

            def gradient(x: Tensors) -> Tuple[Tensors, Any]:
                xg = tuple(v.detach().requires_grad_(True) for v in x)
                with torch.enable_grad():
                    value = self._value(xg, xs, is_tuple, tgt, call.additional_forward_args)
                    grads, _ = input_gradients(value, xg)
                return grads, value.detach()

            def step(x: Tensors, grads: Tensors) -> Tensors:
                return project(xs, steepest_step(detach_all(x), grads, alpha, self.norm), eps, self.norm, clean.bounds)

            def observe(x: Tensors, t: int, value: Optional[Tensor]) -> None:
                if not self.keep_best:
                    return
                if value is None:
                    with torch.enable_grad():
                        value = self._value(x, xs, is_tuple, tgt, call.additional_forward_args).detach()
                if self.keep_prediction:
                    with torch.no_grad():
                        logits = forward(self.forward_func, x, args)
                    pred = logits.argmax(dim=1)
                    accept = (pred == pred0) & finite_rows(logits)
                else:
                    # acceptance does not need the prediction: one forward pass at the end
                    # gives the returned points' predictions (saves a pass per iteration)
                    pred = pred0
                    accept = torch.ones_like(pred0, dtype=torch.bool)
                if not trackers:
                    start_value = torch.where(accept, value, torch.full_like(value, float("-inf")))
                    trackers.append(BestIterateTracker(
                        x, start_value, None, pred, True, accepted=accept & (at_random | (t > 0)), step=t
                    ))
                else:
                    trackers[0].update(x, value, accept, t, None, pred)

            def warn(grads: Tensors) -> None:
                warn_zero_gradient(grads, "AttributionPGD objective", stacklevel=7)

            start, at_random = self._start(clean, gradient, eps)
            with progress(self.n_iterations, call.show_progress, "AttributionPGD") as bar:
                x = sign_step_loop(start, self.n_iterations, gradient, step, observe,
                                   observe_start=True, bar=bar, on_first_gradient=warn)
            return self._returned(clean, x, trackers[0] if trackers else None, pred0)

    def _start(self, clean: CleanBatch, gradient: Any, eps: Tensor) -> Tuple[Tensors, Tensor]:
        """The start of the search and where it is random (``random_start``: see the class docstring)."""
        xs = clean.xs
        none = torch.zeros(xs[0].shape[0], dtype=torch.bool, device=xs[0].device)
        if self.random_start is False:
            return xs, none
        if self.random_start == "always":
            return random_in_ball(xs, eps, self.norm, clean.bounds, clean.generator), ~none
        grads, _ = gradient(xs)  # random only where the clean input is a stationary point
        stuck = torch.stack([g.reshape(g.shape[0], -1).abs().amax(dim=1) for g in grads]).amax(dim=0) == 0
        if not bool(stuck.any()):
            return xs, none
        rnd = random_in_ball(xs, eps, self.norm, clean.bounds, clean.generator)
        return tuple(torch.where(per_example(stuck, x).to(torch.bool), r, x) for r, x in zip(rnd, xs)), stuck

    def _returned(
        self, clean: CleanBatch, x: Tensors, tracker: Optional[BestIterateTracker], pred0: Tensor
    ) -> Tuple[TensorOrTuple, ObjectiveResult]:
        """The returned points (the best or the last iterate) and the result."""
        xs, args = clean.xs, clean.args
        if self.keep_best:
            assert tracker is not None
            x_adv, objective, best_step, predictions = tracker.best, tracker.score, tracker.best_step, tracker.predictions
            accepted = tracker.accepted
            if not self.keep_prediction:
                with torch.no_grad():
                    predictions = forward(self.forward_func, x_adv, args).argmax(dim=1)
            if self.keep_prediction:
                # where no iterate kept the prediction, fall back to the clean input
                keep = torch.isfinite(objective)
                x_adv = tuple(torch.where(keep.reshape((-1,) + (1,) * (a.dim() - 1)), a, c) for a, c in zip(x_adv, xs))
                predictions = torch.where(keep, predictions, pred0)
                objective = torch.where(keep, objective, torch.full_like(objective, float("nan")))
                accepted = accepted & keep
        else:
            x_adv = x
            with torch.no_grad():
                predictions = forward(self.forward_func, x, args).argmax(dim=1)
            objective = filled(float("nan"), xs[0])
            best_step = filled(self.n_iterations, xs[0], torch.long)
            accepted = (predictions == pred0) if self.keep_prediction else torch.ones_like(pred0, dtype=torch.bool)
        return self._finish(
            ObjectiveResult, x_adv, xs, clean.is_tuple, accepted=accepted,
            steps=filled(self.n_iterations, xs[0], torch.long), best_step=best_step, predictions=predictions,
            clean_predictions=pred0, objective=objective,
        )
