"""Saliency: Captum's numbers, exact gradients with create_graph, no side effects, clear errors."""

import doctest

import pytest
import torch
from captum.attr import Saliency as CaptumSaliency
from torch import nn
from torch.func import functional_call

from captum_robust.attr import Saliency
from captum_robust.attr._core import saliency as saliency_module
from captum_robust.attr._core.saliency import input_gradient
from tests.helpers.models import TinyGapNet, TwoInputNet

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients")


def _x(*shape, dtype=torch.float32, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------- Captum's numbers

TARGETS = {
    "int": lambda b: 2,
    "list": lambda b: [i % 3 for i in range(b)],
    "tensor": lambda b: torch.arange(b) % 3,
    "0-dim tensor": lambda b: torch.tensor(1),
}


@pytest.mark.parametrize("abs_", [True, False])
@pytest.mark.parametrize("target_form", sorted(TARGETS))
def test_equals_captum_single_input(abs_, target_form):
    model = TinyGapNet().eval()
    x = _x(4, 2, 5, 5)
    target = TARGETS[target_form](4)
    ours = Saliency(model).attribute(x, target=target, abs=abs_)
    ref = CaptumSaliency(model).attribute(x, target=target, abs=abs_)
    assert ours.shape == x.shape and not ours.requires_grad
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    assert bool((ours != 0).any())  # the comparison is not between two zero maps


@pytest.mark.parametrize("abs_", [True, False])
def test_equals_captum_tuple_inputs_and_additional_args(abs_):
    model = TwoInputNet().eval()
    x1, x2 = _x(3, 1, 4, 4, seed=1), _x(3, 1, 4, 4, seed=2)
    ours = Saliency(model).attribute((x1, x2), target=[0, 3, 1], abs=abs_, additional_forward_args=(0.5,))
    ref = CaptumSaliency(model).attribute((x1, x2), target=[0, 3, 1], abs=abs_, additional_forward_args=(0.5,))
    assert isinstance(ours, tuple) and len(ours) == 2
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=0, atol=0)
    # the additional argument is really passed: another scale gives another map of x2
    other = Saliency(model).attribute((x1, x2), target=[0, 3, 1], abs=abs_, additional_forward_args=(2.0,))
    assert not torch.allclose(other[1], ours[1])


def test_tensor_additional_argument_and_per_example_scalar_output():
    w = torch.tensor([1.0, -2.0, 3.0])

    def fwd(x, scale):  # one score per example, a per-example tensor argument
        return (x * w).sum(dim=1) * scale

    x = _x(2, 3)
    scale = torch.tensor([2.0, -1.0])
    ours = Saliency(fwd).attribute(x, target=None, abs=False, additional_forward_args=scale)
    torch.testing.assert_close(ours, scale[:, None] * w)  # hand-computed gradient
    ref = CaptumSaliency(fwd).attribute(x, target=None, abs=False, additional_forward_args=scale)
    torch.testing.assert_close(ours, ref)


# --------------------------------------------------------------------------- create_graph


def _smooth_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Softplus(beta=2.0), nn.Linear(6, 3)).double().eval()


def test_create_graph_gradcheck_with_respect_to_inputs():
    model = _smooth_model()
    x = _x(3, 4, dtype=torch.float64).requires_grad_()
    target = [0, 2, 1]

    def signed(inp):
        return Saliency(model).attribute(inp, target=target, abs=False, create_graph=True)

    assert torch.autograd.gradcheck(signed, (x,))
    assert torch.autograd.gradgradcheck(signed, (x,))
    # abs=True away from zero gradients is smooth too
    assert torch.autograd.gradcheck(lambda inp: Saliency(model).attribute(inp, target=target, create_graph=True), (x,))


def test_create_graph_gradcheck_with_respect_to_parameters():
    model = _smooth_model()
    x = _x(3, 4, dtype=torch.float64)
    w0 = model[0].weight.detach().clone().requires_grad_()

    def of_weight(w):
        def fwd(inp):
            return functional_call(model, {"0.weight": w}, (inp,))

        return Saliency(fwd).attribute(x, target=1, abs=False, create_graph=True)

    assert torch.autograd.gradcheck(of_weight, (w0,))


