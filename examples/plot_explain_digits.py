"""
Explaining a digit classifier with CAM, Grad-CAM and Grad-CAM++
================================================================

This tutorial trains the ``Small`` network of Boopathy et al. (ICML 2020) on the
handwritten digits that ship with scikit-learn (nothing is downloaded), then explains
its predictions with the three class-activation-map methods of
:mod:`captum_robust.attr`:

* :class:`~captum_robust.attr.CAM`, which on a global-average-pooling -> linear head
  satisfies *completeness*: the map sums to the logit minus the classifier's bias;
* :class:`~captum_robust.attr.GradCAM`, which gives the same numbers as Captum's
  :class:`~captum.attr.LayerGradCam` (checked below) and also returns every class at once;
* :class:`~captum_robust.attr.GradCAMPlusPlus`;

and, for comparison, with pixel-level Integrated Gradients
(:class:`~captum_robust.attr.BatchedIntegratedGradients`), which satisfies completeness
too, over the input pixels.

The whole script runs in well under a minute on two CPU cores.
"""

# %%
# Data and model
# --------------
#
# :func:`captum_robust.data.load_digits` serves scikit-learn's 1,797 real 8x8 digit
# images, upsampled (bilinear) to the 28x28 resolution of MNIST and split into a
# stratified training and test set with a fixed seed.
# :func:`captum_robust.training.trained_digits_model` loads them and trains the network
# on them: a plain cross-entropy loop, Adam with a one-cycle learning-rate schedule, 60
# passes over the 1,437 training images in batches of 32 (under half a minute on one free
# CPU core, several times longer on a busy machine). Its seed fixes the split, the initial
# weights and the batch order, so every run gives the same model; the result is cached per
# process, so the later tutorials reuse it. For your own models and loops, see
# :func:`captum_robust.training.train_classifier`.

import time

import matplotlib.pyplot as plt
import torch
from captum.attr import LayerGradCam

from captum_robust.attr import CAM, BatchedIntegratedGradients, GradCAM, GradCAMPlusPlus
from captum_robust.training import trained_digits_model

# The model is tiny: one CPU thread trains it as fast as several, and avoids the large
# slowdowns of multi-threaded kernels when other processes compete for the same cores.
torch.set_num_threads(1)
start = time.perf_counter()
digits = trained_digits_model(60, batch_size=32, lr=1e-2, one_cycle=True)
print(f"trained in {time.perf_counter() - start:.1f} s")
print(f"{len(digits.train)} training images, {len(digits.test)} test images")
print(f"test accuracy: {digits.accuracy:.3f}")

model = digits.model  # Small(in_channels=1, num_classes=10), in eval mode
print(model)

# %%
# Class activation maps
# ---------------------
#
# All three methods read the last feature map ``A`` of the network,
# ``model.feature_layer`` (100 channels on a 7x7 grid for a 28x28 input). CAM also
# needs the linear ``classifier`` that follows the global average pool. With
# ``target=None`` each method returns the maps of *every* class, ``B x 10 x 7 x 7``;
# with a target per example, ``B x 1 x 7 x 7``.

x_test, y_test = digits.test.tensors
images, labels = x_test[:6], y_test[:6]
with torch.no_grad():
    logits = model(images)
predicted = logits.argmax(dim=1)

cam = CAM(model, model.feature_layer, model.classifier)
gradcam = GradCAM(model, model.feature_layer)
gradcampp = GradCAMPlusPlus(model, model.feature_layer)

cam_maps = cam.attribute(images, target=predicted)
gradcam_maps = gradcam.attribute(images, target=predicted)
all_classes = cam.attribute(images)  # every class at once
print("CAM, one target:  ", tuple(cam_maps.shape))
print("CAM, all classes: ", tuple(all_classes.shape))

# %%
# Completeness of CAM
# -------------------
#
# CAM in the form of Boopathy et al., eq. 1, is
# :math:`\mathrm{CAM}(x, c)_i = \frac{1}{u}\sum_k W_{c,k} A_{k,i}(x)` over the
# :math:`u = 49` cells, so :math:`\sum_i \mathrm{CAM}(x, c)_i + b_c = f_c(x)` for every
# class :math:`c`. ``raw=True`` gives the authors' raw map, :math:`u` times larger, whose
# *mean* plus the bias is the logit.

bias = model.classifier.bias.detach()
completeness_error = (all_classes.sum(dim=(2, 3)) + bias - logits).abs().max().item()
print(f"CAM completeness, max |sum(map) + b - logit| over 6 images x 10 classes: {completeness_error:.2e}")

