"""Rank measures against scipy, brute force and closed forms."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from captum_robust.robust.discrepancy import (
    center_dislocation,
    center_of_mass,
    kendall_tau,
    spearman,
    topk_intersection,
    topk_mask,
)
from captum_robust.robust.discrepancy import _backend
from captum_robust.robust.discrepancy import rank as rank_module


@pytest.fixture(params=["numpy", "torch"])
def backend(request, monkeypatch):
    """Run a test with NumPy's sort on the CPU (the default) and with the torch-only path
    that accelerators take."""
    monkeypatch.setattr(_backend, "_NUMPY_ON_CPU", request.param == "numpy")
    return request.param


def _scipy_rows(fn, a, b, **kw):
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(a.shape[0]):
            out.append(fn(a[i].ravel(), b[i].ravel(), **kw).statistic)
    return np.array(out, dtype=np.float64)


def _assert_matches(got, expected, atol=1e-6):
    got = got.double().cpu().numpy()
    assert got.shape == expected.shape
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_allclose(got[~nan], expected[~nan], rtol=0, atol=atol)


# --------------------------------------------------------------------------- hypothesis vs scipy

_TIED = st.integers(-3, 3).map(float)
_DISTINCT = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def map_pairs(draw, elements):
    b = draw(st.integers(1, 4))
    n = draw(st.integers(1, 40))
    extra = draw(st.sampled_from([(), (2,)]))  # maps with a trailing dimension are flattened
    shape = (b, n) + extra
    a = draw(arrays(np.float64, shape, elements=elements))
    c = draw(arrays(np.float64, shape, elements=elements))
    return a, c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=60, deadline=None)
@given(pair=map_pairs(_TIED))
def test_kendall_and_spearman_equal_scipy_with_ties(pair, dtype):
    a, b = pair
    ta, tb = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
    _assert_matches(kendall_tau(ta, tb), _scipy_rows(stats.kendalltau, a, b))
    _assert_matches(kendall_tau(ta, tb, variant="c"), _scipy_rows(stats.kendalltau, a, b, variant="c"))
    _assert_matches(spearman(ta, tb), _scipy_rows(stats.spearmanr, a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=60, deadline=None)
@given(pair=map_pairs(_DISTINCT))
def test_kendall_and_spearman_equal_scipy_without_ties(pair, dtype):
    a, b = pair
    ta, tb = torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)
    a, b = ta.double().numpy(), tb.double().numpy()  # the values the function sees
    _assert_matches(kendall_tau(ta, tb), _scipy_rows(stats.kendalltau, a, b))
    _assert_matches(spearman(ta, tb), _scipy_rows(stats.spearmanr, a, b))


def test_torch_only_path_equals_scipy(backend):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 6, (5, 300), generator=g).double()
    b = torch.randn(5, 300, generator=g, dtype=torch.float64).round(decimals=1)
    for x, y in [(a, b), (a.float(), b.float()), (b, a)]:
        _assert_matches(kendall_tau(x, y), _scipy_rows(stats.kendalltau, x.double().numpy(), y.double().numpy()))
        _assert_matches(spearman(x, y), _scipy_rows(stats.spearmanr, x.double().numpy(), y.double().numpy()))


@pytest.mark.parametrize("n", [2047, 2048, 2049, 5000])
def test_kendall_equals_scipy_on_larger_maps_with_heavy_ties(n, backend):
    g = torch.Generator().manual_seed(n)
    base = torch.randn(3, n, generator=g)
    a = torch.where(torch.rand(3, n, generator=g) < 0.4, 0.0, base)  # many exact zeros, as in IG maps
    b = (base + 0.5 * torch.randn(3, n, generator=g)).round(decimals=1)
    expected = _scipy_rows(stats.kendalltau, a.double().numpy(), b.double().numpy())
    _assert_matches(kendall_tau(a, b), expected)
    _assert_matches(spearman(a, b), _scipy_rows(stats.spearmanr, a.double().numpy(), b.double().numpy()))


@pytest.mark.parametrize("dense_cost", [0.0, 1e9])  # always / never count on the tied values directly
def test_both_counting_methods_for_tied_maps_equal_scipy(dense_cost, backend, monkeypatch):
    monkeypatch.setattr(rank_module, "_DENSE_LEVEL_COST", dense_cost)
    g = torch.Generator().manual_seed(7)
    for n, levels in [(3, 2), (64, 5), (200, 3), (1000, 300), (777, 700)]:
        a = torch.randint(0, levels, (4, n), generator=g).float()
        b = torch.randint(0, levels, (4, n), generator=g).float()
        b[0] = torch.arange(n).float()  # one row without ties in the same batch
        _assert_matches(kendall_tau(a, b), _scipy_rows(stats.kendalltau, a.numpy(), b.numpy()))
        _assert_matches(kendall_tau(b, a), _scipy_rows(stats.kendalltau, b.numpy(), a.numpy()))


def test_kendall_on_an_imagenet_sized_map():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(1, 3, 224, 224, generator=g)
    b = a + torch.randn(1, 3, 224, 224, generator=g)
    _assert_matches(kendall_tau(a, b), _scipy_rows(stats.kendalltau, a.numpy(), b.numpy()))


# --------------------------------------------------------------------------- edge cases


def test_constant_maps_and_single_elements_give_nan_like_scipy(backend):
    a = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [2.0, 2.0, 2.0]])
    for fn, ref in [(kendall_tau, stats.kendalltau), (spearman, stats.spearmanr)]:
        got = fn(a, b)
        assert bool(torch.isnan(got).all())
        assert np.isnan(_scipy_rows(ref, a.numpy(), b.numpy())).all()
    one = torch.tensor([[1.0], [2.0]])
    assert bool(torch.isnan(kendall_tau(one, one)).all())
    assert bool(torch.isnan(spearman(one, one)).all())


def test_maps_of_length_two(backend):
    a = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 1.0], [3.0, -1.0]])
    b = torch.tensor([[3.0, 4.0], [4.0, 3.0], [1.0, 2.0], [0.0, 0.0]])
    expected = np.array([1.0, -1.0, np.nan, np.nan])
    _assert_matches(kendall_tau(a, b), expected, atol=0)
    _assert_matches(kendall_tau(a, b), _scipy_rows(stats.kendalltau, a.numpy(), b.numpy()), atol=0)
    _assert_matches(spearman(a, b), _scipy_rows(stats.spearmanr, a.numpy(), b.numpy()))


def test_hand_computed_tau_b_with_ties():
    # a = (1, 1, 2, 3), b = (1, 2, 2, 3): n0 = 6, n1 = 1 (a tie), n2 = 1 (b tie), n3 = 0,
    # concordant 4 (pairs 13 14 24 34), discordant 0 -> 4 / sqrt(5 * 5) = 0.8
    a = torch.tensor([[1.0, 1.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    torch.testing.assert_close(kendall_tau(a, b), torch.tensor([0.8]))
    # joint tie: a = (1, 1, 2), b = (5, 5, 4): n0 = 3, n1 = n2 = n3 = 1, discordant 2
    # -> (3 - 1 - 1 + 1 - 4) / sqrt(2 * 2) = -1
    torch.testing.assert_close(kendall_tau(torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([[5.0, 5.0, 4.0]])), torch.tensor([-1.0]))


def test_negative_zero_ties_with_zero(backend):
    a = torch.tensor([[0.0, -0.0, 1.0, -1.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    _assert_matches(kendall_tau(a, b), _scipy_rows(stats.kendalltau, a.numpy(), b.numpy()))
    _assert_matches(spearman(a, b), _scipy_rows(stats.spearmanr, a.numpy(), b.numpy()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_other_dtypes(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-4, 5, (3, 50), generator=g)
    b = torch.randint(-4, 5, (3, 50), generator=g)
    expected = _scipy_rows(stats.kendalltau, a.numpy(), b.numpy())
    got = kendall_tau(a.to(dtype), b.to(dtype))
    assert got.dtype == (dtype if dtype.is_floating_point else torch.get_default_dtype())
    _assert_matches(got, expected, atol=2e-3 if dtype in (torch.float16, torch.bfloat16) else 1e-6)
    _assert_matches(spearman(a.to(dtype), b.to(dtype)), _scipy_rows(stats.spearmanr, a.numpy(), b.numpy()), atol=2e-3 if dtype in (torch.float16, torch.bfloat16) else 1e-6)


def test_mixed_dtypes_and_empty_batch():
    a = torch.tensor([[1.0, 3.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float32)
    torch.testing.assert_close(kendall_tau(a, b), torch.tensor([1.0 / 3.0], dtype=torch.float64))
    big = torch.tensor([[2**24, 2**24 + 1, 3]])  # distinct as integers, tied in float32
    torch.testing.assert_close(kendall_tau(big, torch.tensor([[1.0, 2.0, 0.0]])), torch.tensor([1.0]))
    # the library's one empty-batch rule (issue 18): a clear error, as every entry point gives
    with pytest.raises(ValueError, match="maps_a must hold at least one example, got a batch of 0"):
        kendall_tau(torch.empty(0, 5), torch.empty(0, 5))
    with pytest.raises(ValueError, match="maps_a must hold at least one example, got a batch of 0"):
        spearman(torch.empty(0, 5), torch.empty(0, 5))


# --------------------------------------------------------------------------- invariances


@settings(max_examples=40, deadline=None)
@given(pair=map_pairs(_TIED), shift=st.floats(-5, 5), scale=st.floats(0.1, 10))
def test_tau_and_rho_invariant_to_strictly_increasing_transforms(pair, shift, scale):
    a, b = (torch.tensor(v) for v in pair)
    for fn in (kendall_tau, spearman):
        ref = fn(a, b)
        transformed = fn(torch.exp(a / 4) * scale + shift, b**3 + b)  # strictly increasing in each map
        torch.testing.assert_close(transformed, ref, equal_nan=True, rtol=0, atol=1e-12)
        # a strictly decreasing transform of one map flips the sign
        torch.testing.assert_close(fn(-a, b), -ref, equal_nan=True, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- internals


def _brute_inversions(row):
    return sum(int(x > y) for x, y in itertools.combinations(row, 2))


@pytest.mark.parametrize("use_int32", [True, False])
def test_inversion_count_equals_brute_force(use_int32):
    g = torch.Generator().manual_seed(5)
    for size in [1, 2, 6, 8, 64, 128, 192, 320]:  # padded to even sizes by the caller
        perm = torch.stack([torch.randperm(size, generator=g) for _ in range(3)])
        got = rank_module._count_inversions(perm, use_int32)
        assert got.tolist() == [_brute_inversions(r.tolist()) for r in perm]
    rev = torch.arange(256).flip(0)[None]
    assert int(rank_module._count_inversions(rev, use_int32)) == 256 * 255 // 2
    assert perm.shape == (3, 320)  # the input is not modified in place
    assert sorted(perm[0].tolist()) == list(range(320))


def test_monotone_key_orders_like_the_floats():
    v = torch.tensor([-math.inf, -3.5, -1e-30, -0.0, 0.0, 1e-45, 1e-30, 2.0, 3.5e38, math.inf])
    keys = rank_module._monotone_key(v[None])[0]
    assert bool((keys[1:] >= keys[:-1]).all())
    assert int(keys[3]) == int(keys[4])  # -0.0 == 0.0
    assert bool((keys[[0, 1, 2, 4, 5, 6, 7, 8]].diff() > 0).all())


def test_rank_measures_do_not_track_gradients_or_modify_inputs():
    a = torch.randn(2, 30, requires_grad=True)
    b = torch.randn(2, 30)
    a0, b0 = a.detach().clone(), b.clone()
    for out in (kendall_tau(a, b), spearman(a, b), topk_intersection(a, b, 5)):
        assert not out.requires_grad
    assert torch.equal(a.detach(), a0) and torch.equal(b, b0)
    assert a.grad is None


# --------------------------------------------------------------------------- top-k


def _brute_topk(row, k):
    order = np.argsort(-np.asarray(row), kind="stable")  # largest first, ties by lower index
    return set(order[:k].tolist())


@settings(max_examples=60, deadline=None)
@given(pair=map_pairs(_TIED), data=st.data())
def test_topk_mask_and_intersection_equal_a_stable_sort(pair, data):
    a, b = pair
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    n = a2.shape[1]
    k = data.draw(st.integers(1, n))
    mask = topk_mask(torch.tensor(a), k).reshape(a.shape[0], -1)
    for i in range(a.shape[0]):
        assert set(torch.nonzero(mask[i]).flatten().tolist()) == _brute_topk(a2[i], k)
    expected = [len(_brute_topk(a2[i], k) & _brute_topk(b2[i], k)) / k for i in range(a.shape[0])]
    np.testing.assert_allclose(topk_intersection(torch.tensor(a), torch.tensor(b), k).numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 7, 50])
def test_topk_intersection_with_itself_and_with_its_reverse(n, backend):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(3, n, generator=g)
    for k in range(1, n + 1):
        assert bool((topk_intersection(a, a, k) == 1).all())
        torch.testing.assert_close(topk_intersection(a, -a, k), torch.full((3,), max(0, 2 * k - n) / k))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64])
def test_topk_tie_rule_is_lowest_index_first(dtype, backend):
    maps = torch.tensor([[1, 5, 1, 1, 0, 1], [-3, -1, -1, -2, -1, -3]]).to(dtype)
    assert topk_mask(maps, 3).nonzero().tolist() == [[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [1, 4]]
    assert topk_mask(maps, 5)[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 5]
    if dtype.is_floating_point:  # -0.0 ties with 0.0
        zeros = torch.tensor([[-1.0, 0.0, -0.0, 0.0, -0.0]], dtype=dtype)
        assert topk_mask(zeros, 2)[0].nonzero().flatten().tolist() == [1, 2]
        assert topk_mask(-zeros, 2)[0].nonzero().flatten().tolist() == [0, 1]


# --------------------------------------------------------------------------- center of mass


def test_center_of_mass_hand_values():
    s = torch.zeros(2, 4, 5)
    s[0, 1, 2] = 3.0
    s[0, 3, 0] = 1.0  # rows (3*1 + 1*3) / 4 = 1.5, cols (3*2 + 0) / 4 = 1.5
    s[1] = 1.0  # uniform: the middle (1.5, 2)
    torch.testing.assert_close(center_of_mass(s), torch.tensor([[1.5, 1.5], [1.5, 2.0]]))
    torch.testing.assert_close(center_dislocation(s[:1], s[1:]), torch.tensor([0.5]))
    # 1-D and 3-D maps: one coordinate per dimension
    torch.testing.assert_close(center_of_mass(torch.tensor([[0.0, 1.0, 3.0]])), torch.tensor([[1.75]]))
    cube = torch.zeros(1, 2, 2, 2)
    cube[0, 1, 0, 1] = 2.0
    torch.testing.assert_close(center_of_mass(cube), torch.tensor([[1.0, 0.0, 1.0]]))


def test_center_of_mass_of_an_empty_map_is_nan_and_negative_maps_are_refused():
    out = center_of_mass(torch.zeros(2, 3, 3))
    assert bool(torch.isnan(out).all())
    with pytest.raises(ValueError, match="non-negative"):
        center_of_mass(torch.tensor([[[-1.0, 2.0]]]))


def test_center_dislocation_gradcheck():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(2, 3, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    b = (torch.rand(2, 3, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(center_dislocation, (a, b))
    assert torch.autograd.gradcheck(center_of_mass, (a,))


# --------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    a = torch.rand(2, 5)
    with pytest.raises(ValueError, match="same shape"):
        kendall_tau(a, torch.rand(2, 6))
    with pytest.raises(ValueError, match="batched"):
        spearman(torch.rand(5), torch.rand(5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        kendall_tau(a.numpy(), a)
    bad = a.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="maps_b contains 1 NaN"):
        kendall_tau(a, bad)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        topk_intersection(bad, a, 2)
    for k in (0, 6, -1):
        with pytest.raises(ValueError, match=r"k must be in \[1, 5\]"):
            topk_intersection(a, a, k)
    with pytest.raises(TypeError, match="k must be an int"):
        topk_mask(a, 2.5)
    with pytest.raises(ValueError, match="variant"):
        kendall_tau(a, a, variant="a")
    with pytest.raises(TypeError, match="real numbers"):
        kendall_tau(a > 0.5, a > 0.5)
