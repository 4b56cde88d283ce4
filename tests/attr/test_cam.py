"""CAM, Grad-CAM and Grad-CAM++: closed forms, agreement with Captum, gradients, errors, side effects."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

from captum_robust.attr import CAM, GradCAM, GradCAMPlusPlus
from captum_robust.models import MadryMNIST, Pool, Small, WideResNet
from tests.helpers.models import TinyGapNet, TwoInputNet

GAP_MODELS = [Small, Pool, WideResNet]


def _gap_model(cls, dtype=torch.float32):
    return cls(in_channels=1).to(dtype).eval()


# --------------------------------------------------------------------------- CAM


@pytest.mark.parametrize("cls", GAP_MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 6])
def test_cam_completeness_every_class(cls, dtype, batch):
    model = _gap_model(cls, dtype)
    x = torch.rand(batch, 1, 28, 28, dtype=dtype)
    maps = CAM(model, model.feature_layer, model.classifier).attribute(x)
    logits = model(x)
    assert maps.shape == (batch, 10, 7, 7) and maps.dtype == dtype
    total = maps.sum(dim=(2, 3)) + model.classifier.bias
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(total, logits, rtol=0, atol=tol * (1 + logits.abs().max().item()))


def test_cam_hand_computation():
    # conv 1x1 with known weights -> GAP -> linear with known weights.
    conv = nn.Conv2d(1, 2, 1)
    fc = nn.Linear(2, 3)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
        conv.bias[:] = torch.tensor([0.5, 1.0])
        fc.weight[:] = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [0.25, -3.0]])
        fc.bias[:] = torch.tensor([0.1, 0.2, 0.3])
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    maps = CAM(model, conv, fc).attribute(x)
    # A_0 = x + 0.5, A_1 = -2x + 1, u = 4:
    a0 = np.array([[0.5, 1.5], [2.5, 3.5]])
    a1 = np.array([[1.0, -1.0], [-3.0, -5.0]])
    w = np.array([[1.0, 2.0], [-1.0, 0.0], [0.25, -3.0]])
    expected = np.stack([(w[c, 0] * a0 + w[c, 1] * a1) / 4 for c in range(3)])
    np.testing.assert_allclose(maps[0].numpy(), expected, rtol=1e-6)
    # class 0 by hand: cells (0.5+2)/4, (1.5-2)/4, (2.5-6)/4, (3.5-10)/4
    np.testing.assert_allclose(maps[0, 0].numpy(), [[0.625, -0.125], [-0.875, -1.625]], rtol=1e-6)
    raw = CAM(model, conv, fc).attribute(x, target=0, raw=True)
    np.testing.assert_allclose(raw[0, 0].numpy(), 4 * expected[0], rtol=1e-6)


@pytest.mark.parametrize("cls", GAP_MODELS)
def test_cam_equals_gradcam_without_relu_on_gap_head(cls):
    model = _gap_model(cls, torch.float64)
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    cam = CAM(model, model.feature_layer, model.classifier).attribute(x)
    gc = GradCAM(model, model.feature_layer).attribute(x)
    torch.testing.assert_close(cam, gc, rtol=1e-9, atol=1e-12)


def test_cam_raw_mean_is_logit_minus_bias_and_targets_select_classes():
    model = _gap_model(Small)
    x = torch.rand(4, 1, 28, 28)
    cam = CAM(model, model.feature_layer, model.classifier)
    raw = cam.attribute(x, raw=True)
    torch.testing.assert_close(raw.mean(dim=(2, 3)) + model.classifier.bias, model(x), rtol=0, atol=1e-5)
    every = cam.attribute(x)
    target = [3, 0, 9, 3]
    for t in (target, torch.tensor(target)):
        sel = cam.attribute(x, target=t)
        assert sel.shape == (4, 1, 7, 7)
        torch.testing.assert_close(sel[:, 0], every[torch.arange(4), torch.tensor(target)])
    torch.testing.assert_close(cam.attribute(x, target=7)[:, 0], every[:, 7])


def test_cam_rejects_head_without_global_average_pooling():
    model = MadryMNIST().eval()
    cam = CAM(model, model.feature_layer, model.classifier)
    with pytest.raises(ValueError, match="GradCAM"):
        cam.attribute(torch.rand(2, 1, 28, 28))
    # Max pooling instead of average pooling is also caught.
    conv, fc = nn.Conv2d(1, 3, 3), nn.Linear(3, 2)
    maxhead = nn.Sequential(conv, nn.AdaptiveMaxPool2d(1), nn.Flatten(), fc)
    with pytest.raises(ValueError, match="not the global average pool"):
        CAM(maxhead, conv, fc).attribute(torch.rand(3, 1, 6, 6))


def test_cam_constructor_errors():
    model = _gap_model(Small)
    with pytest.raises(TypeError, match="nn.Linear"):
        CAM(model, model.feature_layer, model.features)
    with pytest.raises(ValueError, match="not a submodule"):
        CAM(model, nn.Conv2d(1, 1, 1), model.classifier)
    with pytest.raises(ValueError, match="not a submodule"):
        CAM(model, model.feature_layer, nn.Linear(100, 10))
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(model, nn.Conv2d(1, 1, 1))


# --------------------------------------------------------------------------- Grad-CAM vs Captum


@pytest.mark.parametrize("cls", [Small, Pool, WideResNet, MadryMNIST])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_equals_captum_layergradcam(cls, relu):
    model = cls(in_channels=1).eval() if cls is not MadryMNIST else cls().eval()
    x = torch.rand(6, 1, 28, 28)
    ours = GradCAM(model, model.feature_layer)
    ref = LayerGradCam(model, model.feature_layer)
    every = ours.attribute(x, relu_attributions=relu)
    for target in (0, 4, [1, 2, 3, 4, 5, 6], torch.tensor([9, 8, 7, 6, 5, 4])):
        expected = ref.attribute(x, target=target, relu_attributions=relu)
        got = ours.attribute(x, target=target, relu_attributions=relu)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        t = torch.as_tensor(target).expand(6)
        torch.testing.assert_close(every[torch.arange(6), t].unsqueeze(1), expected, rtol=1e-6, atol=1e-6)


def test_gradcam_tuple_inputs_additional_args_and_layer_input():
    model = TwoInputNet().eval()
    x1, x2 = torch.rand(3, 1, 6, 6), torch.rand(3, 1, 6, 6)
    for to_input in (False, True):
        expected = LayerGradCam(model, model.feat).attribute(
            (x1, x2), target=[0, 3, 1], additional_forward_args=2.5, attribute_to_layer_input=to_input
        )
        got = GradCAM(model, model.feat).attribute(
            (x1, x2), target=[0, 3, 1], additional_forward_args=2.5, attribute_to_layer_input=to_input
        )
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
        per_channel = LayerGradCam(model, model.feat).attribute(
            (x1, x2), target=2, additional_forward_args=(2.5,), attr_dim_summation=False,
            attribute_to_layer_input=to_input,
        )
        got = GradCAM(model, model.feat).attribute(
            (x1, x2), target=2, additional_forward_args=(2.5,), attr_dim_summation=False,
            attribute_to_layer_input=to_input,
        )
        torch.testing.assert_close(got, per_channel, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus])
def test_class_batches_give_the_same_maps(method):
    model = _gap_model(Pool)
    x = torch.rand(3, 1, 28, 28)
    full = method(model, model.feature_layer).attribute(x)
    for cbs in (1, 3, 7, 10):
        torch.testing.assert_close(method(model, model.feature_layer).attribute(x, class_batch_size=cbs), full)


# --------------------------------------------------------------------------- Grad-CAM++


def _gradcampp_loops(activation: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Direct evaluation of Grad-CAM++ for one example: activation, grad K x H x W."""
    k_, h_, w_ = activation.shape
    weights = np.zeros(k_)
    for k in range(k_):
        total_a = sum(activation[k, i, j] for i in range(h_) for j in range(w_))
        for i in range(h_):
            for j in range(w_):
                g = grad[k, i, j]
                denom = 2 * g**2 + total_a * g**3
                alpha = g**2 / denom if denom != 0 else 0.0
                weights[k] += alpha * max(g, 0.0)
    cam = np.zeros((h_, w_))
    for k in range(k_):
        cam += weights[k] * activation[k]
    return np.maximum(cam, 0.0)


