"""softplus_surrogate: the same network with Softplus(beta) for every nn.ReLU module."""

import math

import pytest
import torch
from torch import nn

from captum_robust.models import MadryMNIST, Pool, Small, WideResNet
from captum_robust.robust.attacks import softplus_surrogate


@pytest.mark.parametrize("make", [lambda: Small(), lambda: Pool(), lambda: MadryMNIST(), lambda: WideResNet(depth=10, in_channels=3)])
def test_equals_the_models_own_softplus_twin(make):
    # models built with softplus=beta have Softplus(beta) wherever the ReLU model has nn.ReLU and
    # share parameter names: an independent construction of the same function
    torch.manual_seed(0)
    model = make().eval()
    twin = type(model)(**_kwargs(model), softplus=3.0).eval()
    twin.load_state_dict(model.state_dict())
    smooth = softplus_surrogate(model, beta=3.0)
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert sum(isinstance(m, nn.Softplus) and m.beta == 3.0 for m in smooth.modules()) == sum(
        isinstance(m, nn.ReLU) for m in model.modules()
    )
    x = torch.rand(2, *_shape(model))
    with torch.no_grad():
        assert torch.allclose(smooth(x), twin(x), atol=1e-6)
    assert any(isinstance(m, nn.ReLU) for m in model.modules())  # the model itself is unchanged


def _kwargs(model):
    if isinstance(model, WideResNet):
        return {"depth": 10, "in_channels": 3}
    return {}


def _shape(model):
    return (3, 32, 32) if isinstance(model, WideResNet) else (1, 28, 28)


def test_shared_parameters_follow_the_model_and_copies_do_not():
    torch.manual_seed(0)
    model = WideResNet(depth=10, in_channels=3).train()
    shared = softplus_surrogate(model)
    copied = softplus_surrogate(model, share_parameters=False)
    assert all(a is b for a, b in zip(model.parameters(), shared.parameters()))
    assert all(a is b for a, b in zip(model.buffers(), shared.buffers()))
    assert all(a is not b and torch.equal(a, b) for a, b in zip(model.parameters(), copied.parameters()))
    assert shared.training and copied.training
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    assert torch.equal(shared.classifier.bias, model.classifier.bias)
    assert not torch.equal(copied.classifier.bias, model.classifier.bias)


def test_converges_to_the_relu_network_as_beta_grows():
    # |softplus_beta(z) - relu(z)| <= log(2) / beta, so the logits' error shrinks like 1 / beta
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.rand(8, 1, 28, 28)
    betas = (1.0, 10.0, 100.0, 1000.0)
    with torch.no_grad():
        ref = model(x)
        errors = [float((softplus_surrogate(model, beta=b)(x) - ref).abs().max()) for b in betas]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    # error * beta stays bounded (measured 0.39, 0.31, 0.07, 0.01)
    assert all(e * b <= errors[0] * 1.0 + 1e-6 for e, b in zip(errors, betas))


def test_errors_and_warning():
    with pytest.raises(TypeError, match="nn.Module"):
        softplus_surrogate(lambda x: x)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        softplus_surrogate(Small(), beta=0.0)
    with pytest.raises(TypeError, match="beta"):
        softplus_surrogate(Small(), beta="1")
    with pytest.warns(UserWarning, match="no nn.ReLU module"):
        softplus_surrogate(nn.Linear(3, 2))
