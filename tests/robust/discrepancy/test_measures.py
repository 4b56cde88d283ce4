"""Discrepancy measures (Boopathy eq. 3, 4, 7, App. B), attribution-aware metrics and alignment."""

import math

import pytest
import torch
from captum.attr import Saliency
from torch import nn

from captum_robust.robust.discrepancy import (
    alignment,
    attribution_aware,
    binarized_alignment,
    kendall_tau,
    lp_discrepancy,
    normalized_discrepancy_score,
    normalized_slope,
    spearman,
    target_free_discrepancy,
    topk_intersection,
    two_class_discrepancy,
)


def _tiny():
    """B = 1, C = 3 classes, maps of n = 2 elements.

    I(x)  = [[1, 2], [0, 1], [3, 3]],  I(x') = [[2, 0], [1, 1], [1, 4]]
    per-class l1: 3, 1, 3; per-class l2: sqrt 5, 1, sqrt 5.
    """
    x = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [3.0, 3.0]]])
    x_adv = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [1.0, 4.0]]])
    return x, x_adv


def test_eq3_by_hand():
    x, x_adv = _tiny()
    torch.testing.assert_close(lp_discrepancy(x, x_adv, p=1), torch.tensor([7.0 / 3.0]))
    torch.testing.assert_close(lp_discrepancy(x, x_adv, p=2), torch.tensor([(2 * math.sqrt(5) + 1) / 3]))
    torch.testing.assert_close(lp_discrepancy(x, x_adv, p=1, classes=1), torch.tensor([1.0]))
    torch.testing.assert_close(lp_discrepancy(x, x_adv, p=1, classes=[[0, 1]]), torch.tensor([2.0]))
    torch.testing.assert_close(lp_discrepancy(x, x_adv, p=2, classes=torch.tensor([2])), torch.tensor([math.sqrt(5)]))


def test_eq4_by_hand_and_per_example_classes():
    x, x_adv = _tiny()
    torch.testing.assert_close(two_class_discrepancy(x, x_adv, 0, 1), torch.tensor([2.0]))
    torch.testing.assert_close(two_class_discrepancy(x, x_adv, 0, 2), torch.tensor([3.0]))
    torch.testing.assert_close(two_class_discrepancy(x, x_adv, 0, 2, p=2), torch.tensor([math.sqrt(5)]))
    # y == y' reduces to the 1-class measure
    torch.testing.assert_close(two_class_discrepancy(x, x_adv, 1, 1), torch.tensor([1.0]))
    # a batch with different classes per example, maps with spatial dimensions
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 5, 3, 3, generator=g)
    b = torch.randn(4, 5, 3, 3, generator=g)
    y, y_adv = torch.tensor([0, 4, 2, 2]), [1, 0, 3, 2]
    expected = torch.stack(
        [0.5 * ((a[i, y[i]] - b[i, y[i]]).abs().sum() + (a[i, y_adv[i]] - b[i, y_adv[i]]).abs().sum()) for i in range(4)]
    )
    torch.testing.assert_close(two_class_discrepancy(a, b, y, y_adv), expected)


def test_eq7_paper_and_code_forms_by_hand():
    x, x_adv = _tiny()
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))  # softmax = (1, 2, 3) / 6
    # paper: 1/2 * 3 + 1/2 * (2/6 * 1 + 3/6 * 3)
    torch.testing.assert_close(target_free_discrepancy(x, x_adv, logits, 0), torch.tensor([1.5 + 0.5 * (1 / 3 + 1.5)]))
    # code: 3 + (2/5 * 1 + 3/5 * 3)
    torch.testing.assert_close(target_free_discrepancy(x, x_adv, logits, 0, code_form=True), torch.tensor([5.2]))
    # y = 2: paper 1/2 * 3 + 1/2 * (1/6 * 3 + 2/6 * 1); code 3 + (1/3 * 3 + 2/3 * 1)
    torch.testing.assert_close(target_free_discrepancy(x, x_adv, logits, 2), torch.tensor([1.5 + 0.5 * (0.5 + 1 / 3)]))
    torch.testing.assert_close(target_free_discrepancy(x, x_adv, logits, [2], code_form=True), torch.tensor([3.0 + 1.0 + 2 / 3]))
    # a single class: only the true-class term
    one, one_adv = x[:, :1], x_adv[:, :1]
    torch.testing.assert_close(target_free_discrepancy(one, one_adv, torch.zeros(1, 1), 0), torch.tensor([1.5]))
    torch.testing.assert_close(target_free_discrepancy(one, one_adv, torch.zeros(1, 1), 0, code_form=True), torch.tensor([3.0]))


def test_eq7_tends_to_eq4_when_the_softmax_is_one_hot():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    y, y_adv = torch.tensor([0, 1, 3]), torch.tensor([2, 3, 0])
    logits = 60.0 * torch.nn.functional.one_hot(y_adv, 4).double()
    torch.testing.assert_close(target_free_discrepancy(a, b, logits, y), two_class_discrepancy(a, b, y, y_adv))
    torch.testing.assert_close(
        target_free_discrepancy(a, b, logits, y, code_form=True), 2 * two_class_discrepancy(a, b, y, y_adv)
    )


