"""Equality with Quantus 0.6 (every metric) and Captum's ``sensitivity_max`` on the same
perturbations, in float64: Quantus feeds its model ``torch.Tensor(x)`` (float32), so it gets the
float64 model behind a wrapper that casts its input (``Float64``); the explanations, logits and
representations Quantus sees are then the float64 ones (inputs and perturbations are rounded to
float32 values first, so that Quantus' cast loses nothing)."""

import warnings

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from captum.metrics import sensitivity_max

from captum_robust.robust import stability
from tests.robust.stability._common import METRICS, near_boundary, perturbations, tiny

N = 5
QUANTUS = {
    "max_sensitivity": ("MaxSensitivity", {}),
    "avg_sensitivity": ("AvgSensitivity", {}),
    "local_lipschitz_estimate": ("LocalLipschitzEstimate", {}),
    "relative_input_stability": ("RelativeInputStability", {}),
    "relative_output_stability": ("RelativeOutputStability", {}),
    "relative_representation_stability": ("RelativeRepresentationStability", {"layer_names": ["model.conv2"]}),
}


class Float64(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.double())


def _quantus_perturb(P, batch):
    """Quantus calls perturb_func once per sample for each batch of examples: hand it P[s]."""
    order = iter([(i, s) for i in range(0, P.shape[1], batch) for s in range(P.shape[0])])

    def perturb(arr, indices=None, **kwargs):
        i, s = next(order)
        return P[s, i:i + batch].reshape(arr.shape[0], -1).numpy().astype(arr.dtype)

    return perturb


def _explain(model, inputs, targets, **kwargs):
    x = torch.as_tensor(inputs)
    return Saliency(model).attribute(x, target=torch.as_tensor(targets).long()).detach().numpy()


def _quantus(metric, model, x, y, P, normalise, **kw):
    quantus = pytest.importorskip("quantus", reason="Quantus 0.6 is not installed (pip install quantus==0.6.0)")
    name, options = QUANTUS[metric]
    batch = 1 if normalise else x.shape[0]  # Quantus normalises over the whole batch it explains
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = getattr(quantus, name)(nr_samples=P.shape[0], perturb_func=_quantus_perturb(P, batch),
                                   normalise=normalise, disable_warnings=True, **options, **kw)
        out = m(model=Float64(model).eval(), x_batch=x.numpy(), y_batch=y.numpy(), explain_func=_explain,
                channel_first=True, batch_size=batch)
    return np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("normalise", [False, True])
def test_equals_quantus(metric, normalise):
    model, x, y = tiny()
    x = x.float().double()
    scale = 0.1 if metric == "local_lipschitz_estimate" else 0.2
    P = perturbations(x, N, scale=scale).float().double()
    ours = getattr(stability, metric)(
        Saliency(model), x, y, n_samples=N, perturb_func=lambda inp, n, g: P, normalise=normalise,
        **({"layer": model.conv2} if metric == "relative_representation_stability" else {}),
    )
    theirs = _quantus(metric, model, x, y, P, normalise)
    assert np.isfinite(theirs).all() and (theirs > 0).all()
    np.testing.assert_allclose(ours.values.double().numpy(), theirs, rtol=1e-9, atol=0)


def test_quantus_returns_nan_where_we_exclude():
    """Quantus 0.6's RIS takes np.max over NaN-marked changed perturbations (NaN for the example);
    we take the max over the others. Where nothing changed the two agree."""
    model, x, y = near_boundary()
    P = perturbations(x, 20, scale=0.1, seed=5).float().double()
    ours = stability.relative_input_stability(Saliency(model), x, y, n_samples=20, perturb_func=lambda i, n, g: P)
    theirs = _quantus("relative_input_stability", model, x, y, P, False)
    changed = ours.n_prediction_changed > 0
    assert changed.any() and not changed.all()
    assert np.isnan(theirs[changed.numpy()]).all() and torch.isfinite(ours.values).all()
    np.testing.assert_allclose(ours.values[~changed].double().numpy(), theirs[~changed.numpy()], rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_sensitivity_equals_captum(dtype):
    """Captum's sensitivity_max gets the same perturbations, example-major (repeat_interleave order)."""
    model, x, y = tiny(dtype)
    P = perturbations(x, 10, scale=0.02)
    flat = P.transpose(0, 1).reshape((-1,) + tuple(x.shape[1:]))
    sal = Saliency(model)
    theirs = sensitivity_max(sal.attribute, x, perturb_func=lambda inp, radius: flat, n_perturb_samples=10, target=y)
    ours = stability.max_sensitivity(sal, x, y, n_samples=10, perturb_func=lambda inp, n, g: P)
    assert (theirs > 0).all()
    torch.testing.assert_close(ours.values, theirs, rtol=1e-12 if dtype == torch.float64 else 2e-6, atol=0)
