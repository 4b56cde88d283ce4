"""The attacks' contract: errors, warnings, side effects, reproducibility, tuple inputs,
surrogates and the attribution adapter."""

import warnings

import pytest
import torch
from captum.attr import Saliency
from torch import nn

from captum_robust.attr import CAM, BatchedIntegratedGradients, GradCAM, RelaxedSparsifiedSmoothGrad
from captum_robust.models import Small
from captum_robust.robust.attacks import (
    AAI,
    ISA,
    PGD,
    AttributionPGD,
    L2TopKAttack,
    MassCenterAttack,
    TargetedAttributionAttack,
    TopKAttack,
    softplus_surrogate,
)
from captum_robust.robust.attacks._base import AttackCall
from tests.helpers.models import TinyGapNet, TwoInputNet
from tests.robust.attacks._models import LinearNet, gradient_map, one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = TinyGapNet().eval()
    x = torch.rand(4, 2, 5, 5)
    return model, x


def _state(model):
    return [m.training for m in model.modules()], [(p.grad, p.requires_grad) for p in model.parameters()]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("make", [
    lambda m, a: TopKAttack(m, a, k=3, eps=-0.1),
    lambda m, a: MassCenterAttack(m, a, eps=-1.0),
    lambda m, a: TargetedAttributionAttack(m, a, torch.ones(5, 5), eps=-1.0),
    lambda m, a: AAI(m, a, eps=-0.5),
    lambda m, a: PGD(m, eps=-0.3),
    lambda m, a: AttributionPGD(m, lambda *args: None, eps=-0.3),
])
def test_negative_eps_is_refused(tiny, make):
    model, _ = tiny
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, got eps=-"):
        make(model, gradient_map)


@pytest.mark.parametrize("make", [
    lambda m, a: TopKAttack(m, a, k=3, n_iterations=0),
    lambda m, a: AAI(m, a, n_iterations=0),
    lambda m, a: L2TopKAttack(m, a, k=3, rho=1.0, n_iterations=0),
    lambda m, a: ISA(m, a, n_iterations=0),
    lambda m, a: PGD(m, n_iterations=0),
    lambda m, a: AttributionPGD(m, lambda *args: None, n_iterations=0),
])
def test_fewer_than_one_step_is_refused(tiny, make):
    model, _ = tiny
    with pytest.raises(ValueError, match="n_iterations must be an int >= 1, got n_iterations=0"):
        make(model, gradient_map)


