"""Certificates of Levine et al.: check values, hand-built and brute-force certificates, monotonicity,
Theorem 3, tightness of the floor, and soundness on a trained digits model (random l2 noise and PGD)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from torch import nn

from captum_robust.attr import (
    CertifiedTopK,
    QuadraticSmoothGrad,
    RelaxedSparsifiedSmoothGrad,
    ScaledSmoothGrad,
    SparsifiedSmoothGrad,
    TopKCertificate,
)
from captum_robust.attr import certify
from captum_robust.attr._core.smoothgrad import SmoothGradBase, _NoiseStream
from captum_robust.data import load_digits
from captum_robust.models import Small
from tests.helpers.models import TinyGapNet

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- brute-force references (scipy)


def _ref_floor(z, rho, sigma, c):
    u = z - c
    if u <= 0:
        return -c
    return norm.cdf(norm.ppf(min(u, 1.0)) - 2 * rho / sigma) - c


def _ref_certificate(h, k, rho, sigma, c):
    """Theorem 2 with the tight index, written as the definition: the largest i <= K that passes."""
    s = sorted(h, reverse=True)
    n = len(s)
    best = 0
    for i in range(1, k + 1):
        j = 2 * k - i + 1
        competitor = s[j - 1] if j <= n else -math.inf
        if _ref_floor(s[i - 1], rho, sigma, c) > competitor:
            best = i
    return best


def _ref_rank(h, i, rho, sigma, c):
    """Definition 3.1: the smallest k with L(h_i) >= h_(k)."""
    s = sorted(h, reverse=True)
    low = _ref_floor(h[i], rho, sigma, c)
    for k in range(1, len(s) + 1):
        if low >= s[k - 1]:
            return k
    return len(s)


def _topk_overlap(a, b):
    """|top-K(a) & top-K(b)| per row for index tensors (B x K)."""
    return torch.tensor([len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)])


def _topk_indices(maps, k):
    flat = maps.reshape(maps.shape[0], -1)
    return torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]


# --------------------------------------------------------------------------- margins and floors


def test_check_values_of_the_hoeffding_margin():
    n = 224 * 224 * 3
    assert n == 150528
    assert abs(certify.hoeffding_margin(n, 50, 0.95) - 0.395) < 5e-4
    assert abs(certify.hoeffding_margin(n, 8192, 0.95) - 0.0309) < 5e-5
    # the formula, independently
    assert certify.hoeffding_margin(784, 1000, 0.99) == pytest.approx(math.sqrt(math.log(2 * 784 / 0.01) / 2000))
    qs = torch.tensor([50, 8192])
    torch.testing.assert_close(
        certify.hoeffding_margin(n, qs, 0.95), torch.tensor([0.39504, 0.030866], dtype=torch.float64), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("n,p,c", [(150528, 0.95, 0.031), (784, 0.99, 0.05), (10, 0.5, 0.3), (3072, 0.95, 0.0309)])
def test_n_samples_for_margin_is_the_smallest_sufficient(n, p, c):
    q = certify.n_samples_for_margin(c, n, p)
    assert certify.hoeffding_margin(n, q, p) <= c
    assert q == 1 or certify.hoeffding_margin(n, q - 1, p) > c


def test_floors_against_scipy():
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 1, size=(5, 40))
    z[0, :3] = [0.0, 1.0, 0.02]
    rho = rng.uniform(0, 0.3, size=(5, 1))
    sigma = rng.uniform(0.05, 1.0, size=(5, 1))
    for c in (0.0, 0.03, 0.2):
        expected = np.vectorize(_ref_floor)(z, rho, sigma, c)
        got = certify.empirical_floor(torch.tensor(z), torch.tensor(rho), torch.tensor(sigma), c)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        certify.floor(torch.tensor(z), torch.tensor(rho), torch.tensor(sigma)).numpy(),
        norm.cdf(norm.ppf(z) - 2 * rho / sigma),
        rtol=1e-10,
        atol=1e-12,
    )
    # rho = 0 and no margin: the identity
    torch.testing.assert_close(certify.floor(torch.tensor(z), 0.0, 1.0), torch.tensor(z))
    # float32 in, float32 out
    assert certify.floor(torch.rand(3), 0.1, 0.5).dtype == torch.float32


def test_min_n_samples_is_the_smallest_non_vacuous():
    for n, rho, sigma in [(784, 0.03, 0.2), (150528, 0.03, 0.1), (3072, 0.2, 0.2), (50, 0.0, 1.0)]:
        q = certify.min_n_samples(n, rho, sigma, 0.95)
        assert _ref_floor(1.0, rho, sigma, certify.hoeffding_margin(n, q, 0.95)) > 0
        assert q == 1 or _ref_floor(1.0, rho, sigma, certify.hoeffding_margin(n, q - 1, 0.95)) <= 0


# --------------------------------------------------------------------------- top-K certificates by hand


def test_certificate_on_hand_built_maps():
    # 2rho/sigma = 0.2. Without margin: L(0.95) = Phi(1.6449 - 0.2) = 0.9257 > h_(6) = 0.10,
    # L(0.90) = Phi(1.2816 - 0.2) = 0.8603 > h_(5) = 0.45, L(0.85) = Phi(1.0364 - 0.2) = 0.7985 > h_(4) = 0.5
    m = torch.tensor([[0.5, 0.95, 0.0, 0.1, 0.85, 0.45, 0.05, 0.9]])
    assert certify.topk_certificate(m, 3, rho=0.05, sigma=0.5).tolist() == [3]
    # margin 0.3: L(0.95) = Phi(Phi^-1(0.65) - 0.2) - 0.3 = 0.2735 > 0.10, L(0.90) = 0.2213 < 0.45 -> 1
    assert certify.topk_certificate(m, 3, rho=0.05, sigma=0.5, margin=0.3).tolist() == [1]
    # the tight index 2K - i + 1: [1, 1, 0, 0] with K = 2 certifies both (Levine's printed
    # index 2K - i would compare h_(2) with itself and certify only one)
    assert certify.topk_certificate(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), 2, rho=0.01, sigma=1.0).tolist() == [2]
    # K > n/2: two top-3 sets of 4 elements always share 2 -- certified whatever the values
    assert certify.topk_certificate(torch.full((1, 4), 0.5), 3, rho=0.1, sigma=1.0).tolist() == [2]
    # rho = 0, no margin: R = K exactly when h_(K) > h_(K+1)
    assert certify.topk_certificate(torch.tensor([[0.3, 0.2, 0.2, 0.1]]), 1, 0.0, 1.0).tolist() == [1]
    assert certify.topk_certificate(torch.tensor([[0.3, 0.2, 0.2, 0.1]]), 2, 0.0, 1.0).tolist() == [1]
    # per-example sigma: the second example's smaller sigma halves what it can certify
    two = torch.tensor([[1.0, 0.9, 0.6, 0.3, 0.2, 0.0]] * 2)
    # sigma 1: L(1) = 1 > 0.2, L(0.9) = Phi(1.2816 - 0.2) = 0.86 > 0.3 -> 2
    # sigma 0.2: 2rho/sigma = 1: L(0.9) = Phi(0.2816) = 0.611 > 0.3, i = 1 passes -> 2; rho 0.3: 2rho/sigma = 3
    got = certify.topk_certificate(two, 2, rho=0.1, sigma=torch.tensor([1.0, 0.2]))
    assert got.tolist() == [2, 2]
    got = certify.topk_certificate(two, 2, rho=torch.tensor([0.1, 0.3]), sigma=torch.tensor([1.0, 0.2]))
    # example 1: L(1) = 1 > 0.2 -> i = 1; L(0.9) = Phi(1.2816 - 3) = 0.043 < 0.3 -> 1
    assert got.tolist() == [2, 1]
    # k as a fraction of n, rounded up: 0.2 * 6 = 1.2 -> 2
    assert certify.topk_certificate(two, 0.2, rho=0.1, sigma=1.0).tolist() == [2, 2]


def test_certificate_matches_brute_force_definition():
    rng = np.random.default_rng(1)
    for trial in range(40):
        n = int(rng.integers(2, 40))
        maps = rng.uniform(0, 1, size=(3, n)) ** rng.uniform(0.2, 5)
        if trial % 4 == 0:
            maps = np.round(maps, 1)  # ties
        k = int(rng.integers(1, n + 1))
        rho, sigma, c = rng.uniform(0, 0.2), rng.uniform(0.1, 1), rng.choice([0.0, 0.02, 0.1])
        got = certify.topk_certificate(torch.tensor(maps), k, rho, sigma, c).tolist()
        expected = [_ref_certificate(list(h), k, rho, sigma, c) for h in maps]
        assert got == expected, (trial, n, k)
        # the condition is monotone in i: the certificate is also the count of passing i
        counts = []
        for h in maps:
            s = sorted(h, reverse=True)
            counts.append(sum(
                _ref_floor(s[i - 1], rho, sigma, c) > (s[2 * k - i] if 2 * k - i + 1 <= n else -math.inf)
                for i in range(1, k + 1)
            ))
        assert got == counts


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=30),
    st.floats(0.0, 0.5),
    st.floats(0.0, 0.5),
    st.floats(0.05, 2.0),
    st.integers(1, 30),
    st.integers(1, 10**6),
    st.integers(1, 10**6),
)
def test_certificate_never_grows_with_rho_and_never_shrinks_with_n_samples(values, r1, r2, sigma, k, q1, q2):
    m = torch.tensor([values], dtype=torch.float64)
    k = min(k, len(values))
    lo, hi = min(r1, r2), max(r1, r2)
    c = certify.hoeffding_margin(len(values), 100, 0.95)
    assert int(certify.topk_certificate(m, k, hi, sigma, c)) <= int(certify.topk_certificate(m, k, lo, sigma, c))
    few, many = min(q1, q2), max(q1, q2)
    c_few = certify.hoeffding_margin(len(values), few, 0.95)
    c_many = certify.hoeffding_margin(len(values), many, 0.95)
    assert int(certify.topk_certificate(m, k, lo, sigma, c_many)) >= int(certify.topk_certificate(m, k, lo, sigma, c_few))
    # and the certified rank of every element never improves with rho
    r_lo = certify.certified_rank(m, None, lo, sigma, c)
    r_hi = certify.certified_rank(m, None, hi, sigma, c)
    assert bool((r_hi >= r_lo).all())


# --------------------------------------------------------------------------- certified rank and Theorem 3


def test_certified_rank_by_hand_and_brute_force():
    m = torch.tensor([[1.0, 0.6, 0.5, 0.0]])
    assert certify.certified_rank(m, 0, rho=0.0, sigma=1.0).tolist() == [1]
    # L = Phi(Phi^-1(0.9) - 1) - 0.1 = 0.5109: two elements are larger, so rank 3
    assert certify.certified_rank(m, 0, rho=0.5, sigma=1.0, margin=0.1).tolist() == [3]
    # nothing certifiable: n
    assert certify.certified_rank(m, 3, rho=0.5, sigma=1.0, margin=0.1).tolist() == [4]
    rng = np.random.default_rng(2)
    maps = np.round(rng.uniform(0, 1, size=(4, 25)), 2)
    got = certify.certified_rank(torch.tensor(maps).reshape(4, 5, 5), None, 0.05, 0.4, 0.03)
    assert got.shape == (4, 5, 5)
    expected = [[_ref_rank(list(h), i, 0.05, 0.4, 0.03) for i in range(25)] for h in maps]
    assert got.reshape(4, 25).tolist() == expected
    idx = torch.tensor([[0, 3], [24, 1], [2, 2], [7, 8]])
    assert certify.certified_rank(torch.tensor(maps), idx, 0.05, 0.4, 0.03).tolist() == [
        [expected[b][i] for i in row] for b, row in enumerate(idx.tolist())
    ]


def test_sparsified_rank_bound_values():
    # rho = 0, no margin: L(1/2) = 1/2, so ceil(tau n) / (1/2)
    assert int(certify.sparsified_rank_bound(1000, 0.05, 0.0, 1.0)) == 100
    # L(1/2) = Phi(Phi^-1(1/2 - c) - 2 rho / sigma) - c
    low = norm.cdf(norm.ppf(0.5 - 0.0309) - 2 * 0.03 / 0.2) - 0.0309
    assert int(certify.sparsified_rank_bound(150528, 0.1, 0.03, 0.2, 0.0309)) == math.ceil(15053 / low)
    # vacuous when L(1/2) <= 0: n
    assert int(certify.sparsified_rank_bound(100, 0.1, 1.0, 0.1, 0.0)) == 100
    # the general form with the sparsified profile is the same bound
    profile = torch.zeros(200)
    profile[:20] = 1
    assert int(certify.rank_bound(profile, 20, 0.02, 0.3, 0.05)) == int(
        certify.sparsified_rank_bound(200, 0.1, 0.02, 0.3, 0.05)
    )


def _per_sample_ranks(model, x, sigma, q, seed, target):
    """Rank (1 = largest |g|, ties to the lowest index) of every element in every noisy sample: q x B x n."""
    (noise,) = _NoiseStream((x,), _gen(seed)).take(q)
    pts = (x.unsqueeze(0) + sigma * noise).reshape((q * x.shape[0],) + tuple(x.shape[1:]))
    g = Saliency(model).attribute(pts, target=torch.as_tensor(target).repeat(q), abs=True)
    g = g.reshape(q * x.shape[0], -1)
    order = torch.sort(g, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, g.shape[1] + 1).expand_as(order))
    return ranks.reshape(q, x.shape[0], -1)


def test_theorem_3_on_sparsified_maps_with_median_ranks():
    torch.manual_seed(3)
    model = TinyGapNet().double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    tau, sigma, q, target = 0.1, 0.3, 301, [0, 1, 2]
    n = 50
    m = math.ceil(tau * n)
    ssg = SparsifiedSmoothGrad(model, tau, sigma, q)
    maps = ssg.attribute(x, target=target, generator=_gen(19))
    ranks = _per_sample_ranks(model, x, sigma, q, 19, target)
    median = ranks.median(dim=0).values  # q odd: the median sample
    selected = median <= m
    # median rank <= ceil(tau n)  <=>  the element is in the top ceil(tau n) in at least half the samples
    assert torch.equal(selected, maps.reshape(3, -1) >= 0.5)
    assert int(selected.sum()) > 0
    for rho in (0.0, 0.01, 0.05):
        c = certify.hoeffding_margin(n, q, 0.95)
        bound = int(certify.sparsified_rank_bound(n, tau, rho, sigma, c))
        ranks_cert = certify.certified_rank(maps, None, rho, sigma, c).reshape(3, -1)
        assert bool((ranks_cert[selected] <= bound).all())


class _RankProfileSmoothGrad(SmoothGradBase):
    """A rank-based base map h_i = f(rank of |g_i|), f(r) = max(0, 1 - (r - 1) / 10)."""

    def map_from_gradients(self, gradients):
        order = torch.sort(gradients.abs(), dim=1, descending=True, stable=True).indices
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(1, gradients.shape[1] + 1).expand_as(order))
        return (1 - (ranks - 1).to(gradients.dtype) / 10).clamp(min=0)


def test_general_theorem_3_for_a_custom_rank_based_map():
    model = TinyGapNet().double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    sigma, q, T = 0.3, 2001, 4
    method = _RankProfileSmoothGrad(model, sigma, q)
    cert = CertifiedTopK(method, k=5, rho=0.01, confidence=0.9)
    maps, ranks_cert = cert.certified_rank(x, None, target=[0, 1, 2], generator=_gen(20))
    profile = (1 - torch.arange(50, dtype=torch.float64) / 10).clamp(min=0)
    c = certify.hoeffding_margin(50, q, 0.9)
    bound = int(certify.rank_bound(profile, T, 0.01, sigma, c))
    median = _per_sample_ranks(model, x, sigma, q, 20, [0, 1, 2]).median(dim=0).values
    selected = median <= T
    assert int(selected.sum()) >= 3 and bound < 50
    assert bool((ranks_cert.reshape(3, -1)[selected] <= bound).all())
    # the smoothed map of a rank profile always sums to the profile's sum
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), torch.full((3,), float(profile.sum()), dtype=torch.float64))


# --------------------------------------------------------------------------- tightness of the floor


class _HalfSpaces(nn.Module):
    """f(x) = x0 + x2 1[x1 > 0] + x3 1[x1 < 0]: the scaled map is (1, 0, 1[x1 > 0], 1[x1 < 0]),
    whose smoothing is (1, 0, Phi(x1 / sigma), Phi(-x1 / sigma)) -- the case where Lemma 1 is tight."""

    def forward(self, x):
        return (x[:, 0] + x[:, 2] * (x[:, 1] > 0).to(x.dtype) + x[:, 3] * (x[:, 1] < 0).to(x.dtype)).unsqueeze(1)


def test_floor_is_tight_and_the_harness_detects_a_too_optimistic_floor():
    sigma, rho, q = 1.0, 0.5, 20000
    method = ScaledSmoothGrad(_HalfSpaces(), sigma, q)
    x = torch.zeros(2, 4, dtype=torch.float64)
    x[:, 1] = torch.tensor([0.6, 0.4])  # certified iff 2 x1 > 2 rho / sigma = 1
    maps = method.attribute(x, generator=_gen(21), internal_batch_size=20000)
    torch.testing.assert_close(maps[:, 2], torch.tensor(norm.cdf([0.6, 0.4]), dtype=torch.float64), atol=0.015, rtol=0)
    cert = certify.topk_certificate(maps, 2, rho, sigma)  # population form: MC error is far from the boundary
    assert cert.tolist() == [2, 1]
    # the worst-case perturbation of norm rho moves x1 down by rho
    x_adv = x.clone()
    x_adv[:, 1] -= rho
    maps_adv = method.attribute(x_adv, generator=_gen(22), internal_batch_size=20000)
    overlap = _topk_overlap(_topk_indices(maps, 2), _topk_indices(maps_adv, 2))
    assert overlap.tolist() == [2, 1]  # the certificate is attained: it cannot be larger
    # a floor with rho / sigma instead of 2 rho / sigma would certify 2 for the second example: unsound
    too_optimistic = certify.topk_certificate(maps, 2, rho / 2, sigma)
    assert too_optimistic.tolist() == [2, 2] and bool((overlap < too_optimistic).any())


# --------------------------------------------------------------------------- CertifiedTopK


def test_certified_topk_agrees_with_the_functions_and_owns_sigma():
    model = TinyGapNet().eval()
    x = torch.randn(3, 2, 5, 5)
    ssg = SparsifiedSmoothGrad(model, 0.1, 0.2, n_samples=512, relative_sigma=True)
    wrapper = CertifiedTopK(ssg, k=0.2, rho=0.02, confidence=0.9)
    maps, cert = wrapper.attribute(x, target=[0, 1, 2], generator=_gen(23))
    assert isinstance(cert, TopKCertificate)
    flat = x.reshape(3, -1)
    sigma_abs = 0.2 * (flat.amax(1) - flat.amin(1))
    torch.testing.assert_close(cert.sigma, sigma_abs)
    assert cert.k == 10 and cert.n_features == 50 and cert.n_samples == 512
    assert cert.margin == pytest.approx(certify.hoeffding_margin(50, 512, 0.9))
    expected = certify.topk_certificate(maps, 10, 0.02, sigma_abs.double(), cert.margin)
    assert torch.equal(cert.overlap, expected) and bool((cert.overlap > 0).any())
    assert torch.equal(cert.top_k, _topk_indices(maps, 10))
    torch.testing.assert_close(cert.fraction, cert.overlap.double() / 10)
    assert cert.to_dict()["overlap"] == cert.overlap.tolist()
    # same map as the wrapped method with the same generator
    torch.testing.assert_close(maps, ssg.attribute(x, target=[0, 1, 2], generator=_gen(23)))
    # n_samples override: the certificate uses the number actually drawn
    _, cert2 = wrapper.attribute(x, target=[0, 1, 2], generator=_gen(23), n_samples=2000)
    assert cert2.n_samples == 2000 and cert2.margin < cert.margin
    # certified ranks from the wrapper are the functional ones on its maps
    maps3, ranks = wrapper.certified_rank(x, torch.tensor([0, 5, 9]), target=[0, 1, 2], generator=_gen(23))
    torch.testing.assert_close(maps3, maps)
    assert torch.equal(ranks, certify.certified_rank(maps, torch.tensor([0, 5, 9]), 0.02, sigma_abs.double(), cert.margin))


def test_warns_when_n_samples_makes_every_certificate_vacuous():
    model = TinyGapNet().eval()
    x = torch.randn(2, 2, 5, 5)
    needed = certify.min_n_samples(50, 0.05, 0.3, 0.95)
    wrapper = CertifiedTopK(SparsifiedSmoothGrad(model, 0.1, 0.3, n_samples=needed - 1), k=5, rho=0.05)
    with pytest.warns(UserWarning, match=f"the smallest useful n_samples is {needed}"):
        _, cert = wrapper.attribute(x, generator=_gen())
    assert bool(cert.vacuous.all()) and cert.overlap.tolist() == [0, 0]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapper.attribute(x, generator=_gen(), n_samples=needed)


@pytest.mark.filterwarnings("ignore:n_samples=8 makes every top-k certificate vacuous")
def test_certified_topk_errors():
    model = TinyGapNet().eval()
    ssg = SparsifiedSmoothGrad(model, 0.1, 0.2, 16)
    x = torch.rand(1, 2, 5, 5)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        CertifiedTopK(ssg, 0, 0.1)
    with pytest.raises(ValueError, match=r"k must be in \[1, 50\] \(the number of map elements\), got 51"):
        CertifiedTopK(ssg, 51, 0.1).attribute(x)
    with pytest.raises(ValueError, match=r"k as a fraction of the map size must be in \(0, 1\], got 1.5"):
        CertifiedTopK(ssg, 1.5, 0.1)
    with pytest.raises(ValueError, match="rho must be a finite number >= 0, got rho=-0.1"):
        CertifiedTopK(ssg, 5, -0.1)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.0"):
        CertifiedTopK(ssg, 5, 0.1, confidence=1.0)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 0"):
        CertifiedTopK(ssg, 5, 0.1, confidence=0)
    with pytest.raises(TypeError, match="smoothed_attribution must be"):
        CertifiedTopK(Saliency(model), 5, 0.1)

    class Unbounded(SmoothGradBase):
        def map_from_gradients(self, gradients):
            return 1e4 * gradients.abs()

    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        CertifiedTopK(Unbounded(model, 0.2, 8), 5, 0.1).attribute(x)
    # functional errors
    m = torch.rand(2, 10)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0, got sigma=0.0"):
        certify.topk_certificate(m, 3, 0.1, 0.0)
    with pytest.raises(ValueError, match="rho must be a finite number >= 0, got rho=-1.0"):
        certify.topk_certificate(m, 3, -1.0, 1.0)
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        certify.topk_certificate(m, 11, 0.1, 1.0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        certify.topk_certificate(m + 1, 3, 0.1, 1.0)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        certify.hoeffding_margin(10, 10, 1.5)
    with pytest.raises(ValueError, match=r"index holds .* outside the map's range \[0, 9\]"):
        certify.certified_rank(m, 10, 0.1, 1.0)
    with pytest.raises(ValueError, match="one value per example"):
        certify.topk_certificate(m, 3, 0.1, torch.tensor([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"z must lie in \[0, 1\]"):
        certify.floor(torch.tensor([1.5]), 0.1, 1.0)


def test_wrapped_attribution_and_model_untouched():
    model = TinyGapNet().train()
    x = torch.rand(2, 2, 5, 5, requires_grad=True)
    before = x.detach().clone()
    with pytest.warns(UserWarning, match="the smallest useful n_samples is 17"):
        CertifiedTopK(ScaledSmoothGrad(model, 0.2, 8), 5, 0.01).attribute(x)
    assert model.training and all(p.grad is None for p in model.parameters()) and x.grad is None
    torch.testing.assert_close(x.detach(), before)


# --------------------------------------------------------------------------- soundness on a trained model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small passes: one thread avoids oversubscribing busy cores (10x faster on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_model(one_thread):
    torch.manual_seed(0)
    data = load_digits(size=14, seed=0)
    x, y = data.train.tensors
    model = Small()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    soft = Small(softplus=10.0).eval()
    soft.load_state_dict(model.state_dict())
    xt, yt = data.test.tensors
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    assert acc > 0.7
    return model, soft, xt[:12]


SIGMA, RHO, TAU, K = 0.25, 0.15, 0.1, 40  # n = 196 elements at 14 x 14; K = 0.2 n


@pytest.fixture(scope="module")
def certified(digits_model):
    model, _, x = digits_model
    with torch.no_grad():
        target = model(x).argmax(1)
    ssg = SparsifiedSmoothGrad(model, TAU, SIGMA, n_samples=2048)
    maps, cert = CertifiedTopK(ssg, K, RHO).attribute(x, target=target, generator=_gen(30), internal_batch_size=4096)
    assert float(cert.fraction.mean()) > 0.3  # the tests are only meaningful for non-trivial certificates
    return ssg, target, cert


@pytest.mark.slow
def test_certificate_is_sound_under_random_l2_perturbations(digits_model, certified):
    _, _, x = digits_model
    ssg, target, cert = certified
    trials = 25
    u = torch.randn((trials,) + tuple(x.shape), generator=_gen(31))
    u = u / u.flatten(2).norm(dim=2)[..., None, None, None]
    x_tilde = (x.unsqueeze(0) + RHO * u).reshape((-1,) + tuple(x.shape[1:]))  # 25 x 12 points on the sphere
    maps_tilde = ssg.attribute(
        x_tilde, target=target.repeat(trials), n_samples=256, generator=_gen(32), internal_batch_size=4096
    )
    overlap = _topk_overlap(cert.top_k.repeat(trials, 1), _topk_indices(maps_tilde, K))
    assert overlap.numel() == 300
    assert bool((overlap >= cert.overlap.repeat(trials)).all()), (overlap - cert.overlap.repeat(trials)).min()


def _l2_pgd_on_topk_mass(relaxed, soft, x, target, top_k, rho, steps, generator):
    """Minimise the relaxed map's mass on the clean top-K within the l2 ball (random start, normalised steps)."""
    delta = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    delta = delta / delta.flatten(1).norm(dim=1)[:, None, None, None] * rho * 0.5
    step = 2.5 * rho / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        maps = relaxed.attribute(x + delta, target=target, create_graph=True, surrogate=soft, generator=generator)
        mass = maps.reshape(x.shape[0], -1).gather(1, top_k).sum()
        (grad,) = torch.autograd.grad(mass, delta)
        with torch.no_grad():
            delta = delta - step * grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None, None]
            norms = delta.flatten(1).norm(dim=1).clamp(min=1e-12)
            delta = delta * (rho / norms).clamp(max=1.0)[:, None, None, None]
    return (x + delta).detach()


