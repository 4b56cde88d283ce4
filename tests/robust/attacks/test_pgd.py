"""PGD: closed forms on linear models, exact l2 step lengths, uniform random starts, the best
iterate against a brute-force trajectory, and agreement with Captum's l-inf PGD."""

import math

import pytest
import torch
import torch.nn.functional as F
from captum.robust import PGD as CaptumPGD
from scipy import stats
from torch import nn

from captum_robust._utils.geometry import random_in_ball
from captum_robust.robust.attacks import PGD
from tests.robust.attacks._models import LinearNet, correct_examples, one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _binary_linear(seed=0):
    torch.manual_seed(seed)
    model = LinearNet(classes=2).double().eval()
    x = torch.rand(8, 1, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    dw = (model.fc.weight[1 - y] - model.fc.weight[y]).reshape(8, 1, 5, 5)  # direction raising the loss
    return model, x, y, dw.detach()


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.2, 0.05), ("l2", 1.0, 0.3)])
def test_untargeted_pgd_reaches_the_closed_form_optimum_of_a_linear_model(norm, eps, step):
    # for two classes the cross-entropy grows with <w_other - w_y, x'>, so its maximum over the
    # ball is at x + eps sign(dw) (l-inf) or x + eps dw / ||dw|| (l2)
    model, x, y, dw = _binary_linear()
    # (l2 without random start: rescaling onto the sphere only converges slowly in the
    # directions orthogonal to the gradient)
    attack = PGD(model, eps=eps, step_size=step, n_iterations=10, norm=norm, random_start=norm == "linf",
                 clip_min=None, clip_max=None)
    x_adv, result = attack.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
    if norm == "linf":
        best = x + eps * dw.sign()
    else:
        best = x + eps * dw / dw.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    assert torch.allclose(x_adv, best, atol=1e-10)
    with torch.no_grad():
        loss = F.cross_entropy(model(best), y, reduction="none")
    assert torch.allclose(result.loss, loss, atol=1e-6)


def test_l2_steps_have_exactly_the_step_length():
    model, x, y, dw = _binary_linear()
    for step in (0.01, 0.3, 1.7):
        attack = PGD(model, eps=100.0, step_size=step, n_iterations=1, norm="l2", random_start=False,
                     clip_min=None, clip_max=None)
        x_adv, result = attack.perturb(x, target=y)
        assert torch.allclose((x_adv - x).flatten(1).norm(dim=1), torch.full((8,), step, dtype=torch.float64))
        assert torch.allclose(result.norm, torch.full((8,), step, dtype=torch.float64))
        # along the gradient
        cos = F.cosine_similarity((x_adv - x).flatten(1), dw.flatten(1))
        assert torch.allclose(cos, torch.ones(8, dtype=torch.float64))


def test_random_starts_are_uniform_in_the_ball():
    x = (torch.zeros(4000, 10, dtype=torch.float64),)
    eps = torch.full((4000,), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    (pts,) = random_in_ball(x, eps, "l2", [(None, None)], g)
    r = pts.norm(dim=1) / 0.5
    assert bool((r <= 1 + 1e-12).all())
    # uniform in a d-ball: P(r <= t) = t^d, so r^d is uniform on [0, 1]; directions are isotropic
    assert stats.kstest((r**10).numpy(), "uniform").pvalue > 1e-3
    assert float(pts.mean(0).abs().max()) < 0.02
    (pts,) = random_in_ball(x, eps, "linf", [(None, None)], g)
    assert stats.kstest(((pts + 0.5) / 1.0).flatten().numpy(), "uniform").pvalue > 1e-3


class _Sum(nn.Module):
    """Two logits, 0 and the sum of the pixels."""

    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(s), s], dim=1)


