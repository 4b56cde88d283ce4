r"""Boopathy et al.'s interpretability sneaking attack (ISA, eq. 6 and App. B, with the bisections).

Boopathy, Liu, Zhang, Liu, Chen, Chen, Daniel, "Proper Network Interpretability Helps
Adversarial Robustness in Classification", ICML 2020.

The two bisections, per example and batched:

1. the smallest successful perturbation size :math:`\epsilon^*`: the pure misclassification
   attack (:math:`\gamma = 0`) is run at ``eps_max`` (examples failing there fail) and then
   ``n_eps_rounds`` times at the midpoint of the bracket ``[lo, hi]``, success lowering
   ``hi``; :math:`\epsilon^* = hi`, within ``eps_max / 2**n_eps_rounds`` of the smallest size
   at which this attack succeeds *when success is monotone in* :math:`\epsilon`. It need not be
   (a larger ball changes the step size and the path, so a size can fail between two that
   succeed; ``tests/robust/attacks/test_isa.py`` builds such a model), so the attack then tries
   ``n_monotone_checks`` sizes below :math:`\epsilon^*`, at :math:`(1 - 2^{-j})\,\epsilon^*`
   for :math:`j = 1, \dots` (0.5, 0.75, 0.875, ... of it): where one succeeds, success is not
   monotone for that example, the result's ``non_monotone`` is True and :math:`\epsilon^*`
   becomes the smallest successful size found (with its iterate). The check can miss a
   success between the points tried; ``non_monotone=False`` means none was found;
2. at :math:`\epsilon = ` ``eps_multiple`` :math:`\cdot\,\epsilon^*`, the discrepancy weight
   :math:`\gamma`, as the authors' code: starting at ``initial_weight``, a success raises the
   lower end (and multiplies :math:`\gamma` by 10 while no failure bounds it), a failure
   lowers the upper end; ``n_weight_rounds`` rounds.

Boopathy et al. ran 10 rounds of each bisection with 10 steps per inner run,
:math:`\tau = 0.1`, and report NDS at :math:`\epsilon^*` and :math:`1.6\,\epsilon^*`
(``eps_multiple``; their normalized slope is
:func:`~captum_robust.robust.discrepancy.normalized_slope` of the two).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from captum.log import log_usage
from torch import Tensor

from captum_robust._utils.geometry import BoundType, Tensors, check_norm, detach_all, project, random_in_ball
from captum_robust._utils.geometry import steepest_step
from captum_robust._utils.validation import TargetType, TensorOrTuple, check_bool, check_int, check_positive
from captum_robust._utils.validation import resolve_target
from captum_robust.robust.attacks._adapter import apply_preparation
from captum_robust.robust.attacks._base import AttackCall, attack_mode, finite_rows, forward, index_args, input_gradients, progress
from captum_robust.robust.attacks._loop import sign_step_loop
from captum_robust.robust.attacks._map_attack import MapAttack, _Context
from captum_robust.robust.attacks._results import ISAResult
from captum_robust.robust.attacks.aai import other_max
from captum_robust.robust.discrepancy import lp_discrepancy, normalized_discrepancy_score

__all__ = ["ISA"]


class ISA(MapAttack):
    r"""Interpretability sneaking attack (Boopathy et al. 2020, eq. 6 and App. B): a targeted
    misclassification whose maps stay as close as possible to the clean ones.

    For the clean class :math:`y`, the target :math:`y'` and :math:`\gamma = 1/\lambda`,

    .. math::

        \min_{\lVert\delta\rVert \le \epsilon}\;
            \max\{\max_{j \ne y'} f_j(x+\delta) - f_{y'}(x+\delta),\, -\tau\}
            + \gamma\, \mathcal{D}_{2,\ell_1}(x, x + \delta),
        \qquad \mathcal{D}_{2,\ell_1} = \tfrac12 \sum_{c \in \{y, y'\}} \lVert I(x, c) - I(x+\delta, c) \rVert_1,

    (eq. 6 divided by :math:`\lambda`), solved with ``n_iterations`` sign steps of size
    ``step_fraction * eps`` (PGD). An iterate *succeeds* when the real model gives the target a
    margin :math:`f_{y'} - \max_{j \ne y'} f_j \ge \tau`. Two bisections (module docstring) find
    the smallest successful :math:`\epsilon^*` and then the weight :math:`\gamma` at
    ``eps_multiple`` :math:`\cdot\,\epsilon^*`; the returned input is the successful iterate with
    the smallest :math:`\mathcal{D}_{2,\ell_1}` (real model's maps) over both, with its
    normalized discrepancy score (NDS, App. B).

    Args:
        attribution: CAM in the paper; its maps of :math:`y` and :math:`y'` are compared.
        eps_max (float): upper end of the :math:`\epsilon` search, > 0. Default 0.3.
        eps_multiple (float): :math:`\epsilon / \epsilon^*` of the second phase, >= 1. Default 1.
        tau (float): the margin :math:`\tau > 0`. Default 0.1.
        n_iterations (int): steps per inner run, >= 1. Default 10.
        step_fraction (float): step size as a fraction of each example's :math:`\epsilon`, > 0. Default 0.25.
        n_eps_rounds, n_weight_rounds (int): rounds of the first and second bisection, >= 0. Default 10.
        initial_weight (float): the first :math:`\gamma` tried, > 0. Default 1.
        p (int): the norm of the discrepancy, 1 (eq. 4, default) or 2.
        norm (str): ``"linf"`` (default) or ``"l2"`` (then the step is along the normalized gradient).
        random_start (bool): random start of each inner run. Default False (keeps the bisection consistent).
        n_monotone_checks (int): sizes below :math:`\epsilon^*` tried after the first bisection
            to detect success that is not monotone in :math:`\epsilon` (module docstring), >= 0.
            Default 4 (0: no check).

    See :class:`~captum_robust.robust.attacks._map_attack.MapAttack` for the other arguments
    (``map_preparation`` defaults to ``None`` here; the measure is Kendall's tau).

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import CAM
        >>> from captum_robust.robust.attacks import ISA
        >>> model = Small().eval()
        >>> x = torch.rand(4, 1, 28, 28)
        >>> isa = ISA(model, CAM(model, model.feature_layer, model.classifier), n_eps_rounds=4, n_weight_rounds=3)
        >>> target = (model(x).argmax(1) + 1) % 10
        >>> x_adv, result = isa.perturb(x, target=target)
        >>> result.eps_star.shape, result.discrepancy.shape
        (torch.Size([4]), torch.Size([4]))
    """

    def __init__(
        self, model: Callable[..., Any], attribution: Any, eps_max: float = 0.3, eps_multiple: float = 1.0,
        tau: float = 0.1, n_iterations: int = 10, step_fraction: float = 0.25, n_eps_rounds: int = 10,
        n_weight_rounds: int = 10, initial_weight: float = 1.0, *, p: int = 1, norm: str = "linf",
        random_start: bool = False, n_monotone_checks: int = 4, map_preparation: Any = None, surrogate: Optional[Callable[..., Any]] = None,
        clip_min: BoundType = 0.0, clip_max: BoundType = 1.0, attribution_kwargs: Optional[Dict[str, Any]] = None,
        gradient_attribution_kwargs: Optional[Dict[str, Any]] = None, noise_seed: int = 0,
    ) -> None:
        super().__init__(
            model, attribution, surrogate=surrogate, measure="kendall", map_preparation=map_preparation,
            clip_min=clip_min, clip_max=clip_max, attribution_kwargs=attribution_kwargs,
            gradient_attribution_kwargs=gradient_attribution_kwargs, noise_seed=noise_seed,
        )
        self.eps_max = check_positive(eps_max, "eps_max")
        self.eps_multiple = check_positive(eps_multiple, "eps_multiple")
        if self.eps_multiple < 1:
            raise ValueError(
                f"eps_multiple must be >= 1 (the second phase searches around eps_star), got {eps_multiple!r}"
            )
        self.tau = check_positive(tau, "tau")
        self.n_iterations = check_int(n_iterations, "n_iterations", 1)
        self.step_fraction = check_positive(step_fraction, "step_fraction")
        self.n_eps_rounds = check_int(n_eps_rounds, "n_eps_rounds", 0)
        self.n_weight_rounds = check_int(n_weight_rounds, "n_weight_rounds", 0)
        self.initial_weight = check_positive(initial_weight, "initial_weight")
        if isinstance(p, bool) or p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got p={p!r}")
        self.p = int(p)
        self.norm = check_norm(norm)
        self.random_start = check_bool(random_start, "random_start")
        self.n_monotone_checks = check_int(n_monotone_checks, "n_monotone_checks", 0)

    # ------------------------------------------------------------------ pieces

    def _objective(self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context) -> Tensor:
        return torch.zeros(prepared.shape[0], dtype=prepared.dtype, device=prepared.device)  # unused

    def _two_class_maps(self, ctx: _Context, xs: Tensors, idx: Tensor, create_graph: bool) -> Tensor:
        """Prepared maps of y and y' stacked: B' x 2 x n."""
        args = index_args(ctx.args, idx, ctx.batch)
        parts = []
        for cls in (ctx.label[idx], ctx.adv[idx]):
            maps = self.adapter.maps(xs, ctx.is_tuple, cls, args, create_graph=create_graph, generator=ctx.generator)
            prepared = apply_preparation(self._prepare, maps)
            parts.append(prepared.reshape(prepared.shape[0], -1))
        return torch.stack(parts, dim=1)

    def _margin(self, logits: Tensor, adv: Tensor) -> Tensor:
        """``f_{y'} - max_{j != y'} f_j``."""
        return logits.gather(1, adv[:, None]).squeeze(1) - other_max(logits, adv)

    def _run(
        self, ctx: _Context, idx: Tensor, eps: Tensor, gamma: Optional[Tensor]
    ) -> Tuple[Tensor, Tensors, Tensor, Tensor]:
        """One batched inner PGD run for the examples ``idx`` (their own eps and gamma).

        Returns the success flags, the chosen successful iterates (the start where none), their
        discrepancy (inf where none; 0 when gamma is None) and the step they were found at."""
        x0 = tuple(x[idx] for x in ctx.x0)
        args = index_args(ctx.args, idx, ctx.batch)
        adv = ctx.adv[idx]
        alpha = self.step_fraction * eps
        clean2 = ctx.clean2[idx] if gamma is not None else None
        n = idx.shape[0]
        found = torch.zeros(n, dtype=torch.bool, device=eps.device)
        x_found = tuple(c.clone() for c in x0)
        d_found = torch.full((n,), float("inf"), dtype=eps.dtype, device=eps.device)
        step_found = torch.zeros(n, dtype=torch.long, device=eps.device)
        grad_model = self.surrogate if self.surrogate is not None else self.model

        def gradient(x: Tensors) -> Tuple[Tensors, Any]:
            """The gradient of the loss; the real model's logits and the maps when reusable."""
            xg = tuple(v.detach().requires_grad_(True) for v in x)
            reuse_maps = None
            with torch.enable_grad():
                logits = forward(grad_model, xg, args)
                loss = (-self._margin(logits, adv)).clamp_min(-self.tau)
                if gamma is not None:
                    stacked = self._two_class_maps(ctx, xg, idx, create_graph=True)
                    d = lp_discrepancy(clean2, stacked, p=self.p)
                    loss = loss + gamma.to(d.dtype) * d
                    reuse_maps = stacked.detach()
                grads, _ = input_gradients(loss, xg)
            return grads, (logits.detach() if self.surrogate is None else None, reuse_maps)

        def step(x: Tensors, grads: Tensors) -> Tensors:
            return project(x0, steepest_step(detach_all(x), tuple(-g for g in grads), alpha, self.norm), eps, self.norm, ctx.bounds)

        def observe(x: Tensors, t: int, info: Any) -> None:
            """Keep each example's first success (gamma None) or its successful iterate of least discrepancy."""
            logits, maps = info if info is not None else (None, None)
            xd = detach_all(x)
            if logits is None:
                with torch.no_grad():
                    logits = forward(self.model, xd, args)
            success = (self._margin(logits, adv) >= self.tau) & finite_rows(logits)
            if gamma is not None:
                if maps is None or not self.adapter.reusable:
                    with torch.no_grad():
                        maps = self._two_class_maps(ctx, xd, idx, create_graph=False)
                with torch.no_grad():
                    d_now = lp_discrepancy(clean2, maps, p=self.p)
                better = success & (d_now < d_found)
            else:
                d_now = torch.zeros(n, dtype=eps.dtype, device=eps.device)
                better = success & ~found
            rows = torch.nonzero(better).squeeze(1)
            if rows.numel():
                for mine, new in zip(x_found, xd):
                    mine[rows] = new[rows]
                d_found[rows] = d_now[rows].to(d_found.dtype)
                step_found[rows] = t
                found[rows] = True

        start = random_in_ball(x0, eps, self.norm, ctx.bounds, ctx.generator) if self.random_start else x0
        sign_step_loop(start, self.n_iterations, gradient, step, observe, observe_start=self.random_start)
        return found, x_found, d_found, step_found

    def _eps_bisection(self, ctx: _Context, steps: Tensor, bar: Any) -> Tuple[Tensor, Tensor, Tensors, Tensor, Tensor]:
        """Phase 1: the smallest successful eps (gamma = 0). Returns the success at eps_max, the
        upper ends ``hi`` (eps_star where successful), the best iterates, their steps and where
        a size below the bisection's answer succeeded too (success not monotone in eps)."""
        b, device, dtype = ctx.batch, ctx.x0[0].device, ctx.x0[0].dtype
        all_idx = torch.arange(b, device=device)
        hi = torch.full((b,), self.eps_max, dtype=dtype, device=device)
        lo = torch.zeros(b, dtype=dtype, device=device)
        ok, x_star, _, step_star = self._run(ctx, all_idx, hi, None)
        best_step = step_star + steps
        steps += self.n_iterations
        bar.update(1)
        x_best = tuple(c.clone() for c in x_star)
        active = torch.nonzero(ok).squeeze(1)
        for _ in range(self.n_eps_rounds):
            if active.numel() == 0:
                break
            mid = (lo[active] + hi[active]) / 2
            success = self._try_size(ctx, active, mid, hi, x_best, best_step, steps, bar)
            lo[active[~success]] = mid[~success]
        non_monotone = self._monotone_checks(ctx, ok, hi, x_best, best_step, steps, bar)
        return ok, hi, x_best, best_step, non_monotone

    def _monotone_checks(
        self, ctx: _Context, ok: Tensor, hi: Tensor, x_best: Tensors, best_step: Tensor, steps: Tensor, bar: Any
    ) -> Tensor:
        """Try ``(1 - 2**-j) * eps_star``, j = 1..n_monotone_checks, for the successful examples;
        where one succeeds, lower ``hi`` (and ``x_best``, ``best_step``) in place to the smallest
        such size. Returns the per-example flag: success is not monotone in eps."""
        non_monotone = torch.zeros_like(ok)
        active = torch.nonzero(ok).squeeze(1)
        if active.numel() == 0 or self.n_monotone_checks == 0:
            bar.update(self.n_monotone_checks)
            return non_monotone
        eps_star = hi[active].clone()
        for j in range(self.n_monotone_checks, 0, -1):  # largest size first: the last success is the smallest
            size = eps_star * (1.0 - 2.0 ** -j)
            success = self._try_size(ctx, active, size, hi, x_best, best_step, steps, bar)
            non_monotone[active[success]] = True
        return non_monotone

    def _try_size(
        self, ctx: _Context, active: Tensor, size: Tensor, hi: Tensor, x_best: Tensors, best_step: Tensor,
        steps: Tensor, bar: Any,
    ) -> Tensor:
        """One run of the pure misclassification attack at ``size`` for the examples ``active``;
        where it succeeds, ``hi`` becomes ``size`` and its iterate and step are kept (in place).
        Returns the success of each active example."""
        success, x_s, _, s_step = self._run(ctx, active, size, None)
        won = active[success]
        hi[won] = size[success]
        for mine, new in zip(x_best, x_s):
            mine[won] = new[success]
        best_step[won] = steps[won] + s_step[success]
        steps[active] += self.n_iterations
        bar.update(1)
        return success

    def _weight_bisection(
        self, ctx: _Context, ok: Tensor, eps2: Tensor, x_best: Tensors, best_step: Tensor, steps: Tensor, bar: Any
    ) -> Tensor:
        """Phase 2: the discrepancy weight at ``eps2``; updates ``x_best``, ``best_step`` and
        ``steps`` in place and returns the largest successful weight (0 where none)."""
        b, device, dtype = ctx.batch, ctx.x0[0].device, ctx.x0[0].dtype
        active = torch.nonzero(ok).squeeze(1)
        d_best = torch.full((b,), float("inf"), dtype=dtype, device=device)
        if active.numel():
            with torch.no_grad():
                stacked = self._two_class_maps(ctx, tuple(x[active] for x in x_best), active, create_graph=False)
                d_best[active] = lp_discrepancy(ctx.clean2[active], stacked, p=self.p).to(dtype)
        g_lo = torch.zeros(b, dtype=dtype, device=device)
        g_hi = torch.full((b,), float("inf"), dtype=dtype, device=device)
        gamma = torch.full((b,), self.initial_weight, dtype=dtype, device=device)
        for _ in range(self.n_weight_rounds):
            if active.numel() == 0:
                break
            success, x_s, d_s, s_step = self._run(ctx, active, eps2[active], gamma[active])
            won, lost = active[success], active[~success]
            g_lo[won] = gamma[won]
            g_hi[lost] = gamma[lost]
            improve = success & (d_s < d_best[active])
            rows = active[improve]
            for mine, new in zip(x_best, x_s):
                mine[rows] = new[improve]
            d_best[rows] = d_s[improve].to(dtype)
            best_step[rows] = steps[rows] + s_step[improve]
            steps[active] += self.n_iterations
            unbounded = torch.isinf(g_hi)
            gamma = torch.where(unbounded, gamma * 10, (g_lo + g_hi) / 2)
            bar.update(1)
        return g_lo

    # ------------------------------------------------------------------ perturb

    @log_usage()
    def perturb(
        self, inputs: TensorOrTuple, target: TargetType, additional_forward_args: Any = None, label: TargetType = None,
        generator: Optional[torch.Generator] = None, show_progress: bool = False,
    ) -> Tuple[TensorOrTuple, ISAResult]:
        r"""Run the two bisections (ISA's own signature: the target is required, and ``label``
        names the clean class).

        Args:
            inputs (Tensor or tuple[Tensor, ...]): clean inputs, batch first, inside the box.
            target (int, list[int] or Tensor): :math:`y'`, the class to reach (required).
            additional_forward_args (Any, optional): extra model arguments.
            label (int, list[int], Tensor or None): :math:`y`, the clean class whose map is
                compared too; default the model's prediction. Must differ from ``target``.
            generator (torch.Generator, optional): randomness of random starts and noisy
                attributions.
            show_progress (bool): a tqdm bar over the bisection rounds.

        Returns:
            (Tensor or tuple[Tensor, ...], ISAResult): the perturbed inputs (the clean input
            where the attack failed at ``eps_max``) and the per-example results.

        Raises:
            ValueError: no target, ``target == label`` for some example, a target of the wrong
                length or out of range, inputs outside the box.
        """
        check_bool(show_progress, "show_progress")
        if target is None:
            raise ValueError("ISA is a targeted attack: pass target=, the class y' to reach")
        call = AttackCall(inputs, target, additional_forward_args, generator, show_progress, {"label": label})
        return self._perturb(call)

    def _attack(self, call: AttackCall) -> Tuple[TensorOrTuple, ISAResult]:
        with attack_mode(self.model, self.surrogate):
            ctx = self._context(call, call.options.get("label"))
            b, device = ctx.batch, ctx.x0[0].device
            ctx.label = ctx.target  # the clean class y, resolved (default: the prediction)
            ctx.adv = resolve_target(call.target, b, ctx.logits0.shape[1], device)
            same = ctx.adv == ctx.label
            if bool(same.any()):
                raise ValueError(
                    f"target equals the clean class for example(s) {torch.nonzero(same).squeeze(1).tolist()[:10]}; "
                    "ISA needs a different target class y'"
                )
            all_idx = torch.arange(b, device=device)
            with torch.no_grad():
                ctx.clean2 = self._two_class_maps(ctx, ctx.x0, all_idx, create_graph=False)
            steps = torch.zeros(b, dtype=torch.long, device=device)
            total = 1 + self.n_eps_rounds + self.n_monotone_checks + self.n_weight_rounds
            with progress(total, call.show_progress, "ISA") as bar:
                ok, hi, x_best, best_step, non_monotone = self._eps_bisection(ctx, steps, bar)
                eps_star = torch.where(ok, hi, torch.full_like(hi, float("inf")))
                eps2 = torch.where(ok, self.eps_multiple * hi, torch.full_like(hi, float("nan")))
                weight = self._weight_bisection(ctx, ok, eps2, x_best, best_step, steps, bar)
            with torch.no_grad():
                pred = forward(self.model, x_best, ctx.args).argmax(dim=1)
                final2 = self._two_class_maps(ctx, x_best, all_idx, create_graph=False)
                discrepancy = lp_discrepancy(ctx.clean2, final2, p=self.p)
                nds = normalized_discrepancy_score(ctx.clean2, final2, p=self.p)
            nan = torch.full_like(discrepancy, float("nan"))
            return self._finish(
                ISAResult, x_best, ctx.x0, ctx.is_tuple, accepted=ok, steps=steps, best_step=best_step,
                predictions=pred, clean_predictions=ctx.pred0, eps_star=eps_star, eps=eps2, weight=weight,
                discrepancy=torch.where(ok, discrepancy, nan), nds=torch.where(ok, nds, nan),
                non_monotone=non_monotone,
            )
