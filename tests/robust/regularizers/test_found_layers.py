"""Int-family regularizers and AAI with ``layer=``/``classifier=`` omitted on models that do not
name their layers: the layers come from ``find_cam_layers`` on the first call, and every value
equals the one with the layers passed explicitly (same seed, same inner attack)."""

import pytest
import torch
from torch import nn

from captum_robust.attr import CAM
from captum_robust.robust.attacks import AAI
from captum_robust.robust.regularizers import Int, Int2, Int2Adv, IntAdv, IntOneClass


class _Block(nn.Module):
    """torchvision's BasicBlock: ``out += identity`` and an in-place ReLU after the layer."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class _ResNet(nn.Module):
    """torchvision-shaped: stem, layer1, layer2, avgpool, flatten, fc (no ``feature_layer``)."""

    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _Block(6, 6, 1)
        self.layer2 = _Block(6, 8, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _VGG(nn.Module):
    """flatten -> MLP head: no GAP -> linear head, CAM does not apply."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 4))

    def forward(self, x):
        return self.classifier(self.features(x))


def _resnet():
    torch.manual_seed(0)
    model = _ResNet()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval(), model.layer2, model.fc, torch.rand(3, 3, 8, 8), torch.tensor([0, 2, 3])


class _Logits(nn.Module):
    """The regularizers' probe (regularizers/_base.py class_scores) wants a B x C tensor, not a
    Hugging Face ImageClassifierOutput (yet): return its .logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).logits


def _hf_resnet():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                       num_labels=5)
    net = transformers.ResNetForImageClassification(config).eval()
    return (_Logits(net).eval(), net.resnet.encoder.stages[-1], net.classifier[1], torch.rand(2, 3, 32, 32),
            torch.tensor([1, 4]))


_CLASSES = [Int, Int2, IntOneClass, IntAdv, Int2Adv]


def _value_and_grads(model, reg, x, y):
    model.zero_grad()
    value = reg(x, y)
    value.backward()
    return value.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("build", [_resnet, _hf_resnet], ids=["torchvision_style", "hf_resnet"])
@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_found_layers_equal_explicit(build, cls):
    model, layer, fc, x, y = build()
    kw = dict(eps=0.05, step_size=0.02, n_iterations=2)
    found = cls(model, generator=torch.Generator().manual_seed(1), **kw)
    v_found, g_found = _value_and_grads(model, found, x, y)
    assert found.interpreter.layer is layer and found.interpreter.classifier is fc
    explicit = cls(model, layer, fc, generator=torch.Generator().manual_seed(1), **kw)
    v_explicit, g_explicit = _value_and_grads(model, explicit, x, y)
    assert v_found.item() > 0
    torch.testing.assert_close(v_found, v_explicit, rtol=1e-6, atol=1e-8)
    assert len(g_found) == len(g_explicit) > 0
    for a, b in zip(g_found, g_explicit):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert found.last_stats == pytest.approx(explicit.last_stats, rel=1e-6)
    assert not model.training  # no side effect on the mode


def test_found_classifier_with_given_layer():
    model, layer, fc, x, y = _resnet()
    reg = Int(model, layer, eps=0.05, n_iterations=1, generator=torch.Generator().manual_seed(0))
    reg(x, y)
    assert reg.interpreter.layer is layer and reg.interpreter.classifier is fc


@pytest.mark.parametrize("build", [_resnet, _hf_resnet], ids=["torchvision_style", "hf_resnet"])
def test_aai_found_layers_equal_explicit(build):
    model, layer, fc, x, y = build()
    kw = dict(eps=0.05, step_size=0.01, n_iterations=4)
    attack = AAI(model, **kw)
    x_found, r_found = attack.perturb(x, y, generator=torch.Generator().manual_seed(0))
    assert attack.attribution.layer is layer and attack.attribution.classifier is fc
    x_explicit, r_explicit = AAI(model, CAM(model, layer, fc), **kw).perturb(
        x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_found, x_explicit, rtol=0, atol=0)
    torch.testing.assert_close(r_found.similarity, r_explicit.similarity)
    assert not torch.equal(x_found, x)


def test_no_gap_head_is_a_clear_error():
    torch.manual_seed(0)
    model = _VGG().eval()
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    for cls in _CLASSES:
        with pytest.raises(ValueError, match="global-average-pooling -> linear head") as info:
            cls(model, eps=0.05, n_iterations=1)(x, y)
        msg = str(info.value)
        assert "features" in msg and "classifier.3" in msg  # the candidates and the last linear
        assert "layer=" in msg and "classifier=" in msg and "interpreter=" in msg and cls.__name__ in msg
    with pytest.raises(ValueError, match="global-average-pooling -> linear head"):
        AAI(model, eps=0.05, n_iterations=1).perturb(x, y)
    with pytest.raises(TypeError, match="attribution="):
        AAI(lambda z: model(z), eps=0.05)
