r"""Projected gradient descent on a classifier (Madry et al. 2018), l-inf and l2.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

The :math:`\ell_2` step has length exactly :math:`\alpha` (no step where the gradient is
zero) and is followed by the projection onto the ball (for :math:`\ell_2`: rescaling) and the
data box. A random start is uniform in the ball (for :math:`\ell_2`: a uniform direction with
radius :math:`\epsilon U^{1/d}`). With the default ``random_start=True`` the *first* restart
starts at the clean input and every further restart at a random point, so the default is never
weaker than PGD without random start (``random_start="always"``: every restart random, Madry's
original uniform start, the behaviour before this rule). With ``keep_best=False`` only each restart's *final* iterate
competes: Madry's evaluation, and the papers' obfuscated-gradient check over the number of
steps (with best-iterate keeping and a shared seed, accuracy cannot rise with the number of
steps by construction). Captum's PGD mis-scales or crashes with ``norm="L2"`` and a random
start on image batches; this one does not build on it.

**Why the first restart starts at the clean input.** A uniform random point of a
high-dimensional :math:`\ell_2` ball lies almost on its sphere (radius
:math:`\epsilon U^{1/d}`), so a random start spends the whole budget on a random direction
that the projected steps undo only slowly: on the digits CNN a uniform start left a higher
robust accuracy than starting at the clean input, at :math:`\ell_2` and (less) at
:math:`\ell_\infty`, and a smaller random radius did not close the gap (measurements in
``benchmarks/README.md``). Starting the first restart at the clean input makes the default at
least as strong as PGD without random start *by construction* (each example keeps the best
iterate over all restarts, a success first); further restarts add what random starts are good
for (escaping a zero or masked gradient at the clean input).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_robust._utils.geometry import BoundType, Box, Tensors, check_norm, detach_all, project, random_in_ball
from captum_robust._utils.geometry import steepest_step
from captum_robust._utils.validation import TensorOrTuple, check_bool, check_int, check_nonnegative, check_positive
from captum_robust.robust.attacks._base import Attack, AttackCall, attack_mode, clean_batch, clean_predictions, filled
from captum_robust.robust.attacks._base import finite_rows, forward, input_gradients, progress
from captum_robust.robust.attacks._loop import BestIterateTracker, check_random_start, sign_step_loop
from captum_robust.robust.attacks._results import PGDResult

__all__ = ["PGD"]

_LOSSES = ("ce", "cw")


def _cw_margin(logits: Tensor, label: Tensor) -> Tensor:
    """``max_{j != label} f_j - f_label`` (positive when misclassified)."""
    own = logits.gather(1, label[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(label, logits.shape[1]).to(torch.bool), float("-inf")).amax(dim=1)
    return others - own


class PGD(Attack):
    r"""Projected gradient descent on a classifier's loss, :math:`\ell_\infty` or :math:`\ell_2`
    (Madry et al. 2018), with random start, restarts and best-iterate keeping: it ascends the
    loss :math:`\ell(f(\tilde x), y)` of the label :math:`y` (``targeted=True``: descends that
    of the target class),

    .. math::

        \tilde x \leftarrow \Pi_{\text{box}} \Pi_{B_\epsilon(x)} \big(\tilde x \pm \alpha\, s\big),
        \qquad s = \mathrm{sign}(\nabla \ell) \ (\ell_\infty), \quad
        s = \nabla \ell / \lVert \nabla \ell \rVert_2 \ (\ell_2)

    (steps and random start: see the module docstring). Each example returns its best iterate
    over all restarts: a successful one (misclassified, or classified as the target) first,
    then the highest loss. ``perturb``'s ``target`` is the true label (``None``: the
    prediction) or, targeted, the class to reach; the result's ``succeeded`` (= ``accepted``,
    also ``success``) says whether the attack succeeded, its ``loss`` is the loss ascended.
    A restart's iterate whose logits are not all finite is never a success.

    Args:
        model (nn.Module or callable): the classifier (B x C logits).
        eps, step_size (float): :math:`\epsilon \ge 0` and :math:`\alpha > 0`. Default 0.3
            (MNIST, Madry / Chen) and 0.01.
        n_iterations (int): steps per restart, >= 1. Default 40.
        norm (str): ``"linf"`` (default) or ``"l2"``.
        loss (str or callable): ``"ce"`` (cross-entropy, default), ``"cw"`` (the margin
            :math:`\max_{j \ne y} f_j - f_y`) or a callable ``(logits, labels) -> (B,)``.
        targeted (bool): descend the loss of ``target`` instead of ascending that of the label.
        random_start (bool or str): ``True`` (default): the first restart starts at the clean
            input, every further restart at a fresh uniform random point of the ball (so with
            ``n_restarts=1`` the attack is plain PGD); ``"always"``: every restart, the first
            included, starts at a random point; ``False``: every restart starts at the clean
            input (the restarts then repeat each other). Why: see the module docstring.
        n_restarts (int): number of runs, >= 1. Default 1.
        clip_min, clip_max (float, Tensor, tuple or None): the data box. Default [0, 1].
        keep_best (bool): return the best of all iterates (default); False: the best of the
            restarts' final iterates.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.attacks import PGD
        >>> model = Small().eval()
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> attack = PGD(model, eps=2.0, step_size=0.25, n_iterations=10, norm="l2")
        >>> x_adv, result = attack.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
        >>> robust_accuracy = 1 - result.success.float().mean()
        >>> bool((result.norm <= 2.0 + 1e-5).all())
        True
    """

    def __init__(
        self, model: Callable[..., Any], eps: float = 0.3, step_size: float = 0.01, n_iterations: int = 40, *,
        norm: str = "linf", loss: Union[str, Callable[[Tensor, Tensor], Tensor]] = "ce", targeted: bool = False,
        random_start: Union[bool, str] = True, n_restarts: int = 1, clip_min: BoundType = 0.0, clip_max: BoundType = 1.0,
        keep_best: bool = True,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
        self.model = model
        self.keep_best = check_bool(keep_best, "keep_best")
        self.eps = check_nonnegative(eps, "eps")
        self.step_size = check_positive(step_size, "step_size")
        self.n_iterations = check_int(n_iterations, "n_iterations", 1)
        self.norm = check_norm(norm)
        if isinstance(loss, str):
            if loss not in _LOSSES:
                raise ValueError(f"loss must be one of {_LOSSES} or a callable (logits, labels) -> (B,), got {loss!r}")
        elif not callable(loss):
            raise TypeError(f"loss must be one of {_LOSSES} or a callable, got {type(loss).__name__}")
        self.loss = loss
        self.targeted = check_bool(targeted, "targeted")
        self.random_start = check_random_start(random_start)
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
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

    def _attack(self, call: AttackCall) -> Tuple[TensorOrTuple, PGDResult]:
        clean = clean_batch(call.inputs, call.additional_forward_args, self.box, call.generator)
        if self.targeted and call.target is None:
            raise ValueError("a targeted PGD needs target=, the class to reach")
        xs, args = clean.xs, clean.args
        with attack_mode(self.model):
            logits0, pred0, label = clean_predictions(self.model, clean, call.target)
            with torch.no_grad():
                loss0 = self._loss(logits0, label)
            if self.keep_best:  # the start counts as an iterate: accepted where it already succeeds
                success0 = self._success(pred0, label)
                tracker = BestIterateTracker(xs, loss0, None, pred0, True, rank=success0, accepted=success0)
            else:  # only final iterates count: the first restart's replaces the start everywhere
                no = torch.zeros_like(pred0, dtype=torch.bool)
                tracker = BestIterateTracker(xs, torch.full_like(loss0, -math.inf), None, pred0, True, rank=no)
            eps, alpha = filled(self.eps, xs[0]), filled(self.step_size, xs[0])
            everyone = torch.ones_like(pred0, dtype=torch.bool)

            def gradient(x: Tensors) -> Tuple[Tensors, Any]:
                xg = tuple(v.detach().requires_grad_(True) for v in x)
                with torch.enable_grad():
                    logits = forward(self.model, xg, args)
                    loss = self._loss(logits, label)
                    grads, _ = input_gradients(loss, xg)
                return grads, (logits.detach(), loss.detach())

            def step(x: Tensors, grads: Tensors) -> Tensors:
                return project(xs, steepest_step(detach_all(x), grads, alpha, self.norm), eps, self.norm, clean.bounds)

            with progress(self.n_restarts * self.n_iterations, call.show_progress, "PGD") as bar:
                for restart in range(self.n_restarts):

                    def observe(x: Tensors, t: int, info: Any, offset: int = restart * self.n_iterations) -> None:
                        """Lexicographic (success, loss): a success beats any failure, then the loss decides."""
                        if info is not None and not self.keep_best:
                            return  # only the final iterate of each restart competes
                        if info is None:
                            with torch.no_grad():
                                logits = forward(self.model, x, args)
                                info = (logits, self._loss(logits, label))
                        logits, loss = info
                        pred = logits.argmax(dim=1)
                        # an iterate whose logits are not finite is no success (argmax of NaN)
                        success = self._success(pred, label) & finite_rows(logits)
                        tracker.update(x, loss, everyone, offset + t, None, pred, rank=success)

                    # the first restart starts at the clean input unless random_start="always"
                    at_random = self.random_start == "always" or (self.random_start is True and restart > 0)
                    start = random_in_ball(xs, eps, self.norm, clean.bounds, clean.generator) if at_random else xs
                    sign_step_loop(start, self.n_iterations, gradient, step, observe, observe_start=at_random, bar=bar)
            return self._finish(
                PGDResult, tracker.best, xs, clean.is_tuple, accepted=tracker.rank.clone(),
                steps=filled(self.n_restarts * self.n_iterations, xs[0], torch.long), best_step=tracker.best_step,
                predictions=tracker.predictions, clean_predictions=pred0, loss=tracker.score,
            )
