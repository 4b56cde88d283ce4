"""Invariants checked on every returned example of every attack.

* the perturbation is inside the l-inf / l2 ball and the data box (recomputed here from the
  returned inputs, and equal to the reported norm);
* the reported predictions are the real model's at the returned inputs, and equal the clean
  predictions wherever the attack promises to keep them;
* the reported similarity is the one recomputed from the returned inputs;
* the model (mode, parameter gradients, requires_grad) and the caller's tensors are unchanged.
"""

import copy

import pytest
import torch
from torch import nn

from captum_robust.attr import CAM, BatchedIntegratedGradients, RelaxedSparsifiedSmoothGrad
from captum_robust.robust.attacks import (
    AAI,
    ISA,
    PGD,
    L2TopKAttack,
    MassCenterAttack,
    TargetedAttributionAttack,
    TopKAttack,
    softplus_surrogate,
)
from tests.helpers.models import TinyGapNet
from tests.robust.attacks._models import correct_examples, gradient_map, one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _ig_kwargs():
    return {"n_steps": 4, "method": "riemann_middle"}


def _digits_attacks(model):
    ig = BatchedIntegratedGradients(model)
    cam = CAM(model, model.feature_layer, model.classifier)
    sur = softplus_surrogate(model, beta=10.0)
    rsg = RelaxedSparsifiedSmoothGrad(model, sparsity=0.1, clip=0.01, sigma=0.1, n_samples=4)
    region = torch.zeros(28, 28, dtype=torch.bool)
    region[:8, :8] = True
    return {
        "topk-ig-linf": TopKAttack(model, ig, k=50, eps=0.1, step_size=0.03, n_iterations=4, surrogate=sur, attribution_kwargs=_ig_kwargs()),
        "topk-ig-relu-kendall": TopKAttack(model, ig, k=50, eps=0.1, step_size=0.03, n_iterations=3, measure="kendall", attribution_kwargs=_ig_kwargs()),
        "topk-grad-l2": TopKAttack(model, gradient_map, k=50, eps=1.0, step_size=0.05, n_iterations=4, norm="l2", surrogate=sur, random_start=True),
        "topk-smoothgrad": TopKAttack(model, rsg, k=50, eps=0.1, step_size=0.03, n_iterations=3, surrogate=sur, map_preparation=None),
        "mass-center": MassCenterAttack(model, ig, eps=0.1, step_size=0.03, n_iterations=3, surrogate=sur, attribution_kwargs=_ig_kwargs()),
        "targeted": TargetedAttributionAttack(model, ig, region, eps=0.1, step_size=0.03, n_iterations=3, surrogate=sur, attribution_kwargs=_ig_kwargs()),
        "aai-topk": AAI(model, cam, eps=0.3, step_size=0.05, n_iterations=6),
        "aai-l1-spearman": AAI(model, cam, eps=0.3, step_size=0.05, n_iterations=6, variant="l1", measure="spearman"),
        "l2topk": L2TopKAttack(model, gradient_map, k=50, rho=1.5, n_iterations=3, n_restarts=2, random_budget=5, surrogate=sur),
    }


def _snapshot(model):
    return (
        [m.training for m in model.modules()],
        [(p.grad is None, p.requires_grad) for p in model.parameters()],
        copy.deepcopy(model.state_dict()),
    )


