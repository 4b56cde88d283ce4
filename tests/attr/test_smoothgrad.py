"""SmoothGrad family (Levine et al.): exact properties, closed forms, Captum gradients, create_graph, errors."""

import math

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from scipy.stats import norm
from torch import nn

from captum_robust.attr import (
    QuadraticSmoothGrad,
    RelaxedSparsifiedSmoothGrad,
    ScaledSmoothGrad,
    SparsifiedSmoothGrad,
    attribute_with_shared_noise,
)
from captum_robust.attr._core.smoothgrad import _kth_largest, _NoiseStream, top_count_mask
from tests.helpers.models import TinyGapNet, TwoInputNet

DTYPES = [torch.float32, torch.float64]

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small passes: one thread avoids oversubscribing busy cores (10x faster on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _methods(model, sigma=0.3, n_samples=16, **kw):
    return {
        "scaled": ScaledSmoothGrad(model, sigma, n_samples, **kw),
        "quadratic": QuadraticSmoothGrad(model, sigma, n_samples, **kw),
        "sparsified": SparsifiedSmoothGrad(model, 0.2, sigma, n_samples, **kw),
        "relaxed": RelaxedSparsifiedSmoothGrad(model, 0.3, 0.05, sigma, n_samples, **kw),
    }


# --------------------------------------------------------------------------- reference maps (numpy, per row)


def _ref_sparsified(g, tau):
    a = np.abs(g)
    m = math.ceil(round(tau * a.size, 9))
    h = np.zeros_like(a)
    h[np.argsort(-a, kind="stable")[:m]] = 1.0  # ties: lowest index first
    return h


def _ref_relaxed(g, tau, gamma):
    a = np.abs(g)
    s = np.sort(a)[::-1]
    n = a.size
    m_tau = s[math.ceil(round(tau * n, 9)) - 1]
    m_gamma = s[max(1, math.ceil(round(gamma * n, 9))) - 1]
    return np.where(a < m_tau, 0.0, np.where(a >= m_gamma, 1.0, a / m_gamma))


def _ref_scaled(g):
    a = np.abs(g)
    return a / a.max()


def _ref_quadratic(g):
    return g**2 / (g**2).max()


def _noisy_points(x, sigma, q, seed):
    """The points the smoothed methods evaluate: x + sigma * noise, noise from the documented stream."""
    (noise,) = _NoiseStream((x,), _gen(seed)).take(q)
    return x.unsqueeze(0) + sigma * noise  # q x B x ...


def _captum_gradients(model, points, target):
    """Input gradients from Captum's Saliency (an independent gradient computation), q x B x n."""
    q, b = points.shape[:2]
    flat = points.reshape((q * b,) + tuple(points.shape[2:]))
    t = torch.as_tensor(target).repeat(q) if target is not None else None
    g = Saliency(model).attribute(flat, target=t, abs=False)
    return g.reshape(q, b, -1).detach().numpy()


# --------------------------------------------------------------------------- exact properties


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparsified_samples_have_exactly_ceil_tau_n_ones_and_maps_sum_to_it(dtype):
    model = TinyGapNet().to(dtype).eval()
    x = torch.rand(4, 2, 5, 5, dtype=dtype)
    for tau in (0.01, 0.07, 0.3, 0.5, 1.0):
        ssg = SparsifiedSmoothGrad(model, tau, sigma=0.5, n_samples=37)
        maps = ssg.attribute(x, target=[0, 1, 2, 0], generator=_gen(1))
        m = math.ceil(round(tau * 50, 9))
        torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), torch.full((4,), float(m), dtype=dtype))
        # every value is a multiple of 1/q
        torch.testing.assert_close(maps * 37, (maps * 37).round(), rtol=0, atol=1e-4)
        base = ssg.base_map(x, target=0)
        assert set(base.unique().tolist()) <= {0.0, 1.0}
        assert base.sum(dim=(1, 2, 3)).tolist() == [m] * 4


