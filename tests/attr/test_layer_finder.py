"""find_cam_layers on torchvision-shaped models (written here: torchvision itself cannot be imported
next to the CPU torch of this environment), the library's models, and the refusals; CAM/Grad-CAM
with omitted layers; structured outputs; reshape_transform."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

from captum_robust.attr import CAM, CAMLayers, GradCAM, GradCAMPlusPlus, find_cam_layers, vit_reshape_transform
from captum_robust.models import Pool, Small, WideResNet


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ``relu`` module called twice, ``out += identity``."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TVResNet(nn.Module):
    """torchvision.models.ResNet's structure, tiny."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TVDenseNet(nn.Module):
    """torchvision.models.DenseNet's tail: ``features`` (ends in norm5), functional in-place ReLU, pool."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.features.add_module("norm5", nn.BatchNorm2d(8))
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


class TVMobileNet(nn.Module):
    """torchvision MobileNetV2/EfficientNet shape: features -> avgpool -> flatten -> Sequential(Dropout, Linear)."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True), nn.Conv2d(8, 12, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(12, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TVVGG(nn.Module):
    """torchvision.models.VGG: features -> AdaptiveAvgPool2d(2) -> flatten -> MLP."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(16, 8), nn.ReLU(True), nn.Dropout(), nn.Linear(8, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _trained_like(model):
    """Non-trivial BatchNorm statistics, eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


X = torch.rand(2, 3, 16, 16)


@pytest.mark.parametrize(
    "cls, layer, classifier",
    [(TVResNet, "layer2", "fc"), (TVMobileNet, "features", "classifier.1")],
)
def test_torchvision_shapes_with_gap_linear_head(cls, layer, classifier):
    torch.manual_seed(1)
    model = _trained_like(cls())
    found = find_cam_layers(model, X)
    assert isinstance(found, CAMLayers) and found.gap_linear
    assert (found.layer_name, found.classifier_name) == (layer, classifier)
    modules = dict(model.named_modules())
    assert found.layer is modules[layer] and found.feature_layer is modules[layer]
    assert found.classifier is modules[classifier]
    got_layer, got_classifier = found  # unpacks as (layer, classifier)
    assert got_layer is found.layer and got_classifier is found.classifier
    # CAM with the found layers is complete: sum of the map + bias = logit
    maps = CAM(model).attribute(X)
    logits = model(X)
    torch.testing.assert_close(maps.sum(dim=(2, 3)) + modules[classifier].bias, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [Small, Pool, WideResNet])
def test_library_models(cls):
    model = cls(in_channels=1).eval()
    found = find_cam_layers(model, torch.rand(1, 1, 28, 28))
    assert found.gap_linear
    assert found.classifier is model.classifier
    assert found.layer is model.feature_layer  # the model's own name for the map (``features`` produces it too)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(
        CAM(model).attribute(x), CAM(model, model.feature_layer, model.classifier).attribute(x), rtol=0, atol=0
    )


def test_densenet_tail_is_refused_for_cam_and_gradcam_uses_features():
    model = _trained_like(TVDenseNet())
    with pytest.raises(ValueError, match=r"no global-average-pooling -> linear head.*'classifier'.*'features'"):
        find_cam_layers(model, X)
    with pytest.raises(ValueError, match="CAM does not apply"):
        CAM(model).attribute(X)
    found = find_cam_layers(model, X, require_classifier=False)
    assert found.layer is model.features and found.classifier is None and not found.gap_linear
    # Grad-CAM with the layer omitted: Captum's LayerGradCam on model.features (the in-place ReLU after it)
    ours = GradCAM(model).attribute(X, target=[1, 3])
    ref = LayerGradCam(model, model.features).attribute(X, target=[1, 3])
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_vgg_head_is_refused_and_the_rule_picks_the_last_wide_map():
    torch.manual_seed(2)
    model = TVVGG().eval()
    with pytest.raises(ValueError, match=r"'classifier.3'.*CAM does not apply.*require_classifier=False"):
        find_cam_layers(model, X)
    found = find_cam_layers(model, X, require_classifier=False)
    assert found.layer_name == "avgpool" and found.classifier is None  # last 4-D output with > 1 cell
    gc = GradCAMPlusPlus(model)
    got = gc.attribute(X, target=0)
    assert gc.layer is model.avgpool
    torch.testing.assert_close(got, GradCAMPlusPlus(model, model.avgpool).attribute(X, target=0), rtol=0, atol=0)


