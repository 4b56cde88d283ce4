"""Tests for captum_robust.models: shapes, GAP-head exactness, softplus option, validation."""

import math

import pytest
import torch
from torch import nn

from captum_robust.models import (
    MODEL_NAMES,
    GlobalAvgPool2d,
    MadryMNIST,
    Pool,
    Small,
    WideResNet,
    build_model,
)

# (in_channels, side) -> expected (K, H', W') per model
INPUTS = [(1, 28), (3, 32)]
EXPECTED_MAP = {
    "small": {28: (100, 7, 7), 32: (100, 8, 8)},
    "pool": {28: (64, 7, 7), 32: (64, 8, 8)},
    "madry": {28: (64, 7, 7), 32: (64, 8, 8)},
    "wrn": {28: (64, 7, 7), 32: (64, 8, 8)},
}
GAP_MODELS = ["small", "pool", "wrn"]


def make(name, in_channels, side, num_classes=10, softplus=None, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(in_channels=in_channels, num_classes=num_classes, softplus=softplus)
    if name == "madry":
        kwargs["input_size"] = side
    return build_model(name, **kwargs).eval()


def run_with_feature_and_head_input(model, x):
    """Return (logits, A = feature_layer output, input seen by classifier)."""
    seen = {}
    h1 = model.feature_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("A", o))
    h2 = model.classifier.register_forward_hook(lambda m, i, o: seen.__setitem__("z", i[0]))
    try:
        out = model(x)
    finally:
        h1.remove()
        h2.remove()
    return out, seen["A"], seen["z"]


@pytest.mark.parametrize("name", list(EXPECTED_MAP))
@pytest.mark.parametrize("in_channels,side", INPUTS)
def test_output_and_feature_map_shapes(name, in_channels, side):
    num_classes = 7
    model = make(name, in_channels, side, num_classes=num_classes)
    x = torch.randn(3, in_channels, side, side)
    out, a, _ = run_with_feature_and_head_input(model, x)
    assert out.shape == (3, num_classes)
    assert a.shape == (3, *EXPECTED_MAP[name][side])
    # `features` ends in the feature layer: same tensor either way.
    torch.testing.assert_close(model.features(x), a, rtol=0, atol=0)


@pytest.mark.parametrize("name", GAP_MODELS)
@pytest.mark.parametrize("in_channels,side", INPUTS)
def test_gap_head_is_exact_mean_and_cam_is_complete(name, in_channels, side):
    model = make(name, in_channels, side)
    assert model.has_gap_head is True
    assert isinstance(model.classifier, nn.Linear)
    x = torch.randn(4, in_channels, side, side)
    with torch.no_grad():
        out, a, z = run_with_feature_and_head_input(model, x)
    torch.testing.assert_close(z, a.mean(dim=(2, 3)), rtol=0, atol=1e-6)
    torch.testing.assert_close(out, model.classifier(a.mean(dim=(2, 3))), rtol=0, atol=1e-6)
    # CAM completeness (Boopathy eq. 1): sum_i (1/u) sum_k W[c,k] A_k,i + b_c = f_c(x), all c.
    w, b = model.classifier.weight, model.classifier.bias
    u = a.shape[2] * a.shape[3]
    cam = torch.einsum("ck,bkhw->bchw", w, a) / u
    torch.testing.assert_close(cam.sum(dim=(2, 3)) + b, out, rtol=1e-5, atol=1e-5)
    # and the head is not trivially constant: logits depend on the input
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_madry_has_no_gap_head_and_uses_flatten_fc():
    model = make("madry", 1, 28)
    assert MadryMNIST.has_gap_head is False and model.has_gap_head is False
    assert model.fc1.in_features == 64 * 7 * 7 and model.fc1.out_features == 1024
    assert model.classifier.in_features == 1024
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out, a, z = run_with_feature_and_head_input(model, x)
        manual = model.classifier(torch.relu(model.fc1(a.flatten(1))))
    assert z.shape == (2, 1024)
    torch.testing.assert_close(out, manual, rtol=1e-6, atol=1e-6)


def test_madry_wrong_input_size_is_a_clear_error():
    model = MadryMNIST(input_size=28)
    with pytest.raises(ValueError, match="input_size"):
        model(torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize("cls,flag", [(Small, True), (Pool, True), (WideResNet, True), (MadryMNIST, False)])
def test_has_gap_head_class_attribute(cls, flag):
    assert cls.has_gap_head is flag


@pytest.mark.parametrize("name", list(EXPECTED_MAP))
def test_feature_layer_is_a_submodule(name):
    model = make(name, 1, 28)
    assert any(m is model.feature_layer for m in model.modules())
    assert any(m is model.classifier for m in model.modules())
    assert model.feature_layer is not model
    # the property returns the same object every time
    assert model.feature_layer is model.feature_layer


def test_documented_feature_layers():
    assert isinstance(Small().feature_layer, nn.Conv2d)
    assert Small().feature_layer.out_channels == 100
    pool = Pool()
    assert pool.feature_layer is pool.features.block2
    assert isinstance(pool.feature_layer[-1], nn.MaxPool2d)
    wrn = WideResNet(widen_factor=2)
    assert wrn.feature_layer is wrn.final is wrn.features.final
    assert isinstance(wrn.final[0], nn.BatchNorm2d) and isinstance(wrn.final[1], nn.ReLU)
    assert wrn.classifier.in_features == 128


def _activations(model):
    return [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.Softplus))]


