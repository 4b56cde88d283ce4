"""
How stable is an explanation under random noise? Six metrics, four methods
===========================================================================

The attacks of :mod:`captum_robust.robust.attacks` look for the *worst* small perturbation of an
input, and the certificates of :mod:`captum_robust.attr` prove a bound that holds for *every*
perturbation in a ball. Reviewers and benchmarks (Quantus, OpenXAI, Captum's
``sensitivity_max``) also ask for the *average case*: how far does a map move when the input
is jittered by random noise? :mod:`captum_robust.robust.stability` answers with six metrics,
batched over examples and perturbations and equal to Quantus 0.6's on the same perturbations:

* **max- and avg-sensitivity** (Yeh et al. 2019): the largest and the mean change of the map
  under uniform noise, relative to the map's norm;
* **local Lipschitz estimate** (Alvarez-Melis & Jaakkola 2018): the largest ratio of the map's
  change to the input's change under Gaussian noise;
* **relative input, output and representation stability** (RIS, ROS, RRS; Agarwal et al. 2022):
  the relative change of the map divided by the relative change of the input, of the logits or
  of an internal representation, over the perturbations that keep the prediction.

This example measures all six for four attribution methods of the same digits model and
shows them in one table and one plot.
"""

# %%
# The model and four attribution methods
# --------------------------------------
#
# The model is the ``Small`` network trained on the embedded digits (cached: the other
# tutorials train the same one). The four methods: the plain gradient (saliency), Integrated
# Gradients, Grad-CAM on the last feature map (upsampled to the input's size, so every map has
# the same 28 x 28 pixels) and Levine et al.'s sparsified SmoothGrad.

import time

import matplotlib.pyplot as plt
import torch

from captum_robust.attr import BatchedIntegratedGradients, GradCAM, Saliency, SparsifiedSmoothGrad
from captum_robust.robust import stability
from captum_robust.training import trained_digits_model

torch.set_num_threads(1)
digits = trained_digits_model(60, batch_size=32, lr=1e-2, one_cycle=True)
model = digits.model
x, y = digits.test.tensors[0][:32], digits.test.tensors[1][:32]
print(f"test accuracy {digits.accuracy:.3f}; {len(x)} test images")

methods = {
    "saliency": (Saliency(model), {}),
    "integrated gradients": (BatchedIntegratedGradients(model), {"n_steps": 16, "method": "riemann_middle"}),
    "grad-cam": (GradCAM(model, model.feature_layer), {"upsample": True}),
    "sparsified smoothgrad": (SparsifiedSmoothGrad(model, sigma=0.1, sparsity=0.1, n_samples=16), {}),
}

# %%
# Six metrics, one call each
# --------------------------
#
# Every metric takes the attribution object, the inputs and the targets (here the labels), and
# returns a :class:`~captum_robust.robust.stability.StabilityResult`: one value per example,
# the per-perturbation scores and, for RIS/ROS/RRS, how many perturbations changed the
# prediction (those are left out, as the paper says). The defaults are Quantus 0.6's; we use
# 20 perturbations per image instead of 200 to keep the example short. One generator seed
# gives every method the same noise.

metrics = {
    "max-sens.": (stability.max_sensitivity, {}),
    "avg-sens.": (stability.avg_sensitivity, {}),
    "local Lipschitz": (stability.local_lipschitz_estimate, {}),
    "RIS": (stability.relative_input_stability, {}),
    "ROS": (stability.relative_output_stability, {}),
    "RRS": (stability.relative_representation_stability, {"layer": model.feature_layer}),
}

values = {}
changed = {}
start = time.perf_counter()
for method, (explainer, kwargs) in methods.items():
    for name, (metric, extra) in metrics.items():
        result = metric(explainer, x, y, attribute_kwargs=kwargs, n_samples=20, forward_func=model,
                        internal_batch_size=320, generator=torch.Generator().manual_seed(0), **extra)
        values[method, name] = result.values
        if result.n_prediction_changed is not None:
            changed[method, name] = int(result.n_prediction_changed.sum())
print(f"{len(methods) * len(metrics)} metric calls in {time.perf_counter() - start:.1f} s")

# %%
# One table
# ---------
#
# The median over the images (the relative stabilities are ratios with heavy tails, so the
# median is the fairer summary); lower is more stable for every metric.

header = "| method | " + " | ".join(metrics) + " |"
print(header)
print("|---|" + "---:|" * len(metrics))
for method in methods:
    cells = [f"{float(values[method, name].nanmedian()):.3g}" for name in metrics]
    print(f"| {method} | " + " | ".join(cells) + " |")
n_changed = changed["saliency", "RIS"]
print(f"\nperturbations left out by RIS because they changed the prediction: {n_changed} of {20 * len(x)}")

# %%
# One plot
# --------
#
# Each metric's distribution over the images, per method (log scale: the metrics have very
# different ranges, and what matters is the order of the methods within a panel).

fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.2), layout="constrained")
for ax, name in zip(axes, metrics):
    data = [values[m, name][~values[m, name].isnan()].clamp_min(1e-6).numpy() for m in methods]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(methods) + 1), [m.split()[0] for m in methods], rotation=45, fontsize=8)
    ax.set_yscale("log")
    ax.set_title(name, fontsize=10)
fig.suptitle("stability of four attribution methods under random noise (lower is more stable)")
plt.show()

# %%
# What the numbers do and do not tell
# -----------------------------------
#
# * They are **average-case**: random noise rarely finds the directions an attack finds, so a
#   method can look stable here and still be moved far by
#   :class:`~captum_robust.robust.attacks.TopKAttack` or :class:`~captum_robust.robust.attacks.AAI`
#   (worst case), and neither tells you what a certificate guarantees
#   (:class:`~captum_robust.attr.CertifiedTopK`: a bound for every perturbation in a ball).
# * Sensitivity and the Lipschitz estimate grow with the noise radius; compare methods at the
#   same radius and the same normalisation (``normalise``/``abs``, as Quantus offers).
# * The relative stabilities divide by how much the input, the logits or the representation
#   moved: a model whose logits barely move makes ROS large even for a modest change of the
#   map. They are ratios, and their means are dominated by a few images. They also divide element
#   by element by the clean map (and RIS by the input): where either is zero -- the digits' black
#   background, a ReLU-sparse gradient -- the division is by ``eps_min``, which then sets the
#   value. That is why the methods differ by orders of magnitude in the RIS/ROS/RRS columns:
#   compare these across models for one method (does robust training lower them?) rather than
#   across methods.
# * The same functions take any Captum attribution or a plain callable, and
#   :func:`~captum_robust.robust.evaluation.attribution_robustness` (``measures=``) and
#   ``captum-robust evaluate --measures`` report them next to the attack measures.