@pytest.mark.parametrize("n,tau", [(37, 0.3), (200, 0.05), (64, 0.75)])
def test_top_count_mask_breaks_ties_by_lowest_index(n, tau):
    g = torch.randint(-3, 4, (50, n), generator=_gen(2)).double()  # many ties
    m = math.ceil(round(tau * n, 9))
    mask = top_count_mask(g.abs(), m)
    expected = np.stack([_ref_sparsified(row, tau) for row in g.numpy()])
    np.testing.assert_array_equal(mask.numpy().astype(float), expected)
    # the map method is the same function of the gradient
    out = SparsifiedSmoothGrad(nn.Linear(1, 1), tau, 1.0).map_from_gradients(g)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_kth_largest_numpy_and_torch_paths_agree():
    a = torch.rand(30, 101, generator=_gen(3), dtype=torch.float64)
    for k in (1, 2, 17, 50, 51, 80, 101):
        fast = _kth_largest(a, k)  # numpy introselect (cpu, no graph)
        slow = _kth_largest(a.clone().requires_grad_(), k).detach()  # torch.topk
        ref = torch.sort(a, dim=1, descending=True).values[:, k - 1 : k]
        torch.testing.assert_close(fast, ref, rtol=0, atol=0)
        torch.testing.assert_close(slow, ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_four_maps_lie_in_unit_interval_and_scaled_samples_peak_at_one(dtype):
    model = TinyGapNet().to(dtype).eval()
    x = torch.randn(3, 2, 5, 5, dtype=dtype)
    for name, method in _methods(model).items():
        maps = method.attribute(x, generator=_gen())
        assert maps.dtype == dtype and maps.shape == x.shape
        assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0, name
        base = method.base_map(x, target=1)
        assert float(base.min()) >= 0.0 and float(base.max()) <= 1.0, name
        if name in ("scaled", "quadratic", "relaxed"):
            torch.testing.assert_close(base.amax(dim=(1, 2, 3)), torch.ones(3, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_base_maps_equal_direct_formulas_on_captum_gradients(dtype):
    model = TinyGapNet().to(dtype).eval()
    x = torch.randn(3, 2, 5, 5, dtype=dtype)
    target = [2, 0, 1]
    g = Saliency(model).attribute(x, target=target, abs=False).reshape(3, -1).detach().numpy()
    refs = {
        "scaled": _ref_scaled,
        "quadratic": _ref_quadratic,
        "sparsified": lambda r: _ref_sparsified(r, 0.2),
        "relaxed": lambda r: _ref_relaxed(r, 0.3, 0.05),
    }
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for name, method in _methods(model).items():
        got = method.base_map(x, target=target).reshape(3, -1).numpy()
        np.testing.assert_allclose(got, np.stack([refs[name](r) for r in g]), rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("tau,gamma", [(0.3, 0.05), (0.1, 0.01), (0.5, 0.0), (1.0, 0.2)])
def test_relaxed_smoothed_map_equals_mean_of_direct_eq_2_5(tau, gamma):
    model = TinyGapNet().double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    sigma, q, target = 0.4, 23, [1, 2, 0]
    method = RelaxedSparsifiedSmoothGrad(model, tau, gamma, sigma, q)
    got = method.attribute(x, target=target, generator=_gen(5), internal_batch_size=7)
    g = _captum_gradients(model, _noisy_points(x, sigma, q, 5), target)
    expected = np.mean([[_ref_relaxed(g[j, b], tau, gamma) for b in range(3)] for j in range(q)], axis=0)
    np.testing.assert_allclose(got.reshape(3, -1).numpy(), expected, rtol=0, atol=1e-12)


def test_every_smoothed_map_is_the_mean_of_its_base_map_over_the_noisy_points():
    model = TinyGapNet().double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    sigma, q = 0.25, 19
    points = _noisy_points(x, sigma, q, 9)
    for name, method in _methods(model, sigma=sigma, n_samples=q).items():
        got = method.attribute(x, target=[0, 2], generator=_gen(9), internal_batch_size=4)
        per_sample = torch.stack([method.base_map(points[j], target=[0, 2]) for j in range(q)])
        torch.testing.assert_close(got, per_sample.mean(0), rtol=0, atol=1e-12, msg=name)


def test_relaxed_with_no_clipping_and_full_sparsity_is_scaled():
    model = TinyGapNet().double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    scaled = ScaledSmoothGrad(model, 0.3, 40).attribute(x, generator=_gen(4))
    for clip in (0.0, 1e-6, 0.019):  # ceil(clip * 50) <= 1: only the maximum is clipped to 1
        relaxed = RelaxedSparsifiedSmoothGrad(model, 1.0, clip, 0.3, 40).attribute(x, generator=_gen(4))
        torch.testing.assert_close(relaxed, scaled, rtol=0, atol=1e-14)
    # and real clipping changes it
    clipped = RelaxedSparsifiedSmoothGrad(model, 1.0, 0.2, 0.3, 40).attribute(x, generator=_gen(4))
    assert (clipped - scaled).abs().max() > 0.05


def test_quadratic_is_the_square_of_scaled_per_sample():
    model = TinyGapNet().double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    s = ScaledSmoothGrad(model, 0.3, 1).base_map(x, target=1)
    qd = QuadraticSmoothGrad(model, 0.3, 1).base_map(x, target=1)
    torch.testing.assert_close(qd, s * s)


# --------------------------------------------------------------------------- reproducibility and chunking


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_seed_same_map_whatever_the_chunking(dtype):
    model = TinyGapNet().to(dtype).eval()
    x = torch.randn(3, 2, 5, 5, dtype=dtype)
    for name, method in _methods(model, n_samples=100).items():
        a = method.attribute(x, generator=_gen(7), internal_batch_size=3)
        b = method.attribute(x, generator=_gen(7), internal_batch_size=1000)
        c = method.attribute(x, generator=_gen(7), internal_batch_size=50)
        tol = 1e-6 if dtype == torch.float32 else 1e-13
        torch.testing.assert_close(a, b, rtol=0, atol=tol, msg=name)
        torch.testing.assert_close(a, c, rtol=0, atol=tol, msg=name)
        d = method.attribute(x, generator=_gen(8), internal_batch_size=50)
        assert (a - d).abs().max() > 1e-3, name
    # the global RNG is used without a generator, and reseeding it reproduces the map
    torch.manual_seed(11)
    e = _methods(model)["sparsified"].attribute(x)
    torch.manual_seed(11)
    f = _methods(model)["sparsified"].attribute(x)
    torch.testing.assert_close(e, f, rtol=0, atol=0)


def test_shared_noise_maps_equal_separate_calls():
    model = TinyGapNet().double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    methods = list(_methods(model, n_samples=33).values())
    shared = attribute_with_shared_noise(methods, x, target=[0, 1, 2], generator=_gen(6), internal_batch_size=10)
    for method, got in zip(methods, shared):
        alone = method.attribute(x, target=[0, 1, 2], generator=_gen(6), internal_batch_size=10)
        torch.testing.assert_close(got, alone, rtol=0, atol=0)
    with pytest.raises(ValueError, match="same noise"):
        attribute_with_shared_noise([ScaledSmoothGrad(model, 0.3), ScaledSmoothGrad(model, 0.2)], x)
    with pytest.raises(ValueError, match="same model"):
        attribute_with_shared_noise([ScaledSmoothGrad(model, 0.3), ScaledSmoothGrad(TinyGapNet(), 0.3)], x)


def test_memory_is_bounded_by_internal_batch_size():
    model = TinyGapNet().eval()
    rows = []
    handle = model.conv1.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    try:
        SparsifiedSmoothGrad(model, 0.1, 0.2, n_samples=50).attribute(torch.rand(3, 2, 5, 5), internal_batch_size=20)
        assert max(rows) <= 20 and sum(rows) == 150 and len(rows) == 9
        rows.clear()
        # fewer rows than examples: one noisy copy of every example per pass
        SparsifiedSmoothGrad(model, 0.1, 0.2, n_samples=5).attribute(torch.rand(3, 2, 5, 5), internal_batch_size=2)
        assert rows == [3] * 5
    finally:
        handle.remove()


# --------------------------------------------------------------------------- the noise and the target


def _relu_sum_model():
    class ReluSum(nn.Module):
        def forward(self, x):
            return torch.relu(x).flatten(1).sum(1, keepdim=True)

    return ReluSum()


@pytest.mark.parametrize("relative", [False, True])
def test_scaled_smoothgrad_of_a_relu_sum_is_the_gaussian_cdf(relative):
    # f(x) = sum_i relu(x_i): g_i = 1[x_i + eps_i > 0]; an anchor element far above 0 keeps
    # max|g| = 1, so the population map is exactly Phi(x_i / sigma_abs).
    x = torch.linspace(-0.5, 0.5, 24, dtype=torch.float64).reshape(2, 1, 3, 4)
    x[:, 0, 0, 0] = 5.0
    sigma = 0.04 if relative else 0.2
    q = 6000
    method = ScaledSmoothGrad(_relu_sum_model(), sigma, q, relative_sigma=relative)
    maps = method.attribute(x, generator=_gen(12), internal_batch_size=4000)
    flat = x.reshape(2, -1)
    abs_sigma = sigma * (flat.amax(1) - flat.amin(1)) if relative else torch.full((2,), sigma, dtype=x.dtype)
    torch.testing.assert_close(method.smoothing_sigma(x), abs_sigma)
    p = norm.cdf((flat / abs_sigma[:, None]).numpy())
    err = np.abs(maps.reshape(2, -1).numpy() - p)
    assert (err <= 5 * np.sqrt(p * (1 - p) / q) + 1e-12).all(), err.max()


def _two_class_linear(w0, w1, b):
    lin = nn.Linear(w0.numel(), 2).double()
    with torch.no_grad():
        lin.weight[:] = torch.stack([w0, w1])
        lin.bias[:] = torch.tensor([0.0, b], dtype=torch.float64)
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_target_none_uses_the_argmax_class_of_each_noisy_sample():
    # Linear 2-class model: the sparsified sample map is mask(|w0|) when class 0 wins and
    # mask(|w1|) otherwise, and class 0 wins with probability Phi(((w0-w1).x - b) / (sigma |w0-w1|)).
    w0 = torch.tensor([3.0, 2.5, 0.1, 0.2, 0.3, 0.1], dtype=torch.float64)
    w1 = torch.tensor([0.1, 0.2, 0.3, 2.0, 0.1, 3.0], dtype=torch.float64)
    model = _two_class_linear(w0, w1, 0.3)
    x = torch.tensor([[0.2, 0.1, 0.0, 0.1, 0.0, 0.0], [0.0, 0.0, 0.1, 0.3, 0.0, 0.2]], dtype=torch.float64)
    sigma, q = 0.3, 4000
    ssg = SparsifiedSmoothGrad(model, 2 / 6, sigma, q)
    maps = ssg.attribute(x, target=None, generator=_gen(13))
    d = w0 - w1
    p0 = norm.cdf(((x @ d - 0.3) / (sigma * d.norm())).numpy())
    mask0 = torch.tensor([1.0, 1, 0, 0, 0, 0], dtype=torch.float64)
    mask1 = torch.tensor([0.0, 0, 0, 1, 0, 1], dtype=torch.float64)
    expected = torch.tensor(p0)[:, None] * mask0 + torch.tensor(1 - p0)[:, None] * mask1
    tol = 5 * np.sqrt(p0 * (1 - p0) / q)
    assert ((maps - expected).abs() <= torch.tensor(tol)[:, None]).all()
    assert 0.1 < p0.min() and p0.max() < 0.9  # the argmax really changes between samples
    # a fixed target uses that class's gradient for every sample
    torch.testing.assert_close(ssg.attribute(x, target=1, generator=_gen(13)), mask1.expand(2, 6))


def test_tuple_inputs_and_additional_forward_args():
    model = TwoInputNet().double().eval()
    x1 = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    x2 = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    ssg = SparsifiedSmoothGrad(model, 0.1, (0.2, 0.5), n_samples=11)
    m1, m2 = ssg.attribute((x1, x2), target=[0, 3], additional_forward_args=(2.0,), generator=_gen(14))
    assert m1.shape == x1.shape and m2.shape == x2.shape
    total = m1.sum(dim=(1, 2, 3)) + m2.sum(dim=(1, 2, 3))
    torch.testing.assert_close(total, torch.full((2,), float(math.ceil(0.1 * 32)), dtype=torch.float64))
    # reference: Captum gradients at the same noisy points, top-k over both inputs together
    n1, n2 = _NoiseStream((x1, x2), _gen(14)).take(11)
    p1 = (x1.unsqueeze(0) + 0.2 * n1).reshape(22, 1, 4, 4)
    p2 = (x2.unsqueeze(0) + 0.5 * n2).reshape(22, 1, 4, 4)
    g1, g2 = Saliency(model).attribute((p1, p2), target=torch.tensor([0, 3]).repeat(11),
                                       additional_forward_args=(2.0,), abs=False)
    g = torch.cat([g1.reshape(22, -1), g2.reshape(22, -1)], 1).numpy()
    ref = np.stack([_ref_sparsified(r, 0.1) for r in g]).reshape(11, 2, 32).mean(0)
    got = torch.cat([m1.reshape(2, -1), m2.reshape(2, -1)], 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # the certificate's sigma is the smallest of the two
    torch.testing.assert_close(ssg.smoothing_sigma((x1, x2)), torch.full((2,), 0.2, dtype=torch.float64))


def test_per_example_tensor_arguments_follow_their_noisy_copies():
    base = TinyGapNet().double().eval()

    def model(x, offset):
        return base(x) + offset

    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    offset = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]], dtype=torch.float64) * 3
    q, sigma = 9, 0.3
    got = SparsifiedSmoothGrad(model, 0.2, sigma, q).attribute(
        x, additional_forward_args=(offset,), generator=_gen(15), internal_batch_size=6
    )
    points = _noisy_points(x, sigma, q, 15)
    ref = np.zeros((3, 50))
    for j in range(q):
        for b in range(3):  # explicit per-example loop: the argmax class with this example's offset
            p = points[j, b : b + 1].clone().requires_grad_()
            out = base(p) + offset[b]
            (g,) = torch.autograd.grad(out[0, out[0].argmax()], p)
            ref[b] += _ref_sparsified(g.reshape(-1).numpy(), 0.2) / q
    np.testing.assert_allclose(got.reshape(3, -1).numpy(), ref, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- differentiability


@pytest.mark.parametrize("cls", ["scaled", "quadratic", "relaxed"])
def test_create_graph_gradcheck(cls):
    model = TinyGapNet(softplus=4.0).double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    method = _methods(model, sigma=0.2, n_samples=3)[cls]

    def fn(inp):
        return method.attribute(inp, target=[0, 2], generator=_gen(16), create_graph=True)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_create_graph_reaches_parameters_and_surrogate_replaces_relu():
    relu = TinyGapNet().double().eval()
    soft = TinyGapNet(softplus=8.0).double().eval()
    soft.load_state_dict(relu.state_dict())
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    method = RelaxedSparsifiedSmoothGrad(relu, 0.3, 0.05, 0.2, 4)
    through_relu = method.attribute(x, target=0, generator=_gen(17), create_graph=True)
    (gx,) = torch.autograd.grad(through_relu.sum(), x, allow_unused=True)
    # ReLU second derivatives vanish: the map does not move with x to first order
    assert gx is None or float(gx.abs().max()) == 0.0
    via_surrogate = method.attribute(x, target=0, generator=_gen(17), create_graph=True, surrogate=soft)
    direct = RelaxedSparsifiedSmoothGrad(soft, 0.3, 0.05, 0.2, 4).attribute(
        x, target=0, generator=_gen(17), create_graph=True
    )
    torch.testing.assert_close(via_surrogate, direct)
    (gs,) = torch.autograd.grad(via_surrogate.sum(), x)
    assert float(gs.abs().max()) > 1e-3
    # gradients reach the parameters too
    (gw,) = torch.autograd.grad(direct.sum(), soft.conv1.weight)
    assert float(gw.abs().max()) > 0


def test_sparsified_refuses_create_graph():
    with pytest.raises(ValueError, match="piecewise constant"):
        SparsifiedSmoothGrad(TinyGapNet(), 0.1, 0.2, 4).attribute(torch.rand(1, 2, 5, 5), create_graph=True)


# --------------------------------------------------------------------------- errors and side effects


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda m: SparsifiedSmoothGrad(m, 0.0, 0.2), r"sparsity must be in \(0, 1\], got 0.0"),
        (lambda m: SparsifiedSmoothGrad(m, 1.5, 0.2), r"sparsity must be in \(0, 1\], got 1.5"),
        (lambda m: SparsifiedSmoothGrad(m, float("nan"), 0.2), "sparsity"),
        (lambda m: RelaxedSparsifiedSmoothGrad(m, 0.1, 0.1, 0.2), r"clip must be in \[0, sparsity\)"),
        (lambda m: RelaxedSparsifiedSmoothGrad(m, 0.1, 0.5, 0.2), r"clip must be in \[0, sparsity\) = \[0, 0.1\), got 0.5"),
        (lambda m: RelaxedSparsifiedSmoothGrad(m, 0.1, -0.01, 0.2), "clip"),
        (lambda m: ScaledSmoothGrad(m, 0.0), "sigma must be a finite number > 0, got sigma=0.0"),
        (lambda m: ScaledSmoothGrad(m, -1.0), "sigma must be a finite number > 0"),
        (lambda m: ScaledSmoothGrad(m, torch.tensor([0.1, -0.1])), "sigma must be finite and > 0"),
        (lambda m: ScaledSmoothGrad(m, (0.1, 0.0)), r"sigma\[1\]"),
        (lambda m: ScaledSmoothGrad(m, 0.1, n_samples=0), r"n_samples must be an int >= 1, got n_samples=0"),
    ],
)
def test_constructor_errors(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build(TinyGapNet())


def test_type_errors():
    with pytest.raises(TypeError, match=r"sparsity must be a float in \(0, 1\], got bool True"):
        SparsifiedSmoothGrad(TinyGapNet(), True, 0.2)
    with pytest.raises(TypeError, match="sigma must be a float > 0 or a tensor of them, got str"):
        ScaledSmoothGrad(TinyGapNet(), "0.2")


def test_attribute_errors():
    model = TinyGapNet().eval()
    x = torch.rand(2, 2, 5, 5)
    sg = ScaledSmoothGrad(model, 0.2, 4)
    with pytest.raises(ValueError, match=r"target holds class index 7, outside the model's range \[0, 2\]"):
        sg.attribute(x, target=7)
    with pytest.raises(ValueError, match="target has 3 entries but the batch has 2"):
        sg.attribute(x, target=[0, 1, 2])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        sg.attribute(bad)
    with pytest.raises(ValueError, match="internal_batch_size must be an int >= 1 or None, got internal_batch_size=0"):
        sg.attribute(x, internal_batch_size=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sg.attribute(x, generator=0)
    with pytest.raises(ValueError, match="example 1 of input 0 is constant"):
        ScaledSmoothGrad(model, 0.2, 4, relative_sigma=True).attribute(torch.stack([x[0], torch.ones_like(x[0])]))
    with pytest.raises(ValueError, match="sigma has 2 entries but there are 1 input tensors"):
        ScaledSmoothGrad(model, (0.1, 0.2), 4).attribute(x)
    with pytest.raises(ValueError, match="sigma has 3 per-example values but the batch has 2"):
        ScaledSmoothGrad(model, torch.tensor([0.1, 0.2, 0.3]), 4).attribute(x)
    with pytest.raises(TypeError, match="floating-point"):
        ScaledSmoothGrad(model, 0.2, 4).attribute(torch.ones(2, 2, 5, 5, dtype=torch.long))


def test_per_example_sigma_tensor():
    model = _relu_sum_model()
    x = torch.zeros(2, 1, 1, 3, dtype=torch.float64)
    x[:, 0, 0, 0] = 5.0
    x[1, 0, 0, 1] = 0.2
    sigma = torch.tensor([0.1, 0.4], dtype=torch.float64)
    maps = ScaledSmoothGrad(model, sigma, 5000).attribute(x, generator=_gen(18))
    # element 1 of example 1 sits at 0.2 = 0.5 sigma: Phi(0.5) = 0.69; example 0 at 0: 0.5
    assert abs(float(maps[1, 0, 0, 1]) - norm.cdf(0.5)) < 0.035
    assert abs(float(maps[0, 0, 0, 1]) - 0.5) < 0.035


def test_no_side_effects_also_on_exceptions():
    model = TinyGapNet(softplus=3.0)
    model.train()
    model.conv2.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    x = torch.rand(2, 2, 5, 5, requires_grad=True)
    x_copy = x.detach().clone()
    for method in _methods(model, n_samples=5).values():
        out = method.attribute(x, generator=_gen())
        assert not out.requires_grad
    RelaxedSparsifiedSmoothGrad(model, 0.3, 0.05, 0.2, 3).attribute(x, create_graph=True).sum().backward()
    assert model.training and all(m.training for m in model.modules())
    assert not model.conv2.weight.requires_grad and model.conv1.weight.requires_grad
    torch.testing.assert_close(x.detach(), x_copy)

    calls = []

    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = TinyGapNet()

        def forward(self, inp):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("boom")
            return self.inner(inp)

    failing = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        ScaledSmoothGrad(failing, 0.2, 10).attribute(x.detach(), internal_batch_size=2)
    assert failing.training and all(p.grad is None for p in failing.parameters())


def test_show_progress_runs():
    out = ScaledSmoothGrad(TinyGapNet(), 0.2, 6).attribute(torch.rand(1, 2, 5, 5), show_progress=True)
    assert out.shape == (1, 2, 5, 5)


@pytest.mark.cuda
def test_cuda_matches_properties():
    model = TinyGapNet().cuda().eval()
    x = torch.rand(3, 2, 5, 5, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    maps = SparsifiedSmoothGrad(model, 0.2, 0.3, 64).attribute(x, generator=gen)
    assert maps.device.type == "cuda"
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)).cpu(), torch.full((3,), 10.0))
    a = RelaxedSparsifiedSmoothGrad(model, 0.3, 0.05, 0.3, 64).attribute(x, generator=torch.Generator("cuda").manual_seed(1))
    b = RelaxedSparsifiedSmoothGrad(model, 0.3, 0.05, 0.3, 64).attribute(
        x, generator=torch.Generator("cuda").manual_seed(1), internal_batch_size=9
    )
    torch.testing.assert_close(a, b)