raw = cam.attribute(images, raw=True)
raw_error = (raw.mean(dim=(2, 3)) + bias - logits).abs().max().item()
print(f"raw CAM, max |mean(map) + b - logit|: {raw_error:.2e}")

# On a GAP -> linear head, Grad-CAM without its ReLU is the same map as CAM.
print(f"max |GradCAM - CAM|: {(gradcam_maps - cam_maps).abs().max().item():.2e}")

# %%
# Agreement with Captum
# ---------------------
#
# :class:`~captum_robust.attr.GradCAM` is a drop-in for Captum's
# :class:`~captum.attr.LayerGradCam`: same constructor, same ``attribute`` arguments,
# same numbers. It adds ``target=None`` (every class from one batched backward pass) and
# ``create_graph=True`` (maps you can differentiate, for attacks and regularizers).

captum_maps = LayerGradCam(model, model.feature_layer).attribute(images, target=predicted)
ours = gradcam.attribute(images, target=predicted)
print(f"max |GradCAM - captum LayerGradCam|: {(ours - captum_maps).abs().max().item():.2e}")

captum_relu = LayerGradCam(model, model.feature_layer).attribute(images, target=predicted, relu_attributions=True)
ours_relu = gradcam.attribute(images, target=predicted, relu_attributions=True)
print(f"with relu_attributions=True:         {(ours_relu - captum_relu).abs().max().item():.2e}")

# %%
# Integrated Gradients
# --------------------
#
# :class:`~captum_robust.attr.BatchedIntegratedGradients` attributes the logit to the 784
# input pixels along the straight path from a baseline :math:`a` (here the black image)
# to :math:`x`. Its completeness holds up to the error of the quadrature:
# :math:`\sum_i \mathrm{IG}_i(x, a) = f_c(x) - f_c(a)`. On a ReLU network the path
# gradient jumps at every change of activation pattern, so the quadrature converges
# slowly; 50 Gauss-Legendre steps (the default) are checked below. IG explains the
# *difference* from the baseline, so its sum can be negative: the black image may score
# higher for a class than the digit itself does.

ig = BatchedIntegratedGradients(model)
baseline = torch.zeros_like(images)
ig_maps = ig.attribute(images, baselines=baseline, target=predicted, n_steps=50)
with torch.no_grad():
    rows = torch.arange(len(images))
    difference = model(images)[rows, predicted] - model(baseline)[rows, predicted]
ig_sums = ig_maps.sum(dim=(1, 2, 3))
for b in range(len(images)):
    print(f"image {b}: sum(IG) = {ig_sums[b].item():7.3f}, f(x) - f(baseline) = {difference[b].item():7.3f}")
relative = ((ig_sums - difference).abs() / difference.abs()).max().item()
print(f"IG completeness, largest relative error over 6 images: {relative:.2%}")

# %%
# The maps next to the inputs
# ---------------------------
#
# Each row shows a test digit and the three maps of its predicted class, upsampled
# (bilinear) to the input's 28x28 resolution for display only (``upsample=True``),
# and the Integrated Gradients map at the input's own resolution.
# CAM, Grad-CAM and IG are signed (red: evidence for the class, blue: against it);
# Grad-CAM++ is rectified by definition. IG is zero wherever the input equals the
# black baseline, so it lights up only the strokes of the digit, while the CAM family
# gives coarse 7x7 regions that can include the background around the strokes.

maps = {
    "CAM": cam.attribute(images, target=predicted, upsample=True),
    "Grad-CAM": gradcam.attribute(images, target=predicted, upsample=True),
    "Grad-CAM++": gradcampp.attribute(images, target=predicted, upsample=True),
    "Integrated Gradients": ig_maps,
}

fig, axes = plt.subplots(len(images), 1 + len(maps), figsize=(10, 2 * len(images)))
for row in range(len(images)):
    ax = axes[row, 0]
    ax.imshow(images[row, 0], cmap="gray")
    ax.set_title(f"label {labels[row].item()}, pred {predicted[row].item()}", fontsize=9)
    for col, (name, m) in enumerate(maps.items(), start=1):
        heat = m[row, 0]
        bound = heat.abs().max().item() or 1.0
        ax = axes[row, col]
        ax.imshow(images[row, 0], cmap="gray")
        ax.imshow(heat, cmap="bwr", vmin=-bound, vmax=bound, alpha=0.6)
        if row == 0:
            ax.set_title(name, fontsize=10)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
plt.show()
