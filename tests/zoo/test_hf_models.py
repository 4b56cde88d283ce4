"""Hugging Face vision models (tiny configs, random weights, 32 px, batch 2): the layers are found,
CAM / Grad-CAM / Grad-CAM++ equal Captum's LayerGradCam or the hand formula, Integrated Gradients
equals Captum's, a SparsifiedSmoothGrad map and its certificate run, and the CAM family takes the
models' ``ImageClassifierOutput`` without a wrapper."""

import math

import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam

from captum_robust.attr import certify

transformers = pytest.importorskip(
    "transformers", reason="the zoo needs Hugging Face transformers (pip install -e .[zoo])"
)

from captum_robust.attr import (  # noqa: E402
    CAM,
    BatchedIntegratedGradients,
    CertifiedTopK,
    GradCAM,
    GradCAMPlusPlus,
    Saliency,
    SparsifiedSmoothGrad,
    find_cam_layers,
    vit_reshape_transform,
)

N_LABELS = 5


def _resnet():
    cfg = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=N_LABELS
    )
    return transformers.ResNetForImageClassification(cfg)


def _regnet():
    cfg = transformers.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8, num_labels=N_LABELS)
    return transformers.RegNetForImageClassification(cfg)


def _mobilenet_v2():
    # output_stride=8 keeps a 4 x 4 feature map at 32 px (the default stride 32 leaves 1 x 1)
    cfg = transformers.MobileNetV2Config(depth_multiplier=0.35, image_size=32, output_stride=8, num_labels=N_LABELS)
    return transformers.MobileNetV2ForImageClassification(cfg)


def _convnext():
    cfg = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2, num_labels=N_LABELS)
    return transformers.ConvNextForImageClassification(cfg)


def _vit():
    cfg = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=N_LABELS,
    )
    return transformers.ViTForImageClassification(cfg)


# name -> (factory, feature layer, classifier or None where the head is not GAP -> linear)
CNNS = {
    "resnet": (_resnet, "resnet.encoder.stages.1", "classifier.1"),
    "regnet": (_regnet, "regnet.encoder.stages.1", "classifier.1"),
    "mobilenet_v2": (_mobilenet_v2, "mobilenet_v2.conv_1x1", "classifier"),
    "convnext": (_convnext, "convnext.encoder.stages.1", None),
}
GAP_HEADS = [name for name, (_, _, clf) in CNNS.items() if clf is not None]
_CACHE = {}


def _model(name):
    if name not in _CACHE:
        torch.manual_seed(0)
        model = (_vit if name == "vit" else CNNS[name][0])().eval()
        # BatchNorm statistics that are not the identity (a trained model's are not)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        _CACHE[name] = model
    return _CACHE[name]


def _x(batch=2, seed=1):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


class Logits(torch.nn.Module):
    """The one-line wrapper Captum needs for a Hugging Face model: ``lambda x: model(x).logits``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def _module(model, name):
    return dict(model.named_modules())[name]


def _activation_and_grads(model, layer, x, target, transform=None):
    """Hand-written: the layer's output A and d logit_target / dA (A as the layer produced it)."""
    store = []
    handle = layer.register_forward_hook(lambda m, a, out: store.append(out))
    try:
        logits = model(x).logits
    finally:
        handle.remove()
    (a,) = store
    (g,) = torch.autograd.grad(logits[torch.arange(x.shape[0]), torch.as_tensor(target)].sum(), a)
    a = a.detach()
    if transform is not None:
        a, g = transform(a), transform(g)
    return a, g


def _hand_gradcam(a, g):
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)


def _hand_gradcampp(a, g):
    # Chattopadhay et al.: alpha = g^2 / (2 g^2 + sum_j A_j g^3), w = sum_i alpha relu(g), map = relu(sum_k w A)
    s = a.sum(dim=(2, 3), keepdim=True)
    denom = 2 * g**2 + s * g**3
    alpha = torch.where(denom != 0, g**2 / torch.where(denom != 0, denom, 1.0), 0.0)
    w = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    return torch.relu((w * a).sum(dim=1, keepdim=True))


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("name", list(CNNS))
def test_find_cam_layers_names_the_right_modules(name):
    model = _model(name)
    _, layer, classifier = CNNS[name]
    if classifier is None:  # ConvNeXt: LayerNorm after the pooling
        with pytest.raises(ValueError, match=r"no global-average-pooling -> linear head.*convnext\.layernorm"):
            find_cam_layers(model, _x(1))
        found = find_cam_layers(model, _x(1), require_classifier=False)
        assert (found.layer_name, found.classifier, found.gap_linear) == (layer, None, False)
        assert found.layer is _module(model, layer)
        return
    found = find_cam_layers(model, _x(1))
    assert (found.layer_name, found.classifier_name, found.gap_linear) == (layer, classifier, True)
    assert found.layer is _module(model, layer) and found.classifier is _module(model, classifier)
    assert math.prod(model(_x(1), output_hidden_states=True).hidden_states[-1].shape[2:]) > 1


