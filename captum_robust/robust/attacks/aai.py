r"""Boopathy et al.'s attack against interpretability (AAI, App. C, eq. 15, and its top-k variant).

Boopathy, Liu, Zhang, Liu, Chen, Chen, Daniel, "Proper Network Interpretability Helps
Adversarial Robustness in Classification", ICML 2020.

Both variants take sign steps from a random start (at :math:`\delta = 0` the :math:`\ell_1`
term has a zero subgradient), reject iterates whose prediction changed, and return the accepted
iterate with the lowest Kendall's :math:`\tau` between the clean and the adversarial map
(``measure``), which is what Boopathy et al. report (Table 3: on raw CAM, over 200 test
points, unchanged predictions only). Paper settings: CAM of the true class on the raw
feature-resolution map (``map_preparation=None``, the default here), :math:`K = 8`, 200
steps of 0.01, :math:`\epsilon` up to 0.3 on MNIST. The paper does not give :math:`\lambda`.

*Deviation, on purpose:* the authors' top-k code has no hinge (``hinge_weight=0``
reproduces it). Decreasing the top cells of the true-class CAM decreases the true logit
(CAM sums to it), so without the hinge the prediction flips within a few steps and, with
the rejection of such iterates, the attack stops improving (``benchmarks/README.md``
compares the two). The default therefore keeps eq. 15's hinge, :math:`\lambda = 1`, in
both variants.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.geometry import Tensors
from captum_robust.attr import CAM
from captum_robust._utils.validation import check_choice, check_int, check_nonnegative
from captum_robust.robust.attacks._map_attack import IterativeMapAttack, _Context
from captum_robust.robust.discrepancy import topk_mask

__all__ = ["AAI"]

_VARIANTS = ("topk", "l1")


def other_max(logits: Tensor, cls: Tensor) -> Tensor:
    """``max_{j != cls} f_j``, per example."""
    own = F.one_hot(cls, logits.shape[1]).to(torch.bool)
    return logits.masked_fill(own, float("-inf")).amax(dim=1)


class AAI(IterativeMapAttack):
    r"""Attack against interpretability (Boopathy et al. 2020, App. C, eq. 15): change the map
    of the true class while keeping the prediction.

    ``variant="l1"`` solves eq. 15 (left); ``variant="topk"`` (the default, the objective the
    authors' code ships) replaces the discrepancy by the map's mass on the :math:`K` cells
    where the clean map is largest (right):

    .. math::

        \min_{\lVert\delta\rVert_\infty \le \epsilon} \lambda h(x+\delta) - \lVert I(x, y) - I(x+\delta, y) \rVert_1,
        \qquad
        \min_{\lVert\delta\rVert_\infty \le \epsilon} \lambda h(x+\delta) + \sum_{p \in T_K(I(x, y))} I(x+\delta, y)_p,

    the hinge :math:`h = \max\{\max_{j \ne y} f_j - f_y,\, 0\}` pushing back towards the class
    :math:`y` (``perturb``'s ``target``; default the prediction). The module docstring gives the
    paper's settings and why the top-k variant keeps the hinge (the authors' code has none).

    Args:
        attribution (optional): CAM in the paper (a forward computation: no surrogate needed).
            Default ``None``: ``CAM(model)``, whose feature layer and classifier are found by
            :func:`~captum_robust.attr.find_cam_layers` on the first :meth:`perturb` call's inputs
            (``attribution.found_layers``); a model without a global-average-pooling -> linear
            head then raises a ``ValueError`` naming the candidates (pass a
            :class:`~captum_robust.attr.GradCAM` instead).
        variant (str): ``"topk"`` (default) or ``"l1"``.
        k (int): :math:`K` of the top-k variant. Default 8.
        hinge_weight (float): :math:`\lambda \ge 0`. Default 1.

    See :class:`~captum_robust.robust.attacks._map_attack.IterativeMapAttack` and
    :class:`~captum_robust.robust.attacks._map_attack.MapAttack` for the common arguments
    (here ``eps=0.3``, ``n_iterations=200``, ``random_start=True``, ``measure="kendall"``,
    ``map_preparation=None``).

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import CAM
        >>> from captum_robust.robust.attacks import AAI
        >>> model = Small().eval()
        >>> attack = AAI(model, CAM(model, model.feature_layer, model.classifier), eps=0.3, n_iterations=20)
        >>> x_adv, result = attack.perturb(torch.rand(4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
        >>> kendall = result.similarity        # Kendall's tau of the raw CAM, per example
        >>> found = AAI(model, eps=0.3, n_iterations=20)   # CAM(model): layers found on the first call
    """

    def __init__(
        self, model: Callable[..., Any], attribution: Any = None, eps: float = 0.3, step_size: float = 0.01,
        n_iterations: int = 200, variant: str = "topk", k: int = 8, hinge_weight: float = 1.0, *,
        random_start: bool = True, measure: Any = "kendall", select_by: str = "similarity", map_preparation: Any = None,
        **kwargs: Any,
    ) -> None:
        self.variant = check_choice(variant, "variant", _VARIANTS)
        self.k = check_int(k, "k", 1)
        self.hinge_weight = check_nonnegative(hinge_weight, "hinge_weight")
        self._needs_logits = self.hinge_weight > 0
        if attribution is None:
            if not isinstance(model, nn.Module):
                raise TypeError(
                    f"attribution=None builds CAM(model), which finds its layers in an nn.Module; got a "
                    f"{type(model).__name__}: pass attribution=CAM(model, layer, classifier)"
                )
            # layers found by find_cam_layers on the first perturb's inputs (one extra forward pass, once)
            attribution = CAM(model)
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
            hinge = (other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)).clamp_min(0.0)
            value = value + self.hinge_weight * hinge.to(value.dtype)
        return value
