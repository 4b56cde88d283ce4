"""Layer capture when the code after the layer works in place (issue 15's silent wrong numbers).

Three shapes of real models: ``ReLU(inplace=True)`` right after the layer, a ResNet block whose
``bn2`` output is modified by ``out += identity``, and a DenseNet-style ``features`` module whose
output goes through ``F.relu(..., inplace=True)``. Grad-CAM must equal Captum's ``LayerGradCam``
and a hand-written Grad-CAM computed on an out-of-place copy of the model.
"""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

from captum_robust._utils.layers import forward_with_layer
from captum_robust.attr import GradCAM


class InplaceAfterConv(nn.Module):
    def __init__(self, inplace: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock shape: ``out = bn2(conv2(...)); out += identity; relu(out)``."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 5)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.conv1(x))))
        if self.inplace:
            out += x
            out = F.relu(out, inplace=True)
        else:
            out = F.relu(out + x)
        return self.fc(out.mean(dim=(2, 3)))


class DenseLike(nn.Module):
    """DenseNet's tail: ``features`` ends in a concatenation, then ``F.relu(features, inplace=True)``."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.branch = nn.Conv2d(3, 2, 3, padding=1)
        self.features = nn.Sequential()  # filled below so that its output is the concatenation
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        s = self.stem(x)
        feats = self.features(torch.cat([s, self.branch(s)], dim=1))
        feats = F.relu(feats, inplace=True) if self.inplace else F.relu(feats)
        return self.fc(feats.mean(dim=(2, 3)))


CASES = {
    "relu_inplace": (InplaceAfterConv, "conv", (2, 8, 8)),
    "resnet_bn2": (ResidualBlock, "bn2", (3, 6, 6)),
    "densenet_features": (DenseLike, "features", (1, 7, 7)),
}


def _models(kind, seed=0):
    cls, layer, shape = CASES[kind]
    torch.manual_seed(seed)
    model = cls(inplace=True).double().eval()
    if kind == "resnet_bn2":  # non-trivial running statistics
        model.bn2.running_mean.uniform_(-0.5, 0.5)
        model.bn2.running_var.uniform_(0.5, 2.0)
    reference = cls(inplace=False).double().eval()
    reference.load_state_dict(model.state_dict())
    return model, reference, layer, shape


def _hand_grad_cam(model, layer, x, target):
    """Grad-CAM written out on the out-of-place model: sum_k mean(dy/dA_k) A_k (no ReLU, as
    Captum's ``LayerGradCam`` by default)."""
    acts = []
    handle = getattr(model, layer).register_forward_hook(lambda m, a, o: acts.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    a = acts[0]
    grads = torch.autograd.grad(out.gather(1, target[:, None]).sum(), a)[0]
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return (weights * a).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_grad_cam_equals_captum_and_the_hand_formula_after_in_place_code(kind):
    model, reference, layer_name, shape = _models(kind)
    x = torch.randn((4,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2, 0])
    ours = GradCAM(model, getattr(model, layer_name)).attribute(x, target=target)
    captum = LayerGradCam(model, getattr(model, layer_name)).attribute(x, target=target)
    hand = _hand_grad_cam(reference, layer_name, x, target)
    assert hand.abs().max() > 0  # the comparison is not between zero maps
    torch.testing.assert_close(captum, hand, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours, hand, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_forward_with_layer_keeps_the_layer_output_and_the_model_output(kind):
    model, reference, layer_name, shape = _models(kind)
    x = torch.randn((3,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out, act = forward_with_layer(model, getattr(model, layer_name), (x,), ())
    acts = []
    handle = getattr(reference, layer_name).register_forward_hook(lambda m, a, o: acts.append(o))
    try:
        expected_out = reference(x)
    finally:
        handle.remove()
    torch.testing.assert_close(act, acts[0], rtol=0, atol=0)  # as the layer produced it
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)  # the model's output is unchanged
    assert act.min() < 0  # the in-place ReLU after the layer would have removed these values


@pytest.mark.parametrize("kind", sorted(CASES))
def test_layer_integrated_gradients_are_unchanged_by_in_place_code_after_the_layer(kind):
    """Layer IG (the layer's output along the input path) of the in-place model equals that of the
    same weights written out of place: the captured activations are the layer's, not the modified ones."""
    from captum_robust.attr import BatchedIntegratedGradients

    model, reference, layer_name, shape = _models(kind)
    x = torch.randn((3,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 2])
    got = BatchedIntegratedGradients(model).attribute(x, target=target, layer=getattr(model, layer_name), n_steps=8)
    expected = BatchedIntegratedGradients(reference).attribute(
        x, target=target, layer=getattr(reference, layer_name), n_steps=8
    )
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