def _check_common(model, attack, x, x_adv, result, eps, norm, clip=(0.0, 1.0)):
    delta = (x_adv - x).flatten(1)
    recomputed = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    tol = 1e-5 if x.dtype == torch.float32 else 1e-10
    assert torch.allclose(result.norm, recomputed.to(result.norm.dtype), atol=tol)
    assert bool((recomputed <= torch.as_tensor(eps, dtype=x.dtype) + tol).all())
    assert bool((x_adv >= clip[0]).all()) and bool((x_adv <= clip[1]).all())
    with torch.no_grad():
        pred_adv = model(x_adv).argmax(1)
        pred = model(x).argmax(1)
    assert torch.equal(result.predictions, pred_adv)
    assert torch.equal(result.clean_predictions, pred)
    assert result.steps.dtype == torch.long and result.best_step.dtype == torch.long
    assert bool((result.best_step <= result.steps).all())
    assert not x_adv.requires_grad


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "topk-ig-linf", "topk-ig-relu-kendall", "topk-grad-l2", "topk-smoothgrad", "mass-center", "targeted",
    "aai-topk", "aai-l1-spearman", "l2topk",
])
def test_attribution_attack_invariants_on_digits(name):
    model, x, y = correct_examples(6)
    attack = _digits_attacks(model)[name]
    before = _snapshot(model)
    x_in = x.clone()
    target = y.clone()
    x_adv, result = attack.perturb(x, target=target, generator=torch.Generator().manual_seed(0))
    # no side effects
    assert torch.equal(x, x_in) and torch.equal(target, y)
    after = _snapshot(model)
    assert before[0] == after[0] and before[1] == after[1]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])
    eps = getattr(attack, "eps", None) or attack.rho
    norm = getattr(attack, "norm", "linf")
    _check_common(model, attack, x, x_adv, result, eps, norm)
    # every attribution attack keeps the prediction
    assert torch.equal(result.predictions, result.clean_predictions)
    # the reported similarity is the one recomputed from the returned inputs
    recomputed = attack.similarity(x, x_adv, target=y)
    assert torch.allclose(result.similarity, recomputed, atol=1e-6, equal_nan=True)
    # where nothing was accepted the clean input comes back
    same = (x_adv == x).flatten(1).all(dim=1)
    assert bool(same[~result.accepted].all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_invariants_in_both_dtypes_on_a_tiny_model(dtype):
    torch.manual_seed(1)
    model = TinyGapNet().to(dtype).eval()
    smooth = TinyGapNet(softplus=5.0).to(dtype).eval()
    smooth.load_state_dict(model.state_dict())
    x = torch.rand(5, 2, 5, 5, dtype=dtype)
    cam = CAM(model, model.conv2, model.fc)
    attacks = [
        (TopKAttack(model, gradient_map, k=10, eps=0.2, step_size=0.05, n_iterations=5, surrogate=smooth), 0.2, "linf"),
        (TopKAttack(model, cam, k=5, eps=0.5, step_size=0.2, n_iterations=5, norm="l2", map_preparation=None), 0.5, "l2"),
        (AAI(model, cam, eps=0.2, step_size=0.05, n_iterations=5, k=5), 0.2, "linf"),
        (L2TopKAttack(model, gradient_map, k=10, rho=0.5, n_iterations=3, n_restarts=2, surrogate=smooth), 0.5, "l2"),
    ]
    for attack, eps, norm in attacks:
        x_adv, result = attack.perturb(x, generator=torch.Generator().manual_seed(0))
        assert x_adv.dtype == dtype and result.similarity.dtype == dtype
        _check_common(model, attack, x, x_adv, result, eps, norm)
        assert torch.equal(result.predictions, result.clean_predictions)
        assert torch.allclose(result.similarity, attack.similarity(x, x_adv), atol=1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.03), ("l2", 1.5, 0.4)])
def test_pgd_invariants_on_digits(norm, eps, step):
    model, x, y = correct_examples(8)
    attack = PGD(model, eps=eps, step_size=step, n_iterations=5, norm=norm)
    x_adv, result = attack.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
    _check_common(model, attack, x, x_adv, result, eps, norm)
    assert torch.equal(result.success, result.predictions != y)
    import torch.nn.functional as F

    with torch.no_grad():
        loss = F.cross_entropy(model(x_adv), y, reduction="none")
    assert torch.allclose(result.loss, loss, atol=1e-5)


def test_isa_invariants_on_digits():
    model, x, y = correct_examples(4)
    cam = CAM(model, model.feature_layer, model.classifier)
    target = (y + 1) % 10
    isa = ISA(model, cam, eps_max=0.3, n_iterations=5, n_eps_rounds=3, n_weight_rounds=2)
    x_adv, result = isa.perturb(x, target=target)
    ok = result.success
    assert bool(ok.any())
    eps = torch.where(ok, result.eps, torch.zeros_like(result.eps))
    _check_common(model, isa, x, x_adv, result, eps, "linf")
    with torch.no_grad():
        logits = model(x_adv)
    own = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], float("-inf")).amax(1)
    assert bool((own - others >= isa.tau - 1e-5)[ok].all())
    assert torch.equal(x_adv[~ok], x[~ok])
    # the reported discrepancy is D_2,l1 of the returned inputs, recomputed from CAM
    maps = lambda inp, cls: cam.attribute(inp, target=cls).flatten(1)
    d = 0.5 * ((maps(x, y) - maps(x_adv, y)).abs().sum(1) + (maps(x, target) - maps(x_adv, target)).abs().sum(1))
    assert torch.allclose(result.discrepancy[ok], d[ok], atol=1e-5)
    assert bool((result.eps_star[ok] <= result.eps[ok]).all()) and bool((result.eps_star[ok] <= 0.3).all())