def test_parameter_gradients_flow_and_match_the_closed_form():
    # f(x) = W x + b: the saliency of class t is W[t] whatever x, so d/dW sum(S^2) = 2 W[t] in row t
    lin = nn.Linear(5, 3).double()
    x = _x(4, 5, dtype=torch.float64)
    maps = Saliency(lin).attribute(x, target=2, abs=False, create_graph=True)
    assert maps.requires_grad
    torch.testing.assert_close(maps, lin.weight[2].detach().expand(4, 5))
    maps.pow(2).sum().backward()
    expected = torch.zeros(3, 5, dtype=torch.float64)
    expected[2] = 2 * 4 * lin.weight[2].detach()
    torch.testing.assert_close(lin.weight.grad, expected)


def test_without_create_graph_the_map_is_detached():
    model = _smooth_model()
    x = _x(2, 4, dtype=torch.float64).requires_grad_()
    with torch.no_grad():  # works under no_grad too
        maps = Saliency(model).attribute(x, target=0)
    assert not maps.requires_grad and maps.grad_fn is None


def test_input_gradient_stays_connected_to_a_perturbation():
    # an attack differentiates the map at x + delta with respect to delta
    model = _smooth_model()
    x = _x(2, 4, dtype=torch.float64)
    delta = torch.zeros_like(x, requires_grad=True)
    (g,) = input_gradient(model, (x + delta,), [0, 1], create_graph=True)
    assert g.requires_grad
    (dg,) = torch.autograd.grad(g.sum(), delta)
    # finite differences of the input gradient along delta
    eps = 1e-6
    (g_plus,) = input_gradient(model, (x + eps,), [0, 1])
    (g_minus,) = input_gradient(model, (x - eps,), [0, 1])
    fd = ((g_plus - g_minus).sum(dim=1) / (2 * eps))[:, None]  # d/dt sum_i g_i(x + t 1) for every example
    torch.testing.assert_close(dg.sum(dim=1, keepdim=True), fd, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- no side effects


@pytest.mark.parametrize("create_graph", [False, True])
def test_model_inputs_and_grads_untouched(create_graph):
    model = TinyGapNet().train()
    for p in model.parameters():
        p.grad = None
    frozen = model.fc.bias
    frozen.requires_grad_(False)
    x = _x(2, 2, 5, 5)
    x_before = x.clone()
    y = _x(2, 2, 5, 5, seed=3).requires_grad_()
    Saliency(model).attribute(x, target=0, create_graph=create_graph)
    Saliency(model).attribute(y, target=1, create_graph=create_graph)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert not frozen.requires_grad and model.fc.weight.requires_grad
    assert torch.equal(x, x_before) and not x.requires_grad and x.grad is None
    assert y.requires_grad and y.grad is None


# --------------------------------------------------------------------------- errors


def test_errors():
    model = TinyGapNet().eval()
    x = _x(2, 2, 5, 5)
    sal = Saliency(model)
    with pytest.raises(TypeError, match=r"inputs must be a floating-point tensor \(saliency is a gradient\), got torch.int64"):
        sal.attribute(torch.ones(2, 2, 5, 5, dtype=torch.long), target=0)
    with pytest.raises(TypeError, match=r"inputs\[1\] must be a floating-point tensor"):
        Saliency(TwoInputNet()).attribute((_x(2, 1, 4, 4), torch.ones(2, 1, 4, 4, dtype=torch.int32)), target=0)
    with pytest.raises(ValueError, match=r"target holds class index 5, outside the model's range \[0, 2\]"):
        sal.attribute(x, target=5)
    with pytest.raises(ValueError, match="target holds class index -1"):
        sal.attribute(x, target=[0, -1])
    with pytest.raises(ValueError, match="target has 3 entries but the batch has 2"):
        sal.attribute(x, target=[0, 1, 2])
    with pytest.raises(TypeError, match="integer tensor"):
        sal.attribute(x, target=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"target is None but the forward function returns \(2, 3\) scores"):
        sal.attribute(x)
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="inputs contains 1 NaN or infinite"):
        sal.attribute(bad, target=0)
    with pytest.raises(TypeError, match="abs must be a bool"):
        sal.attribute(x, target=0, abs=1)
    with pytest.raises(TypeError, match="create_graph must be a bool"):
        sal.attribute(x, target=0, create_graph="yes")
    with pytest.raises(TypeError, match="forward_func must be callable"):
        Saliency("model")


def test_docstring_examples_run():
    result = doctest.testmod(saliency_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
