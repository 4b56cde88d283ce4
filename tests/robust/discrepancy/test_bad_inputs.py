"""The library's one empty-batch rule and the meta-device refusal, for every map measure."""

import pytest
import torch

from captum_robust.robust import discrepancy as D

PAIRS = ["kendall_tau", "spearman", "center_dislocation", "lp_discrepancy", "normalized_discrepancy_score"]
SINGLE = ["topk_mask", "center_of_mass"]


def _call(name, *maps):
    fn = getattr(D, name)
    return fn(*maps, 2) if name == "topk_mask" else fn(*maps)


@pytest.mark.parametrize("name", PAIRS + ["topk_intersection"])
def test_empty_batch_is_one_clear_error(name):
    e = torch.zeros(0, 1, 4, 4)
    with pytest.raises(ValueError, match="must hold at least one example, got a batch of 0"):
        if name == "topk_intersection":
            D.topk_intersection(e, e, k=2)
        else:
            _call(name, e, e)


@pytest.mark.parametrize("name", SINGLE)
def test_empty_batch_single_map_functions(name):
    with pytest.raises(ValueError, match="maps must hold at least one example"):
        _call(name, torch.zeros(0, 1, 4, 4))


@pytest.mark.parametrize("name", PAIRS)
def test_meta_maps_are_refused_by_name(name):
    m = torch.zeros(2, 1, 4, 4, device="meta")
    with pytest.raises(ValueError, match="are on the meta device"):
        _call(name, m, m)


def test_a_batch_of_one_still_works():
    a, b = torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)
    assert D.kendall_tau(a, b).shape == (1,)
    assert D.center_dislocation(a, b).shape == (1,)