@pytest.mark.slow
def test_certificate_is_sound_under_a_pgd_attack_on_topk_mass(digits_model, certified):
    model, soft, x = digits_model
    ssg, target, cert = certified
    relaxed = RelaxedSparsifiedSmoothGrad(model, TAU, 0.01, SIGMA, n_samples=16)
    g = _gen(41)
    restarts = 3
    x_adv = torch.cat(
        [_l2_pgd_on_topk_mass(relaxed, soft, x, target, cert.top_k, RHO, steps=8, generator=g) for _ in range(restarts)]
    )
    assert bool((x_adv - x.repeat(restarts, 1, 1, 1)).flatten(1).norm(dim=1).le(RHO * (1 + 1e-5)).all())
    maps_adv = ssg.attribute(
        x_adv, target=target.repeat(restarts), n_samples=1024, generator=_gen(42), internal_batch_size=4096
    )
    overlap = _topk_overlap(cert.top_k.repeat(restarts, 1), _topk_indices(maps_adv, K))
    assert bool((overlap >= cert.overlap.repeat(restarts)).all()), (overlap - cert.overlap.repeat(restarts)).min()
    # the attack does what it optimises: less relaxed top-K mass than random points on the sphere
    u = torch.randn(x_adv.shape, generator=g)
    x_rand = x.repeat(restarts, 1, 1, 1) + RHO * u / u.flatten(1).norm(dim=1)[:, None, None, None]
    judge = RelaxedSparsifiedSmoothGrad(model, TAU, 0.01, SIGMA, n_samples=256)

    def mass(points):
        m = judge.attribute(points, target=target.repeat(restarts), generator=_gen(43), internal_batch_size=4096)
        return m.reshape(points.shape[0], -1).gather(1, cert.top_k.repeat(restarts, 1)).sum(1)

    assert float(mass(x_adv).mean()) < float(mass(x_rand).mean()) - 0.1


