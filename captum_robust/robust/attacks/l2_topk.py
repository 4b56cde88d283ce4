r"""Levine et al.'s :math:`\ell_2` attack on the top-k overlap of saliency maps (Algorithm 1).

Levine, Singla, Feizi, "Certifiably Robust Interpretation in Deep Learning" (arXiv 1905.12105),
App. C.

Algorithm 1, as implemented:

* ``n_restarts`` (:math:`T`) restarts; with ``random_start="always"`` each from a uniformly random point of the sphere
  :math:`\lVert\delta\rVert_2 = \rho` (clipped to the box) that keeps the class; points
  are drawn until one does, with a budget of ``random_budget`` (:math:`Q`) draws *shared by
  all restarts* of an example; an example whose budget runs out stops restarting, and one
  that never found a start fails (returns its clean input, ``accepted=False``). *Deviation, on
  purpose* (issue 18): by default (``random_start=True``) the first restart starts at the clean
  input itself (which keeps the class, and costs no draw) and the other :math:`T - 1` at random
  points of the sphere, so the default is never weaker than the attack without random start
  (the best iterate over all restarts is returned); the reason is
  :class:`~captum_robust.robust.attacks.PGD`'s (a uniform point of the sphere spends the whole
  radius on a random direction);
* ``n_iterations`` (:math:`P`) gradient steps :math:`x_p = x_{p-1} + \alpha \nabla D(x_{p-1})`,
  projected onto the ball and the box, with first step length :math:`\rho`
  (:math:`\alpha = \rho / \lVert \nabla D(x_0) \rVert_2`) and :math:`\alpha \leftarrow
  p\alpha / (p + 1)` after step :math:`p`; a step that would change the class is halved
  (backtracking line search) until it keeps it (after ``max_backtracks`` halvings the
  example stays where it is for that step);
* the result is the iterate :math:`x_1, \dots, x_P` of any restart with the largest
  :math:`D` on the real model's maps (``select_by="objective"``).

Every example keeps its own step size, backtracking count, restart and budget; examples
in different phases are processed together by index. Levine et al. used
:math:`Q = 100, P = 20, T = 5` on CIFAR-10 (:math:`P = 15, T = 3` in training), on
softplus networks, attacking SmoothGrad-type maps (differentiable ones, e.g.
:class:`~captum_robust.attr.RelaxedSparsifiedSmoothGrad`) and plain gradients. The
:math:`\ell_2` sign-step baseline they compare with is
:class:`~captum_robust.robust.attacks.TopKAttack` with ``norm="l2"``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.geometry import Tensors, norm_of, per_example, project, random_on_sphere
from captum_robust._utils.validation import TensorOrTuple, check_choice, check_int, check_positive
from captum_robust.robust.attacks._base import AttackCall, attack_mode, filled, index_args, predict, progress
from captum_robust.robust.attacks._base import warn_zero_gradient
from captum_robust.robust.attacks._loop import BestIterateTracker, check_random_start
from captum_robust.robust.attacks._map_attack import _SELECT, MapAttack, _Context
from captum_robust.robust.attacks._results import AttributionAttackResult
from captum_robust.robust.discrepancy import topk_mask

__all__ = ["L2TopKAttack"]


class L2TopKAttack(MapAttack):
    r"""The :math:`\ell_2` attack on the top-k overlap of Levine et al. (App. C, Algorithm 1).

    With :math:`h` the prepared saliency map and :math:`T_k` the top-k elements of
    :math:`h(x)`, the attack maximizes :math:`D(z) = -\sum_{i \in T_k} h_i(z)` over the
    :math:`\ell_2` ball of radius :math:`\rho` (and the data box) while keeping the predicted
    class :math:`c(x)`: from ``n_restarts`` (:math:`T`) starts -- the clean input, then random
    points of the sphere that keep the class (``random_budget``, :math:`Q`, draws per example
    in all) --, ``n_iterations``
    (:math:`P`) projected gradient steps of decreasing length, each halved while it would change
    the class; the iterate of largest :math:`D` on the real model's maps is returned (details
    and the paper's settings in the module docstring). In the result, ``accepted`` is False
    where nothing improved on the clean map (or, with ``random_start="always"``, no random
    start kept the class), and ``steps`` counts gradient passes.

    Args:
        k (int): size of the attacked top set.
        rho (float): :math:`\rho > 0`, the radius of the :math:`\ell_2` ball.
        n_iterations (int): :math:`P \ge 1`. Default 20.
        n_restarts (int): :math:`T \ge 1`. Default 5.
        random_budget (int): :math:`Q \ge 1`, random-start draws per example over all restarts. Default 100.
        max_backtracks (int): halvings of a step before giving it up, >= 0. Default 20.
        map_preparation: how maps become :math:`h`; default ``"abs"`` (element-wise over
            :math:`C \cdot H \cdot W` as Levine et al.).
        measure_k (int, optional): ``k`` of the default ``"topk"`` measure; default ``k``.
        select_by (str): ``"objective"`` (default, Algorithm 1) or ``"similarity"``.
        random_start (bool or str): ``True`` (default): the first restart starts at the clean
            input, the others at random points of the sphere that keep the class;
            ``"always"``: every restart at a random point (Algorithm 1 as published);
            ``False``: every restart at the clean input (the restarts then repeat each other).

    See :class:`~captum_robust.robust.attacks._map_attack.MapAttack` for the common arguments
    (the progress bar of ``perturb`` counts restarts).

    Example::

        >>> import torch
        >>> from captum_robust.attr import Saliency
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.attacks import L2TopKAttack, softplus_surrogate
        >>> model = Small().eval()
        >>> x = torch.rand(4, 1, 28, 28)
        >>> attack = L2TopKAttack(model, Saliency(model), k=78, rho=1.0, n_iterations=5, n_restarts=2,
        ...                       surrogate=softplus_surrogate(model, beta=10.0))
        >>> x_adv, result = attack.perturb(x, generator=torch.Generator().manual_seed(0))
        >>> bool((result.norm <= 1.0 + 1e-5).all())
        True

    Token models: ``embedding_layer=`` (see "Token models" in
    :class:`~captum_robust.robust.attacks._map_attack.MapAttack`); ``rho`` is then the
    :math:`\ell_2` radius on each example's embedding tensor, and the random starts leave the
    padding embeddings unchanged.
    """

    _token_support = True

    def __init__(
        self, model: Callable[..., Any], attribution: Any, k: int, rho: float, n_iterations: int = 20,
        n_restarts: int = 5, random_budget: int = 100, max_backtracks: int = 20, *, map_preparation: Any = "abs",
        measure: Any = "topk", measure_k: Optional[int] = None, select_by: str = "objective",
        random_start: Union[bool, str] = True, **kwargs: Any,
    ) -> None:
        self.k = check_int(k, "k", 1)
        super().__init__(
            model, attribution, measure=measure, measure_k=self.k if measure_k is None else measure_k,
            map_preparation=map_preparation, **kwargs,
        )
        self.rho = check_positive(rho, "rho")
        self.n_iterations = check_int(n_iterations, "n_iterations", 1)
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
        self.random_budget = check_int(random_budget, "random_budget", 1)
        self.max_backtracks = check_int(max_backtracks, "max_backtracks", 0)
        self.select_by = check_choice(select_by, "select_by", _SELECT)
        self.random_start = check_random_start(random_start)
        self.norm = "l2"

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        self._check_k(ctx)
        top = topk_mask(ctx.clean_prepared, self.k, mask=ctx.token_mask)  # padding never in the top-k
        return {"mask": top.to(ctx.clean_prepared.dtype)}

    def _objective(self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context) -> Tensor:
        return (prepared * state["mask"]).reshape(prepared.shape[0], -1).sum(dim=1)

    def _attack(self, call: AttackCall) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        with attack_mode(self.model, self.surrogate):
            ctx = self._context(call, call.target)
            b, device = ctx.batch, ctx.x0[0].device
            ctx.rho = filled(self.rho, ctx.x0[0])
            tracker = self._tracker(ctx, self.select_by)
            used = torch.zeros(b, dtype=torch.long, device=device)
            exhausted = torch.zeros(b, dtype=torch.bool, device=device)
            steps = torch.zeros(b, dtype=torch.long, device=device)
            warned = False
            with progress(self.n_restarts, call.show_progress, "L2TopKAttack") as bar:
                for restart in range(self.n_restarts):
                    if self.random_start == "always" or (self.random_start is True and restart > 0):
                        start, have = self._random_starts(ctx, used, exhausted)
                    else:  # the clean input keeps the class: no draw needed
                        start = tuple(c.clone() for c in ctx.x0)
                        have = torch.ones(b, dtype=torch.bool, device=device)
                    run = torch.nonzero(have).squeeze(1)
                    bar.update(1)
                    if run.numel() == 0:
                        if bool(exhausted.all()):
                            break
                        continue
                    self._descend(ctx, tracker, tuple(c[run] for c in start), run, steps, warn=not warned)
                    warned = True
            return self._result(ctx, tracker, steps)

    def _random_starts(self, ctx: _Context, used: Tensor, exhausted: Tensor) -> Tuple[Tensors, Tensor]:
        """Random points on the sphere that keep the class, drawn until one does, from the
        budget ``random_budget`` shared by all restarts (``used`` and ``exhausted`` are updated
        in place). Returns the starts and where one was found."""
        b = ctx.batch
        start = tuple(c.clone() for c in ctx.x0)
        have = torch.zeros(b, dtype=torch.bool, device=ctx.x0[0].device)
        need = ~exhausted
        while bool(need.any()):
            idx = torch.nonzero(need).squeeze(1)
            x0i = tuple(c[idx] for c in ctx.x0)
            cand = random_on_sphere(x0i, ctx.rho[idx], ctx.bounds, ctx.generator)
            cand = self._keep_padding(x0i, cand, self._mask_of(ctx, idx))
            ok = predict(self.model, cand, index_args(ctx.args, idx, b)) == ctx.pred0[idx]
            used[idx] += 1
            rows = idx[ok]
            for mine, new in zip(start, cand):
                mine[rows] = new[ok]
            have[rows] = True
            need[rows] = False
            exhausted |= need & (used >= self.random_budget)
            need &= ~exhausted
        return start, have

    def _descend(
        self, ctx: _Context, tracker: BestIterateTracker, x_prev: Tensors, run: Tensor, steps: Tensor, warn: bool
    ) -> None:
        """P gradient steps with backtracking from ``x_prev`` for the examples ``run``, every
        example with its own step size; every iterate is offered to the tracker."""
        x0, b, device = ctx.x0, ctx.batch, ctx.x0[0].device
        g_cur, maps, obj, _ = self._gradient_pass(ctx, x_prev, run)
        steps[run] += 1
        if warn:
            warn_zero_gradient(g_cur, "L2TopKAttack objective", stacklevel=6)
        gnorm = norm_of(g_cur, "l2")
        alpha = torch.where(gnorm > 0, ctx.rho[run] / torch.where(gnorm > 0, gnorm, torch.ones_like(gnorm)), torch.zeros_like(gnorm))
        m = run.shape[0]
        p = torch.ones(m, dtype=torch.long, device=device)
        retries = torch.zeros(m, dtype=torch.long, device=device)
        pending = torch.ones(m, dtype=torch.bool, device=device)
        while bool(pending.any()):
            pi = torch.nonzero(pending).squeeze(1)
            idx = run[pi]
            # ascent on D = descent on the top-k mass
            moved = tuple(xp[pi] - per_example(alpha[pi], xp) * g[pi] for xp, g in zip(x_prev, g_cur))
            x0i = tuple(c[idx] for c in x0)
            proposal = self._keep_padding(x0i, project(x0i, moved, ctx.rho[idx], "l2", ctx.bounds), self._mask_of(ctx, idx))
            ok = predict(self.model, proposal, index_args(ctx.args, idx, b)) == ctx.pred0[idx]
            retries[pi] += (~ok).long()
            alpha[pi] = torch.where(ok, alpha[pi], alpha[pi] / 2)
            stuck = ~ok & (retries[pi] > self.max_backtracks)
            take = ok | stuck
            acc = pi[take]
            if acc.numel() == 0:
                continue
            new_points = tuple(
                torch.where(per_example(stuck[take], q).to(torch.bool), xp[acc], q[take])
                for q, xp in zip(proposal, x_prev)
            )
            for xp, q in zip(x_prev, new_points):
                xp[acc] = q
            more = p[acc] < self.n_iterations
            grad_pos, last_pos = acc[more], acc[~more]
            if grad_pos.numel():
                pts = tuple(xp[grad_pos] for xp in x_prev)
                g_new, maps, obj, _ = self._gradient_pass(ctx, pts, run[grad_pos])
                for gc, gn in zip(g_cur, g_new):
                    gc[grad_pos] = gn
                self._observe(ctx, tracker, self.select_by, pts, run[grad_pos], steps[run[grad_pos]], maps, obj)
                steps[run[grad_pos]] += 1
            if last_pos.numel():
                last = tuple(xp[last_pos] for xp in x_prev)
                self._observe(ctx, tracker, self.select_by, last, run[last_pos], steps[run[last_pos]])
            pa = p[acc].to(alpha.dtype)
            alpha[acc] = pa * alpha[acc] / (pa + 1)
            p[acc] += 1
            retries[acc] = 0
            pending[acc[p[acc] > self.n_iterations]] = False
