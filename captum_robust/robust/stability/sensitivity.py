r"""Max- and Avg-Sensitivity (Yeh et al. 2019) and the Local Lipschitz Estimate (Alvarez-Melis &
Jaakkola 2018): how far an attribution map moves when the input moves a little.

See :mod:`captum_robust.robust.stability` for the arguments every metric shares, the result
type and the defaults of Quantus, Captum and the papers side by side.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from captum_robust._utils.validation import check_bool
from captum_robust.robust.stability._core import StabilityResult, call_kwargs, pnorm, prepare, run_metric

__all__ = ["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate"]


def _sensitivity(norm: str, relative: bool) -> Callable[[Tensor, Dict[str, Tensor], Dict[str, Tensor]], Tensor]:
    def score(ex: Tensor, clean: Dict[str, Tensor], rows: Dict[str, Tensor]) -> Tensor:
        e = clean["e"][ex]
        num = pnorm(e - rows["e"], norm)
        if not relative:
            return num
        den = pnorm(e, norm)
        return torch.where(den == 0, torch.full_like(num, float("nan")), num / den)

    return score


def _sensitivity_metric(
    reduce: str, name: str, explainer: Any, inputs: Any, target: Any, relative: Any, kwargs: Dict[str, Any]
) -> StabilityResult:
    relative = check_bool(relative, "relative")
    s = prepare(explainer, inputs, target, noise="uniform", normalise_how="max", **kwargs)
    return run_metric(s, _sensitivity(s.norm, relative), reduce, name)


def max_sensitivity(
    explainer: Any,
    inputs: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attribute_kwargs: Optional[Dict[str, Any]] = None,
    n_samples: int = 200,
    radius: Any = 0.2,
    norm: str = "l2",
    relative: bool = True,
    perturb_func: Optional[Callable[..., Any]] = None,
    normalise: bool = False,
    abs: bool = False,
    forward_func: Optional[Callable[..., Any]] = None,
    exclude_changed: bool = False,
    internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
) -> StabilityResult:
    r"""Max-Sensitivity (Yeh et al. 2019, Def. 3.1), as Quantus and Captum compute it:

    .. math::
        \mathrm{SENS}_{\max}(x) = \max_{s \le n} \frac{\lVert e(x) - e(x'_s) \rVert}{\lVert e(x) \rVert},
        \qquad x'_s = x + \delta_s,\ \delta_s \sim U[-r, r]^d.

    Yeh et al. define the unnormalised :math:`\max_{\lVert x' - x \rVert \le r}\lVert e(x) - e(x')\rVert`
    (``relative=False``); Quantus (``MaxSensitivity``) and Captum (``sensitivity_max``) divide by
    :math:`\lVert e(x)\rVert` (``relative=True``, the default). NaN where :math:`e(x) = 0` with
    ``relative=True`` (Quantus returns NaN or inf, Captum divides by 1 instead).

    The arguments every metric shares (``explainer``, ``inputs``, ``target``,
    ``additional_forward_args``, ``attribute_kwargs``, ``norm``, ``perturb_func``, ``abs``,
    ``forward_func``, ``exclude_changed`` (default False, as Quantus'
    ``return_nan_when_prediction_changes``), ``internal_batch_size``, ``generator``,
    ``show_progress``) are described on the package page, :mod:`captum_robust.robust.stability`.

    Args:
        n_samples (int): perturbations per example. Default 200 (Quantus; Captum: 10).
        radius (float or (float, float)): uniform noise U[-r, r] per element, or U[low, high]
            for a pair. Default 0.2 (Quantus' ``lower_bound``; Captum: 0.02).
        relative (bool): divide by :math:`\lVert e(x) \rVert`. Default True.
        normalise (bool): divide every map by its largest absolute value first (Quantus'
            ``normalise_by_max``, per example). Default False.

    Returns:
        StabilityResult: ``values`` of shape ``(B,)``.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from captum_robust.robust.stability import max_sensitivity
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
        >>> max_sensitivity(Saliency(model), x, target=0, n_samples=5).values  # a linear model's gradient is constant
        tensor([0., 0.])
    """
    return _sensitivity_metric("max", "max_sensitivity", explainer, inputs, target, relative, call_kwargs(locals()))


def avg_sensitivity(
    explainer: Any,
    inputs: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attribute_kwargs: Optional[Dict[str, Any]] = None,
    n_samples: int = 200,
    radius: Any = 0.2,
    norm: str = "l2",
    relative: bool = True,
    perturb_func: Optional[Callable[..., Any]] = None,
    normalise: bool = False,
    abs: bool = False,
    forward_func: Optional[Callable[..., Any]] = None,
    exclude_changed: bool = False,
    internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
) -> StabilityResult:
    r"""Avg-Sensitivity (Yeh et al. 2019, Def. 3.2, the integral estimated by Monte Carlo), as
    Quantus' ``AvgSensitivity`` computes it:

    .. math::
        \mathrm{SENS}_{\mathrm{avg}}(x) = \frac{1}{n}\sum_{s=1}^{n}
        \frac{\lVert e(x) - e(x'_s) \rVert}{\lVert e(x) \rVert},\qquad x'_s = x + \delta_s,\ \delta_s \sim U[-r, r]^d.

    The arguments, defaults and the NaN rule are those of :func:`max_sensitivity`; with
    ``exclude_changed=True`` the mean runs over the perturbations that kept the predicted class
    (NaN when none did).

    Returns:
        StabilityResult: ``values`` of shape ``(B,)``.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from captum_robust.robust.stability import avg_sensitivity
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
        >>> avg_sensitivity(Saliency(model), x, target=1, n_samples=5).values
        tensor([0., 0.])
    """
    return _sensitivity_metric("mean", "avg_sensitivity", explainer, inputs, target, relative, call_kwargs(locals()))


def _lipschitz(norm: str) -> Callable[[Tensor, Dict[str, Tensor], Dict[str, Tensor]], Tensor]:
    def score(ex: Tensor, clean: Dict[str, Tensor], rows: Dict[str, Tensor]) -> Tensor:
        num = pnorm(clean["e"][ex] - rows["e"], norm)
        den = pnorm(clean["x"][ex] - rows["x"], norm)
        return torch.where(den == 0, torch.full_like(num, float("nan")), num / den)

    return score


def local_lipschitz_estimate(
    explainer: Any,
    inputs: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attribute_kwargs: Optional[Dict[str, Any]] = None,
    n_samples: int = 200,
    radius: float = 0.1,
    norm: str = "l2",
    perturb_func: Optional[Callable[..., Any]] = None,
    normalise: bool = True,
    abs: bool = False,
    forward_func: Optional[Callable[..., Any]] = None,
    exclude_changed: bool = False,
    internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
) -> StabilityResult:
    r"""Local Lipschitz Estimate (Alvarez-Melis & Jaakkola 2018, eq. 4), the largest ratio seen
    over ``n_samples`` random neighbours, as Quantus' ``LocalLipschitzEstimate`` computes it:

    .. math::
        \hat L(x) = \max_{s \le n} \frac{\lVert e(x) - e(x'_s) \rVert_2}{\lVert x - x'_s \rVert_2},
        \qquad x'_s = x + \delta_s,\ \delta_s \sim \mathcal N(0, r^2 I).

    The paper maximises over the ball :math:`\lVert x' - x\rVert \le \epsilon` (with an optimiser
    or samples); a finite sample gives a lower bound of that maximum. NaN where
    :math:`x'_s = x` (Quantus adds :math:`10^{-10}` to the denominator instead).

    See :func:`max_sensitivity` and the package page for the other arguments.

    Args:
        radius (float): standard deviation of the Gaussian noise. Default 0.1 (Quantus' ``perturb_std``).
        normalise (bool): divide every map by its largest absolute value first, per example.
            Default True, as in Quantus (the paper does not normalise).

    Returns:
        StabilityResult: ``values`` of shape ``(B,)``.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from captum_robust.robust.stability import local_lipschitz_estimate
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
        >>> local_lipschitz_estimate(Saliency(model), x, target=2, n_samples=5).values
        tensor([0., 0.])
    """
    s = prepare(explainer, inputs, target, noise="gaussian", normalise_how="max", **call_kwargs(locals()))
    return run_metric(s, _lipschitz(s.norm), "max", "local_lipschitz_estimate")
