r"""Relative input, output and representation stability (Agarwal et al. 2022, "Rethinking
stability for attribution-based explanations", eq. 2, 3 and 5): the relative change of the
map divided by the relative change of the input, of the logits or of a hidden representation.

All three share the numerator :math:`\lVert (e_x - e_{x'}) / e_x \rVert` (elementwise division,
:math:`\epsilon_{\min}` in place of the exact zeros of :math:`e_x`), take the maximum over the
perturbations that keep the predicted class, and divide by a denominator floored as Quantus 0.6
floors it: :math:`d + \epsilon_{\min}` where :math:`d = 0` exactly (the paper writes
:math:`\max(d, \epsilon_{\min})`; the two differ only when :math:`0 < d < \epsilon_{\min}`).
Scaling the map by a constant leaves all three unchanged.

See :mod:`captum_robust.robust.stability` for the shared arguments, the result type and the
defaults of Quantus and the paper side by side.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor, nn

from captum_robust.attr import find_cam_layers
from captum_robust.robust.stability._core import (
    StabilityResult,
    call_kwargs,
    check_eps,
    floor_zero,
    pnorm,
    prepare,
    relative_change,
    run_metric,
)

__all__ = ["relative_input_stability", "relative_output_stability", "relative_representation_stability"]

_Score = Callable[[Tensor, Dict[str, Tensor], Dict[str, Tensor]], Tensor]


def _relative(kind: str, norm: str, eps: float) -> _Score:
    def score(ex: Tensor, clean: Dict[str, Tensor], rows: Dict[str, Tensor]) -> Tensor:
        num = pnorm(relative_change(rows["e"], clean["e"][ex], eps), norm)
        if kind == "h":  # the logits' plain difference (eq. 3)
            den = pnorm(clean["h"][ex] - rows["h"], norm)
        else:  # the relative change of the input (eq. 2) or of the representation (eq. 5)
            den = pnorm(relative_change(rows[kind], clean[kind][ex], eps), norm)
        return num / floor_zero(den, eps)

    return score


def _run(kind: str, name: str, explainer: Any, inputs: Any, target: Any, kw: Dict[str, Any]) -> StabilityResult:
    eps = check_eps(kw.pop("eps_min"))
    s = prepare(explainer, inputs, target, noise="uniform", normalise_how="second_moment",
                needs_model=kind != "x", **kw)
    if kind == "L" and s.layer is None:
        if not isinstance(s.model, nn.Module):
            raise ValueError("layer must be an nn.Module of the model whose output is the representation, got None "
                             "(it is found automatically only when the model is an nn.Module)")
        # the feature map a CAM would use (GAP -> linear head), else the last module with a 4-D output
        s.layer = find_cam_layers(s.model, s.xs, s.args, require_classifier=False).layer
    return run_metric(s, _relative(kind, s.norm, eps), "max", name, needs_model=kind != "x")


def relative_input_stability(
    explainer: Any,
    inputs: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attribute_kwargs: Optional[Dict[str, Any]] = None,
    n_samples: int = 200,
    radius: Any = (0.02, 0.2),
    norm: str = "l2",
    eps_min: float = 1e-6,
    perturb_func: Optional[Callable[..., Any]] = None,
    normalise: bool = False,
    abs: bool = False,
    forward_func: Optional[Callable[..., Any]] = None,
    exclude_changed: bool = True,
    internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
) -> StabilityResult:
    r"""Relative Input Stability (Agarwal et al. 2022, eq. 2):

    .. math::
        \mathrm{RIS}(x) = \max_{x'_s:\ \hat y(x'_s) = \hat y(x)}
        \frac{\lVert (e_x - e_{x'_s}) / e_x \rVert_p}{\max(\lVert (x - x'_s) / x \rVert_p, \epsilon_{\min})}.

    See :func:`~captum_robust.robust.stability.max_sensitivity` and the package page for the
    other arguments.

    Args:
        radius (float or (float, float)): uniform noise: U[-r, r] per element for a number,
            U[low, high] for a pair. Default (0.02, 0.2), Quantus 0.6's ``batch_uniform_noise``
            with ``upper_bound=0.2`` (a positive shift of every element).
        eps_min (float): :math:`\epsilon_{\min} > 0`. Default 1e-6 (Quantus).
        normalise (bool): divide every map by :math:`\sqrt{\mathrm{mean}(e^2)}` first, per
            example (Quantus' ``normalise_by_average_second_moment_estimate``). Default False.
        exclude_changed (bool): leave out the perturbations that change the predicted class
            (the paper's constraint); needs the model (``forward_func``, or the explainer's).
            Default True. Quantus 0.6 returns NaN for the whole example when any perturbation
            changes the class; here the maximum runs over the others and NaN only when none is left.

    Returns:
        StabilityResult: ``values`` and ``n_prediction_changed`` (when checked) of shape ``(B,)``.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from captum_robust.robust.stability import relative_input_stability
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> x = torch.randn(2, 4)
        >>> result = relative_input_stability(Saliency(model), x, target=0, n_samples=5)
        >>> result.values.shape, result.n_prediction_changed.shape
        (torch.Size([2]), torch.Size([2]))
    """
    return _run("x", "relative_input_stability", explainer, inputs, target, call_kwargs(locals()))


def relative_output_stability(
    explainer: Any,
    inputs: Any,
    target: Any = None,
    *,
    additional_forward_args: Any = None,
    attribute_kwargs: Optional[Dict[str, Any]] = None,
    n_samples: int = 200,
    radius: Any = (0.02, 0.2),
    norm: str = "l2",
    eps_min: float = 1e-6,
    perturb_func: Optional[Callable[..., Any]] = None,
    normalise: bool = False,
    abs: bool = False,
    forward_func: Optional[Callable[..., Any]] = None,
    exclude_changed: bool = True,
    internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
) -> StabilityResult:
    r"""Relative Output Stability (Agarwal et al. 2022, eq. 3), with :math:`h` the model's
    output (the logits, all classes, flattened):

    .. math::
        \mathrm{ROS}(x) = \max_{x'_s:\ \hat y(x'_s) = \hat y(x)}
        \frac{\lVert (e_x - e_{x'_s}) / e_x \rVert_p}{\max(\lVert h(x) - h(x'_s) \rVert_p, \epsilon_{\min})}.

    Needs the model: ``forward_func``, or the explainer's ``forward_func`` attribute (Captum's
    attributions have one). The arguments and defaults are those of
    :func:`relative_input_stability`.

    Returns:
        StabilityResult: ``values`` and ``n_prediction_changed`` of shape ``(B,)``.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from captum_robust.robust.stability import relative_output_stability
        >>> model = torch.nn.Linear(4, 3)
        >>> x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
        >>> relative_output_stability(Saliency(model), x, target=0, n_samples=5).values  # constant map
        tensor([0., 0.])
    """
    return _run("h", "relative_output_stability", explainer, inputs, target, call_kwargs(locals()))


def relative_representation_stability(
    explainer: Any,
    inputs: Any,
    target: Any = None,
    *,
    layer: Optional[nn.Module] = None,
    additional_forward_args: Any = None,
    attribute_kwargs: Optional[Dict[str, Any]] = None,
    n_samples: int = 200,
    radius: Any = (0.02, 0.2),
    norm: str = "l2",
    eps_min: float = 1e-6,
    perturb_func: Optional[Callable[..., Any]] = None,
    normalise: bool = False,
    abs: bool = False,
    forward_func: Optional[Callable[..., Any]] = None,
    exclude_changed: bool = True,
    internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
) -> StabilityResult:
    r"""Relative Representation Stability (Agarwal et al. 2022, eq. 5), with :math:`L` the
    output of ``layer`` (flattened), e.g. the penultimate layer:

    .. math::
        \mathrm{RRS}(x) = \max_{x'_s:\ \hat y(x'_s) = \hat y(x)}
        \frac{\lVert (e_x - e_{x'_s}) / e_x \rVert_p}{\max(\lVert (L_x - L_{x'_s}) / L_x \rVert_p, \epsilon_{\min})}.

    Args:
        layer (nn.Module, optional): a submodule of the model, called once per forward pass, whose
            output is the representation (Quantus: ``layer_names=[name]``). When omitted, found by
            :func:`~captum_robust.attr.find_cam_layers` (``require_classifier=False``): the feature
            map of a GAP -> linear head, else the last module called once with a 4-D output.

    See :func:`relative_input_stability` for the other arguments and defaults.

    Returns:
        StabilityResult: ``values`` and ``n_prediction_changed`` of shape ``(B,)``.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from captum_robust.robust.stability import relative_representation_stability
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
        >>> x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
        >>> relative_representation_stability(Saliency(model), x, 0, layer=model[0], n_samples=5).values
        tensor([0., 0.])
    """
    return _run("L", "relative_representation_stability", explainer, inputs, target, call_kwargs(locals()))