@pytest.mark.parametrize("softplus", [None, 2.0])
def test_gradcampp_equals_direct_formula(softplus):
    model = TinyGapNet(softplus=softplus).double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    every = GradCAMPlusPlus(model, model.conv2).attribute(x)
    for b in range(3):
        for c in range(3):
            act = model.conv2(model.act(model.conv1(x[b : b + 1])))
            act_leaf = act.detach().requires_grad_()
            score = model.fc(act_leaf.mean(dim=(2, 3)))[0, c]
            (g,) = torch.autograd.grad(score, act_leaf)
            expected = _gradcampp_loops(act_leaf[0].detach().numpy(), g[0].numpy())
            np.testing.assert_allclose(every[b, c].numpy(), expected, rtol=1e-10, atol=1e-12)
            one = GradCAMPlusPlus(model, model.conv2).attribute(x[b : b + 1], target=c)
            np.testing.assert_allclose(one[0, 0].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_gradcampp_closed_form_is_exact_for_exponential_output():
    """With Y = exp(S) and S linear in A, the general Grad-CAM++ weights (true second and third
    derivatives of Y) equal exp(S) times the closed form computed from dS/dA."""
    model = TinyGapNet().double().eval()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    c = 1
    ours = GradCAMPlusPlus(model, model.conv2).attribute(x, target=c)[0, 0]
    act = model.conv2(model.act(model.conv1(x))).detach().requires_grad_()
    score = model.fc(act.mean(dim=(2, 3)))[0, c]
    y = torch.exp(score)
    (d1,) = torch.autograd.grad(y, act, create_graph=True)
    flat1 = d1.reshape(-1)
    d2 = torch.zeros(flat1.numel(), dtype=torch.float64)
    d3 = torch.zeros(flat1.numel(), dtype=torch.float64)
    for i in range(flat1.numel()):
        (row2,) = torch.autograd.grad(flat1[i], act, create_graph=True)
        second = row2.reshape(-1)[i]
        (row3,) = torch.autograd.grad(second, act, retain_graph=True)
        d2[i] = second.detach()
        d3[i] = row3.reshape(-1)[i]
    a = act.detach()[0]
    d1n, d2n, d3n = flat1.detach().view_as(a), d2.view_as(a), d3.view_as(a)
    denom = 2 * d2n + a.sum(dim=(1, 2), keepdim=True) * d3n
    alpha = torch.where(denom != 0, d2n / denom, torch.zeros_like(denom))
    w = (alpha * F.relu(d1n)).sum(dim=(1, 2), keepdim=True)
    exact = F.relu((w * a).sum(0))
    torch.testing.assert_close(exact, torch.exp(score.detach()) * ours, rtol=1e-9, atol=1e-12)
    assert exact.abs().max() > 0


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "make",
    [
        lambda m: (lambda x: CAM(m, m.conv2, m.fc).attribute(x, create_graph=True)),
        lambda m: (lambda x: CAM(m, m.conv2, m.fc).attribute(x, target=[2, 0], create_graph=True)),
        lambda m: (lambda x: GradCAM(m, m.conv2).attribute(x, create_graph=True)),
        lambda m: (lambda x: GradCAM(m, m.conv2).attribute(x, target=[1, 2], create_graph=True)),
        lambda m: (lambda x: GradCAM(m, m.conv2).attribute(x, target=1, relu_attributions=True, create_graph=True)),
        lambda m: (lambda x: GradCAMPlusPlus(m, m.conv2).attribute(x, target=[0, 1], create_graph=True)),
        lambda m: (lambda x: GradCAMPlusPlus(m, m.conv2).attribute(x, create_graph=True, class_batch_size=2)),
    ],
    ids=["cam-all", "cam-target", "gradcam-all", "gradcam-target", "gradcam-relu", "gradcampp", "gradcampp-all"],
)
def test_gradcheck_with_respect_to_inputs(make):
    model = TinyGapNet(softplus=1.0).double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(make(model), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("which", ["cam", "gradcam"])
def test_parameter_gradients_match_finite_differences(which):
    model = TinyGapNet(softplus=1.0).double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    weights = torch.randn(3, 3, 5, 5, dtype=torch.float64)

    def loss():
        if which == "cam":
            maps = CAM(model, model.conv2, model.fc).attribute(x, create_graph=True)
        else:
            maps = GradCAM(model, model.conv2).attribute(x, create_graph=True)
        return (maps * weights).sum()

    param = model.conv1.weight
    (grad,) = torch.autograd.grad(loss(), param)
    assert param.grad is None
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (1, 1, 2, 1), (2, 0, 1, 2)]:
        with torch.no_grad():
            orig = param[idx].item()
            param[idx] = orig + eps
            up = loss().item()
            param[idx] = orig - eps
            down = loss().item()
            param[idx] = orig
        assert grad[idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_without_create_graph_maps_are_detached():
    model = TinyGapNet(softplus=1.0).eval()
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    for maps in (
        CAM(model, model.conv2, model.fc).attribute(x),
        GradCAM(model, model.conv2).attribute(x),
        GradCAMPlusPlus(model, model.conv2).attribute(x, target=0),
    ):
        assert not maps.requires_grad


# --------------------------------------------------------------------------- display options


def test_upsample_to_input_size():
    model = _gap_model(Small)
    x = torch.rand(2, 1, 28, 28)
    cam = CAM(model, model.feature_layer, model.classifier)
    small = cam.attribute(x, target=3)
    near = cam.attribute(x, target=3, upsample=True, interpolate_mode="nearest")
    assert near.shape == (2, 1, 28, 28)
    torch.testing.assert_close(near, small.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    bil = GradCAM(model, model.feature_layer).attribute(x, upsample=True)
    assert bil.shape == (2, 10, 28, 28)
    # bilinear interpolation never leaves the range of the coarse map
    coarse = GradCAM(model, model.feature_layer).attribute(x)
    assert torch.all(bil.amax(dim=(2, 3)) <= coarse.amax(dim=(2, 3)) + 1e-6)
    assert torch.all(bil.amin(dim=(2, 3)) >= coarse.amin(dim=(2, 3)) - 1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcampp"])
def test_bad_targets_and_inputs(method):
    model = _gap_model(Small)
    attr = {
        "cam": CAM(model, model.feature_layer, model.classifier),
        "gradcam": GradCAM(model, model.feature_layer),
        "gradcampp": GradCAMPlusPlus(model, model.feature_layer),
    }[method]
    x = torch.rand(3, 1, 28, 28)
    with pytest.raises(ValueError, match=r"class index 10.*\[0, 9\]"):
        attr.attribute(x, target=10)
    with pytest.raises(ValueError, match="class index -1"):
        attr.attribute(x, target=[0, -1, 2])
    with pytest.raises(ValueError, match="2 entries but the batch has 3"):
        attr.attribute(x, target=[0, 1])
    with pytest.raises(TypeError, match="integer tensor"):
        attr.attribute(x, target=torch.tensor([0.0, 1.0, 2.0]))
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        attr.attribute(bad)
    bad[1, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        attr.attribute(bad)


def test_layer_not_called_is_reported():
    model = TinyGapNet().eval()
    unused = nn.Conv2d(4, 4, 1)
    model.unused = unused
    with pytest.raises(ValueError, match="called 0 times"):
        GradCAM(model, unused).attribute(torch.rand(1, 2, 5, 5))


# --------------------------------------------------------------------------- side effects


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcampp"])
@pytest.mark.parametrize("create_graph", [False, True])
def test_no_side_effects(method, create_graph):
    model = WideResNet(in_channels=1)  # has BatchNorm; left in train mode on purpose
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    model.classifier.weight.requires_grad_(False)
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    req_before = {n: p.requires_grad for n, p in model.named_parameters()}
    attr = {
        "cam": CAM(model, model.feature_layer, model.classifier),
        "gradcam": GradCAM(model, model.feature_layer),
        "gradcampp": GradCAMPlusPlus(model, model.feature_layer),
    }[method]
    x = torch.rand(4, 1, 28, 28)
    x_copy = x.clone()
    maps = attr.attribute(x, create_graph=create_graph)
    assert maps.requires_grad == create_graph
    assert all(m.training for m in model.modules())
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads_before[n]), n
        assert p.requires_grad == req_before[n], n
    assert torch.equal(x, x_copy)
    assert not x.requires_grad


def test_exceptions_remove_hooks():
    model = _gap_model(Small)
    cam = CAM(model, model.feature_layer, model.classifier)
    with pytest.raises(ValueError):
        cam.attribute(torch.rand(2, 1, 28, 28), target=99)
    assert not model.feature_layer._forward_hooks and not model.classifier._forward_pre_hooks
    bad = torch.rand(2, 1, 28, 28)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        GradCAM(model, model.feature_layer).attribute(bad)
    assert not model.feature_layer._forward_hooks


def test_float32_and_float64_agree():
    model = _gap_model(Small)
    x = torch.rand(3, 1, 28, 28)
    for method in (GradCAM, GradCAMPlusPlus):
        m32 = method(model, model.feature_layer).attribute(x)
        model64 = _gap_model(Small, torch.float64)
        model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
        m64 = method(model64, model64.feature_layer).attribute(x.double())
        torch.testing.assert_close(m32.double(), m64, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcampp"])
def test_cuda_matches_cpu(method):
    model = _gap_model(Small)
    x = torch.rand(4, 1, 28, 28)

    def run(m, inp):
        attr = {
            "cam": CAM(m, m.feature_layer, m.classifier),
            "gradcam": GradCAM(m, m.feature_layer),
            "gradcampp": GradCAMPlusPlus(m, m.feature_layer),
        }[method]
        return attr.attribute(inp), attr.attribute(inp, target=torch.tensor([1, 2, 3, 4], device=inp.device))

    cpu_all, cpu_one = run(model, x)
    model_cuda = _gap_model(Small).cuda()
    model_cuda.load_state_dict(model.state_dict())
    gpu_all, gpu_one = run(model_cuda, x.cuda())
    assert gpu_all.device.type == "cuda"
    torch.testing.assert_close(gpu_all.cpu(), cpu_all, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu_one.cpu(), cpu_one, rtol=1e-4, atol=1e-5)


def test_docstring_examples_run():
    import doctest

    from captum_robust.attr._core import cam as cam_module

    result = doctest.testmod(cam_module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