def test_argument_errors(tiny):
    model, x = tiny
    with pytest.raises(ValueError, match="step_size must be a finite number > 0, got step_size=0.0"):
        TopKAttack(model, gradient_map, k=3, step_size=0.0)
    with pytest.raises(ValueError, match="rho must be a finite number > 0, got rho=0.0"):
        L2TopKAttack(model, gradient_map, k=3, rho=0.0)
    with pytest.raises(ValueError, match="norm must be 'linf' or 'l2'"):
        TopKAttack(model, gradient_map, k=3, norm="l1")
    with pytest.raises(ValueError, match="select_by"):
        TopKAttack(model, gradient_map, k=3, select_by="best")
    with pytest.raises(ValueError, match="measure must be one of"):
        TopKAttack(model, gradient_map, k=3, measure="pearson")
    with pytest.raises(ValueError, match="variant"):
        AAI(model, gradient_map, variant="l2")
    with pytest.raises(TypeError, match="the class itself"):
        TopKAttack(model, BatchedIntegratedGradients, k=3)
    with pytest.raises(TypeError, match="does not take create_graph"):
        TopKAttack(model, Saliency(model), k=3)
    with pytest.raises(ValueError, match="must not set"):
        TopKAttack(model, BatchedIntegratedGradients(model), k=3, attribution_kwargs={"target": 0})
    with pytest.raises(ValueError, match="clip_min must be <= clip_max"):
        TopKAttack(model, gradient_map, k=3, clip_min=1.0, clip_max=0.0)
    with pytest.raises(TypeError, match="region"):
        TargetedAttributionAttack(model, gradient_map, [[1, 0]])
    with pytest.raises(ValueError, match="empty"):
        TargetedAttributionAttack(model, gradient_map, torch.zeros(5, 5))
    attack = TopKAttack(model, gradient_map, k=3, n_iterations=1)
    with pytest.raises(ValueError, match="target has 3 entries but the batch has 4"):
        attack.perturb(x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="outside the model's range"):
        attack.perturb(x, target=7)
    with pytest.raises(ValueError, match="NaN or infinite"):
        attack.perturb(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="above clip_max"):
        attack.perturb(x + 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        attack.perturb(x.long())
    with pytest.raises(TypeError, match="generator"):
        attack.perturb(x, generator=0)
    with pytest.raises(ValueError, match="k must be in \\[1, 25\\]"):
        TopKAttack(model, gradient_map, k=26, n_iterations=1).perturb(x)
    with pytest.raises(ValueError, match="region has shape"):
        TargetedAttributionAttack(model, gradient_map, torch.ones(4, 4), n_iterations=1).perturb(x)
    # a surrogate needs an attribution built on the model itself
    other = TinyGapNet().eval()
    with pytest.raises(ValueError, match="forward_func is not the model"):
        TopKAttack(model, BatchedIntegratedGradients(other), k=3, surrogate=softplus_surrogate(model))


# --------------------------------------------------------------------------- warnings and modes


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.Softplus(beta=5.0)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_training_mode_with_batchnorm_warns_and_runs_in_eval_mode():
    torch.manual_seed(0)
    model = _BNNet()
    x = torch.rand(6, 2, 5, 5)
    with torch.no_grad():  # make the running statistics differ from batch statistics
        model.train()
        model(x * 3)
    stats = model.bn.running_mean.clone()
    attack = TopKAttack(model, gradient_map, k=5, eps=0.1, step_size=0.05, n_iterations=3)
    with pytest.warns(UserWarning, match="training mode with BatchNorm"):
        x_adv, result = attack.perturb(x)
    assert model.training and model.bn.training
    assert torch.equal(model.bn.running_mean, stats)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_eval, result_eval = attack.perturb(x)
    assert torch.equal(x_adv, x_eval)
    assert torch.equal(result.similarity, result_eval.similarity)


def test_zero_gradient_warning_for_a_relu_gradient_map_and_none_with_a_surrogate():
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.rand(2, 1, 28, 28)
    attack = TopKAttack(model, gradient_map, k=50, eps=0.1, step_size=0.05, n_iterations=2)
    with pytest.warns(UserWarning, match="identically zero"):
        _, result = attack.perturb(x)
    assert not bool(result.accepted.any())
    smooth = TopKAttack(model, gradient_map, k=50, eps=0.1, step_size=0.05, n_iterations=2,
                        surrogate=softplus_surrogate(model, beta=10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_adv, result = smooth.perturb(x)
    assert not torch.equal(x_adv, x)


def test_no_side_effects_also_when_the_attribution_raises(tiny):
    model, x = tiny
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model.fc.weight.requires_grad_(False)
    before = _state(model)
    x_copy = x.clone()
    calls = []

    def flaky(m, inputs, target):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("boom")
        return gradient_map(m, inputs, target)

    attack = TopKAttack(model, flaky, k=3, n_iterations=5, surrogate=softplus_surrogate(model))
    with pytest.raises(RuntimeError, match="boom"):
        attack.perturb(x)
    after = _state(model)
    assert before[0] == after[0]
    assert all(g1 is g2 and r1 == r2 for (g1, r1), (g2, r2) in zip(before[1], after[1]))
    assert torch.equal(x, x_copy) and not x.requires_grad


# --------------------------------------------------------------------------- reproducibility


def _runs(model, x, seed):
    cam = CAM(model, model.conv2, model.fc)
    rsg = RelaxedSparsifiedSmoothGrad(model, sparsity=0.2, clip=0.04, sigma=0.2, n_samples=4)
    smooth = softplus_surrogate(model, beta=5.0)
    attacks = [
        AAI(model, cam, eps=0.2, step_size=0.05, n_iterations=4, k=5),
        L2TopKAttack(model, gradient_map, k=5, rho=0.5, n_iterations=3, n_restarts=2, surrogate=smooth),
        TopKAttack(model, rsg, k=5, eps=0.2, step_size=0.05, n_iterations=3, surrogate=smooth, map_preparation=None),
        PGD(model, eps=0.2, step_size=0.05, n_iterations=3, random_start="always"),  # default: the first restart starts at x
    ]
    return [a.perturb(x, generator=torch.Generator().manual_seed(seed))[0] for a in attacks]


def test_same_generator_seed_same_result(tiny):
    model, x = tiny
    first, again, other = _runs(model, x, 0), _runs(model, x, 0), _runs(model, x, 1)
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)  # the generator is really used


def test_reported_smoothgrad_maps_are_deterministic(tiny):
    model, x = tiny
    rsg = RelaxedSparsifiedSmoothGrad(model, sparsity=0.2, clip=0.04, sigma=0.2, n_samples=4)
    attack = TopKAttack(model, rsg, k=5, n_iterations=1, noise_seed=3, map_preparation=None)
    m1, m2 = attack.attribution_maps(x), attack.attribution_maps(x)
    assert torch.equal(m1, m2)
    reference = rsg.attribute(x, target=model(x).argmax(1), generator=torch.Generator().manual_seed(3))
    assert torch.equal(m1, reference)


# --------------------------------------------------------------------------- inputs and adapters


def test_tuple_inputs_and_additional_forward_args():
    torch.manual_seed(0)
    model = TwoInputNet(softplus=4.0).eval()
    x1, x2 = torch.rand(3, 1, 5, 5), torch.rand(3, 1, 5, 5)
    cam = CAM(model, model.feat, model.fc)
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        attack = TopKAttack(model, cam, k=5, eps=eps, step_size=0.05, n_iterations=4, norm=norm, map_preparation=None)
        adv, result = attack.perturb((x1, x2), additional_forward_args=(0.5,))
        assert isinstance(adv, tuple) and len(adv) == 2
        d = torch.cat([(adv[0] - x1).flatten(1), (adv[1] - x2).flatten(1)], dim=1)
        norm_value = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert torch.allclose(result.norm, norm_value, atol=1e-6)
        assert bool((norm_value <= eps + 1e-6).all())
        with torch.no_grad():
            assert torch.equal(model(*adv, 0.5).argmax(1), model(x1, x2, 0.5).argmax(1))
        assert torch.allclose(result.similarity, attack.similarity((x1, x2), adv, additional_forward_args=(0.5,)))
    # an attribution returning one map per input: the prepared maps are concatenated
    def two_maps(m, inputs, target, args):
        a, b = (t if t.requires_grad else t.detach().requires_grad_() for t in inputs)
        out = m(a, b, *args).gather(1, target[:, None]).sum()
        return torch.autograd.grad(out, (a, b), create_graph=True)
    attack = TopKAttack(model, two_maps, k=10, eps=0.1, step_size=0.05, n_iterations=3)
    adv, result = attack.perturb((x1, x2), additional_forward_args=(0.5,))
    assert torch.allclose(result.similarity, attack.similarity((x1, x2), adv, additional_forward_args=(0.5,)))


def test_surrogate_gets_the_gradients_and_the_real_model_the_maps():
    torch.manual_seed(0)
    model = Small().eval()
    smooth = softplus_surrogate(model, beta=2.0)
    cam = CAM(model, model.feature_layer, model.classifier)
    attack = AAI(model, cam, n_iterations=1, surrogate=smooth)
    rebound = attack.adapter.gradient_attribution
    assert rebound.forward_func is smooth
    assert rebound.layer is smooth.feature_layer and rebound.classifier is smooth.classifier
    assert cam.forward_func is model and cam.layer is model.feature_layer  # the user's object is untouched
    x = torch.rand(3, 1, 28, 28)
    target = torch.tensor([1, 2, 3])
    assert torch.equal(attack.attribution_maps(x, target=target), cam.attribute(x, target=target))
    # Grad-CAM and a layer passed in attribution_kwargs are moved too
    ig = BatchedIntegratedGradients(model)
    attack = TopKAttack(model, ig, k=5, n_iterations=1, surrogate=smooth,
                        attribution_kwargs={"layer": model.feature_layer, "n_steps": 4}, map_preparation=None)
    assert attack.adapter.gradient_kwargs_modules["layer"] is smooth.feature_layer
    assert GradCAM(model, model.feature_layer).layer is model.feature_layer


def test_attribution_kwargs_reach_the_reported_maps_and_gradient_kwargs_only_the_attack(tiny):
    model, x = tiny
    ig = BatchedIntegratedGradients(model)
    attack = TopKAttack(model, ig, k=5, n_iterations=1, attribution_kwargs={"n_steps": 5, "method": "riemann_left"},
                        gradient_attribution_kwargs={"n_steps": 2})
    target = model(x).argmax(1)
    expected = ig.attribute(x, target=target, n_steps=5, method="riemann_left")
    assert torch.equal(attack.attribution_maps(x), expected)
    assert not attack.adapter.reusable


def test_show_progress_runs(tiny, capsys):
    model, x = tiny
    smooth = softplus_surrogate(model)
    TopKAttack(model, gradient_map, k=3, n_iterations=2, surrogate=smooth).perturb(x, show_progress=True)
    with pytest.raises(TypeError, match="show_progress"):
        TopKAttack(model, gradient_map, k=3, n_iterations=2).perturb(x, show_progress=1)


# --------------------------------------------------------------------------- the attack gradients


@pytest.mark.parametrize("kind", ["topk", "mass-center", "targeted", "aai-l1"])
def test_attack_objectives_are_differentiated_correctly(kind):
    """gradcheck (float64) of x -> the attack's objective on the maps of a smooth model: the
    direction every sign step takes is the true gradient of what the attack decreases."""
    from captum_robust.robust.attacks._adapter import apply_preparation

    torch.manual_seed(0)
    model = TinyGapNet(softplus=3.0).double().eval()
    x = torch.rand(2, 2, 5, 5, dtype=torch.float64) * 0.8 + 0.1
    cam = CAM(model, model.conv2, model.fc)
    region = torch.zeros(5, 5, dtype=torch.bool)
    region[:2] = True
    attack = {
        "topk": TopKAttack(model, gradient_map, k=10, n_iterations=1),
        "mass-center": MassCenterAttack(model, gradient_map, n_iterations=1),
        "targeted": TargetedAttributionAttack(model, gradient_map, region, n_iterations=1),
        "aai-l1": AAI(model, cam, variant="l1", n_iterations=1, hinge_weight=2.0),
    }[kind]
    ctx = attack._context(AttackCall(x, options={"region": None}), None)
    x_start = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)

    def objective(inp):
        maps = attack.adapter.maps((inp,), False, ctx.target, (), create_graph=True)
        logits = model(inp) if attack._needs_logits else None
        return attack._objective(apply_preparation(attack._prepare, maps), maps, logits, ctx.state, ctx)

    assert torch.autograd.gradcheck(objective, (x_start.requires_grad_(True),), eps=1e-6, atol=1e-5)
    # and _gradient_pass returns exactly that gradient
    grads, _, value, _ = attack._gradient_pass(ctx, (x_start.detach(),), None)
    inp = x_start.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(objective(inp).sum(), inp)
    assert torch.allclose(grads[0], expected)


# --------------------------------------------------------------------------- naming


def test_result_aliases_follow_the_naming_rule(tiny):
    model, x = tiny
    cam = CAM(model, model.conv2, model.fc)
    _, maps = TopKAttack(model, cam, k=3, eps=0.2, step_size=0.05, n_iterations=3).perturb(x)
    assert maps.prediction_kept is maps.accepted
    _, obj = AttributionPGD(model, lambda xa, x0, t, a: (xa - x0).sum((1, 2, 3)), eps=0.1, step_size=0.05,
                            n_iterations=2).perturb(x)
    assert obj.prediction_kept is obj.accepted
    _, pgd = PGD(model, eps=0.3, step_size=0.1, n_iterations=3).perturb(x)
    assert pgd.succeeded is pgd.accepted and pgd.success is pgd.accepted
    target = (model(x).argmax(1) + 1) % 3
    _, isa = ISA(model, cam, n_iterations=2, n_eps_rounds=1, n_weight_rounds=0).perturb(x, target=target)
    assert isa.succeeded is isa.accepted and isa.non_monotone.dtype == torch.bool
