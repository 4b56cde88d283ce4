"""
Your own model: a Hugging Face ResNet and a vision transformer
===============================================================

The other tutorials explain the papers' small digit networks. This one takes the kind of model
people actually bring: a Hugging Face ``transformers`` image classifier. Nothing is downloaded:
both models are built from tiny configurations with random weights
(``transformers.ResNetConfig``, ``transformers.ViTConfig``) and trained for a few
seconds on scikit-learn's digits, upsampled to 32 x 32 and repeated to three channels, so the
script runs in well under a minute on two CPU cores. With a pretrained model (``from_pretrained``)
every call below is the same.

What it shows:

* the models return a Hugging Face output (``ImageClassifierOutput``), not a tensor: the library
  reads its ``.logits``, no wrapper needed;
* :class:`~captum_robust.attr.GradCAM` without a layer: :func:`~captum_robust.attr.find_cam_layers`
  finds the last feature map (and the linear classifier after the global average pool) by tracing
  one forward pass;
* Grad-CAM of a vision transformer, whose layers output token sequences, with
  ``reshape_transform=``:func:`~captum_robust.attr.vit_reshape_transform`;
* Ghorbani et al.'s top-k attack on the ResNet's Grad-CAM maps
  (:class:`~captum_robust.robust.attacks.TopKAttack`) and Levine et al.'s certificate
  (:class:`~captum_robust.attr.CertifiedTopK`) on a sparsified SmoothGrad map.

A model trained on ImageNet-normalised inputs is wrapped in
:class:`captum_robust.data.Normalize` first (see the user guide), so that attack radii and
certificates are in pixels in [0, 1].
"""

# %%
# Two Hugging Face models, trained for a few seconds
# --------------------------------------------------
#
# :func:`captum_robust.data.load_digits` with ``size=32`` gives 1 x 32 x 32 images in [0, 1];
# repeating the channel makes them RGB-shaped. The ResNet has two stages (16 and 32 channels);
# the ViT cuts the image into 16 patches of 8 x 8 and has two transformer blocks of width 32.
# :func:`~captum_robust.training.train_classifier` expects a tensor of logits from the model,
# so the loop is written out here: it is the usual one, with ``model(x).logits``.

import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

from captum_robust.attr import CertifiedTopK, GradCAM, SparsifiedSmoothGrad, find_cam_layers, vit_reshape_transform
from captum_robust.data import load_digits
from captum_robust.robust.attacks import TopKAttack, softplus_surrogate
from captum_robust.robust.discrepancy import topk_intersection

torch.set_num_threads(1)  # tiny models: one thread is as fast, and robust to busy machines
torch.manual_seed(0)
digits = load_digits(size=32)
x_train, y_train = digits.train.tensors
x_test, y_test = digits.test.tensors
x_train, x_test = x_train.repeat(1, 3, 1, 1), x_test.repeat(1, 3, 1, 1)  # N x 3 x 32 x 32

resnet = ResNetForImageClassification(ResNetConfig(
    num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10))
vit = ViTForImageClassification(ViTConfig(
    image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, num_labels=10))