def test_gradcheck_lp_two_class_and_target_free():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y, y_adv = torch.tensor([0, 2]), torch.tensor([1, 1])
    for p in (1, 2):
        assert torch.autograd.gradcheck(lambda u, v: lp_discrepancy(u, v, p=p), (a, b))
        assert torch.autograd.gradcheck(lambda u, v: lp_discrepancy(u, v, p=p, classes=y), (a, b))
        assert torch.autograd.gradcheck(lambda u, v: two_class_discrepancy(u, v, y, y_adv, p=p), (a, b))
        assert torch.autograd.gradcheck(lambda u, v: normalized_discrepancy_score(u, v, p=p), (a, b))
    for code_form in (False, True):
        assert torch.autograd.gradcheck(
            lambda u, v, s: target_free_discrepancy(u, v, s, y, code_form=code_form), (a, b, logits)
        )
    # the softmax weights do carry gradient
    (grad,) = torch.autograd.grad(target_free_discrepancy(a, b, logits, y).sum(), logits)
    assert float(grad.abs().sum()) > 1e-3


def test_l2_gradient_is_finite_at_zero_difference():
    a = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(lp_discrepancy(a, a.detach(), p=2).sum(), a)
    assert bool(torch.isfinite(grad).all())


def test_nds_and_nsl_by_hand():
    x, x_adv = _tiny()
    # ranges of the clean maps: 1, 1, 0 -> class 2 undefined
    torch.testing.assert_close(normalized_discrepancy_score(x, x_adv, classes=[[0, 1]]), torch.tensor([2.0]))
    assert bool(torch.isnan(normalized_discrepancy_score(x, x_adv)).all())
    a = torch.tensor([[[0.0, 2.0, 4.0]]])
    b = torch.tensor([[[1.0, 2.0, 2.0]]])
    torch.testing.assert_close(normalized_discrepancy_score(a, b, p=1), torch.tensor([0.75]))
    torch.testing.assert_close(normalized_discrepancy_score(a, b, p=2), torch.tensor([math.sqrt(5) / 4]))
    # NSL: (|0.6 - 0.5| / 0.5) / ((0.16 - 0.1) / 0.1) = 0.2 / 0.6
    out = normalized_slope(torch.tensor([0.5, 0.4]), torch.tensor([0.6, 0.2]), eps_low=0.1)
    torch.testing.assert_close(out, torch.tensor([0.2 / 0.6, 0.5 / 0.6]))
    out = normalized_slope(torch.tensor([0.5]), torch.tensor([0.6]), eps_low=torch.tensor([0.1]), eps_high=0.3)
    torch.testing.assert_close(out, torch.tensor([0.1]))


def test_attribution_aware_is_the_product_of_goodness_and_stability():
    g = torch.Generator().manual_seed(4)
    ref, before, after = (torch.randn(5, 30, generator=g) for _ in range(3))
    for name, fn in [("kendall", kendall_tau), ("spearman", spearman), ("topk", lambda u, v: topk_intersection(u, v, 7))]:
        aa, good, stable = attribution_aware(name, ref, before, after, k=7 if name == "topk" else None, return_components=True)
        torch.testing.assert_close(good, fn(ref, before))
        torch.testing.assert_close(stable, fn(before, after))
        torch.testing.assert_close(aa, good * stable)
    # a stable but bad map scores low: stability 1, goodness -1 for Kendall
    torch.testing.assert_close(attribution_aware("kendall", -before, before, before), -torch.ones(5))
    torch.testing.assert_close(attribution_aware(lambda u, v: (u - v).abs().sum(1), ref, ref, after), torch.zeros(5))
    with pytest.raises(ValueError, match="needs k"):
        attribution_aware("topk", ref, before, after)
    with pytest.raises(ValueError, match="metric"):
        attribution_aware("pearson", ref, before, after)