def test_vit_has_no_feature_map_and_says_what_to_do():
    model = _model("vit")
    with pytest.raises(ValueError, match="vision transformer.*reshape_transform=vit_reshape_transform"):
        find_cam_layers(model, _x(1))
    with pytest.raises(ValueError, match="vision transformer"):
        GradCAM(model).attribute(_x(), target=0)
    block_norm = [m for n, m in model.named_modules() if n.endswith("layernorm_before")][-1]
    with pytest.raises(ValueError, match=r"\(2, 17, 16\).*reshape_transform=vit_reshape_transform"):
        GradCAM(model, block_norm).attribute(_x(), target=0)


# --------------------------------------------------------------------------- CAM family


@pytest.mark.parametrize("name", GAP_HEADS)
def test_cam_is_complete_and_equals_captum_gradcam_without_relu(name):
    model, x = _model(name), _x()
    cam = CAM(model)  # no wrapper, no layers
    maps = cam.attribute(x)  # every class
    found = cam.found_layers
    logits = model(x).logits
    torch.testing.assert_close(maps.sum(dim=(2, 3)) + found.classifier.bias, logits, rtol=1e-4, atol=1e-5)
    ref = LayerGradCam(Logits(model), found.layer)
    for target in (0, [3, 1]):
        expected = ref.attribute(x, target=target)
        got = cam.attribute(x, target=target)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(CNNS))
def test_gradcam_equals_captum_layergradcam(name):
    model, x = _model(name), _x()
    gc = GradCAM(model)  # layer found on the first call
    every = gc.attribute(x, relu_attributions=True)
    assert gc.layer is _module(model, CNNS[name][1])
    ref = LayerGradCam(Logits(model), gc.layer)
    for target in (2, [4, 0]):
        expected = ref.attribute(x, target=target, relu_attributions=True)
        torch.testing.assert_close(gc.attribute(x, target=target, relu_attributions=True), expected, rtol=1e-5, atol=1e-6)
        t = torch.as_tensor(target).expand(2)
        torch.testing.assert_close(every[torch.arange(2), t].unsqueeze(1), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CNNS))
def test_gradcampp_equals_the_hand_formula(name):
    model, x = _model(name), _x()
    gpp = GradCAMPlusPlus(model)
    got = gpp.attribute(x, target=[1, 3])
    a, g = _activation_and_grads(model, gpp.layer, x, [1, 3])
    torch.testing.assert_close(got, _hand_gradcampp(a, g), rtol=1e-4, atol=1e-6)
    assert got.abs().sum() > 0


def test_vit_gradcam_with_reshape_transform_equals_the_hand_formula():
    model, x = _model("vit"), _x()
    layer = [m for n, m in model.named_modules() if n.endswith("layernorm_before")][-1]
    transform = vit_reshape_transform()
    gc = GradCAM(model, layer, reshape_transform=transform)
    every = gc.attribute(x)
    assert every.shape == (2, N_LABELS, 4, 4)
    for target in ([2, 0], [4, 4]):
        a, g = _activation_and_grads(model, layer, x, target, transform)
        expected = _hand_gradcam(a, g)
        assert expected.abs().sum() > 0
        torch.testing.assert_close(gc.attribute(x, target=target), expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(every[torch.arange(2), torch.tensor(target)].unsqueeze(1), expected, rtol=1e-5, atol=1e-7)
        gpp = GradCAMPlusPlus(model, layer, reshape_transform=transform).attribute(x, target=target)
        torch.testing.assert_close(gpp, _hand_gradcampp(a, g), rtol=1e-4, atol=1e-7)
    up = gc.attribute(x, target=0, upsample=True)
    assert up.shape == (2, 1, 32, 32)
    # bilinear upsampling keeps a constant map constant and preserves its mean approximately
    torch.testing.assert_close(up.mean(dim=(2, 3)), gc.attribute(x, target=0).mean(dim=(2, 3)), rtol=0.2, atol=1e-6)


def test_vit_gradcam_is_differentiable_through_the_transform():
    # eager attention: torch's CPU scaled-dot-product kernel has no double backward
    # ("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented")
    torch.manual_seed(0)
    model = _vit()
    model.config._attn_implementation = "eager"
    model = model.double().eval()
    x = _x().double()
    layer = [m for n, m in model.named_modules() if n.endswith("layernorm_before")][-1]
    gc = GradCAM(model, layer, reshape_transform=vit_reshape_transform())
    x.requires_grad_()
    maps = gc.attribute(x, target=[1, 2], create_graph=True)
    (grad,) = torch.autograd.grad(maps.square().sum(), x)
    # finite difference along one random direction
    d = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(5))
    eps = 1e-5
    with torch.no_grad():
        plus = gc.attribute(x + eps * d, target=[1, 2]).square().sum()
        minus = gc.attribute(x - eps * d, target=[1, 2]).square().sum()
    torch.testing.assert_close((grad * d).sum(), (plus - minus) / (2 * eps), rtol=1e-4, atol=1e-8)