def train(model, epochs, lr):
    """Adam on the cross-entropy of ``model(x).logits``, batches of 64; returns the test accuracy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train), generator=order).split(64):
            loss = F.cross_entropy(model(x_train[idx]).logits, y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).logits.argmax(dim=1) == y_test).double().mean().item()


start = time.perf_counter()
print(f"ResNet test accuracy {train(resnet, 4, 3e-3):.3f}")
print(f"ViT test accuracy {train(vit, 10, 3e-3):.3f}")
print(f"trained both in {time.perf_counter() - start:.1f} s")

# %%
# Grad-CAM without naming a layer
# -------------------------------
#
# :func:`~captum_robust.attr.find_cam_layers` runs the model once on a probe input with hooks on
# every submodule and keeps the module whose output, averaged over its spatial cells, is what the
# final linear layer receives. It reads numbers, not names, so it works the same on torchvision-style
# and Hugging Face models. ``GradCAM(model)`` calls it on the first batch it explains.

images, labels = x_test[:6], y_test[:6]
found = find_cam_layers(resnet, images)
print(f"feature layer: {found.layer_name}, classifier: {found.classifier_name}, GAP -> linear: {found.gap_linear}")

gradcam = GradCAM(resnet)  # no layer: found on the first call
with torch.no_grad():
    predicted = resnet(images).logits.argmax(dim=1)
resnet_maps = gradcam.attribute(images, target=predicted)  # B x 1 x 4 x 4 on the last stage
print(f"ResNet Grad-CAM maps {tuple(resnet_maps.shape)}; found {gradcam.found_layers.layer_name}")

# %%
# Grad-CAM of a vision transformer
# --------------------------------
#
# A transformer block outputs tokens, ``B x N x D`` (here the class token and 16 patch tokens
# of width 32), not a ``B x K x h x w`` feature map; Grad-CAM refuses such a layer with an error
# that names the fix. :func:`~captum_robust.attr.vit_reshape_transform` drops the class token and
# lays the patch tokens out on their 4 x 4 grid, as pytorch-grad-cam's ``reshape_transform``
# does. The layer is the *input* normalisation of the last block (``layernorm_before``), as
# pytorch-grad-cam recommends: the outputs of the last block and of the final layer norm reach
# the classifier only through the class token, so every patch token there gets zero gradient and
# the map would be zero.

vit_layer = vit.vit.layers[-1].layernorm_before
vit_gradcam = GradCAM(vit, vit_layer, reshape_transform=vit_reshape_transform())
with torch.no_grad():
    vit_predicted = vit(images).logits.argmax(dim=1)
vit_maps = vit_gradcam.attribute(images, target=vit_predicted)
print(f"ViT Grad-CAM maps {tuple(vit_maps.shape)}")

# %%
# An attack on the ResNet's Grad-CAM maps
# ---------------------------------------
#
# :class:`~captum_robust.robust.attacks.TopKAttack` (Ghorbani et al. 2019) looks, within an
# l-inf ball of radius ``eps`` around each image (pixels stay in [0, 1]), for an input that keeps
# the prediction but pushes the most important cells out of the map's top-k. The map is taken at
# the input's resolution (``upsample=True``, 1,024 pixels) and the attack's gradient through it
# uses a softplus copy of the ResNet (:func:`~captum_robust.robust.attacks.softplus_surrogate`):
# a ReLU network's Grad-CAM has zero second derivatives almost everywhere. ``eps = 8/255`` is the
# usual CIFAR budget; 30 steps keep the example short (the papers use 100 or more). An image
# whose every step changed the prediction keeps its clean input (``prediction_kept`` False
# there, intersection 1).

attack = TopKAttack(resnet, gradcam, k=100, eps=8 / 255, step_size=1 / 255, n_iterations=30,
                    surrogate=softplus_surrogate(resnet), attribution_kwargs={"upsample": True})
start = time.perf_counter()
x_adv, result = attack.perturb(images, target=predicted)
print(f"attack: {time.perf_counter() - start:.1f} s, an accepted iterate found: {result.prediction_kept.tolist()}")
print(f"top-100 intersection of the Grad-CAM maps after the attack: {result.similarity.numpy().round(2)}")
adv_maps = gradcam.attribute(x_adv, target=predicted)

# %%
# A certificate on a SmoothGrad map
# ---------------------------------
#
# Levine et al.'s sparsified SmoothGrad averages a sparsified gradient map (its top 10% set to 1,
# the rest 0) over Gaussian noise of standard deviation ``sigma``. For such a map
# :class:`~captum_robust.attr.CertifiedTopK` proves, with probability 95%, that every input within
# l2 distance ``rho`` keeps at least ``overlap`` of the map's top-``k`` pixels in the top-``k``
# of its own smoothed map. A Grad-CAM map has no such certificate: the attack above is the only
# evidence about it. ``rho`` is in pixel units here, 0.1 being a change of 0.1 of the full range
# in one pixel or of about 0.002 in all 3,072 values.

ssg = SparsifiedSmoothGrad(resnet, sigma=0.25, sparsity=0.1, n_samples=2048)
certified = CertifiedTopK(ssg, k=0.2, rho=0.1)
start = time.perf_counter()
ssg_maps, certificate = certified.attribute(images, target=predicted, generator=torch.Generator().manual_seed(0))
print(f"certificate: {time.perf_counter() - start:.1f} s, k = {certificate.k} of {ssg_maps[0].numel()} values")
print(f"certified top-k overlap: {certificate.overlap.tolist()} (fraction {certificate.fraction.numpy().round(2)})")

# %%
# One figure
# ----------
#
# Rows: the digit, the ResNet's Grad-CAM map before and after the attack (upsampled from 4 x 4
# for display), the ViT's Grad-CAM map (4 x 4 patches) and the sparsified SmoothGrad map summed
# over the three channels.


def show(ax, image, title):
    ax.imshow(image.detach(), cmap="viridis")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


up = dict(size=images.shape[-2:], mode="bilinear", align_corners=False)
fig, axes = plt.subplots(5, len(images), figsize=(1.6 * len(images), 8.4))
for i in range(len(images)):
    show(axes[0, i], images[i, 0], f"label {labels[i].item()}")
    show(axes[1, i], F.interpolate(resnet_maps, **up)[i, 0], "ResNet Grad-CAM")
    show(axes[2, i], F.interpolate(adv_maps, **up)[i, 0], f"attacked, top-100 {result.similarity[i]:.2f}")
    show(axes[3, i], vit_maps[i, 0], "ViT Grad-CAM")
    show(axes[4, i], ssg_maps[i].sum(0), f"SSG, certified {certificate.overlap[i].item()}/{certificate.k}")
fig.tight_layout()
plt.show()