def _oscillating_problem():
    """Loss -(s - c)^2 with s = sum of the pixels: sign steps overshoot and oscillate around c,
    so the last iterate is not the best one. Returns x, the loss and (eps, step, n)."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 3, 3, dtype=torch.float64) * 0.5
    c = x.flatten(1).sum(1) + torch.tensor([0.5, 0.7, 1.1, 0.3, 0.9, 0.45], dtype=torch.float64)
    return x, (lambda logits, label: -(logits[:, 1] - c) ** 2), (0.3, 0.04, 12)


def test_pgd_returns_the_best_iterate_of_its_trajectory():
    # compare with a brute-force trajectory
    x, loss, (eps, step, n) = _oscillating_problem()
    attack = PGD(_Sum(), eps=eps, step_size=step, n_iterations=n, loss=loss, random_start=False)
    x_adv, result = attack.perturb(x, target=torch.zeros(6, dtype=torch.long))
    traj, cur = [x], x.clone()
    for _ in range(n):
        cur.requires_grad_(True)
        (g,) = torch.autograd.grad(loss(_Sum()(cur), None).sum(), cur)
        cur = (x + (cur.detach() + step * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        traj.append(cur)
    values = torch.stack([loss(_Sum()(t), None) for t in traj])  # (n + 1) x B
    best = values.argmax(0)
    assert torch.allclose(result.loss, values.max(0).values)
    assert torch.allclose(x_adv, torch.stack(traj)[best, torch.arange(6)])
    assert torch.equal(result.best_step, best)
    assert bool((best < n).any())  # the test means something: some best iterates are not the last


def test_keep_best_false_returns_the_final_iterate_and_the_better_restart():
    # the oscillating problem: the final iterate is not the best one
    x, loss, (eps, step, n) = _oscillating_problem()
    label = torch.zeros(6, dtype=torch.long)

    def final_iterate(start):
        cur = start.clone()
        for _ in range(n):
            cur.requires_grad_(True)
            (g,) = torch.autograd.grad(loss(_Sum()(cur), None).sum(), cur)
            cur = (x + (cur.detach() + step * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        return cur

    last = final_iterate(x)
    x_adv, result = PGD(_Sum(), eps=eps, step_size=step, n_iterations=n, loss=loss, random_start=False,
                        keep_best=False).perturb(x, target=label)
    assert torch.allclose(x_adv, last)
    assert torch.allclose(result.loss, loss(_Sum()(last), None))
    assert bool((result.best_step == n).all())
    _, best_result = PGD(_Sum(), eps=eps, step_size=step, n_iterations=n, loss=loss,
                            random_start=False).perturb(x, target=label)
    assert bool((best_result.loss > result.loss + 1e-9).any())  # keeping the best differs here
    # two restarts from random starts: the final iterate with the higher loss of the two
    gen = torch.Generator().manual_seed(3)
    box = [(torch.zeros((), dtype=x.dtype), torch.ones((), dtype=x.dtype))]
    starts = [random_in_ball((x,), torch.full((6,), eps, dtype=x.dtype), "linf", box, gen)[0] for _ in range(2)]
    finals = torch.stack([final_iterate(s0) for s0 in starts])
    values = torch.stack([loss(_Sum()(f), None) for f in finals])
    pick = values.argmax(0)
    assert 0 < int(pick.sum()) < 6  # each restart wins somewhere
    x2, r2 = PGD(_Sum(), eps=eps, step_size=step, n_iterations=n, loss=loss, n_restarts=2,
                 keep_best=False, random_start="always").perturb(x, target=label, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(x2, finals[pick, torch.arange(6)])
    assert torch.equal(r2.best_step, n * (pick + 1))
    with pytest.raises((TypeError, ValueError), match="keep_best"):
        PGD(_Sum(), keep_best="no")


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_linf_pgd_without_random_start_equals_captum_on_a_monotone_problem():
    # on a two-class linear model the loss grows monotonically along the sign steps, so the best
    # iterate is the last one, which is what Captum's PGD returns
    model, x, y, _ = _binary_linear(seed=1)
    x = x.float()
    model = model.float()
    ours, _ = PGD(model, eps=0.2, step_size=0.03, n_iterations=9, random_start=False).perturb(x, target=y)
    ce = lambda out, label: F.cross_entropy(out, label, reduction="none")  # noqa: E731
    captum = CaptumPGD(model, loss_func=ce, lower_bound=0.0, upper_bound=1.0).perturb(
        x.clone().requires_grad_(True), radius=0.2, step_size=0.03, step_num=9, target=y
    ).detach()
    assert torch.allclose(ours, captum, atol=1e-6)


def test_targeted_pgd_on_digits_and_restarts():
    model, x, y = correct_examples(8)
    target = (y + 1) % 10
    attack = PGD(model, eps=0.3, step_size=0.05, n_iterations=15, targeted=True, loss="cw")
    x_adv, result = attack.perturb(x, target=target, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert torch.equal(result.success, pred == target)
    assert float(result.success.float().mean()) >= 0.75
    with pytest.raises(ValueError, match="targeted PGD needs target"):
        attack.perturb(x)
    # more restarts never do worse than the first one alone (same generator stream first)
    one, r1 = PGD(model, eps=0.1, step_size=0.02, n_iterations=5).perturb(x, target=y, generator=torch.Generator().manual_seed(0))
    three, r3 = PGD(model, eps=0.1, step_size=0.02, n_iterations=5, n_restarts=3).perturb(x, target=y, generator=torch.Generator().manual_seed(0))
    assert bool((r3.accepted | ~r1.accepted).all())
    assert bool((r3.loss >= r1.loss - 1e-6)[r3.accepted == r1.accepted].all())
    assert bool((r3.steps == 15).all())


def test_pgd_errors():
    model = LinearNet().eval()
    with pytest.raises(ValueError, match="loss must be one of"):
        PGD(model, loss="mse")
    with pytest.raises(ValueError, match="n_restarts"):
        PGD(model, n_restarts=0)
    with pytest.raises(ValueError, match="one value per example"):
        PGD(model, loss=lambda logits, y: logits.sum()).perturb(torch.rand(2, 1, 5, 5))
