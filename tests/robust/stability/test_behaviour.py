"""Seeds, chunking, tuple inputs, per-example arguments, the perturb_func contract, NaN rules,
exclusion, side effects, device/dtype and the error messages of the stability metrics."""

import pytest
import torch
from captum.attr import Saliency

from captum_robust.robust import stability
from tests.robust.stability._common import METRICS, extra, near_boundary, perturbations, tiny


def _call(metric, model, x, y, **kw):
    return getattr(stability, metric)(Saliency(model), x, y, **extra(metric, model), **kw)


@pytest.mark.parametrize("metric", METRICS)
def test_seeded_and_chunking_invariant(metric):
    model, x, y = tiny()
    run = lambda seed, chunk: _call(metric, model, x, y, n_samples=4, internal_batch_size=chunk,  # noqa: E731
                                    generator=torch.Generator().manual_seed(seed))
    a, b, c, d = run(0, None), run(0, None), run(0, 1), run(1, None)
    assert torch.equal(a.values, b.values)
    torch.testing.assert_close(c.values, a.values, rtol=1e-12, atol=0)
    torch.testing.assert_close(c.scores, a.scores, rtol=1e-12, atol=0)
    assert not torch.allclose(d.values, a.values)


class Split(torch.nn.Module):
    """The two channels of TinyGapNet's input as two input tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.conv2 = model.conv2

    def forward(self, x1, x2):
        return self.model(torch.cat([x1, x2], dim=1))


@pytest.mark.parametrize("metric", METRICS)
def test_tuple_inputs_are_one_concatenated_map(metric):
    """A tuple (x1, x2) gives the value of the concatenated input: norms run over all parts together."""
    model, x, y = tiny()
    P = perturbations(x, 4)
    single = _call(metric, model, x, y, n_samples=4, perturb_func=lambda i, n, g: P)
    split = Split(model)
    parts = (x[:, :1], x[:, 1:])

    def perturb(inputs, n, g):
        assert isinstance(inputs, tuple) and len(inputs) == 2
        return (P[:, :, :1], P[:, :, 1:])

    kw = {"layer": split.conv2} if metric == "relative_representation_stability" else {}
    out = getattr(stability, metric)(Saliency(split), parts, y, n_samples=4, perturb_func=perturb, **kw)
    torch.testing.assert_close(out.values, single.values, rtol=1e-12, atol=0)


class Weighted(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, w):
        return self.model(x * w[:, None, None, None])


def test_per_example_arguments_follow_their_example():
    """additional_forward_args and attribute_kwargs tensors with the batch size, and per-example
    targets, are indexed per perturbed example: the batch gives each example's own value."""
    model, x, y = tiny()
    w = torch.tensor([0.5, 1.0, 2.0], dtype=x.dtype)
    P = perturbations(x, 3)
    wm = Weighted(model)
    kw = dict(n_samples=3, attribute_kwargs={"abs": False})
    batch = stability.max_sensitivity(Saliency(wm), x, y.tolist(), additional_forward_args=w,
                                      perturb_func=lambda i, n, g: P, internal_batch_size=2, **kw)
    for i in range(3):
        one = stability.max_sensitivity(Saliency(wm), x[i:i + 1], int(y[i]), additional_forward_args=w[i:i + 1],
                                        perturb_func=lambda inp, n, g: P[:, i:i + 1], **kw)
        torch.testing.assert_close(batch.values[i:i + 1], one.values, rtol=1e-12, atol=0)


def test_perturb_func_contract():
    model, x, y = tiny()
    g = torch.Generator().manual_seed(0)
    seen = {}

    def perturb(inputs, n, generator):
        seen.update(n=n, generator=generator)
        inputs.add_(100.0)  # a copy: the user's inputs must not change
        return torch.zeros((n,) + tuple(x.shape), dtype=torch.float32)  # moved to the inputs' dtype

    before = x.clone()
    out = stability.max_sensitivity(Saliency(model), x, y, n_samples=3, perturb_func=perturb, generator=g)
    assert seen == {"n": 3, "generator": g} and torch.equal(x, before)
    assert out.values.dtype == torch.float64
    with pytest.raises(ValueError, match=r"n_samples x inputs.shape = \(3, 3, 2, 5, 5\).*\(3, 2, 5, 5\)"):
        stability.max_sensitivity(Saliency(model), x, y, n_samples=3, perturb_func=lambda i, n, g: i)


def test_nan_on_zero_denominators():
    model, x, y = tiny()
    sal = Saliency(model)

    def zero_first(inputs, target):
        m = sal.attribute(inputs, target=target)
        return m * (torch.arange(inputs.shape[0]) % 3 != 0).to(m.dtype)[:, None, None, None]

    out = stability.max_sensitivity(zero_first, x, y, n_samples=3)  # ||e(x_0)|| = 0
    assert torch.isnan(out.values[0]) and torch.isfinite(out.values[1:]).all()
    assert torch.isfinite(stability.max_sensitivity(zero_first, x, y, n_samples=3, relative=False).values).all()
    P = perturbations(x, 3)
    P[1, 2] = x[2]  # one perturbation of example 2 is no perturbation: x' = x
    lle = stability.local_lipschitz_estimate(sal, x, y, n_samples=3, perturb_func=lambda i, n, g: P)
    assert torch.isnan(lle.scores[1, 2]) and torch.isnan(lle.values[2]) and torch.isfinite(lle.values[:2]).all()


