"""SaliencyAlignment (Gali eq. 7) and SaliencyStability (Levine eq. D.1): values against
per-example autograd loops, gradcheck with respect to the parameters (float64, softplus nets),
the attack's ball, no side effects, schedules, seeds, dtypes and errors."""

import copy
import doctest
import math
import warnings

import pytest
import torch
from torch import nn

import captum_robust.robust.regularizers.saliency as saliency_module
from captum_robust.robust.attacks import L2TopKAttack, softplus_surrogate
from captum_robust.robust.regularizers._base import EpsilonSchedule
from captum_robust.robust.regularizers.saliency import SaliencyAlignment, SaliencyStability
from tests.helpers.models import TinyGapNet


AFFINE_TAIL = {"conv2.bias", "fc.bias"}  # TinyGapNet's biases after its only nonlinearity


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(b=6, dtype=torch.float32):
    g = _gen(1)
    return torch.rand(b, 2, 5, 5, generator=g, dtype=dtype), torch.randint(0, 3, (b,), generator=g)


def _net(seed=0, scale=2.0, dtype=torch.float32, softplus=1.0):
    torch.manual_seed(seed)
    m = TinyGapNet(softplus=softplus)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m.to(dtype)


class BNSoftNet(nn.Module):
    """conv -> BatchNorm -> softplus -> conv -> GAP -> linear (mode-dependent, smooth)."""

    def __init__(self, relu=False):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU() if relu else nn.Softplus()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv2(self.act(self.bn(self.conv1(x)))).mean(dim=(2, 3)))


