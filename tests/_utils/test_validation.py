import pytest
import torch
from torch import nn

from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import check_finite, format_inputs, resolve_target


def test_check_finite_overflowing_sum_is_not_an_error():
    big = torch.full((4,), 3e38)  # finite float32, but the sum overflows to inf
    assert not torch.isfinite(big.sum())
    check_finite(big, "x")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_names_the_argument_and_counts(bad):
    x = torch.zeros(10)
    x[[2, 7]] = bad
    with pytest.raises(ValueError, match=r"inputs\[1\] contains 2 NaN or infinite value\(s\) \(of 10\)"):
        format_inputs((torch.zeros(10), x))


def test_format_inputs_batch_mismatch_and_types():
    with pytest.raises(ValueError, match=r"inputs\[1\] has batch size 3 but inputs\[0\] has 2"):
        format_inputs((torch.zeros(2, 1), torch.zeros(3, 1)))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        format_inputs([torch.zeros(2)])
    was_tuple, formatted = format_inputs((torch.zeros(2, 3),))
    assert was_tuple and len(formatted) == 1


def test_resolve_target_forms():
    dev = torch.device("cpu")
    assert resolve_target(2, 3, 5, dev).tolist() == [2, 2, 2]
    assert resolve_target([0, 4, 1], 3, 5, dev).tolist() == [0, 4, 1]
    assert resolve_target(torch.tensor(3), 2, 5, dev).tolist() == [3, 3]
    with pytest.raises(TypeError, match="bool"):
        resolve_target(True, 3, 5, dev)
    with pytest.raises(ValueError, match="0- or 1-dimensional"):
        resolve_target(torch.zeros(3, 1, dtype=torch.long), 3, 5, dev)


def test_preserved_model_state_restores_after_exception():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model.train()
    model[0].weight.grad = torch.ones(2, 2)
    grad = model[0].weight.grad
    with pytest.raises(RuntimeError):
        with preserved_model_state(model, train=False):
            assert not model.training and not model[1].training
            model[0].weight.requires_grad_(False)
            model[0].weight.grad = None
            raise RuntimeError("boom")
    assert model.training and model[1].training
    assert model[0].weight.grad is grad and model[0].weight.requires_grad
