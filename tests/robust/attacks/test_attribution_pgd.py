"""AttributionPGD: the closed form of Chen et al.'s IG-Sum-Norm inner maximum on a linear model, best vs
last iterate, keep_prediction, and no side effects (it runs inside training loops)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_robust.attr import BatchedIntegratedGradients
from captum_robust.robust.attacks import AttributionPGD
from tests.robust.attacks._models import LinearNet


def _ig_sum_norm(model, beta, n_steps=64):
    """Chen's IG-Sum-Norm inner objective: loss(x') + beta ||IG^{l_y}(x, x')||_1."""
    loss_ig = BatchedIntegratedGradients(lambda r, t: F.cross_entropy(model(r), t, reduction="none"))

    def objective(x_adv, x, y, args):
        ig = loss_ig.attribute(x_adv, baselines=x, additional_forward_args=(y,), n_steps=n_steps, create_graph=True)
        return F.cross_entropy(model(x_adv), y, reduction="none") + beta * ig.abs().flatten(1).sum(dim=1)

    return objective


def test_ig_sum_norm_inner_max_matches_the_closed_form_on_a_linear_model():
    # two classes: CE(x, y) = softplus(z), z = -<dw, x> - db with dw = w_y - w_other. The IG of the
    # loss from x to x' sums to loss(x') - loss(x) (completeness), and at x* = x - eps sign(dw)
    # all its components share a sign, so ||IG||_1 = loss(x*) - loss(x) there; x* maximizes both
    # terms over the l-inf ball (Chen et al., Theorem 3's setting), giving
    # (1 + beta) softplus(z + eps ||dw||_1) - beta softplus(z).
    # (||IG||_1 alone has a local maximum at every corner near x, so a random start may end in
    # another one; the loss term makes the maximum unique for beta < 1.)
    torch.manual_seed(0)
    model = LinearNet(classes=2).double().eval()
    x = torch.rand(6, 1, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
        dw = model.fc.weight[y] - model.fc.weight[1 - y]
        db = model.fc.bias[y] - model.fc.bias[1 - y]
    eps, beta = 0.1, 0.5
    inner = AttributionPGD(model, _ig_sum_norm(model, beta), eps=eps, step_size=0.02, n_iterations=12,
                           clip_min=None, clip_max=None)
    x_adv, result = inner.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
    z = -(dw * x.flatten(1)).sum(1) - db
    expected = (1 + beta) * F.softplus(z + eps * dw.abs().sum(1)) - beta * F.softplus(z)
    assert torch.allclose(x_adv, x - eps * dw.sign().reshape(x.shape), atol=1e-12)
    assert torch.allclose(result.objective, expected, rtol=1e-8)
    assert bool(result.accepted.all())
    # keep_best=False returns the last iterate, which is the same corner here
    last, r_last = AttributionPGD(model, _ig_sum_norm(model, beta), eps=eps, step_size=0.02, n_iterations=12,
                                  keep_best=False, clip_min=None, clip_max=None).perturb(
        x, target=y, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(last, x_adv) and bool(torch.isnan(r_last.objective).all())


def test_keep_best_returns_the_best_iterate_and_keep_prediction_rejects_flips():
    # objective -(s - c)^2 on s = sum of the pixels, oscillating sign steps
    class Sum(nn.Module):
        def forward(self, x):
            s = x.flatten(1).sum(1, keepdim=True)
            return torch.cat([torch.zeros_like(s), s - 1.0], dim=1)

    torch.manual_seed(1)
    x = torch.rand(5, 1, 2, 2, dtype=torch.float64) * 0.2
    c = x.flatten(1).sum(1) + 0.45
    obj = lambda xa, x0, t, a: -(xa.flatten(1).sum(1) - c) ** 2  # noqa: E731
    attack = AttributionPGD(Sum(), obj, eps=0.2, step_size=0.07, n_iterations=8, random_start=False)
    x_adv, result = attack.perturb(x)
    traj, cur = [x], x.clone()
    for _ in range(8):
        cur = (x + (cur + 0.07 * torch.sign(c - cur.flatten(1).sum(1)).reshape(-1, 1, 1, 1) - x).clamp(-0.2, 0.2)).clamp(0, 1)
        traj.append(cur)
    values = torch.stack([obj(t, x, None, None) for t in traj])
    assert torch.allclose(result.objective, values.max(0).values)
    assert torch.allclose(x_adv, torch.stack(traj)[values.argmax(0), torch.arange(5)])
    # the prediction flips to class 1 once the sum exceeds 1; keep_prediction forbids that
    obj_up = lambda xa, x0, t, a: xa.flatten(1).sum(1)  # noqa: E731
    up = AttributionPGD(Sum(), obj_up, eps=0.3, step_size=0.05, n_iterations=10, random_start=False, keep_prediction=True)
    x_up, r_up = up.perturb(x + 0.1)
    assert bool((x_up.flatten(1).sum(1) <= 1.0).all())
    assert torch.equal(r_up.predictions, r_up.clean_predictions)
    free = AttributionPGD(Sum(), obj_up, eps=0.3, step_size=0.05, n_iterations=10, random_start=False)
    x_free, _ = free.perturb(x + 0.1)
    assert bool((x_free.flatten(1).sum(1) > 1.0).any())


def test_no_side_effects_in_a_training_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 8), nn.Dropout(0.5), nn.Softplus(), nn.Linear(8, 3))
    model.train()
    x = torch.rand(4, 1, 5, 5)
    y = torch.tensor([0, 1, 2, 0])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    seen_modes = []

    def obj(xa, x0, t, a):
        seen_modes.append(model.training)
        return F.cross_entropy(model(xa), t, reduction="none")

    inner = AttributionPGD(model, obj, eps=0.1, step_size=0.03, n_iterations=3)
    x_adv, _ = inner.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
    assert not any(seen_modes)  # eval mode during the search (dropout off)
    assert model.training
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(p.requires_grad for p in model.parameters())
    assert not x_adv.requires_grad
    inner_train = AttributionPGD(model, obj, eps=0.1, step_size=0.03, n_iterations=2, eval_mode=False)
    seen_modes.clear()
    inner_train.perturb(x, target=y)
    assert all(seen_modes)


def test_objective_shape_is_checked():
    model = LinearNet().eval()
    attack = AttributionPGD(model, lambda xa, x, t, a: xa.sum(), n_iterations=1)
    with pytest.raises(ValueError, match="one value per example"):
        attack.perturb(torch.rand(2, 1, 5, 5))
    with pytest.raises(TypeError, match="objective must be a callable"):
        AttributionPGD(model, None)