class _Linear3(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.lin.weight.copy_(w)
            self.lin.bias.copy_(b)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_alignment_by_hand_and_from_the_model():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    torch.testing.assert_close(alignment(x, torch.tensor([[0.0, 2.0], [3.0, 4.0]])), torch.tensor([4.0, 0.6]))
    assert bool(torch.isnan(alignment(x, torch.zeros(2, 2))).all())
    # a linear model: the gradient of the predicted class is that row of W
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    model = _Linear3(w, torch.tensor([0.0, 0.0, -10.0]))
    # predictions: x0 -> class 1 (8 vs 3), x1 -> class 0 (1 vs 0)
    torch.testing.assert_close(alignment(x, model), torch.tensor([4.0, 1.0]))
    torch.testing.assert_close(alignment(x, model, target=2), torch.tensor([7 / math.sqrt(2), 1 / math.sqrt(2)]))


def test_alignment_equals_captum_saliency_on_a_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Softplus(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    pred = model(x).argmax(1)
    grads = Saliency(model).attribute(x.clone().requires_grad_(), target=pred, abs=False)
    expected = (x * grads).flatten(1).sum(1).abs() / grads.flatten(1).norm(dim=1)
    torch.testing.assert_close(alignment(x, model), expected)
    torch.testing.assert_close(alignment(x, grads), expected)


def _all_class_grads(model, x):
    leaf = x.clone().requires_grad_()
    return torch.stack([Saliency(model).attribute(leaf, target=c, abs=False) for c in range(model(x).shape[1])], dim=1)


def test_binarized_alignment_against_brute_force():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    logits = model(x).detach()
    grads = _all_class_grads(model, x)
    alpha, i_star, j_star = binarized_alignment(x, model, return_classes=True)
    for b in range(7):
        i = int(logits[b].argmax())
        rob = {
            j: float((logits[b, i] - logits[b, j]) / (grads[b, i] - grads[b, j]).norm()) for j in range(4) if j != i
        }
        j = min(rob, key=rob.get)
        g = grads[b, i] - grads[b, j]
        assert (int(i_star[b]), int(j_star[b])) == (i, j)
        assert math.isclose(float(alpha[b]), abs(float(x[b] @ g)) / float(g.norm()), rel_tol=1e-9)
    # the same from gradient tensors, and the logit runner-up
    torch.testing.assert_close(binarized_alignment(x, grads, logits=logits), alpha)
    _, _, j_logit = binarized_alignment(x, grads, logits=logits, runner_up="logit", return_classes=True)
    assert torch.equal(j_logit, logits.topk(2, dim=1).indices[:, 1])


def test_binarized_alignment_equals_alignment_for_a_linear_binary_classifier():
    w = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 2.0, -0.5]])  # f_1 = -f_0: the margin gradient is 2 w_0
    model = _Linear3(w, torch.zeros(2))
    x = torch.randn(5, 3)
    torch.testing.assert_close(binarized_alignment(x, model), alignment(x, model))


def test_alignment_leaves_the_model_and_inputs_alone():
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3))
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[0].weight.requires_grad_(False)
    x = torch.randn(3, 4)
    x0 = x.clone()
    torch.manual_seed(0)
    alignment(x, model)
    binarized_alignment(x, model)
    assert model.training and model[1].training
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    assert torch.equal(x, x0) and not x.requires_grad


def test_measure_errors():
    x, x_adv = _tiny()
    with pytest.raises(ValueError, match="same shape"):
        lp_discrepancy(x, x_adv[:, :2])
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        lp_discrepancy(x, x_adv, p=3)
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        two_class_discrepancy(x, x_adv, 0, 1, p=float("inf"))
    with pytest.raises(ValueError, match=r"class index 3, outside the maps' range \[0, 2\]"):
        lp_discrepancy(x, x_adv, classes=3)
    with pytest.raises(ValueError, match=r"class index -1"):
        lp_discrepancy(x, x_adv, classes=[[0, -1]])
    with pytest.raises(ValueError, match=r"adv_target holds class index 5, outside the maps' range \[0, 2\]"):
        two_class_discrepancy(x, x_adv, 0, 5)
    with pytest.raises(ValueError, match="target must be an int or one class index per example"):
        target_free_discrepancy(x, x_adv, torch.zeros(1, 3), [[0, 1]])
    with pytest.raises(ValueError, match="target has 2 rows but the batch has 1"):
        two_class_discrepancy(x, x_adv, [0, 1], 1)
    with pytest.raises(ValueError, match="rows"):
        lp_discrepancy(x, x_adv, classes=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer tensor"):
        lp_discrepancy(x, x_adv, classes=torch.tensor([0.0]))
    bad = x_adv.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="maps_x_adv contains 1 NaN"):
        target_free_discrepancy(x, bad, torch.zeros(1, 3), 0)
    with pytest.raises(ValueError, match="logits_adv must be B x C"):
        target_free_discrepancy(x, x_adv, torch.zeros(1, 4), 0)
    with pytest.raises(ValueError, match="logits_adv contains"):
        target_free_discrepancy(x, x_adv, torch.tensor([[0.0, float("inf"), 0.0]]), 0)
    with pytest.raises(ValueError, match="batched"):
        lp_discrepancy(torch.rand(3), torch.rand(3))
    with pytest.raises(ValueError, match="eps_high"):
        normalized_slope(torch.tensor([0.5]), torch.tensor([0.6]), 0.1, eps_high=0.05)
    with pytest.raises(ValueError, match="eps_low"):
        normalized_slope(torch.tensor([0.5]), torch.tensor([0.6]), 0.0)
    with pytest.raises(ValueError, match="logits="):
        binarized_alignment(torch.rand(2, 3), torch.rand(2, 4, 3))
    with pytest.raises(ValueError, match="every class"):
        binarized_alignment(torch.rand(2, 3), torch.rand(2, 4, 2), logits=torch.rand(2, 4))
    with pytest.raises(ValueError, match="shape of the inputs"):
        alignment(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="runner_up"):
        binarized_alignment(torch.rand(2, 3), torch.rand(2, 4, 3), logits=torch.rand(2, 4), runner_up="second")
