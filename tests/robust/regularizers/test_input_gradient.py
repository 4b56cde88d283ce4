"""InputGradientRegularizer: value against central finite differences of the loss, gradcheck
with respect to the parameters, the contract (no side effects, dtypes, errors, inputs that
require grad) and the effect of a short training run."""

import copy
import doctest

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import captum_robust.robust.regularizers.input_gradient as gradient
from captum_robust.data import load_digits
from captum_robust.robust.regularizers.input_gradient import InputGradientRegularizer
from tests.helpers.models import TinyGapNet

F64 = torch.float64


def _tiny(dtype=F64, softplus=1.0, seed=0):
    torch.manual_seed(seed)
    return TinyGapNet(softplus=softplus).to(dtype).eval()


def _batch(b=3, dtype=F64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 2, 5, 5, generator=g, dtype=dtype), torch.arange(b) % 3


def _fd_gradients(model, x, y, h=1e-4):
    """Per-example input gradient of the cross-entropy by central differences (no autograd)."""
    flat = x.reshape(x.shape[0], -1)
    grads = torch.zeros_like(flat)
    with torch.no_grad():
        for i in range(flat.shape[1]):
            e = torch.zeros_like(flat)
            e[:, i] = h
            up = F.cross_entropy(model((flat + e).reshape(x.shape)), y, reduction="none")
            down = F.cross_entropy(model((flat - e).reshape(x.shape)), y, reduction="none")
            grads[:, i] = (up - down) / (2 * h)
    return grads


@pytest.mark.parametrize("q", [1, 1.5, 2, 3])
def test_value_matches_finite_differences(q):
    model = _tiny()
    x, y = _batch(4)
    g = _fd_gradients(model, x, y)
    ref = 0.7 * g.abs().pow(q).sum(dim=1).mean()
    reg = InputGradientRegularizer(model, lam=0.7, q=q)
    value = reg(x, y)
    assert value.item() == pytest.approx(float(ref), rel=1e-8)
    assert reg.last_stats["grad_norm"] == pytest.approx(float(ref) / 0.7, rel=1e-8)
    assert reg.last_stats["loss"] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    per = reg.gradient_norm(x, y)
    assert torch.allclose(per, g.abs().pow(q).sum(dim=1), rtol=1e-8, atol=0)