# --------------------------------------------------------------------------- IG, SmoothGrad, certificate


@pytest.mark.parametrize("name", ["resnet", "convnext", "vit"])
def test_integrated_gradients_equal_captum(name):
    model, x = Logits(_model(name)), _x()
    for method in ("gausslegendre", "riemann_trapezoid"):
        expected = IntegratedGradients(model).attribute(x, target=[1, 4], n_steps=8, method=method)
        got = BatchedIntegratedGradients(model).attribute(x, target=[1, 4], n_steps=8, method=method)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_sparsified_smoothgrad_map_and_certificate_run(name):
    model, x = Logits(_model(name)), _x()
    # K = 2000 of 3072 features: at least 2K - n = 928 are certified whatever the map (Levine Thm. 2)
    sparsity, n_samples, k, rho, sigma = 0.05, 64, 2000, 0.002, 0.1
    ssg = SparsifiedSmoothGrad(model, sparsity=sparsity, sigma=sigma, n_samples=n_samples)
    maps = ssg.attribute(x, target=[0, 2], generator=torch.Generator().manual_seed(0))
    n_features = x[0].numel()
    # each noisy copy marks exactly ceil(sparsity * n) features: the mean of the map is fixed
    torch.testing.assert_close(
        maps.flatten(1).mean(dim=1), torch.full((2,), math.ceil(sparsity * n_features) / n_features)
    )
    assert maps.min() >= 0 and maps.max() <= 1
    smoothed, cert = CertifiedTopK(ssg, k=k, rho=rho).attribute(
        x, target=[0, 2], generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(smoothed, maps)  # same generator, same noise
    # Levine's Theorem 2 from the functional module on the same map
    margin = certify.hoeffding_margin(n_features, n_samples, 0.95)
    expected = certify.topk_certificate(maps.flatten(1), k, rho, sigma, margin)
    torch.testing.assert_close(torch.as_tensor(cert.overlap), torch.as_tensor(expected), check_dtype=False)
    assert bool(((cert.overlap >= 2 * k - n_features) & (cert.overlap <= k)).all())


# --------------------------------------------------------------------------- without a wrapper

_NO_WRAPPER = {
    "CAM": lambda m: CAM(m).attribute(_x(), target=0),
    "GradCAM": lambda m: GradCAM(m).attribute(_x(), target=0),
    "GradCAMPlusPlus": lambda m: GradCAMPlusPlus(m).attribute(_x(), target=0),
    "Saliency": lambda m: Saliency(m).attribute(_x(), target=0),
    "BatchedIntegratedGradients": lambda m: BatchedIntegratedGradients(m).attribute(_x(), target=0, n_steps=4),
    "SparsifiedSmoothGrad": lambda m: SparsifiedSmoothGrad(m, sparsity=0.1, sigma=0.1, n_samples=4).attribute(
        _x(), target=0, generator=torch.Generator().manual_seed(0)
    ),
}


@pytest.mark.parametrize("method", list(_NO_WRAPPER))
def test_hugging_face_output_without_a_wrapper(method):
    """Every attr method on the raw model equals the same method on ``model(x).logits``."""
    model = _model("resnet")
    raw = _NO_WRAPPER[method](model)
    wrapped = _NO_WRAPPER[method](Logits(model))
    torch.testing.assert_close(raw, wrapped, rtol=0, atol=0)
