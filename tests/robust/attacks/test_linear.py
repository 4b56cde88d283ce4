"""A linear model's gradient map does not depend on the input, so no attack can change it:
every attack must report top-k intersection 1 and Kendall's tau 1 and return the clean input."""

import warnings

import pytest
import torch

from captum_robust.robust.attacks import (
    AAI,
    L2TopKAttack,
    MassCenterAttack,
    TargetedAttributionAttack,
    TopKAttack,
    ghorbani_maps,
)
from captum_robust.robust.discrepancy import kendall_tau, topk_intersection
from tests.robust.attacks._models import LinearNet, gradient_map, one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _attacks(model, measure):
    region = torch.zeros(5, 5, dtype=torch.bool)
    region[0] = True
    common = dict(measure=measure, **({"measure_k": 5} if measure == "topk" else {}))
    return [
        TopKAttack(model, gradient_map, k=5, eps=0.2, step_size=0.05, n_iterations=4, **common),
        TopKAttack(model, gradient_map, k=5, eps=1.0, step_size=0.1, n_iterations=4, norm="l2", random_start=True, **common),
        MassCenterAttack(model, gradient_map, eps=0.2, step_size=0.05, n_iterations=4, **common),
        TargetedAttributionAttack(model, gradient_map, region, eps=0.2, step_size=0.05, n_iterations=4, **common),
        AAI(model, gradient_map, eps=0.2, step_size=0.05, n_iterations=4, k=5, map_preparation="ghorbani", **common),
        AAI(model, gradient_map, eps=0.2, step_size=0.05, n_iterations=4, variant="l1", **common),
        L2TopKAttack(model, gradient_map, k=5, rho=1.0, n_iterations=3, n_restarts=2, **common),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("measure", ["topk", "kendall"])
def test_no_attack_changes_a_linear_models_gradient_map(dtype, measure):
    torch.manual_seed(0)
    model = LinearNet().to(dtype).eval()
    x = torch.rand(6, 1, 5, 5, dtype=dtype) * 0.6 + 0.2
    for attack in _attacks(model, measure):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            x_adv, result = attack.perturb(x, generator=torch.Generator().manual_seed(0))
        one = torch.ones(6, dtype=dtype)
        if measure == "topk":
            assert torch.equal(result.similarity, one), type(attack).__name__
        else:  # tau-b of identical maps is 1 up to the rounding of its square roots
            assert torch.allclose(result.similarity, one, rtol=0, atol=1e-6), type(attack).__name__
        assert not bool(result.accepted.any())
        assert torch.equal(x_adv, x)
        # measured independently on the maps of the returned inputs
        with torch.no_grad():
            pred = model(x).argmax(1)
        clean = ghorbani_maps(gradient_map(model, x, pred).detach())
        adv = ghorbani_maps(gradient_map(model, x_adv, pred).detach())
        assert torch.equal(topk_intersection(clean, adv, k=5), one)
        assert torch.allclose(kendall_tau(clean, adv), one, rtol=0, atol=1e-6)


def test_the_zero_gradient_warning_suggests_a_surrogate():
    model = LinearNet().eval()
    x = torch.rand(3, 1, 5, 5)
    attack = TopKAttack(model, gradient_map, k=5, eps=0.2, step_size=0.05, n_iterations=2)
    with pytest.warns(UserWarning, match="surrogate=softplus_surrogate"):
        attack.perturb(x)
