"""Every zoo model (tiny Hugging Face configs, random weights, 32 px) is attacked on its maps with
every prediction kept, and trains one step with a gradient-map regularizer (issue 15's zoo items)."""

import copy

import pytest
import torch

pytest.importorskip("transformers", reason="the zoo needs Hugging Face transformers (pip install -e .[zoo])")

from captum_robust.attr import Saliency  # noqa: E402
from captum_robust.robust.attacks import TopKAttack, softplus_surrogate  # noqa: E402
from captum_robust.robust.regularizers import InputGradientRegularizer  # noqa: E402
from tests.zoo.test_hf_models import CNNS, _model, _x  # noqa: E402

NAMES = list(CNNS) + ["vit"]


def _eager(model):
    """A copy whose attention runs in plain torch (the fused CPU kernel has no double backward)."""
    model = copy.deepcopy(model)
    if hasattr(model, "config"):
        model.config._attn_implementation = "eager"
    return model


@pytest.mark.parametrize("name", NAMES)
def test_attack_on_saliency_maps_keeps_every_prediction(name):
    model = _eager(_model(name))
    x = _x(batch=2, seed=3)
    with torch.no_grad():
        clean = model(x).logits.argmax(1)
    attack = TopKAttack(model, Saliency(model), k=50, eps=4 / 255, step_size=1 / 255, n_iterations=3,
                        surrogate=softplus_surrogate(model, beta=10.0))
    x_adv, result = attack.perturb(x, target=clean)
    with torch.no_grad():
        after = model(x_adv).logits.argmax(1)
    assert torch.equal(after, clean)  # the attack keeps every prediction
    assert float((x_adv - x).abs().max()) <= 4 / 255 + 1e-6
    # per example: an accepted (prediction-keeping) iterate moved the input, else the clean input is returned
    moved = (x_adv != x).flatten(1).any(dim=1)
    assert torch.equal(moved, result.prediction_kept)


@pytest.mark.parametrize("name", NAMES)
def test_one_regularized_training_step(name):
    model = _eager(_model(name)).train()
    x, y = _x(batch=2, seed=4), torch.tensor([0, 3])
    reg = InputGradientRegularizer(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x).logits, y) + reg(x, y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert sum(moved) >= len(moved) // 2  # the step changed (most of) the parameters