# --------------------------------------------------------------------------- docstring examples


@pytest.mark.parametrize(
    "module_name",
    [
        "captum_robust.attr._core.smoothgrad",
        "captum_robust.attr._core.certificates",
        "captum_robust.attr._core.certified_topk",
        "captum_robust.attr.certify",
    ],
)
def test_docstring_examples_run(module_name, one_thread):
    import doctest
    import importlib

    module = importlib.import_module(module_name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- certified_radius


def test_certified_radius_is_the_boundary_of_topk_certificate():
    from captum_robust.attr.certify import certified_radius, topk_certificate

    g = torch.Generator().manual_seed(3)
    maps = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64) ** 2
    sigma = torch.tensor([0.1, 0.25, 0.5, 1.0, 2.0], dtype=torch.float64)
    for k, m in ((4, 1), (4, 4), (0.25, 3)):
        r = certified_radius(maps, k, m, sigma, margin=0.02)
        assert r.dtype == torch.float64 and r.shape == (5,)
        for b in range(5):
            rb = float(r[b])
            if rb == 0.0:
                continue
            inside = topk_certificate(maps[b:b + 1], k, rho=rb * (1 - 1e-6), sigma=float(sigma[b]), margin=0.02)
            outside = topk_certificate(maps[b:b + 1], k, rho=rb * (1 + 1e-6), sigma=float(sigma[b]), margin=0.02)
            assert int(inside) >= m > int(outside)


def test_certified_radius_edge_cases_and_errors():
    from captum_robust.attr.certify import certified_radius

    maps = torch.tensor([[0.9, 0.8, 0.3, 0.1]])
    # 2K - m + 1 = 4 <= n = 4: finite; with K = 3, m = 1 the competitor index 6 > n: every radius
    assert float(certified_radius(maps, 3, 1, 0.5)) == float("inf")
    # the top two and the next two are equal: nothing certified, not even at radius 0
    assert float(certified_radius(torch.tensor([[0.5, 0.5, 0.5, 0.5]]), 2, 1, 0.5)) == 0.0
    # sigma scales the radius linearly
    r1, r2 = certified_radius(maps, 2, 2, 0.5), certified_radius(maps, 2, 2, 1.0)
    assert float(r2) == pytest.approx(2 * float(r1))
    with pytest.raises(ValueError, match="min_overlap"):
        certified_radius(maps, 2, 3, 0.5)
    with pytest.raises(ValueError, match="min_overlap"):
        certified_radius(maps, 2, 0, 0.5)
    with pytest.raises(TypeError, match="min_overlap"):
        certified_radius(maps, 2, True, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        certified_radius(maps, 2, 1, 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        certified_radius(maps * 2, 2, 1, 0.5)
