"""The measures run on the maps' device and agree with the CPU (skipped without a GPU)."""

import pytest
import torch

from captum_robust.robust.discrepancy import (
    kendall_tau,
    lp_discrepancy,
    prepare_maps,
    spearman,
    target_free_discrepancy,
    topk_intersection,
)


@pytest.mark.cuda
def test_rank_measures_on_cuda_equal_cpu():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 3, 32, 32, generator=g)
    b = torch.where(torch.rand(16, 3, 32, 32, generator=g) < 0.3, 0.0, a + torch.randn(16, 3, 32, 32, generator=g))
    for dtype in (torch.float32, torch.float64):
        ca, cb = a.to("cuda", dtype), b.to("cuda", dtype)
        for fn in (kendall_tau, spearman, lambda u, v: topk_intersection(u, v, 100)):
            got = fn(ca, cb)
            assert got.device.type == "cuda"
            torch.testing.assert_close(got.cpu(), fn(a.to(dtype), b.to(dtype)), rtol=0, atol=1e-6)


@pytest.mark.cuda
def test_discrepancies_on_cuda_equal_cpu():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 10, 7, 7, generator=g), torch.randn(4, 10, 7, 7, generator=g)
    logits = torch.randn(4, 10, generator=g)
    y = torch.tensor([0, 3, 9, 1])
    torch.testing.assert_close(lp_discrepancy(a.cuda(), b.cuda(), classes=y.cuda()).cpu(), lp_discrepancy(a, b, classes=y))
    torch.testing.assert_close(
        target_free_discrepancy(a.cuda(), b.cuda(), logits.cuda(), y).cpu(), target_free_discrepancy(a, b, logits, y)
    )
    s = prepare_maps(a.cuda(), "sum", absolute=True, normalize="sum", reference=b.cuda(), k=5)
    torch.testing.assert_close(s.cpu(), prepare_maps(a, "sum", absolute=True, normalize="sum", reference=b, k=5))
