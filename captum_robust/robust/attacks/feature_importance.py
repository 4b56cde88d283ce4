r"""Ghorbani et al.'s iterative feature-importance attacks (IFIA) on attribution maps.

Ghorbani, Abid, Zou, "Interpretation of Neural Networks is Fragile", AAAI 2019; the
evaluation attack of Chen et al., "Robust Attribution Regularization", NeurIPS 2019.

All three attacks work on the saliency map :math:`S` of an attribution :math:`I`: the absolute
attribution summed over the channels and scaled to sum to the number of pixels (Chen's and
Ghorbani's convention, :func:`~captum_robust.robust.attacks.ghorbani_maps`), and take
:math:`\ell_\infty` sign steps that keep the predicted class:

* :class:`TopKAttack` decreases the mass of :math:`S(\tilde x)` on the top-k pixels of :math:`S(x)`;
* :class:`MassCenterAttack` moves the mass center of :math:`S(\tilde x)` away from that of :math:`S(x)`;
* :class:`TargetedAttributionAttack` increases the mass of :math:`S(\tilde x)` in a given region.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from captum.log import log_usage
from torch import Tensor

from captum_robust._utils.geometry import Tensors
from captum_robust._utils.validation import TargetType, TensorOrTuple, check_bool, check_int
from captum_robust.robust.attacks._base import AttackCall
from captum_robust.robust.attacks._map_attack import IterativeMapAttack, _Context
from captum_robust.robust.attacks._results import AttributionAttackResult
from captum_robust.robust.discrepancy import center_of_mass, topk_mask

__all__ = ["TopKAttack", "MassCenterAttack", "TargetedAttributionAttack"]


class TopKAttack(IterativeMapAttack):
    r"""Ghorbani et al.'s top-k attack: move the attribution mass off the clean top-k features.

    With :math:`S` the prepared saliency map and :math:`T_k` the indices of the :math:`k`
    largest entries of :math:`S(x)`, the attack decreases

    .. math::

        L(\tilde x) = \sum_{p \in T_k} S(\tilde x)_p
        \quad \text{s.t.} \quad \lVert \tilde x - x \rVert_\infty \le \epsilon,\;
        \tilde x \in [\text{clip\_min}, \text{clip\_max}],\;
        \arg\max f(\tilde x) = \arg\max f(x)

    with sign steps of size :math:`\alpha` (Ghorbani et al. 2019, sec. 3). Iterates
    whose prediction changed are rejected, and the accepted iterate with the lowest top-k
    intersection (``measure``) is returned. Chen et al.'s MNIST evaluation: Integrated
    Gradients, :math:`k = 200`, intersection measured at 100, :math:`\alpha = 0.01`, 100
    iterations, :math:`\epsilon = 0.3` (the defaults, with ``measure_k=100``).

    Args:
        k (int): size of the attacked top set :math:`T_k`. Default 200.
        measure_k (int, optional): ``k`` of the default ``"topk"`` measure; default ``k``.

    See :class:`~captum_robust.robust.attacks._map_attack.IterativeMapAttack` and
    :class:`~captum_robust.robust.attacks._map_attack.MapAttack` for the common arguments.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import BatchedIntegratedGradients
        >>> from captum_robust.robust.attacks import TopKAttack, softplus_surrogate
        >>> model = Small().eval()
        >>> ig = BatchedIntegratedGradients(model)
        >>> attack = TopKAttack(model, ig, k=200, measure_k=100, eps=0.3, n_iterations=5,
        ...                     surrogate=softplus_surrogate(model),
        ...                     attribution_kwargs={"n_steps": 8, "method": "riemann_middle"})
        >>> x_adv, result = attack.perturb(torch.rand(4, 1, 28, 28))
        >>> result.similarity.shape            # top-100 intersection of each example
        torch.Size([4])

    Token models: ``TopKAttack(model, Saliency(model), k=3, eps=0.5, norm="l2",
    embedding_layer=model.bert.embeddings)`` attacks ``B x T`` token ids in the space of the
    embedding output (see "Token models" in :class:`~captum_robust.robust.attacks._map_attack.MapAttack`).
    """

    _token_support = True

    def __init__(
        self, model: Callable[..., Any], attribution: Any, k: int = 200, eps: float = 0.3, step_size: float = 0.01,
        n_iterations: int = 100, *, measure: Any = "topk", measure_k: Optional[int] = None,
        select_by: str = "similarity", map_preparation: Any = "ghorbani", **kwargs: Any,
    ) -> None:
        self.k = check_int(k, "k", 1)
        super().__init__(
            model, attribution, eps, step_size, n_iterations, measure=measure,
            measure_k=self.k if measure_k is None else measure_k, select_by=select_by, map_preparation=map_preparation,
            **kwargs,
        )

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        self._check_k(ctx)
        top = topk_mask(ctx.clean_prepared, self.k, mask=ctx.token_mask)  # padding never in the top-k
        return {"mask": top.to(ctx.clean_prepared.dtype)}

    def _objective(self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context) -> Tensor:
        return (prepared * state["mask"]).reshape(prepared.shape[0], -1).sum(dim=1)


class MassCenterAttack(IterativeMapAttack):
    r"""Ghorbani et al.'s mass-center attack: move the center of the attribution mass.

    With :math:`C(S) = \sum_p S_p\, p / \sum_p S_p` the mass center of the prepared map (in
    pixel coordinates), the attack decreases

    .. math::

        L(\tilde x) = -\lVert C(S(\tilde x)) - C(S(x)) \rVert_2^2

    under the constraints of :class:`TopKAttack`, and returns the accepted iterate with the
    largest center dislocation (``select_by="objective"``; its ``objective`` is minus the
    squared dislocation). The prepared map must have the spatial dimensions only
    (``B x H x W`` after the default channel sum), so the attribution must return one map.

    See :class:`~captum_robust.robust.attacks._map_attack.IterativeMapAttack` and
    :class:`~captum_robust.robust.attacks._map_attack.MapAttack` for the common arguments
    (here ``measure="kendall"``, ``select_by="objective"``).

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import BatchedIntegratedGradients
        >>> from captum_robust.robust.attacks import MassCenterAttack, softplus_surrogate
        >>> model = Small().eval()
        >>> attack = MassCenterAttack(model, BatchedIntegratedGradients(model), n_iterations=5,
        ...                           surrogate=softplus_surrogate(model),
        ...                           attribution_kwargs={"n_steps": 8})
        >>> x_adv, result = attack.perturb(torch.rand(2, 1, 28, 28))
        >>> dislocation = (-result.objective).sqrt()     # pixels
    """

    def __init__(
        self, model: Callable[..., Any], attribution: Any, eps: float = 0.3, step_size: float = 0.01,
        n_iterations: int = 100, *, measure: Any = "kendall", select_by: str = "objective",
        map_preparation: Any = "ghorbani", **kwargs: Any,
    ) -> None:
        super().__init__(
            model, attribution, eps, step_size, n_iterations,
            measure=measure, select_by=select_by, map_preparation=map_preparation, **kwargs,
        )

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        if len(ctx.clean_maps) != 1 or ctx.clean_prepared.dim() < 2:
            raise ValueError(
                "MassCenterAttack needs one spatial map per example (B x H x W after preparation), got "
                f"{len(ctx.clean_maps)} map tensor(s) prepared to shape {tuple(ctx.clean_prepared.shape)}"
            )
        return {"center": center_of_mass(ctx.clean_prepared)}

    def _objective(self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context) -> Tensor:
        diff = center_of_mass(prepared) - state["center"]
        return -(diff * diff).sum(dim=1)


class TargetedAttributionAttack(IterativeMapAttack):
    r"""Ghorbani et al.'s targeted attack: move the attribution mass into a chosen region.

    With a region mask :math:`R` over the prepared map, the attack decreases

    .. math::

        L(\tilde x) = -\sum_p R_p\, S(\tilde x)_p ,

    the (weighted) mass of the saliency map inside the region (:math:`S` sums to its number of
    elements with the default preparation, so this is the region's share of the mass times
    that number), under the constraints of :class:`TopKAttack`, and returns the accepted
    iterate with the most mass in the region (``select_by="objective"``).

    Args:
        region (Tensor): a mask (bool or non-negative weights) with the shape of one prepared
            map (``H x W`` for the default preparation of ``B x C x H x W`` maps) or of the
            batch of prepared maps (``B x H x W``, one region per example). ``perturb`` takes
            ``region=`` to override it per call.

    The other arguments and their defaults are those of :class:`MassCenterAttack`.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import BatchedIntegratedGradients
        >>> from captum_robust.robust.attacks import TargetedAttributionAttack, softplus_surrogate
        >>> model = Small().eval()
        >>> region = torch.zeros(28, 28, dtype=torch.bool); region[:10, :10] = True
        >>> attack = TargetedAttributionAttack(model, BatchedIntegratedGradients(model), region,
        ...                                    n_iterations=5, surrogate=softplus_surrogate(model),
        ...                                    attribution_kwargs={"n_steps": 8})
        >>> x_adv, result = attack.perturb(torch.rand(2, 1, 28, 28))
    """

    def __init__(
        self, model: Callable[..., Any], attribution: Any, region: Tensor, eps: float = 0.3, step_size: float = 0.01,
        n_iterations: int = 100, *, measure: Any = "kendall", select_by: str = "objective",
        map_preparation: Any = "ghorbani", **kwargs: Any,
    ) -> None:
        self.region = self._check_region(region)
        super().__init__(
            model, attribution, eps, step_size, n_iterations,
            measure=measure, select_by=select_by, map_preparation=map_preparation, **kwargs,
        )

    @staticmethod
    def _check_region(region: Any) -> Tensor:
        if not isinstance(region, Tensor):
            raise TypeError(f"region must be a tensor mask, got {type(region).__name__}")
        if region.is_complex() or (region.is_floating_point() and not bool(torch.isfinite(region).all())):
            raise ValueError("region must hold finite real weights or booleans")
        if region.dtype != torch.bool and bool((region < 0).any()):
            raise ValueError("region weights must be non-negative")
        if not bool(region.to(torch.bool).any()):
            raise ValueError("region is empty (all zeros)")
        return region

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        region = ctx.region if ctx.region is not None else self.region
        prepared = ctx.clean_prepared
        r = region.to(device=prepared.device, dtype=prepared.dtype)
        if r.shape == prepared.shape[1:]:
            r = r.unsqueeze(0).expand(prepared.shape)
        elif r.shape != prepared.shape:
            raise ValueError(
                f"region has shape {tuple(region.shape)}, but one prepared map has shape {tuple(prepared.shape[1:])} "
                f"(a batch of them {tuple(prepared.shape)})"
            )
        return {"region": r}

    def _objective(self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context) -> Tensor:
        return -(prepared * state["region"]).reshape(prepared.shape[0], -1).sum(dim=1)

    @log_usage()
    def perturb(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        generator: Optional[torch.Generator] = None, show_progress: bool = False, region: Optional[Tensor] = None,
    ) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        """Run the attack: :meth:`Attack.perturb <captum_robust.robust.attacks._base.Attack.perturb>`
        with one more argument.

        Args:
            region (Tensor, optional): overrides the constructor's region for this call.
        """
        check_bool(show_progress, "show_progress")
        if region is not None:
            region = self._check_region(region)
        call = AttackCall(inputs, target, additional_forward_args, generator, show_progress, {"region": region})
        return self._perturb(call)