def test_all_perturbations_changed_gives_nan_and_the_count():
    model, x, y = near_boundary()
    # every ||x'||^2 > 2: class 0; example 0 is class 1 (all change), examples 1 and 2 class 0 (none)
    P = x.unsqueeze(0) + torch.rand((4,) + tuple(x.shape), dtype=x.dtype) * 0.1 + 0.3
    out = stability.relative_input_stability(Saliency(model), x, model(x).argmax(1), n_samples=4,
                                             perturb_func=lambda i, n, g: P)
    assert model(x).argmax(1).tolist() == [1, 0, 0] and out.n_prediction_changed.tolist() == [4, 0, 0]
    assert torch.isnan(out.values[0]) and torch.isfinite(out.values[1:]).all()
    assert torch.isnan(out.scores[:, 0]).all() and torch.isfinite(out.scores[:, 1:]).all()


def test_no_side_effects_also_on_errors():
    model, x, y = tiny()
    model.train()
    model.conv1.weight.requires_grad_(False)
    model.fc.bias.grad = torch.ones_like(model.fc.bias)
    x.requires_grad_(False)
    before = x.clone()
    sal = Saliency(model)
    calls = []

    def failing(inputs, target):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return sal.attribute(inputs, target=target)

    stability.relative_output_stability(sal, x, y, n_samples=2)
    with pytest.raises(RuntimeError, match="boom"):
        stability.relative_output_stability(failing, x, y, n_samples=2, forward_func=model)
    assert model.training and all(m.training for m in model.modules())
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert torch.equal(model.fc.bias.grad, torch.ones_like(model.fc.bias)) and model.conv2.weight.grad is None
    assert torch.equal(x, before) and not x.requires_grad


def test_float32_stays_float32():
    model, x, y = tiny(torch.float32)
    out = stability.avg_sensitivity(Saliency(model), x, y, n_samples=2)
    assert out.values.dtype == torch.float32 and out.values.shape == (3,) and out.n_prediction_changed is None


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"n_samples": 0}, ValueError, r"n_samples must be an int >= 1, got n_samples=0"),
        ({"norm": "l3"}, ValueError, r"norm must be one of \('l2', 'l1', 'linf'\), got 'l3'"),
        ({"radius": -0.1}, ValueError, r"radius must be a finite number > 0, got radius=-0.1"),
        ({"radius": (0.2, 0.1)}, ValueError, r"high > low, got radius=\(0.2, 0.1\)"),
        ({"internal_batch_size": 0}, ValueError, r"internal_batch_size must be an int >= 1 or None, got"),
        ({"generator": 3}, TypeError, r"generator must be a torch.Generator or None, got int"),
        ({"normalise": 1}, TypeError, r"normalise must be a bool, got int 1"),
        ({"perturb_func": 3}, TypeError, r"perturb_func must be None or a callable, got int"),
        ({"attribute_kwargs": {"target": 1}}, ValueError, r"attribute_kwargs must not set \['target'\]"),
        ({"target": [0, 1]}, ValueError, r"target has 2 entries but the batch has 3 examples"),
        ({"exclude_changed": True, "explainer": lambda i, t: i}, ValueError, r"forward_func is needed"),
        ({"explainer": Saliency}, TypeError, r"explainer must be an attribution object \(e.g. Saliency\(model\)\)"),
        ({"explainer": lambda i, t: i.sum()}, ValueError, r"must return floating-point maps B x \.\.\. with the batch"),
    ],
)
def test_clear_errors(kwargs, error, match):
    model, x, y = tiny()
    kwargs = dict(kwargs)
    explainer = kwargs.pop("explainer", Saliency(model))
    target = kwargs.pop("target", y)
    with pytest.raises(error, match=match):
        stability.max_sensitivity(explainer, x, target, **dict({"n_samples": 2}, **kwargs))


def test_clear_errors_of_the_relative_measures():
    model, x, y = tiny()
    with pytest.raises(ValueError, match=r"eps_min must be a finite number > 0, got eps_min=0"):
        stability.relative_input_stability(Saliency(model), x, y, eps_min=0)
    # issue 15: the representation layer is found when omitted (here the GAP head's feature map, conv2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    found = stability.relative_representation_stability(Saliency(model), x, y, n_samples=3, generator=g())
    given = stability.relative_representation_stability(Saliency(model), x, y, layer=model.conv2, n_samples=3,
                                                         generator=g())
    torch.testing.assert_close(found.values, given.values, equal_nan=True)
    with pytest.raises(ValueError, match=r"layer must be an nn.Module of the model"):  # not a module: no search
        stability.relative_representation_stability(Saliency(model), x, y, forward_func=lambda t: model(t))
    with pytest.raises(ValueError, match=r"layer"):
        stability.relative_representation_stability(Saliency(model), x, y, layer=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"forward_func is needed for its denominator"):
        stability.relative_output_stability(lambda i, t: i * 2, x, y, exclude_changed=False)
    with pytest.raises(TypeError, match=r"inputs must be a floating-point tensor"):
        stability.relative_input_stability(Saliency(model), x.long(), y)
    with pytest.raises(ValueError, match=r"inputs"):
        stability.relative_input_stability(Saliency(model), x * float("nan"), y)


@pytest.mark.parametrize("module", ["sensitivity", "relative"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"captum_robust.robust.stability.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15 and result.failed == 0


def test_metrics_registry_names_every_metric_function():
    """stability.METRICS (used by the evaluation runner, the CLI and these tests) names exactly the
    package's metric functions, and the runner's STABILITY_MEASURES is that registry."""
    from captum_robust.robust.evaluation import STABILITY_MEASURES

    functions = {n for n in stability.__all__ if n not in ("METRICS", "StabilityResult")}
    assert set(stability.METRICS) == functions and len(stability.METRICS) == 6
    assert all(callable(getattr(stability, n)) for n in stability.METRICS)
    assert STABILITY_MEASURES is stability.METRICS