@pytest.mark.parametrize("name", list(EXPECTED_MAP))
def test_softplus_replaces_every_relu(name):
    relu_model = make(name, 1, 28)
    n_relu = sum(isinstance(m, nn.ReLU) for m in relu_model.modules())
    assert n_relu > 0
    assert not any(isinstance(m, nn.Softplus) for m in relu_model.modules())
    sp_model = make(name, 1, 28, softplus=7.5)
    assert not any(isinstance(m, nn.ReLU) for m in sp_model.modules())
    softplus = [m for m in sp_model.modules() if isinstance(m, nn.Softplus)]
    assert len(softplus) == n_relu
    assert all(m.beta == 7.5 for m in softplus)
    # same parameter names: a ReLU state dict loads strictly into the softplus twin
    sp_model.load_state_dict(relu_model.state_dict(), strict=True)


@pytest.mark.parametrize("name", list(EXPECTED_MAP))
def test_softplus_large_beta_approximates_relu_model(name):
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    relu_model = make(name, 1, 28)
    with torch.no_grad():
        ref = relu_model(x)
        errs = {}
        for beta in (50.0, 1.0):
            sp = make(name, 1, 28, softplus=beta, seed=123)  # different init, then copy
            sp.load_state_dict(relu_model.state_dict())
            errs[beta] = (sp(x) - ref).abs().max().item()
    scale = ref.abs().max().item()
    # softplus_beta(t) - relu(t) is in (0, log(2)/beta]: beta=50 is close, beta=1 is not
    assert errs[50.0] < 0.05 * scale, errs
    assert errs[1.0] > 10 * errs[50.0], errs


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("name", list(EXPECTED_MAP))
def test_invalid_softplus_raises(name, bad):
    with pytest.raises(ValueError, match="softplus"):
        build_model(name, softplus=bad)


def test_non_numeric_softplus_raises_type_error():
    with pytest.raises(TypeError, match="softplus"):
        Small(softplus="relu")
    with pytest.raises(TypeError, match="softplus"):
        Small(softplus=True)


@pytest.mark.parametrize("depth", [4, 8, 9, 11, 12, 0, -2])
def test_invalid_wrn_depth_raises(depth):
    with pytest.raises(ValueError, match="depth"):
        WideResNet(depth=depth)


@pytest.mark.parametrize("depth,blocks", [(10, 1), (16, 2), (22, 3)])
def test_wrn_depth_sets_blocks_per_group(depth, blocks):
    model = WideResNet(depth=depth, in_channels=1)
    for g in ("group1", "group2", "group3"):
        assert len(getattr(model.features, g)) == blocks
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == depth - 3  # 3x3 convs: stem + 2 per block = 1 + 6n = depth - 3
    shortcuts = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(shortcuts) == 2  # widen_factor=1: only the two strided groups change shape


def test_wrn_widen_factor_adds_shortcut_to_first_group():
    model = WideResNet(widen_factor=2)
    shortcuts = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(shortcuts) == 3


def test_invalid_name_raises_and_lists_valid_names():
    with pytest.raises(ValueError) as info:
        build_model("resnet50")
    for valid in ("small", "pool", "madry", "wrn"):
        assert valid in str(info.value)


@pytest.mark.parametrize("alias,cls", [("small", Small), ("POOL", Pool), ("Madry", MadryMNIST), ("WRN", WideResNet)])
def test_build_model_is_case_insensitive(alias, cls):
    assert type(build_model(alias)) is cls
    assert set(MODEL_NAMES) == {"small", "pool", "madry", "wrn"}


def test_build_model_passes_kwargs():
    model = build_model("wrn", depth=16, widen_factor=2, in_channels=1, num_classes=4)
    assert model.depth == 16 and model.classifier.out_features == 4
    assert model.features.conv1.in_channels == 1


@pytest.mark.parametrize(
    "kwargs", [dict(in_channels=0), dict(num_classes=0), dict(in_channels=-3)]
)
@pytest.mark.parametrize("name", list(EXPECTED_MAP))
def test_invalid_channels_or_classes_raise(name, kwargs):
    with pytest.raises(ValueError):
        build_model(name, **kwargs)


def test_invalid_madry_input_size_raises():
    with pytest.raises(ValueError, match="input_size"):
        MadryMNIST(input_size=3)


@pytest.mark.parametrize("name", list(EXPECTED_MAP))
def test_float64(name):
    model32 = make(name, 1, 28)
    model64 = make(name, 1, 28).double()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out64 = model64(x.double())
        out32 = model32(x)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-4)
    if model64.has_gap_head:
        _, a, z = run_with_feature_and_head_input(model64, x.double())
        torch.testing.assert_close(z, a.mean(dim=(2, 3)), rtol=0, atol=1e-12)


def test_gradients_reach_the_input_through_feature_layer():
    model = make("wrn", 3, 32)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # in eval mode the two examples do not interact: grad of example 0's logit w.r.t. example 1 is 0
    x2 = torch.randn(2, 3, 32, 32, requires_grad=True)
    (g,) = torch.autograd.grad(model(x2)[0, 3], x2)
    assert g[1].abs().max() == 0 and g[0].abs().max() > 0


def test_global_avg_pool():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    out = GlobalAvgPool2d()(x)
    expected = torch.tensor([[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]])
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError):
        GlobalAvgPool2d()(torch.zeros(2, 3))
    assert math.isclose(out.sum().item(), x.sum().item() / 4)