class _Functional(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base
        self.params = None

    def forward(self, x):
        return torch.func.functional_call(self.base, self.params, (x,))


@pytest.mark.parametrize("q", [2, 1.5])
def test_gradcheck_parameters(q):
    base = _tiny()
    wrapper = _Functional(base)
    names = [n for n, _ in base.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in base.parameters())
    x, y = _batch(2)
    reg = InputGradientRegularizer(wrapper, lam=0.5, q=q)

    def f(*ps):
        wrapper.params = dict(zip(names, ps))
        return reg(x, y)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_parameter_gradient_matches_finite_differences_of_the_fd_value():
    """The parameter gradient (double backprop) against finite differences of the independent
    value (central differences in the input) for a few weights."""
    model = _tiny()
    x, y = _batch(2)
    reg = InputGradientRegularizer(model, lam=1.0, q=2)
    reg(x, y).backward()
    weight = model.conv1.weight
    analytic = weight.grad.flatten()[:4].clone()
    h = 1e-4
    for k in range(4):
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                weight.view(-1)[k] += sign * h
            vals.append(float(_fd_gradients(model, x, y).pow(2).sum(dim=1).mean()))
            with torch.no_grad():
                weight.view(-1)[k] -= sign * h
        numeric = (vals[0] - vals[1]) / (2 * h)
        assert numeric == pytest.approx(float(analytic[k]), rel=1e-4, abs=1e-8)


def test_differentiable_in_inputs_that_require_grad():
    model = _tiny()
    x, y = _batch(2)
    reg = InputGradientRegularizer(model, q=2)
    assert torch.autograd.gradcheck(lambda v: reg(v, y), (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-8)
    leaf = x.clone().requires_grad_(True)
    reg(leaf, y)
    assert leaf.grad is None  # nothing accumulated into the caller's tensor


def test_no_side_effects_and_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Softplus(), nn.Flatten(), nn.Linear(27, 3)).to(F64)
    model.train()
    model[0].bias.requires_grad_(False)
    sentinel = torch.ones_like(model[4].weight)
    model[4].weight.grad = sentinel
    x, y = _batch(3)
    x0 = x.clone()
    stats = model[1].running_mean.clone()
    value = InputGradientRegularizer(model, lam=1.0)(x, y)
    # eval mode during the pass: per-example gradients, running statistics untouched
    ref_model = copy.deepcopy(model).eval()
    ref = sum(InputGradientRegularizer(ref_model).gradient_norm(x[i : i + 1], y[i : i + 1]) for i in range(3)) / 3
    assert value.item() == pytest.approx(ref.item(), rel=1e-10)
    assert model.training and model[1].training and torch.equal(model[1].running_mean, stats)
    assert model[4].weight.grad is sentinel and model[0].weight.grad is None
    assert not model[0].bias.requires_grad and torch.equal(x, x0)
    assert InputGradientRegularizer(model).eps == 0.0


def test_float32_and_float64():
    m64 = _tiny()
    m32 = copy.deepcopy(m64).float()
    x, y = _batch(3)
    v64 = InputGradientRegularizer(m64)(x, y)
    v32 = InputGradientRegularizer(m32)(x.float(), y)
    assert v32.dtype == torch.float32 and v64.dtype == F64
    assert v32.item() == pytest.approx(v64.item(), rel=1e-4)
    v32.backward()
    assert m32.fc.weight.grad.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"lam": -0.5}, ValueError, "lam"),
        ({"q": 0.5}, ValueError, "q"),
        ({"q": float("inf")}, ValueError, "q"),
        ({"q": True}, TypeError, "q"),
        ({"q": "2"}, TypeError, "q"),
        ({"eval_mode": 1}, TypeError, "eval_mode"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        InputGradientRegularizer(_tiny(), **kwargs)


@pytest.mark.parametrize(
    "target,exc",
    [
        (torch.tensor([0.0, 1.0, 2.0]), TypeError),
        (torch.tensor([0, 1]), ValueError),
        (torch.tensor([0, 1, 3]), ValueError),
    ],
)
def test_target_errors(target, exc):
    x, _ = _batch(3)
    with pytest.raises(exc, match="target"):
        InputGradientRegularizer(_tiny())(x, target)


def test_training_lowers_the_input_gradient():
    """200 Adam steps on the 8x8 digits (softplus MLP): lam = 1, q = 2 gives a test-set mean
    ||grad_x l||_2^2 of 0.13x that of normal training (model seeds 0-3: 0.12-0.14x), at a
    small cost in accuracy (0.93 against 0.96)."""
    data = load_digits(size=8, seed=0)
    xtr, ytr = data.train.tensors
    xte, yte = data.test.tensors

    def train(lam):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Softplus(), nn.Linear(32, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        reg = InputGradientRegularizer(model, lam=lam)
        g = torch.Generator().manual_seed(2)
        for _ in range(200):
            idx = torch.randint(0, len(xtr), (64,), generator=g)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx]) + reg(xtr[idx], ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        norm = float(InputGradientRegularizer(model).gradient_norm(xte, yte).detach().mean())
        with torch.no_grad():
            acc = float((model(xte).argmax(1) == yte).float().mean())
        return norm, acc

    n0, a0 = train(0.0)
    n1, a1 = train(1.0)
    assert n1 < 0.2 * n0, (n0, n1)
    assert a1 > 0.9 and a1 > a0 - 0.05, (a0, a1)


def test_docstring_examples():
    torch.manual_seed(0)
    result = doctest.testmod(gradient, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.cuda
def test_cuda_matches_cpu():
    model = _tiny()
    x, y = _batch(3)
    ref = InputGradientRegularizer(model)(x, y)
    gpu_model = copy.deepcopy(model).cuda()
    value = InputGradientRegularizer(gpu_model)(x.cuda(), y.cuda())
    assert value.item() == pytest.approx(ref.item(), rel=1e-9)
    value.backward()
    assert gpu_model.fc.weight.grad.device.type == "cuda"
