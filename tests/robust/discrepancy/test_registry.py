"""The one registry of measure names: every name gives the function it says, with hand-checked values."""

import pytest
import torch

from captum_robust.robust.discrepancy import (
    MEASURES,
    center_dislocation,
    kendall_tau,
    measure_function,
    spearman,
    topk_intersection,
)


def test_names():
    assert MEASURES == ("topk", "kendall", "spearman", "center_dislocation", "l1", "l2")


def test_each_name_computes_its_measure():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 1, 6, 6, generator=g), torch.rand(5, 1, 6, 6, generator=g)
    torch.testing.assert_close(measure_function("topk", k=7)(a, b), topk_intersection(a, b, 7))
    torch.testing.assert_close(measure_function("kendall")(a, b), kendall_tau(a, b))
    torch.testing.assert_close(measure_function("spearman")(a, b), spearman(a, b))
    torch.testing.assert_close(measure_function("center_dislocation")(a, b), center_dislocation(a, b))
    diff = (a - b).reshape(5, -1)
    torch.testing.assert_close(measure_function("l1")(a, b), diff.abs().sum(1))
    torch.testing.assert_close(measure_function("l2")(a, b), diff.pow(2).sum(1).sqrt())


def test_hand_values():
    a = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    b = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert measure_function("topk", k=2)(a, b).tolist() == [0.0]
    assert measure_function("topk", k=3)(a, b).tolist() == pytest.approx([2 / 3])  # (2k - n) / k
    assert measure_function("kendall")(a, b).tolist() == [-1.0]
    assert measure_function("l2")(a, b).tolist() == pytest.approx([20**0.5])


def test_errors():
    with pytest.raises(ValueError, match="topk.*needs k"):
        measure_function("topk")
    with pytest.raises(ValueError, match=r"unknown measure 'kendal'.*topk, kendall, spearman, center_dislocation, l1, l2"):
        measure_function("kendal")
