r"""Projected gradient descent on a classifier (Madry et al. 2018), l-inf and l2."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor

from captum_robust._utils.validation import (
    TargetType,
    TensorOrTuple,
    check_int_range,
    format_additional_args,
    format_inputs,
    resolve_target,
)
from captum_robust.robust.attacks.base import (
    BestTracker,
    BoundType,
    Box,
    PGDResult,
    attack_mode,
    check_args,
    check_bool,
    check_float_inputs,
    check_generator,
    check_inside_box,
    check_nonneg_float,
    check_norm,
    check_pos_float,
    detach_all,
    forward,
    input_gradients,
    norm_of,
    progress,
    project,
    random_in_ball,
    steepest_step,
    unformat,
)

__all__ = ["PGD"]

_LOSSES = ("ce", "cw")


def _cw_margin(logits: Tensor, label: Tensor) -> Tensor:
    """``max_{j != label} f_j - f_label`` (positive when misclassified)."""
    own = logits.gather(1, label[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(label, logits.shape[1]).to(torch.bool), float("-inf")).amax(dim=1)
    return others - own


class PGD:
    r"""Projected gradient descent on a classifier's loss, :math:`\ell_\infty` or :math:`\ell_2`
    (Madry et al. 2018), with random start, restarts and best-iterate keeping.

    Untargeted, it ascends the loss :math:`\ell(f(\tilde x), y)` of the label :math:`y`;
    targeted (``targeted=True``), it descends the loss of the target class:

    .. math::

        \tilde x \leftarrow \Pi_{\text{box}} \Pi_{B_\epsilon(x)} \big(\tilde x \pm \alpha\, s\big),
        \qquad s = \mathrm{sign}(\nabla \ell) \ (\ell_\infty), \quad
        s = \nabla \ell / \lVert \nabla \ell \rVert_2 \ (\ell_2),

    the :math:`\ell_2` step having length exactly :math:`\alpha` (no step where the gradient
    is zero), followed by the projection onto the ball (:math:`\ell_2`: rescaling) and the data
    box. The random start is uniform in the ball (for :math:`\ell_2`: a uniform direction with
    radius :math:`\epsilon U^{1/d}`). Of all iterates (and restarts) of each example the best
    is returned: a successful one (misclassified, or classified as the target) before an
    unsuccessful one, then the highest loss. With ``keep_best=False`` only each restart's
    *final* iterate competes (Madry's evaluation, and the papers' obfuscated-gradient check
    over the number of steps: with best-iterate keeping and a shared seed, accuracy cannot rise
    with the number of steps by construction). (Captum's PGD mis-scales or crashes with
    ``norm="L2"`` and a random start on image batches; this one does not build on it.)

    Args:
        model (nn.Module or callable): the classifier (B x C logits).
        eps (float): radius :math:`\epsilon \ge 0`. Default 0.3 (MNIST, Madry / Chen).
        step_size (float): :math:`\alpha > 0`. Default 0.01.
        n_iterations (int): steps per restart, >= 1. Default 40.
        norm (str): ``"linf"`` (default) or ``"l2"``.
        loss (str or callable): ``"ce"`` (cross-entropy, default), ``"cw"`` (the margin
            :math:`\max_{j \ne y} f_j - f_y`) or a callable ``(logits, labels) -> (B,)``
            per-example losses.
        targeted (bool): descend the loss of ``target`` instead of ascending that of the label.
        random_start (bool): start at a uniform random point of the ball. Default True.
        n_restarts (int): number of runs, >= 1 (each from a fresh random start). Default 1.
        clip_min, clip_max (float, Tensor, tuple or None): the data box. Default [0, 1].
        keep_best (bool): return the best of all iterates (default True); False: the best of
            the restarts' final iterates.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.attacks import PGD
        >>> model = Small().eval()
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> attack = PGD(model, eps=0.3, step_size=0.01, n_iterations=10)
        >>> x_adv, result = attack.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
        >>> robust_accuracy = 1 - result.success.float().mean()
        >>> l2 = PGD(model, eps=2.0, step_size=0.25, n_iterations=10, norm="l2")
        >>> x_adv2, result2 = l2.perturb(x, target=y)
        >>> bool((result2.norm <= 2.0 + 1e-5).all())
        True
    """

    def __init__(
        self,
        model: Callable[..., Any],
        eps: float = 0.3,
        step_size: float = 0.01,
        n_iterations: int = 40,
        *,
        norm: str = "linf",
        loss: Union[str, Callable[[Tensor, Tensor], Tensor]] = "ce",
        targeted: bool = False,
        random_start: bool = True,
        n_restarts: int = 1,
        clip_min: BoundType = 0.0,
        clip_max: BoundType = 1.0,
        keep_best: bool = True,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
        self.model = model
        self.keep_best = check_bool(keep_best, "keep_best")
        self.eps = check_nonneg_float(eps, "eps")
        self.step_size = check_pos_float(step_size, "step_size")
        self.n_iterations = check_int_range(n_iterations, "n_iterations", 1)
        self.norm = check_norm(norm)
        if isinstance(loss, str):
            if loss not in _LOSSES:
                raise ValueError(f"loss must be one of {_LOSSES} or a callable (logits, labels) -> (B,), got {loss!r}")
        elif not callable(loss):
            raise TypeError(f"loss must be one of {_LOSSES} or a callable, got {type(loss).__name__}")
        self.loss = loss
        self.targeted = check_bool(targeted, "targeted")
        self.random_start = check_bool(random_start, "random_start")
        self.n_restarts = check_int_range(n_restarts, "n_restarts", 1)
        self.box = Box(clip_min, clip_max)

    def _loss(self, logits: Tensor, label: Tensor) -> Tensor:
        if self.loss == "ce":
            value = F.cross_entropy(logits, label, reduction="none")
        elif self.loss == "cw":
            value = _cw_margin(logits, label)
        else:
            value = self.loss(logits, label)
            if not isinstance(value, Tensor) or value.shape != (logits.shape[0],):
                raise ValueError(
                    f"loss must return one value per example, shape ({logits.shape[0]},), got "
                    f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
                )
        return -value if self.targeted else value

    def _success(self, pred: Tensor, label: Tensor) -> Tensor:
        return pred == label if self.targeted else pred != label

    @log_usage()
    def perturb(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        generator: Optional[torch.Generator] = None,
        show_progress: bool = False,
    ) -> Tuple[TensorOrTuple, PGDResult]:
        r"""Run the attack.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): clean inputs, batch first, inside the box.
            target (int, list[int], Tensor or None): untargeted: the true labels (``None``:
                the model's predictions); targeted: the target classes (required).
            additional_forward_args (Any, optional): extra model arguments.
            generator (torch.Generator, optional): randomness of the random starts.
            show_progress (bool): a tqdm bar over the steps.

        Returns:
            (Tensor or tuple[Tensor, ...], PGDResult): the perturbed inputs and the per-example
            results (``success``, ``loss`` -- the loss the attack ascends, i.e. minus the
            target's loss when targeted --, ``norm``, ``steps``, ``best_step``, ``predictions``).

        Raises:
            ValueError: targeted without a target, a target of the wrong length or out of range,
                NaN/inf inputs, inputs outside the box.
        """
        check_bool(show_progress, "show_progress")
        is_tuple, xs = format_inputs(inputs)
        check_float_inputs(xs, is_tuple)
        xs = detach_all(xs)
        args = format_additional_args(additional_forward_args)
        b = xs[0].shape[0]
        check_args(args, b)
        gen = check_generator(generator, xs[0].device)
        if self.targeted and target is None:
            raise ValueError("a targeted PGD needs target=, the class to reach")
        bounds = self.box.resolve(xs)
        check_inside_box(xs, bounds, is_tuple)
        with attack_mode(self.model):
            with torch.no_grad():
                logits0 = forward(self.model, xs, args)
            pred0 = logits0.argmax(dim=1)
            label = pred0 if target is None else resolve_target(target, b, logits0.shape[1], xs[0].device)
            with torch.no_grad():
                loss0 = self._loss(logits0, label)
            tracker = BestTracker(xs, loss0, {"success": self._success(pred0, label)}, pred0, higher_is_better=True)
            if self.keep_best:  # the start counts as an iterate: accepted where it already succeeds
                tracker.accepted = tracker.values["success"].clone()
            else:  # only final iterates count: the first restart's replaces the start everywhere
                tracker.score.fill_(-math.inf)
                tracker.values["success"].fill_(False)
            eps = torch.full((b,), self.eps, dtype=xs[0].dtype, device=xs[0].device)
            alpha = torch.full((b,), self.step_size, dtype=xs[0].dtype, device=xs[0].device)
            steps = torch.zeros(b, dtype=torch.long, device=xs[0].device)

            def update(x: Tuple[Tensor, ...], logits: Tensor, loss: Tensor, step: int) -> None:
                pred = logits.argmax(dim=1)
                success = self._success(pred, label)
                # lexicographic (success, loss): a success beats any failure, then the loss decides
                cur_success = tracker.values["success"]
                better = (success & ~cur_success) | ((success == cur_success) & (loss > tracker.score))
                rows = torch.nonzero(better).squeeze(1)
                if rows.numel():
                    for mine, new in zip(tracker.x, x):
                        mine[rows] = new[rows]
                    tracker.score[rows] = loss[rows]
                    tracker.values["success"][rows] = success[rows]
                    tracker.predictions[rows] = pred[rows]
                    tracker.best_step[rows] = step + 1
                    tracker.accepted[rows] = success[rows]

            total = self.n_restarts * self.n_iterations
            with progress(total, show_progress, "PGD") as bar:
                for restart in range(self.n_restarts):
                    x = random_in_ball(xs, eps, self.norm, bounds, gen) if self.random_start else xs
                    for t in range(self.n_iterations):
                        xg = tuple(v.detach().requires_grad_(True) for v in x)
                        with torch.enable_grad():
                            logits = forward(self.model, xg, args)
                            loss = self._loss(logits, label)
                            grads, _ = input_gradients(loss, xg)
                        if self.keep_best and (t > 0 or self.random_start):
                            update(detach_all(xg), logits.detach(), loss.detach(), restart * self.n_iterations + t - 1)
                        x = project(xs, steepest_step(detach_all(xg), grads, alpha, self.norm), eps, self.norm, bounds)
                        steps += 1
                        bar.update(1)
                    with torch.no_grad():
                        logits = forward(self.model, x, args)
                        update(x, logits, self._loss(logits, label), (restart + 1) * self.n_iterations - 1)
            x_adv = tracker.x
            result = PGDResult(
                accepted=tracker.values["success"].clone(),
                norm=norm_of([a - c for a, c in zip(x_adv, xs)], self.norm),
                steps=steps,
                best_step=tracker.best_step,
                predictions=tracker.predictions,
                clean_predictions=pred0,
                loss=tracker.score,
            )
        return unformat(x_adv, is_tuple), result
