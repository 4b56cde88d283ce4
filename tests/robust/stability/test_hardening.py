"""Issue 18 for the stability metrics: empty batch, meta, dtype, NaN model outputs and NaN maps
(errors), the train-mode policy (BatchNorm buffers bit-identical, mode restored, one warning) and
inference-mode inputs, for each of the six metrics."""

import copy
import warnings

import pytest
import torch
from captum.attr import Saliency

from captum_robust.robust import stability
from tests.robust.stability._common import METRICS, extra, tiny
from tests.helpers.models import BNNet


def _call(metric, explainer, model, x, y, **kw):
    return getattr(stability, metric)(explainer, x, y, **extra(metric, model), **dict({"n_samples": 3}, **kw))


@pytest.mark.parametrize("metric", METRICS)
def test_bad_inputs_give_one_clear_error(metric):
    model, x, y = tiny()
    sal = Saliency(model)
    with pytest.raises(ValueError, match=r"^inputs must hold at least one example, got a batch of 0"):
        _call(metric, sal, model, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"^inputs are on the meta device"):
        _call(metric, sal, model, x.to("meta"), y)
    with pytest.raises(TypeError, match=r"^inputs are torch.float32 but the model's parameters are torch.float64: "
                                        r"convert one of them \(e.g. inputs.double\(\)"):
        _call(metric, sal, model, x.float(), y, forward_func=model)
    with pytest.raises(TypeError, match=r"inputs must be a floating-point tensor"):
        _call(metric, sal, model, (x * 255).to(torch.uint8), y)


@pytest.mark.parametrize("metric", METRICS)
def test_nan_model_outputs_and_nan_maps_are_errors(metric):
    """NaN or inf in the model's outputs (which the exclusion and ROS/RRS use) or in the maps is an
    error, never a NaN value: a NaN value means "undefined" (a zero denominator, every perturbation
    changed the prediction)."""
    model, x, y = tiny()
    sal = Saliency(model)
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.fc.bias[0] = float("nan")
    with pytest.raises(ValueError, match=r"contain NaN or inf for 3 of 3 examples \(first: example 0\)"):
        _call(metric, Saliency(bad), bad, x, y, forward_func=bad, exclude_changed=True)

    def nan_map(inputs, target):
        m = sal.attribute(inputs, target=target)
        return m.masked_fill(torch.arange(m.shape[0])[:, None, None, None] == 1, float("nan"))

    with pytest.raises(ValueError, match=r"^the maps of the explainer \(nan_map\) contain NaN or inf for 1 of 3 "
                                         r"examples \(first: example 1\)"):
        _call(metric, nan_map, model, x, y, forward_func=model)


@pytest.mark.parametrize("metric", METRICS)
def test_train_mode_batchnorm_buffers_unchanged_mode_restored_and_a_warning(metric):
    torch.manual_seed(0)
    model = BNNet(hidden=3, features=4).double().train()
    model.bn.running_mean.fill_(0.3)
    eval_copy = copy.deepcopy(model).eval()
    x = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    before = [b.clone() for b in model.buffers()]
    with pytest.warns(UserWarning, match=r"BNNet is in training mode with BatchNorm/Dropout layers \(bn, drop\)"):
        out = _call(metric, Saliency(model), model, x, y, generator=torch.Generator().manual_seed(2))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), before))
    # computed in eval mode: the same values as the model in eval mode (no dropout, running statistics)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = _call(metric, Saliency(eval_copy), eval_copy, x, y, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.values, ref.values, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("metric", METRICS)
def test_inference_mode_inputs_work(metric):
    model, x, y = tiny()
    with torch.inference_mode():
        xi = x.clone()
    assert xi.is_inference()
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    out = _call(metric, Saliency(model), model, xi, y, generator=gen())
    ref = _call(metric, Saliency(model), model, x, y, generator=gen())
    torch.testing.assert_close(out.values, ref.values, rtol=0, atol=0, equal_nan=True)
