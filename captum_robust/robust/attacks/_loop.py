r"""The one projected-step loop of the attacks and its best-iterate tracker.

Ghorbani's sign-step attacks (and AAI), :class:`~captum_robust.robust.attacks.PGD`,
:class:`~captum_robust.robust.attacks.AttributionPGD` and the inner runs of
:class:`~captum_robust.robust.attacks.ISA` all iterate

.. math::

    \tilde x_{t+1} = \Pi_{\text{box}} \Pi_{B_\epsilon(x)} \big(\tilde x_t \pm \alpha\, s(\nabla L(\tilde x_t))\big)

and differ only in the objective :math:`L`, the step direction :math:`s` and the rule that
decides which iterate an example returns. :func:`sign_step_loop` is that loop; the attack
supplies the gradient pass, the step and an ``observe`` callback, which usually hands each
iterate to a :class:`BestIterateTracker` with the attack's acceptance mask.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.geometry import Tensors

__all__ = ["BestIterateTracker", "sign_step_loop", "check_random_start"]

#: the values of ``random_start`` of :class:`PGD`, :class:`L2TopKAttack` and :class:`AttributionPGD`
RANDOM_STARTS = (True, False, "always")



def check_random_start(value: Any) -> Any:
    """``random_start`` must be ``True``, ``False`` or ``"always"`` (the rule is explained in
    :class:`~captum_robust.robust.attacks.PGD`'s docstring: by default the first run starts at
    the clean input, so the default is never weaker than the attack without random start)."""
    if isinstance(value, bool):
        return value
    from captum_robust._utils.validation import check_choice

    return check_choice(value, "random_start", RANDOM_STARTS)


class BestIterateTracker:
    """The best iterate of every example so far, batched.

    An iterate replaces an example's current best where it is *eligible* (``accept``) and
    better: with ranks (e.g. "the attack succeeded"), a higher rank first; at equal rank a
    strictly better ``score`` -- lower, or higher with ``higher_is_better`` (NaN never is).
    So the start stays where nothing improves on it. ``values`` are other per-example
    quantities kept with the best iterate (e.g. the similarity and the objective).

    Args:
        start (tuple[Tensor, ...]): the start, one tensor per input, batch first (copied).
        score (Tensor): ``(B,)`` score of the start.
        values (dict[str, Tensor], optional): ``(B,)`` values of the start.
        predictions (Tensor): ``(B,)`` predicted classes at the start.
        higher_is_better (bool): maximize the score instead of minimizing it.
        rank (Tensor, optional): ``(B,)`` rank of the start (bool or int); ranks are compared
            before scores. Without it every iterate has the same rank.
        accepted (Tensor, optional): ``(B,)`` initial :attr:`accepted` flags (default all
            False: the start is not an accepted iterate).
        step (int): the step recorded for the start. Default 0.

    Attributes:
        best (tuple[Tensor, ...]): the best iterates.
        score, values, predictions, rank: their score, values, predictions and rank.
        accepted (Tensor): bool, True where an iterate has replaced the start (or as given).
        best_step (Tensor): int64, the step of each best iterate.
    """

    def __init__(
        self,
        start: Sequence[Tensor],
        score: Tensor,
        values: Optional[Dict[str, Tensor]] = None,
        predictions: Optional[Tensor] = None,
        higher_is_better: bool = False,
        *,
        rank: Optional[Tensor] = None,
        accepted: Optional[Tensor] = None,
        step: int = 0,
    ) -> None:
        self.best = tuple(x.detach().clone() for x in start)
        self.score = score.detach().clone()
        self.values = {k: v.detach().clone() for k, v in (values or {}).items()}
        b, device = self.score.shape[0], self.score.device
        self.predictions = (
            torch.zeros(b, dtype=torch.long, device=device) if predictions is None else predictions.detach().clone()
        )
        self.rank = None if rank is None else rank.detach().clone()
        self.higher_is_better = higher_is_better
        self.accepted = (
            torch.zeros(b, dtype=torch.bool, device=device) if accepted is None else accepted.detach().clone()
        )
        self.best_step = torch.full((b,), int(step), dtype=torch.long, device=device)

    def better(self, score: Tensor, rank: Optional[Tensor] = None, idx: Optional[Tensor] = None) -> Tensor:
        """Where candidates of the examples ``idx`` (all if None) beat the current best,
        eligibility aside."""
        current = self.score if idx is None else self.score[idx]
        improves = (score > current) if self.higher_is_better else (score < current)
        if self.rank is None or rank is None:
            return improves
        mine = (self.rank if idx is None else self.rank[idx]).long()
        theirs = rank.long()
        return (theirs > mine) | ((theirs == mine) & improves)

    def update(
        self,
        xs: Sequence[Tensor],
        score: Tensor,
        accept: Tensor,
        step: Union[int, Tensor],
        values: Optional[Dict[str, Tensor]] = None,
        predictions: Optional[Tensor] = None,
        idx: Optional[Tensor] = None,
        *,
        rank: Optional[Tensor] = None,
    ) -> Tensor:
        """Offer the iterates ``xs`` of the examples ``idx`` (all if None): ``score``,
        ``accept`` (eligibility), ``values``, ``predictions`` and ``rank`` are given for those
        examples, ``step`` as an int or per example. Returns the mask (over ``idx``) of the
        examples whose best changed."""
        if idx is None:
            idx = torch.arange(self.score.shape[0], device=self.score.device)
        better = accept & self.better(score, rank, idx)
        rows = idx[better]
        if rows.numel():
            for mine, new in zip(self.best, xs):
                mine[rows] = new.detach()[better].to(mine.dtype)
            self.score[rows] = score.detach()[better].to(self.score.dtype)
            for k, v in (values or {}).items():
                self.values[k][rows] = v.detach()[better].to(self.values[k].dtype)
            if predictions is not None:
                self.predictions[rows] = predictions[better]
            if self.rank is not None and rank is not None:
                self.rank[rows] = rank[better].to(self.rank.dtype)
            self.accepted[rows] = True
            step_t = step[better] if isinstance(step, Tensor) else torch.full_like(rows, int(step))
            self.best_step[rows] = step_t
        return better


GradientPass = Callable[[Tensors], Tuple[Tensors, Any]]
Step = Callable[[Tensors, Tensors], Tensors]
Observe = Callable[[Tensors, int, Any], None]


def sign_step_loop(
    start: Tensors,
    n_iterations: int,
    gradient: GradientPass,
    step: Step,
    observe: Observe,
    *,
    observe_start: bool,
    bar: Any = None,
    on_first_gradient: Optional[Callable[[Tensors], None]] = None,
) -> Tensors:
    """Run ``n_iterations`` projected steps from ``start`` and return the last iterate.

    At step ``t`` (``x_0 = start``): ``grads, info = gradient(x_t)``; then
    ``observe(x_t, t, info)`` -- not at ``t = 0`` unless ``observe_start`` (the clean input is
    not an iterate; a random start is) --; then ``x_{t+1} = step(x_t, grads)``. After the loop
    ``observe(x_n, n_iterations, None)``: ``info`` is None where the observer must compute
    what it needs itself (the gradient pass computes the objective, maps or logits on the
    way, and ``info`` hands them on to spare a pass).

    Args:
        start (tuple[Tensor, ...]): the first iterate.
        n_iterations (int): number of steps.
        gradient (callable): ``x -> (grads, info)``.
        step (callable): ``(x, grads) -> x_next`` (the step and the projections).
        observe (callable): ``(x, t, info) -> None``.
        observe_start (bool): observe ``x_0`` too.
        bar (tqdm, optional): advanced by one per step.
        on_first_gradient (callable, optional): called with the first gradients (the
            zero-gradient warning).

    Returns:
        tuple[Tensor, ...]: the last iterate ``x_n``.
    """
    x = start
    for t in range(n_iterations):
        grads, info = gradient(x)
        if t == 0 and on_first_gradient is not None:
            on_first_gradient(grads)
        if t > 0 or observe_start:
            observe(x, t, info)
        x = step(x, grads)
        if bar is not None:
            bar.update(1)
    observe(x, n_iterations, None)
    return x