class Functional(nn.Module):
    """Runs ``base`` with the tensors in ``self.params`` (gradcheck's inputs) as its parameters."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.params = None

    def forward(self, x):
        return torch.func.functional_call(self.base, self.params, (x,))


def _loop_saliency(model, x, target):
    """Independent reference: one autograd.grad per example of the target logit."""
    rows = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xb)[0, int(target[b])], xb)
        rows.append(g[0])
    return torch.stack(rows)


def _normalized(a):
    flat = a.abs().flatten(1)
    return flat / flat.norm(dim=1, keepdim=True)


def test_docstring_examples():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        result = doctest.testmod(saliency_module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


# --------------------------------------------------------------------------- SaliencyAlignment


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alignment_value_against_per_example_loop(dtype):
    student, teacher = _net(0, dtype=dtype), _net(1, dtype=dtype)
    x, y = _batch(dtype=dtype)
    reg = SaliencyAlignment(student, teacher, lam=0.5)
    value = reg(x, y)
    j_s, j_t = _loop_saliency(student, x, y), _loop_saliency(teacher, x, y)
    expected = 0.5 * (j_s - j_t).flatten(1).pow(2).sum(1).mean()
    assert value.dtype == dtype
    torch.testing.assert_close(value.detach(), expected)
    assert reg.last_stats["distance"] == pytest.approx(float(expected) / 0.5, rel=1e-5)
    assert expected.item() > 1e-3
    value.backward()
    # every parameter but the biases after the last nonlinearity (the input gradient does not
    # depend on them) gets a gradient
    assert all((p.grad is not None) == (n not in AFFINE_TAIL) for n, p in student.named_parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_alignment_zero_for_a_teacher_with_the_same_weights():
    student = _net(0)
    reg = SaliencyAlignment(student, copy.deepcopy(student), lam=10.0)
    x, y = _batch()
    value = reg(x, y)
    assert value.item() == 0.0
    value.backward()
    assert all(float(p.grad.abs().max()) == 0.0 for n, p in student.named_parameters() if n not in AFFINE_TAIL)


def test_alignment_gradcheck_wrt_student_parameters():
    base = _net(0, dtype=torch.float64)
    wrapper = Functional(base)
    reg = SaliencyAlignment(wrapper, _net(1, dtype=torch.float64), lam=0.3)
    x, y = _batch(3, dtype=torch.float64)
    names = [n for n, _ in base.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in base.parameters())

    def f(*ps):
        wrapper.params = dict(zip(names, ps))
        return reg(x, y)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_alignment_training_step_reduces_the_distance():
    student, teacher = _net(0), _net(1)
    reg = SaliencyAlignment(student, teacher, lam=1.0)
    x, y = _batch()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    values = []
    for _ in range(30):
        value = reg(x, y)
        values.append(value.item())
        opt.zero_grad()
        value.backward()
        opt.step()
    assert values[-1] < 0.3 * values[0], values


def test_alignment_no_side_effects_on_student_and_teacher():
    torch.manual_seed(0)
    student, teacher = BNSoftNet().train(), BNSoftNet().train()
    student.fc.weight.grad = torch.ones_like(student.fc.weight)
    teacher.fc.weight.grad = torch.full_like(teacher.fc.weight, 3.0)
    student.conv1.bias.requires_grad_(False)
    s_state = {k: v.clone() for k, v in student.state_dict().items()}
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = _batch(8)
    x0 = x.clone()
    reg = SaliencyAlignment(student, teacher)
    assert list(reg.parameters()) == [] and reg.state_dict() == {}
    value = reg(x, y)
    for m in (student, teacher):
        assert all(mod.training for mod in m.modules())
    for m, state in ((student, s_state), (teacher, t_state)):
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k  # running statistics too: eval-mode passes
    assert torch.equal(student.fc.weight.grad, torch.ones_like(student.fc.weight)) and student.conv1.weight.grad is None
    assert torch.equal(teacher.fc.weight.grad, torch.full_like(teacher.fc.weight, 3.0))
    assert not student.conv1.bias.requires_grad and all(p.requires_grad for p in teacher.parameters())
    assert torch.equal(x, x0) and not x.requires_grad
    # the maps are the eval-mode ones
    j_s = _loop_saliency(copy.deepcopy(student).eval(), x, y)
    j_t = _loop_saliency(copy.deepcopy(teacher).eval(), x, y)
    torch.testing.assert_close(value.detach(), 1e-3 * (j_s - j_t).flatten(1).pow(2).sum(1).mean())


def test_alignment_errors():
    student = _net(0)
    x, y = _batch()
    with pytest.raises(ValueError, match="lam"):
        SaliencyAlignment(student, _net(1), lam=-1.0)
    with pytest.raises(ValueError, match="teacher is the student"):
        SaliencyAlignment(student, student)
    with pytest.raises(ValueError, match="shares the parameter"):
        SaliencyAlignment(student, nn.Sequential(student.conv1))
    with pytest.raises(TypeError, match="teacher"):
        SaliencyAlignment(student, None)
    reg = SaliencyAlignment(student, _net(1))
    with pytest.raises(TypeError, match="integer tensor"):
        reg(x, y.double())
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        reg(x, y[:-1])
    with pytest.raises(ValueError, match="class index 3"):
        reg(x, torch.tensor([0, 1, 2, 3, 0, 1]))
    small = TinyGapNet(softplus=1.0, num_classes=2)
    with pytest.raises(ValueError, match="class index 2"):
        SaliencyAlignment(student, small)(x, torch.tensor([0, 1, 2, 0, 1, 0]))


# --------------------------------------------------------------------------- SaliencyStability


def _stability(model, **kw):
    kw.setdefault("rho", 1.0)
    kw.setdefault("generator", _gen())
    return SaliencyStability(model, **kw)


def test_stability_zero_without_perturbation():
    model = _net(0)
    x, y = _batch()
    reg = _stability(model, lam=5.0)
    assert reg.objective_at(x, y, x).item() == 0.0
    for zero in (_stability(model, rho=0.0), _stability(model, lam=0.0)):
        value = zero(x, y)
        assert value.item() == 0.0 and torch.equal(zero.last_adversarial, x)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_stability_value_against_independent_computation(reduction):
    model = _net(0)
    x, y = _batch()
    reg = _stability(model, lam=3.0, reduction=reduction)
    value = reg(x, y)
    x_adv = reg.last_adversarial
    g, g_adv = _normalized(_loop_saliency(model, x, y)), _normalized(_loop_saliency(model, x_adv, y))
    per_example = (g_adv - g).pow(2).sum(1)
    if reduction == "mean":
        per_example = per_example / 50  # the authors' MSELoss: mean over the 2*5*5 map elements
    expected = 3.0 * per_example.mean()
    torch.testing.assert_close(value.detach(), expected)
    torch.testing.assert_close(reg.objective_at(x, y, x_adv).detach(), expected)
    assert expected.item() > 1e-4 * (50 if reduction == "sum" else 1)
    assert reg.last_stats["distance"] == pytest.approx(float(per_example.mean()), rel=1e-5)
    assert (per_example <= 2 + 1e-6).all()  # distance of two non-negative unit vectors


def test_stability_prediction_class_as_in_the_authors_code():
    model = _net(0)
    x, y = _batch()
    pred = model(x).argmax(1)
    assert (pred != y).any()
    reg = _stability(model, target_class="prediction")
    x_adv = (x + 0.05 * torch.rand(x.shape, generator=_gen(3))).clamp(0, 1)
    g, g_adv = _normalized(_loop_saliency(model, x, pred)), _normalized(_loop_saliency(model, x_adv, pred))
    expected = (g_adv - g).pow(2).sum(1).mean()
    torch.testing.assert_close(reg.objective_at(x, y, x_adv).detach(), expected)
    with_label = _stability(model).objective_at(x, y, x_adv)
    assert abs(with_label.item() - expected.item()) > 1e-6


def test_stability_gradcheck_wrt_parameters():
    base = _net(0, dtype=torch.float64)
    wrapper = Functional(base)
    reg = SaliencyStability(wrapper, lam=2.0, rho=1.0)
    x, y = _batch(3, dtype=torch.float64)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=_gen(4), dtype=torch.float64)).clamp(0, 1)
    names = [n for n, _ in base.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in base.parameters())

    def f(*ps):
        wrapper.params = dict(zip(names, ps))
        return reg.objective_at(x, y, x_adv)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_stability_attack_is_levines_l2_topk_attack_in_the_ball():
    model = _net(0)
    x, y = _batch()
    rho = 1.0
    reg = _stability(model, rho=rho)
    reg(x, y)
    x_adv = reg.last_adversarial
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert (norms <= rho + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model(x_adv).argmax(1) == model(x).argmax(1)).all()  # Algorithm 1 keeps the class
    assert reg.last_stats["attack_success"] > 0.5 and reg.last_stats["topk_overlap"] < 1.0

    def gradient_map(m, inputs, t):
        inputs = inputs if inputs.requires_grad else inputs.requires_grad_()
        return torch.autograd.grad(m(inputs).gather(1, t[:, None]).sum(), inputs, create_graph=True)[0]

    # the defaults: k = ceil(n / 4) = 13 of 50, P = 15, T = 3, Q = 100
    attack = L2TopKAttack(model, gradient_map, k=13, rho=rho, n_iterations=15, n_restarts=3, random_budget=100)
    ref, result = attack.perturb(x, target=y, generator=_gen())
    torch.testing.assert_close(x_adv, ref)
    assert reg.last_stats["topk_overlap"] == pytest.approx(float(result.similarity.mean()))


def test_stability_relu_warning_and_surrogate():
    relu = _net(0, softplus=None)
    with pytest.warns(UserWarning, match="softplus_surrogate"):
        SaliencyStability(relu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SaliencyStability(_net(0))
        reg = _stability(relu, surrogate=softplus_surrogate(relu, beta=2.0))
        x, y = _batch()
        value = reg(x, y)
    assert reg.surrogate is not None and list(reg.parameters()) == []
    assert value.item() > 0 and reg.last_stats["topk_overlap"] < 1.0
    # the trained term is the ReLU model's own (independent of the surrogate)
    g = _normalized(_loop_saliency(relu, x, y))
    g_adv = _normalized(_loop_saliency(relu, reg.last_adversarial, y))
    torch.testing.assert_close(value.detach(), (g_adv - g).pow(2).sum(1).mean())


@pytest.mark.parametrize("relu", [False, True])
def test_stability_no_side_effects(relu):
    torch.manual_seed(0)
    model = BNSoftNet(relu=relu).train()
    surrogate = softplus_surrogate(model, beta=1.0) if relu else None
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.conv2.bias.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch(8)
    x0 = x.clone()
    reg = _stability(model, surrogate=surrogate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model in training mode is expected: no BatchNorm warning
        value = reg(x, y)
    assert all(m.training for m in model.modules())
    if surrogate is not None:
        assert all(m.training for m in surrogate.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight)) and model.conv1.weight.grad is None
    assert not model.conv2.bias.requires_grad and model.conv1.weight.requires_grad
    assert torch.equal(x, x0)
    # attack and term ran in eval mode: the value equals the eval-mode computation
    ev = copy.deepcopy(model).eval()
    g, g_adv = _normalized(_loop_saliency(ev, x, y)), _normalized(_loop_saliency(ev, reg.last_adversarial, y))
    torch.testing.assert_close(value.detach(), (g_adv - g).pow(2).sum(1).mean())


def test_stability_schedule_steps_in_training_mode_only():
    model = _net(0)
    x, y = _batch()
    sched = EpsilonSchedule(1.0, warmup_steps=1, ramp_steps=2)
    reg = SaliencyStability(model, rho=sched, n_iterations=3, n_restarts=1, generator=_gen())
    seen, values = [], []
    for _ in range(3):
        values.append(reg(x, y).item())
        seen.append(reg.last_stats["eps"])
    assert seen == [0.0, 0.0, pytest.approx(0.5)] and reg.rho == pytest.approx(1.0)
    assert values[0] == 0.0 and values[2] > 0
    assert ((reg.last_adversarial - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    reg.eval()
    reg(x, y)
    assert sched.current_step == 3


def test_stability_same_seed_same_value():
    model = _net(0)
    x, y = _batch()
    # random_start="always": the one restart starts at a random point (the default's first is the clean input)
    a, b, c = (_stability(model, generator=_gen(s), n_restarts=1, random_start="always") for s in (5, 5, 6))
    va, vb, vc = a(x, y), b(x, y), c(x, y)
    assert torch.equal(va, vb) and torch.equal(a.last_adversarial, b.last_adversarial)
    assert not torch.equal(a.last_adversarial, c.last_adversarial)


def test_stability_float64():
    model = _net(0, dtype=torch.float64)
    x, y = _batch(dtype=torch.float64)
    reg = _stability(model, n_restarts=1)
    value = reg(x, y)
    assert value.dtype == torch.float64 and reg.last_adversarial.dtype == torch.float64
    g = _normalized(_loop_saliency(model, x, y))
    g_adv = _normalized(_loop_saliency(model, reg.last_adversarial, y))
    torch.testing.assert_close(value.detach(), (g_adv - g).pow(2).sum(1).mean())


def test_stability_errors():
    model = _net(0)
    x, y = _batch()
    with pytest.raises(ValueError, match="rho"):
        SaliencyStability(model, rho=-1.0)
    with pytest.raises(ValueError, match="lam"):
        SaliencyStability(model, lam=-0.1)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="sparsity"):
            SaliencyStability(model, sparsity=bad)
    with pytest.raises(ValueError, match="k must be"):
        SaliencyStability(model, k=0)
    with pytest.raises(ValueError, match="reduction"):
        SaliencyStability(model, reduction="batchmean")
    with pytest.raises(ValueError, match="target_class"):
        SaliencyStability(model, target_class="max")
    with pytest.raises(TypeError, match="surrogate"):
        SaliencyStability(model, surrogate=lambda v: v)
    with pytest.raises(ValueError, match="k must be in"):
        _stability(model, k=51)(x, y)
    reg = _stability(model)
    with pytest.raises(TypeError, match="integer tensor"):
        reg(x, y.float())
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        reg(x, y[:3])
    with pytest.raises(ValueError, match="class index"):
        reg.objective_at(x, torch.tensor([0, 1, 2, 5, 0, 1]), x)
    with pytest.raises(ValueError, match="inputs_adv"):
        reg.objective_at(x, y, x[:2])
    assert math.ceil(0.25 * 50) == reg._k(x)
