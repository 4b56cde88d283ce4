"""Quadrature rules of Integrated Gradients: Captum's points/weights, exactness on polynomials,
the one-point rules, and the chunk plan (every path point evaluated exactly once)."""

import math

import numpy as np
import pytest
from captum.attr._utils.approximation_methods import approximation_parameters

from captum_robust._utils.chunking import SavedBytesMeter, auto_chunk_rows
from captum_robust.attr._core._quadrature import SUPPORTED_METHODS, quadrature_rule
from captum_robust.attr._core._ig_chunking import _rectangles, _rest_after_probe


@pytest.mark.parametrize("method", SUPPORTED_METHODS)
@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_points_and_weights_equal_captum(method, n):
    step_sizes, alphas = approximation_parameters(method)
    points, weights = quadrature_rule(method, n)
    # Captum builds its Riemann points with a float32 linspace: agree to float32 precision.
    np.testing.assert_allclose(points, alphas(n), rtol=0, atol=1e-7)
    np.testing.assert_allclose(weights, step_sizes(n), rtol=1e-12, atol=0)


@pytest.mark.parametrize("m", [1, 2, 5, 9])
def test_gauss_legendre_is_exact_to_degree_2m_minus_1(m):
    t, w = quadrature_rule("gausslegendre", m)
    for j in range(2 * m):
        assert abs(float(np.sum(w * t**j)) - 1.0 / (j + 1)) < 1e-13
    # and not beyond: for t^(2m) the error is exactly (m!)^4 / ((2m+1) ((2m)!)^2)
    expected_error = math.factorial(m) ** 4 / ((2 * m + 1) * math.factorial(2 * m) ** 2)
    error = 1.0 / (2 * m + 1) - float(np.sum(w * t ** (2 * m)))
    assert abs(error - expected_error) <= 1e-5 * expected_error + 1e-15


@pytest.mark.parametrize("m", [1, 4, 10])
def test_riemann_rules_closed_form_errors(m):
    # int_0^1 t dt = 1/2; left sum = (m-1)/(2m), right = (m+1)/(2m), midpoint exact for degree 1.
    for method, expected in (
        ("riemann_left", (m - 1) / (2 * m)),
        ("riemann_right", (m + 1) / (2 * m)),
        ("riemann_middle", 0.5),
    ):
        t, w = quadrature_rule(method, m)
        assert abs(float(np.sum(w * t)) - expected) < 1e-14
        assert abs(float(np.sum(w)) - 1.0) < 1e-14
    # midpoint on t^2: error exactly -1/(12 m^2)
    t, w = quadrature_rule("riemann_middle", m)
    assert abs(float(np.sum(w * t**2)) - (1 / 3 - 1 / (12 * m * m))) < 1e-14


def test_captum_trapezoid_weights_sum_to_one_minus_one_over_m():
    for m in (2, 5, 50):
        _, w = quadrature_rule("riemann_trapezoid", m)
        assert abs(float(w.sum()) - (1 - 1 / m)) < 1e-14


def test_one_point_rules_and_errors():
    assert quadrature_rule("riemann_left", 1)[0].tolist() == [0.0]
    assert quadrature_rule("riemann_right", 1)[0].tolist() == [1.0]
    assert quadrature_rule("riemann_middle", 1)[0].tolist() == [0.5]
    t, w = quadrature_rule("gausslegendre", 1)
    assert t.tolist() == [0.5] and w.tolist() == [1.0]
    with pytest.raises(ValueError, match="n_steps must be >= 2 for method='riemann_trapezoid'"):
        quadrature_rule("riemann_trapezoid", 1)
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        quadrature_rule("riemann_left", 0)
    with pytest.raises(ValueError, match="method must be one of"):
        quadrature_rule("simpson", 5)
    with pytest.raises(TypeError, match="n_steps must be an int"):
        quadrature_rule("gausslegendre", 2.0)


@pytest.mark.parametrize("n_steps,batch", [(1, 1), (3, 5), (7, 4), (5, 16)])
def test_chunk_plan_covers_every_point_once_within_the_bound(n_steps, batch):
    for chunk in range(1, n_steps * batch + 3):
        rects = list(_rectangles(0, n_steps, batch, chunk))
        for probe_rows in {1, min(batch, chunk), batch}:
            probe = (0, 1, 0, probe_rows)
            plans = [rects, [probe] + list(_rest_after_probe(probe, n_steps, batch, chunk))]
            for plan in plans:
                seen = np.zeros((n_steps, batch), dtype=int)
                for k0, k1, b0, b1 in plan:
                    assert 0 < (k1 - k0) * (b1 - b0) <= max(chunk, probe_rows)
                    seen[k0:k1, b0:b1] += 1
                assert (seen == 1).all(), (chunk, plan)
        if chunk >= batch:  # whole steps, as Captum chunks, as few chunks as Captum, evenly filled
            assert all(r[2] == 0 and r[3] == batch for r in rects)
            assert len(rects) == -(-n_steps // (chunk // batch))
            sizes = [r[1] - r[0] for r in rects]
            assert max(sizes) - min(sizes) <= 1


def test_saved_bytes_meter_counts_batch_tensors_once_and_auto_rule():
    import torch

    x = torch.randn(8, 5, requires_grad=True)
    w = torch.randn(5, 3, requires_grad=True)
    meter = SavedBytesMeter(8, exclude=[w])
    with meter:
        y = torch.exp(x)  # saves its result: 8 x 5 float32
        z = y * y  # saves y twice (same storage): counted once
        (x @ w).sum()  # saves x (counted) and w (excluded)
    assert meter.total == 8 * 5 * 4 * 2  # exp's result + x
    assert meter.per_row == 5 * 4 * 2
    del z
    cpu = torch.device("cpu")
    assert auto_chunk_rows(100.0, 10_000, cpu, budget_bytes=2500) == 25
    assert auto_chunk_rows(100.0, 10, cpu, budget_bytes=2500) == 10
    assert auto_chunk_rows(1e9, 10, cpu, budget_bytes=2500) == 1
    threads = torch.get_num_threads()
    from captum_robust._utils import chunking

    assert auto_chunk_rows(1024.0, 10**9, cpu) == chunking.CPU_BYTES_PER_THREAD * threads // 1024

