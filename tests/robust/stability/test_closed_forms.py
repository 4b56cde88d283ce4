"""Closed forms the metrics must reproduce: a linear model's gradient map does not move (every
metric 0); for f(x) = 1/2 x^T A x the saliency map is A x, so the Lipschitz estimate is at most
sigma_max(A) and approaches it from below as samples grow; the relative measures (and the
normalised or relative sensitivities) do not change when the map is scaled by a constant."""

import pytest
import torch
from captum.attr import Saliency

from captum_robust.robust import stability
from tests.robust.stability._common import METRICS, tiny


class Quadratic(torch.nn.Module):
    """f(x) = 1/2 x^T A x, one scalar per example (target-free)."""

    def __init__(self, A):
        super().__init__()
        self.A = A
        self.lin = torch.nn.Identity()

    def forward(self, x):
        return 0.5 * (self.lin(x) @ self.A * x).sum(1)


@pytest.mark.parametrize("metric", METRICS)
def test_linear_model_every_metric_is_zero(metric):
    torch.manual_seed(1)
    model = torch.nn.Linear(6, 4).double().eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    kw = {"layer": model} if metric == "relative_representation_stability" else {}
    out = getattr(stability, metric)(Saliency(model), x, 2, n_samples=20, attribute_kwargs={"abs": False},
                                     generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(out.values, torch.zeros(5, dtype=torch.float64))
    # the same pipeline on a non-linear model is not zero (the test can fail)
    other = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
    kw = {"layer": other[0]} if kw else {}
    assert (getattr(stability, metric)(Saliency(other), x, 2, n_samples=5, **kw).values > 0).all()


def test_quadratic_lipschitz_estimate_approaches_sigma_max_from_below():
    torch.manual_seed(2)
    M = torch.randn(4, 4, dtype=torch.float64)
    A = M + M.T  # symmetric, indefinite: the saliency map (gradient) is A x
    sigma = torch.linalg.matrix_norm(A, ord=2)
    model = Quadratic(A)
    x = torch.randn(3, 4, dtype=torch.float64)
    sal = Saliency(model)
    assert torch.allclose(sal.attribute(x.clone(), abs=False), x @ A)
    out = stability.local_lipschitz_estimate(sal, x, n_samples=3000, normalise=False, radius=0.5,
                                             attribute_kwargs={"abs": False}, internal_batch_size=1000,
                                             generator=torch.Generator().manual_seed(0))
    running = out.scores.cummax(dim=0).values  # the estimate after 1, 2, ... samples
    assert (running <= sigma * (1 + 1e-12)).all()
    gaps = [(sigma - running[n - 1]) / sigma for n in (10, 100, 3000)]
    assert (gaps[0] >= gaps[1]).all() and (gaps[1] >= gaps[2]).all()
    assert (gaps[2] < 1e-2).all(), gaps[2]  # within 1% of sigma_max after 3000 Gaussian directions in 4-D
    assert (gaps[0] > gaps[2]).any()


SCALE_INVARIANT = [
    ("max_sensitivity", {}),
    ("avg_sensitivity", {}),
    ("local_lipschitz_estimate", {"normalise": True}),
    ("max_sensitivity", {"normalise": True, "relative": False}),
    ("relative_input_stability", {}),
    ("relative_output_stability", {}),
    ("relative_representation_stability", {}),
    ("relative_input_stability", {"normalise": True}),
]


@pytest.mark.parametrize("metric,options", SCALE_INVARIANT)
@pytest.mark.parametrize("c", [7.5, -0.01])
def test_scaling_the_map_changes_nothing(metric, options, c):
    model, x, y = tiny()
    sal = Saliency(model)
    fn = getattr(stability, metric)
    kw = dict(options, n_samples=6, forward_func=model)
    if metric == "relative_representation_stability":
        kw["layer"] = model.conv2
    base = fn(sal, x, y, generator=torch.Generator().manual_seed(0), **kw)
    scaled = fn(lambda inp, t: c * sal.attribute(inp, target=t), x, y, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(scaled.values, base.values, rtol=1e-10, atol=0)
    assert (base.values > 0).all()


def test_unnormalised_lipschitz_estimate_scales_with_the_map():
    model, x, y = tiny()
    sal = Saliency(model)
    kw = dict(n_samples=6, normalise=False)
    base = stability.local_lipschitz_estimate(sal, x, y, generator=torch.Generator().manual_seed(0), **kw)
    scaled = stability.local_lipschitz_estimate(lambda inp, t: 3 * sal.attribute(inp, target=t), x, y,
                                                generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(scaled.values, 3 * base.values, rtol=1e-12, atol=0)
