r"""Stability metrics of an attribution method: how much its map moves under small random input
noise, one value per example (the average or typical case; the attacks of
:mod:`captum_robust.robust.attacks` measure the worst case, the certificates of
:mod:`captum_robust.attr.certify` guarantee a bound).

* :func:`max_sensitivity`, :func:`avg_sensitivity` -- Yeh et al. 2019 (Quantus' Max/AvgSensitivity,
  Captum's ``sensitivity_max``);
* :func:`local_lipschitz_estimate` -- Alvarez-Melis & Jaakkola 2018;
* :func:`relative_input_stability`, :func:`relative_output_stability`,
  :func:`relative_representation_stability` -- Agarwal et al. 2022 (RIS, ROS, RRS).

**Arguments every metric takes.**

* ``explainer``: an attribution object of this library or of Captum (anything with
  ``attribute(inputs, target=..., additional_forward_args=..., **attribute_kwargs)``), or a callable
  ``(inputs, target) -> maps`` (called ``(inputs, target, additional_forward_args)`` when those are
  given). The maps may have any shape ``B x ...``; a tuple of maps is flattened and concatenated per
  example, so every norm and normalisation runs over all parts together (as Captum's).
* ``inputs``, ``target``, ``additional_forward_args``: Captum's conventions (a tensor or a tuple of
  tensors; ``target`` None, an int or one class per example). ``attribute_kwargs``: extra keyword
  arguments of ``attribute`` (``baselines``, ``n_steps``, ...). Tensors in ``additional_forward_args``
  and ``attribute_kwargs`` whose first dimension is the batch size are indexed per perturbed example
  (like Captum's expansion); anything else is passed unchanged.
* ``n_samples``, ``radius``: the default perturbations (see each metric). ``norm``: ``"l2"`` (default;
  Quantus' ``fro_norm``, Captum's ``"fro"``), ``"l1"`` or ``"linf"``, on the flattened map, input,
  output or representation.
* ``perturb_func``: replaces the default noise. Contract: ``perturb_func(inputs, n_samples, generator)``
  receives a copy of the inputs as given (a tensor or a tuple) and returns the **perturbed inputs**
  (not the noise), one tensor of shape ``n_samples x B x ...`` per input tensor (a tuple for tuple
  inputs), on any device/dtype (moved to the inputs'). It is called once per metric call, so a
  precomputed tensor ``lambda x, n, g: P`` hands the very same perturbations to another library
  (Quantus calls its ``perturb_func`` once per sample: give it ``P[s]``; Captum's ``sensitivity_max``
  wants them example-major: ``P.transpose(0, 1).reshape(-1, ...)``).
* ``normalise``, ``abs``: applied to every map, clean and perturbed, normalisation first (Quantus'
  order), **per example** (Quantus 0.6 normalises by the maximum over the whole batch it explains,
  so it agrees with this per-example rule when its ``batch_size`` is 1).
* ``forward_func``: the model, needed to check predictions (``exclude_changed``) and by ROS/RRS;
  defaults to the explainer's ``forward_func`` attribute. ``exclude_changed``: leave out the
  perturbations whose predicted class (argmax of the output) differs from the clean one.
* ``internal_batch_size``: perturbed examples explained per call (None: all ``n_samples * B``
  at once). The perturbed inputs themselves (``n_samples`` times the inputs) are drawn in one go;
  what chunking bounds is the explainer's memory (activations, gradients). Results do not depend
  on it. ``generator``: a ``torch.Generator`` on the inputs' device for the default noise (same seed,
  same result); it is also passed to ``perturb_func``. ``show_progress``: a tqdm bar over the chunks.

**Result.** Every metric returns a frozen :class:`StabilityResult`: ``values`` (``B``), ``scores``
(``n_samples x B``), ``n_prediction_changed`` (``B``, int64, or None when not checked), ``n_samples``,
``metric``. Computed on the inputs' device and in their dtype; model mode, parameters' ``.grad`` and
``requires_grad`` and the inputs are left as found.

**Bad input and train mode** (issue 18). The model (``forward_func``, or the explainer's) runs in
eval mode for the call, its mode restored afterwards: a model in training mode with BatchNorm or
Dropout layers gets a warning, and its BatchNorm running statistics are not touched. Errors, never
a NaN value: an empty batch (``ValueError`` "inputs must hold at least one example"), inputs on the
``meta`` device, inputs whose dtype differs from the model's parameters (``TypeError``), NaN or inf
in the model's outputs (where they are used: ``exclude_changed``, ROS, RRS) or in any map, clean or
perturbed (``ValueError`` naming the explainer). A NaN *value* only ever means "undefined": a zero
denominator, or every perturbation changed the prediction. Inputs created under
``torch.inference_mode()`` are copied into normal tensors.

**Defaults: this library (= Quantus 0.6) / Captum 0.9 / the papers.**

* Max/Avg-Sensitivity: 200 samples of U[-0.2, 0.2] noise per element, L2 norms, divided by
  ``||e(x)||``, no normalisation, no exclusion (Quantus). Captum's ``sensitivity_max``: 10 samples
  of U[-0.02, 0.02], ``"fro"``, divided by ``||e(x)||`` (by 1 where it is 0). Yeh et al.: the
  max / mean over the ball ``||x' - x|| <= r``, not divided (``relative=False``).
* Local Lipschitz Estimate: 200 samples of N(0, 0.1^2) noise, L2 norms, maps normalised by their
  maximum (``normalise=True``, Quantus). Alvarez-Melis & Jaakkola: the maximum over the ball
  ``B_eps(x)``, found by optimisation or sampling, maps not normalised.
* RIS/ROS/RRS: 200 samples of U[0.02, 0.2] noise (a positive shift of every element, Quantus'
  ``upper_bound=0.2`` with its ``lower_bound`` default 0.02), L2 norms, ``eps_min=1e-6``, changed
  predictions excluded. Agarwal et al.: ``max(d, eps_min)`` in the denominator (Quantus and this
  library: ``d + eps_min`` where ``d == 0``); the maximum over the perturbations that keep the
  class (Quantus 0.6: NaN for the example as soon as one perturbation changes it).
"""

from captum_robust.robust.stability._core import StabilityResult
from captum_robust.robust.stability.relative import (
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
)
from captum_robust.robust.stability.sensitivity import avg_sensitivity, local_lipschitz_estimate, max_sensitivity

#: The names of the six metrics, each a function of this package (the evaluation runner and the
#: CLI's ``--measures`` take them by these names).
METRICS = (
    "max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate",
    "relative_input_stability", "relative_output_stability", "relative_representation_stability",
)

__all__ = [
    "METRICS",
    "StabilityResult",
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "relative_input_stability",
    "relative_output_stability",
    "relative_representation_stability",
]