def test_model_without_feature_map_and_bad_arguments():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ValueError, match="no submodule returns a 4-D feature map"):
        find_cam_layers(mlp, torch.rand(2, 3, 2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        find_cam_layers(lambda x: x, X)
    with pytest.raises(TypeError, match="layer= is required"):
        GradCAM(lambda x: x)
    with pytest.raises(TypeError, match="require_classifier"):
        find_cam_layers(TVResNet(), X, require_classifier="yes")
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        find_cam_layers(nn.Conv2d(3, 2, 3), X)


def test_find_cam_layers_has_no_side_effects():
    model = TVResNet().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = X.clone()
    find_cam_layers(model, x)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():  # BatchNorm running statistics untouched
        assert torch.equal(v, state[k]), k
    assert torch.equal(x, X) and not any(p.grad is not None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


class DictOutput(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {"logits": self.inner(x), "other": torch.zeros(1)}


class LogitsObject(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        class Out:
            pass

        out = Out()
        out.logits = self.inner(x)
        return out


@pytest.mark.parametrize("wrap", [DictOutput, LogitsObject])
def test_structured_outputs_give_the_tensor_models_maps(wrap):
    torch.manual_seed(3)
    inner = _trained_like(TVResNet())
    model = wrap(inner).eval()
    found = find_cam_layers(model, X)
    assert found.layer is inner.layer2 and found.classifier is inner.fc
    for method in (CAM, GradCAM, GradCAMPlusPlus):
        torch.testing.assert_close(method(model).attribute(X), method(inner).attribute(X), rtol=0, atol=0)


def test_non_spatial_layer_output_is_an_error_and_1d_maps_take_a_transform():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    x = torch.rand(2, 2, 9)
    with pytest.raises(ValueError, match=r"\(2, 3, 7\).*reshape_transform"):
        GradCAM(model, model[0]).attribute(x, target=0)
    got = GradCAM(model, model[0], reshape_transform=lambda a: a.unsqueeze(2)).attribute(x, target=[0, 2])
    ref = LayerGradCam(model, model[0]).attribute(x, target=[0, 2])  # B x 1 x L
    torch.testing.assert_close(got, ref.unsqueeze(2), rtol=1e-6, atol=1e-7)


def test_vit_reshape_transform_layout_and_errors():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # class token + a 2 x 3 grid
    grid = vit_reshape_transform(height=2)(tokens)
    assert grid.shape == (2, 3, 2, 3)
    # patch (row r, column c) is token 1 + 3 r + c, its features in dimension 1
    assert torch.equal(grid[1, :, 1, 2], tokens[1, 1 + 3 * 1 + 2])
    assert torch.equal(vit_reshape_transform(width=3)(tokens), grid)
    square = vit_reshape_transform(skip_tokens=0)(torch.rand(2, 16, 5))
    assert square.shape == (2, 5, 4, 4)
    with pytest.raises(ValueError, match="6 patch tokens.*height= and width="):
        vit_reshape_transform()(tokens)
    with pytest.raises(ValueError, match="skip_tokens"):
        vit_reshape_transform(skip_tokens=-1)
    with pytest.raises(TypeError, match="reshape_transform"):
        GradCAM(TVResNet(), reshape_transform=3)


def test_cam_with_only_the_layer_and_additional_args_and_one_probe():
    from tests.helpers.models import TwoInputNet

    torch.manual_seed(5)
    model = _trained_like(TVResNet())
    cam = CAM(model, model.layer2)  # classifier omitted: found, the given layer kept
    maps = cam.attribute(X, target=[0, 4])
    assert cam.classifier is model.fc and cam.layer is model.layer2
    torch.testing.assert_close(maps, CAM(model, model.layer2, model.fc).attribute(X, target=[0, 4]), rtol=0, atol=0)
    # the layers are found once: later calls run no probe pass
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        cam.attribute(X)
    finally:
        handle.remove()
    assert len(calls) == 1
    # additional_forward_args reach the probe pass
    two = TwoInputNet().eval()
    x1, x2 = torch.rand(3, 1, 6, 6), torch.rand(3, 1, 6, 6)
    gc = GradCAM(two)
    got = gc.attribute((x1, x2), target=[0, 3, 1], additional_forward_args=2.5)
    assert gc.layer is find_cam_layers(two, (x1, x2), 2.5, require_classifier=False).layer
    expected = LayerGradCam(two, gc.layer).attribute((x1, x2), target=[0, 3, 1], additional_forward_args=2.5)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_docstring_examples_run():
    import doctest

    from captum_robust.attr._core import layer_finder

    result = doctest.testmod(layer_finder, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
