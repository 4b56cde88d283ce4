"""prepare_maps: hand values for each step, the papers' conventions, gradients, errors."""

import pytest
import torch

from captum_robust.robust.discrepancy import kendall_tau, prepare_maps, topk_intersection


def _maps():
    # B = 2, C = 2, H = 1, W = 3
    return torch.tensor(
        [
            [[[1.0, -2.0, 3.0]], [[-1.0, 0.0, 1.0]]],
            [[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]],
        ]
    )


def test_each_step_by_hand():
    m = _maps()
    torch.testing.assert_close(prepare_maps(m, "sum")[0], torch.tensor([[0.0, -2.0, 4.0]]))
    torch.testing.assert_close(prepare_maps(m, "sum", absolute=True)[0], torch.tensor([[2.0, 2.0, 4.0]]))
    torch.testing.assert_close(prepare_maps(m, "max")[0], torch.tensor([[1.0, 0.0, 3.0]]))
    torch.testing.assert_close(prepare_maps(m, "mean")[0], torch.tensor([[0.0, -1.0, 2.0]]))
    # Chen / Ghorbani: |.| summed over channels, scaled to sum H * W = 3
    chen = prepare_maps(m, "sum", absolute=True, normalize="sum")
    torch.testing.assert_close(chen[0], torch.tensor([[0.75, 0.75, 1.5]]))
    torch.testing.assert_close(chen[1], torch.zeros(1, 3))  # an all-zero map stays zero
    torch.testing.assert_close(prepare_maps(m, "sum", normalize="max")[0], torch.tensor([[0.0, -0.5, 1.0]]))
    torch.testing.assert_close(prepare_maps(m, "sum", normalize="minmax")[0], torch.tensor([[1 / 3, 0.0, 1.0]]))
    torch.testing.assert_close(prepare_maps(m, "sum", normalize="minmax")[1], torch.zeros(1, 3))
    # channel_dim counts from the end too; without reduction nothing changes shape
    torch.testing.assert_close(prepare_maps(m.movedim(1, -1), "sum", channel_dim=-1), prepare_maps(m, "sum"))
    assert torch.equal(prepare_maps(m), m)


def test_topk_restriction_gathers_the_reference_top_positions():
    clean = torch.tensor([[[[5.0, 1.0, 4.0, 0.0]]]])
    attacked = torch.tensor([[[[0.5, 9.0, 2.0, 7.0]]]])
    out = prepare_maps(attacked, "sum", reference=clean, k=2)
    torch.testing.assert_close(out, torch.tensor([[0.5, 2.0]]))  # positions 0 and 2, in flat order
    full = prepare_maps(attacked, "sum", reference=clean, k=2, keep_shape=True)
    torch.testing.assert_close(full, torch.tensor([[[0.5, 0.0, 2.0, 0.0]]]))
    # the reference is prepared with the same steps: |.| makes -9 the largest
    ref = torch.tensor([[[[1.0, -9.0, 2.0, 0.0]]]])
    torch.testing.assert_close(prepare_maps(attacked, "sum", absolute=True, reference=ref, k=1), torch.tensor([[9.0]]))


def test_prepared_maps_feed_the_rank_measures():
    g = torch.Generator().manual_seed(0)
    ig = torch.randn(4, 3, 8, 8, generator=g)
    s = prepare_maps(ig, "sum", absolute=True, normalize="sum")
    assert s.shape == (4, 8, 8)
    torch.testing.assert_close(s.sum(dim=(1, 2)), torch.full((4,), 64.0))
    # scaling does not change ranks
    torch.testing.assert_close(kendall_tau(s, ig.abs().sum(1)), torch.ones(4))
    assert bool((topk_intersection(s, ig.abs().sum(1), 10) == 1).all())


def test_gradients_and_no_side_effects():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)
    before = m.detach().clone()
    for kw in [
        dict(reduce_channels="sum", absolute=True, normalize="sum"),
        dict(reduce_channels="mean", normalize="max"),
        dict(reduce_channels="sum", normalize="minmax"),
        dict(reduce_channels="sum", absolute=True, normalize="sum", reference=ref, k=3),
        dict(reduce_channels="max", reference=ref, k=2, keep_shape=True),
    ]:
        assert torch.autograd.gradcheck(lambda t: prepare_maps(t, **kw), (m,))
    assert torch.equal(m.detach(), before)


def test_errors():
    m = _maps()
    with pytest.raises(ValueError, match="reduce_channels"):
        prepare_maps(m, "median")
    with pytest.raises(ValueError, match="normalize"):
        prepare_maps(m, normalize="l2")
    with pytest.raises(ValueError, match="channel_dim"):
        prepare_maps(m, "sum", channel_dim=0)
    with pytest.raises(ValueError, match="channel_dim"):
        prepare_maps(m, "sum", channel_dim=4)
    with pytest.raises(ValueError, match="negative values"):
        prepare_maps(m, "sum", normalize="sum")
    with pytest.raises(ValueError, match="needs k"):
        prepare_maps(m, "sum", reference=m)
    with pytest.raises(ValueError, match="reference="):
        prepare_maps(m, "sum", k=2)
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        prepare_maps(m, "sum", reference=m, k=4)
    with pytest.raises(ValueError, match="same shape"):
        prepare_maps(m, "sum", reference=m[:1], k=1)
    bad = m.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="maps contains 1 NaN or infinite"):
        prepare_maps(bad, "sum")
    with pytest.raises(TypeError, match="floating-point"):
        prepare_maps(torch.ones(2, 3, dtype=torch.long))
