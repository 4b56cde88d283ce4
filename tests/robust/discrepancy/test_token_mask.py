"""Masked rank measures (``mask=``) against a brute-force computation on the unpadded entries:
scipy for Kendall's tau and Spearman's rho, a sorted list for the top-k intersection."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from captum_robust.robust.discrepancy import kendall_tau, measure_function, spearman, topk_intersection, topk_mask
from tests.helpers.text_models import brute_topk_intersection


def _batch(seed, b=7, n=9, levels=None):
    g = torch.Generator().manual_seed(seed)
    if levels is None:
        a, c = torch.randn(b, n, generator=g, dtype=torch.float64), torch.randn(b, n, generator=g, dtype=torch.float64)
    else:  # few distinct values: many ties
        a = torch.randint(0, levels, (b, n), generator=g).to(torch.float64)
        c = torch.randint(0, levels, (b, n), generator=g).to(torch.float64)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    lengths[0], lengths[1] = n, 2
    mask = torch.arange(n)[None, :] < lengths[:, None]
    # padding in the middle too: shuffle one row's mask
    mask[2] = mask[2][torch.randperm(n, generator=g)]
    # garbage at masked-out entries must not matter
    a = a.masked_fill(~mask, float("nan"))
    c = c.masked_fill(~mask, float("-inf"))
    return a, c, mask


def _scipy(fn, a, c, mask, **kw):
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(a.shape[0]):
            m = mask[i].numpy()
            out.append(fn(a[i].numpy()[m], c[i].numpy()[m], **kw).statistic if m.sum() > 1 else np.nan)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("k", [1, 3, 9])
def test_topk_intersection_masked_equals_brute_force(levels, k):
    for seed in range(4):
        a, c, mask = _batch(seed, levels=levels)
        ours = topk_intersection(a, c, k, mask=mask)
        torch.testing.assert_close(ours, brute_topk_intersection(a, c, mask, k, torch.float64), atol=1e-12, rtol=0)
        # the mask selects exactly min(k, n_b) real entries with the tie rule of the brute force
        sel = topk_mask(a, k, mask=mask)
        assert not bool((sel & ~mask).any())
        torch.testing.assert_close(sel.sum(1), torch.clamp(mask.sum(1), max=k))
        # a 0/1 integer mask (a Hugging Face attention_mask) is the same
        torch.testing.assert_close(topk_intersection(a, c, k, mask=mask.long()), ours)


def test_topk_masked_all_true_equals_unmasked():
    g = torch.Generator().manual_seed(3)
    a, c = torch.randint(0, 4, (5, 12), generator=g).float(), torch.randint(0, 4, (5, 12), generator=g).float()
    full = torch.ones(5, 12, dtype=torch.bool)
    torch.testing.assert_close(topk_intersection(a, c, 4, mask=full), topk_intersection(a, c, 4))
    assert torch.equal(topk_mask(a, 4, mask=full), topk_mask(a, 4))


@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("variant", ["b", "c"])
def test_kendall_masked_equals_scipy(levels, variant):
    for seed in range(4):
        a, c, mask = _batch(seed, levels=levels)
        ours = kendall_tau(a, c, variant=variant, mask=mask)
        ref = _scipy(stats.kendalltau, a, c, mask, variant=variant)
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0, equal_nan=True)
    assert bool(torch.isnan(kendall_tau(a[:1, :1], c[:1, :1], mask=mask[:1, :1] | True)).all())


@pytest.mark.parametrize("levels", [None, 3])
def test_spearman_masked_equals_scipy(levels):
    for seed in range(4):
        a, c, mask = _batch(seed, levels=levels)
        ours = spearman(a, c, mask=mask)
        torch.testing.assert_close(ours, _scipy(stats.spearmanr, a, c, mask), atol=1e-12, rtol=0, equal_nan=True)


def test_masked_measures_float32_and_registry():
    a, c, mask = _batch(5)
    a32, c32 = a.float(), c.float()
    assert kendall_tau(a32, c32, mask=mask).dtype == torch.float32
    torch.testing.assert_close(kendall_tau(a32, c32, mask=mask).double(), kendall_tau(a, c, mask=mask), atol=1e-6, rtol=0,
                               equal_nan=True)
    # the registry's functions take mask= too: compared with the independent references
    refs = {"topk": brute_topk_intersection(a, c, mask, 2, torch.float64),
            "kendall": _scipy(stats.kendalltau, a, c, mask, variant="b"),
            "spearman": _scipy(stats.spearmanr, a, c, mask)}
    for name, ref in refs.items():
        torch.testing.assert_close(measure_function(name, k=2)(a, c, mask=mask), ref, atol=1e-12, rtol=0,
                                   equal_nan=True)


def test_bad_masks():
    a, c, mask = _batch(1)
    with pytest.raises(ValueError, match="shape"):
        kendall_tau(a, c, mask=mask[:, :-1])
    with pytest.raises(TypeError, match="bool or 0/1"):
        topk_intersection(a, c, 2, mask=mask.float())
    with pytest.raises(ValueError, match="only 0 and 1"):
        spearman(a, c, mask=mask.long() * 2)
    empty = mask.clone()
    empty[3] = False
    with pytest.raises(ValueError, match="example 3"):
        topk_intersection(a, c, 2, mask=empty)
    with pytest.raises(ValueError, match="NaN or infinite"):  # non-finite values at counted entries are refused
        kendall_tau(a, c, mask=torch.ones_like(mask))
    with pytest.raises(ValueError, match=r"k must be in \[1, 9\]"):
        topk_intersection(a, c, 10, mask=mask)
