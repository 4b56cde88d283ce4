r"""Boopathy et al.'s attacks: the attack against interpretability (AAI, eq. 15 and its top-k
variant) and the interpretability sneaking attack (ISA, eq. 6, with the bisections).

Boopathy, Liu, Zhang, Liu, Chen, Chen, Daniel, "Proper Network Interpretability Helps
Adversarial Robustness in Classification", ICML 2020.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor

from captum_robust._utils.validation import TargetType, TensorOrTuple, check_int_range, resolve_target
from captum_robust.robust.attacks.base import (
    AttributionAttackResult,
    BoundType,
    ISAResult,
    IterativeMapAttack,
    MapAttack,
    Tensors,
    _Context,
    apply_preparation,
    attack_mode,
    check_bool,
    check_nonneg_float,
    check_norm,
    check_pos_float,
    detach_all,
    forward,
    index_args,
    input_gradients,
    norm_of,
    progress,
    project,
    random_in_ball,
    steepest_step,
    unformat,
)
from captum_robust.robust.discrepancy import lp_discrepancy, normalized_discrepancy_score, topk_mask

__all__ = ["AAI", "ISA"]

_VARIANTS = ("topk", "l1")


def _other_max(logits: Tensor, cls: Tensor) -> Tensor:
    """``max_{j != cls} f_j``."""
    own = F.one_hot(cls, logits.shape[1]).to(torch.bool)
    return logits.masked_fill(own, float("-inf")).amax(dim=1)


class AAI(IterativeMapAttack):
    r"""Attack against interpretability (Boopathy et al. 2020, App. C, eq. 15): change the map
    of the true class while keeping the prediction.

    ``variant="l1"`` solves eq. 15,

    .. math::

        \min_{\lVert\delta\rVert_\infty \le \epsilon}\;
            \lambda \max\{\max_{j \ne y} f_j(x+\delta) - f_y(x+\delta),\, 0\}
            - \lVert I(x, y) - I(x + \delta, y) \rVert_1 ,

    the hinge (weight :math:`\lambda`, ``hinge_weight``) pushing back towards the prediction
    :math:`y`. ``variant="topk"`` (the default, the objective the authors' code ships)
    replaces the discrepancy by the map's mass on the :math:`K` cells where the clean map is
    largest:

    .. math::

        \min_{\lVert\delta\rVert_\infty \le \epsilon}\;
            \lambda \max\{\max_{j \ne y} f_j(x+\delta) - f_y(x+\delta),\, 0\}
            + \sum_{p \in T_K(I(x, y))} I(x + \delta, y)_p .

    Both take sign steps from a random start (at :math:`\delta = 0` the :math:`\ell_1` term has a
    zero subgradient), reject iterates whose prediction changed, and return the accepted
    iterate with the lowest Kendall's :math:`\tau` between the clean and the adversarial map
    (``measure``), which is what Boopathy et al. report (Table 3: on raw CAM, over 200 test
    points, unchanged predictions only). Paper settings: CAM of the true class on the raw
    feature-resolution map (``map_preparation=None``, the default here), :math:`K = 8`, 200
    steps of 0.01, :math:`\epsilon` up to 0.3 on MNIST. The paper does not give :math:`\lambda`.

    *Deviation, on purpose:* the authors' top-k code has no hinge (``hinge_weight=0``
    reproduces it). Decreasing the top cells of the true-class CAM decreases the true logit
    (CAM sums to it), so without the hinge the prediction flips within a few steps and, with
    the rejection of such iterates, the attack stops improving (measured on a trained digits
    ``Small`` at :math:`\epsilon = 0.3`: mean Kendall 0.83 without the hinge, 0.09 with
    :math:`\lambda = 1`; ``benchmarks/README_attacks.md``). The default therefore keeps eq. 15's
    hinge, :math:`\lambda = 1`, in both variants.

    Args:
        model (nn.Module or callable): the classifier.
        attribution: an attribution of :mod:`captum_robust.attr` built on ``model`` (CAM by
            default in the paper; CAM is a forward computation, so no surrogate is needed) or
            a callable ``(model, inputs, target) -> maps``.
        eps (float): :math:`\epsilon \ge 0`. Default 0.3.
        step_size (float): > 0. Default 0.01.
        n_iterations (int): >= 1. Default 200.
        variant (str): ``"topk"`` (default) or ``"l1"``.
        k (int): :math:`K` of the top-k variant. Default 8.
        hinge_weight (float): :math:`\lambda \ge 0`. Default 1.
        random_start (bool): Default True.
        norm (str): ``"linf"`` (default) or ``"l2"``.
        measure (str or callable): default ``"kendall"``; see :class:`TopKAttack`.
        measure_k (int, optional): ``k`` when ``measure="topk"``.
        select_by (str): ``"similarity"`` (default) or ``"objective"``.
        map_preparation: default ``None`` (raw maps); see :class:`TopKAttack`.
        surrogate, clip_min, clip_max, attribution_kwargs, gradient_attribution_kwargs, noise_seed: as in :class:`TopKAttack`.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import CAM
        >>> from captum_robust.robust.attacks import AAI
        >>> model = Small().eval()
        >>> cam = CAM(model, model.feature_layer, model.classifier)
        >>> attack = AAI(model, cam, eps=0.3, n_iterations=20)
        >>> x_adv, result = attack.perturb(torch.rand(4, 1, 28, 28),
        ...                                generator=torch.Generator().manual_seed(0))
        >>> kendall = result.similarity        # Kendall's tau of the raw CAM, per example
    """

    def __init__(
        self,
        model: Callable[..., Any],
        attribution: Any,
        eps: float = 0.3,
        step_size: float = 0.01,
        n_iterations: int = 200,
        variant: str = "topk",
        k: int = 8,
        hinge_weight: float = 1.0,
        *,
        random_start: bool = True,
        measure: Any = "kendall",
        select_by: str = "similarity",
        map_preparation: Any = None,
        **kwargs: Any,
    ) -> None:
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        self.variant = variant
        self.k = check_int_range(k, "k", 1)
        self.hinge_weight = check_nonneg_float(hinge_weight, "hinge_weight")
        self._needs_logits = self.hinge_weight > 0
        super().__init__(
            model, attribution, eps, step_size, n_iterations,
            random_start=random_start, measure=measure, select_by=select_by,
            map_preparation=map_preparation, **kwargs,
        )

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        if self.variant == "topk":
            n = ctx.clean_prepared[0].numel()
            if self.k > n:
                raise ValueError(f"k must be in [1, {n}] (the number of elements of a prepared map), got k={self.k}")
            return {"mask": topk_mask(ctx.clean_prepared, self.k).to(ctx.clean_prepared.dtype)}
        return {"clean": ctx.clean_prepared}

    def _objective(self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context) -> Tensor:
        b = prepared.shape[0]
        if self.variant == "topk":
            value = (prepared * state["mask"]).reshape(b, -1).sum(dim=1)
        else:
            value = -(state["clean"] - prepared).reshape(b, -1).abs().sum(dim=1)
        if self.hinge_weight > 0:
            assert logits is not None
            y = ctx.target
            hinge = (_other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)).clamp_min(0.0)
            value = value + self.hinge_weight * hinge.to(value.dtype)
        return value

    @log_usage()
    def perturb(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        generator: Optional[torch.Generator] = None,
        show_progress: bool = False,
    ) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        r"""Run the attack.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): clean inputs, batch first, inside the box.
            target (int, list[int], Tensor or None): :math:`y`, the class whose map is attacked
                (and kept by the hinge); ``None``: the model's prediction.
                Iterates are accepted only where the *prediction* is unchanged.
            additional_forward_args (Any, optional): extra model arguments.
            generator (torch.Generator, optional): randomness of the random start (and of a
                noisy attribution's gradient passes).
            show_progress (bool): a tqdm bar over the iterations.

        Returns:
            (Tensor or tuple[Tensor, ...], AttributionAttackResult): the perturbed inputs and
            the per-example results (``similarity``: Kendall's tau by default).
        """
        return self._perturb(inputs, target, additional_forward_args, generator, show_progress)


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
    margin of at least :math:`\tau`: :math:`f_{y'} - \max_{j \ne y'} f_j \ge \tau` (the hinge is
    at :math:`-\tau`). Two bisections, per example and batched:

    1. the smallest successful perturbation size :math:`\epsilon^*`: the pure misclassification
       attack (:math:`\gamma = 0`) is run at ``eps_max`` (examples failing there fail) and then
       ``n_eps_rounds`` times at the midpoint of the bracket ``[lo, hi]``, success lowering
       ``hi``; :math:`\epsilon^* = hi`, within ``eps_max / 2**n_eps_rounds`` of the smallest size
       at which this attack succeeds (when success is monotone in :math:`\epsilon`);
    2. at :math:`\epsilon = ` ``eps_multiple`` :math:`\cdot\,\epsilon^*`, the discrepancy weight
       :math:`\gamma`, as the authors' code: starting at ``initial_weight``, a success raises the
       lower end (and multiplies :math:`\gamma` by 10 while no failure bounds it), a failure
       lowers the upper end; ``n_weight_rounds`` rounds.

    The returned input is the successful iterate with the smallest :math:`\mathcal{D}_{2,\ell_1}`
    (on the real model's maps) over both phases; the result also gives its normalized
    discrepancy score (NDS, App. B). Boopathy et al. ran 10 rounds of each bisection with 10
    steps per inner run, :math:`\tau = 0.1`, and report NDS at :math:`\epsilon^*` and
    :math:`1.6\,\epsilon^*` (``eps_multiple``; their normalized slope is
    :func:`~captum_robust.robust.discrepancy.normalized_slope` of the two).

    Args:
        model (nn.Module or callable): the classifier.
        attribution: an attribution of :mod:`captum_robust.attr` (CAM in the paper) or a
            callable ``(model, inputs, target) -> maps``; its maps of :math:`y` and
            :math:`y'` are compared.
        eps_max (float): upper end of the :math:`\epsilon` search, > 0. Default 0.3.
        eps_multiple (float): :math:`\epsilon / \epsilon^*` of the second phase, >= 1. Default 1.
        tau (float): the margin :math:`\tau > 0`. Default 0.1.
        n_iterations (int): steps per inner run, >= 1. Default 10.
        step_fraction (float): step size as a fraction of each example's :math:`\epsilon`, > 0.
            Default 0.25.
        n_eps_rounds (int): rounds of the first bisection, >= 0. Default 10.
        n_weight_rounds (int): rounds of the second bisection, >= 0. Default 10.
        initial_weight (float): the first :math:`\gamma` tried, > 0. Default 1.
        p (int): the norm of the discrepancy, 1 (eq. 4, default) or 2.
        norm (str): ``"linf"`` (default) or ``"l2"`` (then the step is along the normalized gradient).
        random_start (bool): start each inner run at a random point of the ball. Default False
            (deterministic runs keep the bisection consistent).
        map_preparation: default ``None`` (raw maps); see :class:`TopKAttack`.
        surrogate, clip_min, clip_max, attribution_kwargs, gradient_attribution_kwargs, noise_seed: as in :class:`TopKAttack`.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import CAM
        >>> from captum_robust.robust.attacks import ISA
        >>> model = Small().eval()
        >>> isa = ISA(model, CAM(model, model.feature_layer, model.classifier),
        ...           eps_max=0.3, n_eps_rounds=4, n_weight_rounds=3)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> target = (model(x).argmax(1) + 1) % 10
        >>> x_adv, result = isa.perturb(x, target=target)
        >>> result.eps_star.shape, result.discrepancy.shape
        (torch.Size([4]), torch.Size([4]))
    """

    def __init__(
        self,
        model: Callable[..., Any],
        attribution: Any,
        eps_max: float = 0.3,
        eps_multiple: float = 1.0,
        tau: float = 0.1,
        n_iterations: int = 10,
        step_fraction: float = 0.25,
        n_eps_rounds: int = 10,
        n_weight_rounds: int = 10,
        initial_weight: float = 1.0,
        *,
        p: int = 1,
        norm: str = "linf",
        random_start: bool = False,
        map_preparation: Any = None,
        surrogate: Optional[Callable[..., Any]] = None,
        clip_min: BoundType = 0.0,
        clip_max: BoundType = 1.0,
        attribution_kwargs: Optional[Dict[str, Any]] = None,
        gradient_attribution_kwargs: Optional[Dict[str, Any]] = None,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(
            model, attribution, surrogate=surrogate, measure="kendall", map_preparation=map_preparation,
            clip_min=clip_min, clip_max=clip_max, attribution_kwargs=attribution_kwargs,
            gradient_attribution_kwargs=gradient_attribution_kwargs, noise_seed=noise_seed,
        )
        self.eps_max = check_pos_float(eps_max, "eps_max")
        self.eps_multiple = check_pos_float(eps_multiple, "eps_multiple")
        if self.eps_multiple < 1:
            raise ValueError(
                f"eps_multiple must be >= 1 (the second phase searches around eps_star), got {eps_multiple!r}"
            )
        self.tau = check_pos_float(tau, "tau")
        self.n_iterations = check_int_range(n_iterations, "n_iterations", 1)
        self.step_fraction = check_pos_float(step_fraction, "step_fraction")
        self.n_eps_rounds = check_int_range(n_eps_rounds, "n_eps_rounds", 0)
        self.n_weight_rounds = check_int_range(n_weight_rounds, "n_weight_rounds", 0)
        self.initial_weight = check_pos_float(initial_weight, "initial_weight")
        if isinstance(p, bool) or p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got p={p!r}")
        self.p = int(p)
        self.norm = check_norm(norm)
        self.random_start = check_bool(random_start, "random_start")

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
        return logits.gather(1, adv[:, None]).squeeze(1) - _other_max(logits, adv)

    def _run(
        self, ctx: _Context, idx: Tensor, eps: Tensor, gamma: Optional[Tensor]
    ) -> Tuple[Tensor, Tensors, Tensor, Tensor]:
        """One batched inner PGD run for the examples ``idx`` (their own eps and gamma).

        Returns the success flags, the chosen successful iterates (the start where none), their
        discrepancy (inf where none; 0 when gamma is None) and the step they were found at."""
        x0 = tuple(x[idx] for x in ctx.x0)
        args = index_args(ctx.args, idx, ctx.batch)
        adv = ctx.adv[idx]
        bounds = ctx.bounds
        alpha = self.step_fraction * eps
        clean2 = ctx.clean2[idx] if gamma is not None else None
        x = random_in_ball(x0, eps, self.norm, bounds, ctx.generator) if self.random_start else x0
        n = idx.shape[0]
        found = torch.zeros(n, dtype=torch.bool, device=eps.device)
        x_found = tuple(c.clone() for c in x0)
        d_found = torch.full((n,), float("inf"), dtype=eps.dtype, device=eps.device)
        step_found = torch.zeros(n, dtype=torch.long, device=eps.device)
        grad_model = self.surrogate if self.surrogate is not None else self.model
        for t in range(self.n_iterations + 1):
            reuse_logits = None
            reuse_maps = None
            if t < self.n_iterations:
                xg = tuple(v.detach().requires_grad_(True) for v in x)
                with torch.enable_grad():
                    logits = forward(grad_model, xg, args)
                    loss = (-self._margin(logits, adv)).clamp_min(-self.tau)
                    if gamma is not None:
                        stacked = self._two_class_maps(ctx, xg, idx, create_graph=True)
                        d = lp_discrepancy(clean2, stacked, p=self.p)
                        loss = loss + gamma.to(d.dtype) * d
                        reuse_maps = stacked.detach()
                    grads, _ = input_gradients(loss, xg)
                if self.surrogate is None:
                    reuse_logits = logits.detach()
            if t > 0 or self.random_start:
                xd = detach_all(x)
                if reuse_logits is None:
                    with torch.no_grad():
                        reuse_logits = forward(self.model, xd, args)
                success = self._margin(reuse_logits, adv) >= self.tau
                if gamma is not None:
                    if reuse_maps is None or not self.adapter.reusable:
                        with torch.no_grad():
                            reuse_maps = self._two_class_maps(ctx, xd, idx, create_graph=False)
                    with torch.no_grad():
                        d_now = lp_discrepancy(clean2, reuse_maps, p=self.p)
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
                    found |= better
            if t < self.n_iterations:
                x = project(x0, steepest_step(detach_all(x), tuple(-g for g in grads), alpha, self.norm), eps, self.norm, bounds)
        return found, x_found, d_found, step_found

    # ------------------------------------------------------------------ perturb

    @log_usage()
    def perturb(
        self,
        inputs: TensorOrTuple,
        target: TargetType,
        additional_forward_args: Any = None,
        label: TargetType = None,
        generator: Optional[torch.Generator] = None,
        show_progress: bool = False,
    ) -> Tuple[TensorOrTuple, ISAResult]:
        r"""Run the two bisections.

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
        with attack_mode(self.model, self.surrogate):
            ctx = self._context(inputs, label, additional_forward_args, generator)
            b, device, dtype = ctx.batch, ctx.x0[0].device, ctx.x0[0].dtype
            ctx.label = ctx.target
            ctx.adv = resolve_target(target, b, ctx.logits0.shape[1], device)
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
            total = 1 + self.n_eps_rounds + self.n_weight_rounds
            with progress(total, show_progress, "ISA") as bar:
                # phase 1: the smallest successful eps (gamma = 0)
                hi = torch.full((b,), self.eps_max, dtype=dtype, device=device)
                lo = torch.zeros(b, dtype=dtype, device=device)
                ok, x_star, _, step_star = self._run(ctx, all_idx, hi, None)
                step_star = step_star + steps
                steps += self.n_iterations
                bar.update(1)
                x_best = tuple(c.clone() for c in x_star)
                best_step = step_star.clone()
                active = torch.nonzero(ok).squeeze(1)
                for _ in range(self.n_eps_rounds):
                    if active.numel() == 0:
                        break
                    mid = (lo[active] + hi[active]) / 2
                    success, x_s, _, s_step = self._run(ctx, active, mid, None)
                    won, lost = active[success], active[~success]
                    hi[won] = mid[success]
                    lo[lost] = mid[~success]
                    for mine, new in zip(x_best, x_s):
                        mine[won] = new[success]
                    best_step[won] = steps[won] + s_step[success]
                    steps[active] += self.n_iterations
                    bar.update(1)
                eps_star = torch.where(ok, hi, torch.full_like(hi, float("inf")))
                eps2 = torch.where(ok, self.eps_multiple * hi, torch.full_like(hi, float("nan")))
                # phase 2: the discrepancy weight at eps_multiple * eps_star
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
            with torch.no_grad():
                pred = forward(self.model, x_best, ctx.args).argmax(dim=1)
                final2 = self._two_class_maps(ctx, x_best, all_idx, create_graph=False)
                discrepancy = lp_discrepancy(ctx.clean2, final2, p=self.p)
                nds = normalized_discrepancy_score(ctx.clean2, final2, p=self.p)
            nan = torch.full_like(discrepancy, float("nan"))
            result = ISAResult(
                accepted=ok,
                norm=norm_of([a - c for a, c in zip(x_best, ctx.x0)], self.norm),
                steps=steps,
                best_step=best_step,
                predictions=pred,
                clean_predictions=ctx.pred0,
                eps_star=eps_star,
                eps=eps2,
                weight=g_lo,
                discrepancy=torch.where(ok, discrepancy, nan),
                nds=torch.where(ok, nds, nan),
            )
        return unformat(x_best, ctx.is_tuple), result
