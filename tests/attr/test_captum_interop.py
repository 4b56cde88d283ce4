"""The library's maps in Captum's own tools: ``visualize_image_attr`` (H x W x C numpy),
``captum.metrics.infidelity`` and ``captum.metrics.sensitivity_max`` (the library attribution's
``attribute`` as explanation function; layer maps brought to input shape with ``upsample=True``
and ``expand_as``), checked against hand-written references and
``captum_robust.robust.stability.max_sensitivity``."""

import numpy as np
import pytest
import torch
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from captum_robust.attr import CAM, GradCAM, Saliency
from captum_robust.robust import stability


class _Net(nn.Module):
    """3 x 8 x 8 -> conv -> softplus -> conv [features] -> GAP -> fc (smooth, CAM-able)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Softplus(beta=3.0)
        self.features = nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.features(self.act(self.conv1(x))).mean(dim=(2, 3)))


def _setup(dtype=torch.float64):
    torch.manual_seed(0)
    model = _Net().to(dtype).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _noise(shape, dtype, scale=0.05, seed=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * scale


def _perturb(inputs):
    """Captum's infidelity perturb_func: a fixed noise I (seeded), returns (I, x - I)."""
    noise = _noise(inputs.shape, inputs.dtype)
    return noise, inputs - noise


def _layer_maps(attribution, inputs, target):
    """B x 1 x h x w layer maps (CAM, Grad-CAM) brought to the inputs' shape B x C x H x W
    (sensitivity_max hands a tuple of one tensor and wants a tuple back)."""
    if isinstance(inputs, tuple):
        return tuple(_layer_maps(attribution, x, target) for x in inputs)
    # contiguous(): sensitivity_max .view()s the explanation, which an expanded (stride-0) tensor refuses
    return attribution.attribute(inputs, target=target, upsample=True).expand_as(inputs).contiguous()


def _infidelity_reference(model, x, y, maps, n):
    """E_I[(I . a - (f_y(x) - f_y(x - I)))^2] over the same n noises (normalize=False)."""
    rows = x.repeat_interleave(n, dim=0)  # Captum repeats example-major
    noise, perturbed = _perturb(rows)
    with torch.no_grad():
        diff = model(rows).gather(1, y.repeat_interleave(n)[:, None]) - model(perturbed).gather(
            1, y.repeat_interleave(n)[:, None])
    dot = (noise * maps.repeat_interleave(n, dim=0)).flatten(1).sum(1)
    return ((dot - diff.squeeze(1)) ** 2).reshape(-1, n).mean(1)


def test_visualize_image_attr_takes_the_maps():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from captum.attr import visualization as viz
    from matplotlib.figure import Figure

    model, x, y = _setup(torch.float32)
    image = x[0].permute(1, 2, 0).numpy()
    for maps in (Saliency(model).attribute(x, target=y), _layer_maps(CAM(model), x, y),
                 GradCAM(model).attribute(x, target=y, upsample=True)):
        attr = maps[0].permute(1, 2, 0).detach().cpu().numpy()  # C x H x W -> H x W x C, as Captum expects
        fig, ax = viz.visualize_image_attr(attr, image, method="heat_map", sign="absolute_value",
                                           outlier_perc=0, use_pyplot=False)
        assert isinstance(fig, Figure)
        shown = ax.images[-1].get_array()
        expected = np.abs(attr).sum(axis=2)  # Captum sums the channels, then scales by the largest value
        np.testing.assert_allclose(np.asarray(shown), expected / expected.max(), rtol=1e-5, atol=1e-6)
        fig2, _ = viz.visualize_image_attr(attr, image, method="blended_heat_map", sign="all", use_pyplot=False)
        assert isinstance(fig2, Figure)
        matplotlib.pyplot.close("all")


@pytest.mark.parametrize("kind", ["saliency", "cam", "gradcam"])
def test_infidelity_equals_the_hand_formula(kind):
    model, x, y = _setup()
    if kind == "saliency":
        maps = Saliency(model).attribute(x, target=y)
    else:
        maps = _layer_maps(CAM(model) if kind == "cam" else GradCAM(model), x, y)
    assert maps.shape == x.shape
    n = 6
    theirs = infidelity(model, _perturb, x, maps, target=y, n_perturb_samples=n)
    ours = _infidelity_reference(model, x, y, maps.detach(), n)
    assert torch.isfinite(theirs).all() and (theirs > 0).all()
    torch.testing.assert_close(theirs, ours, rtol=1e-9, atol=1e-15)


def test_infidelity_of_saliency_on_a_linear_model_is_zero():
    """f(x) = w.x + b: the signed saliency map (abs=False) is w and I.w = f(x) - f(x - I) exactly;
    the default absolute map is not, and infidelity sees it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 2])
    maps = Saliency(model).attribute(x, target=y, abs=False)
    value = infidelity(model, _perturb, x, maps, target=y, n_perturb_samples=4)
    assert value.abs().max() < 1e-20
    wrong = infidelity(model, _perturb, x, Saliency(model).attribute(x, target=y), target=y, n_perturb_samples=4)
    assert (wrong > 1e-6).all()


def test_sensitivity_max_of_saliency_equals_max_sensitivity():
    model, x, y = _setup()
    n = 8
    P = x.unsqueeze(0) + _noise((n,) + tuple(x.shape), x.dtype, scale=0.02, seed=3)  # n x B x ...
    flat = P.transpose(0, 1).reshape((-1,) + tuple(x.shape[1:]))  # example-major, as Captum repeats
    sal = Saliency(model)
    theirs = sensitivity_max(sal.attribute, x, perturb_func=lambda inp, radius: flat, n_perturb_samples=n, target=y)
    ours = stability.max_sensitivity(sal, x, y, n_samples=n, perturb_func=lambda inp, k, g: P)
    assert (theirs > 0).all()
    torch.testing.assert_close(ours.values, theirs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [CAM, GradCAM])
def test_sensitivity_max_of_layer_maps(cls):
    model, x, y = _setup()
    n = 5
    P = x.unsqueeze(0) + _noise((n,) + tuple(x.shape), x.dtype, scale=0.02, seed=3)
    flat = P.transpose(0, 1).reshape((-1,) + tuple(x.shape[1:]))
    attribution = cls(model)

    def explain(inputs, target):
        return _layer_maps(attribution, inputs, target)

    theirs = sensitivity_max(explain, x, perturb_func=lambda inp, radius: flat, n_perturb_samples=n, target=y)
    # by hand: max over the samples of ||a(x') - a(x)|| / ||a(x)|| (Frobenius norms, per example)
    clean = explain(x, y)
    moved = torch.stack([explain(P[s], y) for s in range(n)])
    ratio = (moved - clean).flatten(2).norm(dim=2) / clean.flatten(1).norm(dim=1)
    assert torch.isfinite(theirs).all() and (theirs > 0).all()
    torch.testing.assert_close(theirs, ratio.amax(0), rtol=1e-9, atol=0)
