"""Every metric equals an independent brute-force NumPy reference (loops over examples and
perturbations, written from the papers' formulas), in float64, with the same perturbations."""

import numpy as np
import pytest
import torch

from captum_robust.robust import stability
from tests.robust.stability._common import METRICS, extra, near_boundary, perturbations, saliency, tiny
from tests.robust.stability._reference import reference

RELATIVE = METRICS[3:]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("options", [{}, {"norm": "l1", "normalise": True, "abs": True}, {"norm": "linf"}])
def test_equals_numpy_reference(metric, options):
    model, x, y = tiny()
    P = perturbations(x, 6)
    result = getattr(stability, metric)(
        saliency(model), x, y, n_samples=6, perturb_func=lambda inp, n, g: P, internal_batch_size=5,
        **extra(metric, model), **options,
    )
    how = None
    if options.get("normalise"):
        how = "second_moment" if metric in RELATIVE else "max"
    elif metric == "local_lipschitz_estimate":  # its default is normalise=True (Quantus)
        how = "max"
    ref, changed = reference(
        metric, saliency(model), model, x, y, P, norm=options.get("norm", "l2"), normalise=how,
        absolute=options.get("abs", False), layer=extra(metric, model).get("layer"), exclude=metric in RELATIVE,
    )
    assert np.isfinite(ref).all() and (ref > 0).all()
    np.testing.assert_allclose(result.values.numpy(), ref, rtol=1e-9, atol=0)
    if metric in RELATIVE:
        assert result.n_prediction_changed.tolist() == changed.tolist()


@pytest.mark.parametrize("metric", METRICS)
def test_exclusion_equals_reference(metric):
    """Near FlipNet's boundary some perturbations flip the class: they are counted and left out."""
    model, x, y = near_boundary()
    P = perturbations(x, 20, scale=0.1, seed=5)
    kw = {"layer": model.square} if metric == "relative_representation_stability" else {}
    result = getattr(stability, metric)(
        saliency(model), x, y, n_samples=20, perturb_func=lambda inp, n, g: P, forward_func=model,
        exclude_changed=True, normalise=False, **kw,
    )
    ref, changed = reference(metric, saliency(model), model, x, y, P, exclude=True, layer=kw.get("layer"))
    assert 0 < changed.sum() < 20 * 3, "the test needs some, not all, perturbations to flip the class"
    assert result.n_prediction_changed.tolist() == changed.tolist()
    np.testing.assert_allclose(result.values.numpy(), ref, rtol=1e-9, equal_nan=True)
    assert np.isfinite(ref).all()
    # the excluded scores are NaN in `scores`, the others finite
    assert torch.isnan(result.scores).sum(dim=0).tolist() == changed.tolist()
