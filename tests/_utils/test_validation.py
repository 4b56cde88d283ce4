import math

import pytest
import torch
from torch import nn

from captum_robust._utils import validation as V

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


# ---------------------------------------------------------------------------- typed checks

_NAN, _INF = float("nan"), float("inf")


def test_invalid_parameter_error_is_both_value_and_type_error():
    assert issubclass(V.InvalidParameterError, ValueError) and issubclass(V.InvalidParameterError, TypeError)
    for catch in (ValueError, TypeError):
        with pytest.raises(catch):
            V.check_positive("1", "sigma")


@pytest.mark.parametrize(
    "interval, text",
    [
        (V.Interval(0, 1, closed="both"), "in [0, 1]"),
        (V.Interval(0, 1, closed="left"), "in [0, 1)"),
        (V.Interval(0, 1, closed="right"), "in (0, 1]"),
        (V.Interval(0, 1, closed="neither"), "in (0, 1)"),
        (V.Interval(0.5, 2.25), "in [0.5, 2.25]"),
        (V.Interval(1, None), ">= 1"),
        (V.Interval(0, None, closed="neither"), "> 0"),
        (V.Interval(None, 3), "<= 3"),
        (V.Interval(None, 3, closed="left"), "< 3"),
        (V.Interval(), ""),
        (V.POSITIVE, "> 0"),
        (V.NONNEGATIVE, ">= 0"),
        (V.FRACTION, "in (0, 1]"),
        (V.OPEN_UNIT, "in (0, 1)"),
    ],
)
def test_interval_describe(interval, text):
    assert interval.describe() == text


def test_interval_contains_ends_and_non_finite():
    both, left, right, neither = (V.Interval(0, 1, closed=c) for c in ("both", "left", "right", "neither"))
    assert 0 in both and 1 in both and 0.5 in both
    assert 0 in left and 1 not in left
    assert 0 not in right and 1 in right
    assert 0 not in neither and 1 not in neither and 0.5 in neither
    assert -1e-12 not in both and 1 + 1e-12 not in both
    for iv in (both, V.Interval(), V.Interval(None, 0), V.Interval(0, None)):
        assert _NAN not in iv and _INF not in iv and -_INF not in iv
    assert 1e300 in V.Interval() and -1e300 in V.Interval(None, 0)
    assert 0 not in V.POSITIVE and 0 in V.NONNEGATIVE and -0.0 in V.NONNEGATIVE
    assert 1 in V.FRACTION and 1 not in V.OPEN_UNIT
    assert torch.tensor(0.5) in V.FRACTION  # anything float() accepts
    with pytest.raises(ValueError, match="closed must be"):
        V.Interval(0, 1, closed="open")
    integers = V.Interval(0, 3, integer=True)
    assert 2 in integers and 2.0 in integers and 0.5 not in integers and 4 not in integers


def test_check_number_without_bounds_says_finite_once():
    with pytest.raises(ValueError, match=r"^x must be a finite number, got x=nan$"):
        V.check_number(float("nan"), "x")


def test_check_number_messages_and_types():
    assert V.check_number(2, "sigma", V.POSITIVE) == 2.0 and isinstance(V.check_number(2, "sigma", V.POSITIVE), float)
    assert V.check_number(None, "sigma", V.POSITIVE, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^sigma must be a finite number > 0, got sigma=0$") as err:
        V.check_number(0, "sigma", V.POSITIVE)
    assert type(err.value) is ValueError  # out of range: a plain ValueError, not a type error
    with pytest.raises(ValueError, match=r"sigma must be a finite number > 0 or None, got sigma=-1\.5"):
        V.check_number(-1.5, "sigma", V.POSITIVE, allow_none=True)
    for bad in (_NAN, _INF, -_INF):
        with pytest.raises(ValueError, match=r"sigma must be a finite number > 0, got sigma=(nan|inf|-inf)"):
            V.check_number(bad, "sigma", V.POSITIVE)
    with pytest.raises(ValueError, match=r"x must be a finite number, got x=inf"):
        V.check_number(_INF, "x")  # the default interval: every finite number
    for bad in ("1", None, True, [1.0], torch.tensor(1.0)):
        with pytest.raises(V.InvalidParameterError, match=r"^sigma must be a finite number > 0, got "):
            V.check_number(bad, "sigma", V.POSITIVE)
    with pytest.raises(V.InvalidParameterError, match="got str '1'"):
        V.check_number("1", "sigma", V.POSITIVE)


def test_check_positive_and_nonnegative():
    assert V.check_positive(1e-9, "eps") == 1e-9 and V.check_nonnegative(0, "eps") == 0.0
    assert V.check_positive(None, "eps", allow_none=True) is None
    assert V.check_nonnegative(None, "eps", allow_none=True) is None
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0, got eps=0"):
        V.check_positive(0, "eps")
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got eps=-0\.1"):
        V.check_nonnegative(-0.1, "eps")
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got eps=nan"):
        V.check_nonnegative(_NAN, "eps")
    with pytest.raises(V.InvalidParameterError):
        V.check_positive(None, "eps")


def test_check_fraction_messages_and_types():
    assert V.check_fraction(1, "sparsity") == 1.0 and V.check_fraction(0.25, "sparsity") == 0.25
    with pytest.raises(ValueError, match=r"^sparsity must be in \(0, 1\], got 0$"):
        V.check_fraction(0, "sparsity")
    with pytest.raises(ValueError, match=r"^sparsity must be in \(0, 1\], got 1\.5$"):
        V.check_fraction(1.5, "sparsity")
    for bad in (_NAN, _INF):
        with pytest.raises(ValueError, match=r"sparsity must be in \(0, 1\], got (nan|inf)"):
            V.check_fraction(bad, "sparsity")
    with pytest.raises(ValueError, match=r"^confidence must be in \(0, 1\), got 1$"):
        V.check_fraction(1, "confidence", V.OPEN_UNIT)
    with pytest.raises(V.InvalidParameterError, match=r"^sparsity must be a float in \(0, 1\], got str '0\.5'$"):
        V.check_fraction("0.5", "sparsity")
    with pytest.raises(V.InvalidParameterError, match="got bool True"):
        V.check_fraction(True, "sparsity")


def test_check_int_messages_and_types():
    assert V.check_int(3, "n_steps", 1) == 3 and V.check_int(-5, "offset") == -5
    assert V.check_int(None, "n_steps", 1, allow_none=True) is None
    import numpy as np

    assert V.check_int(np.int64(4), "n_steps", 1) == 4 and type(V.check_int(np.int64(4), "n_steps", 1)) is int
    with pytest.raises(ValueError, match=r"^n_steps must be an int >= 1, got n_steps=0$"):
        V.check_int(0, "n_steps", 1)
    with pytest.raises(ValueError, match=r"^k must be an int in \[1, 64\], got k=65$"):
        V.check_int(65, "k", 1, 64)
    with pytest.raises(ValueError, match=r"^k must be an int <= 64 or None, got k=65$"):
        V.check_int(65, "k", high=64, allow_none=True)
    for bad in (2.0, True, "3", None, torch.tensor(3)):
        with pytest.raises(V.InvalidParameterError, match=r"^n_steps must be an int >= 1, got "):
            V.check_int(bad, "n_steps", 1)
    with pytest.raises(V.InvalidParameterError, match="got float 2.0"):
        V.check_int(2.0, "n_steps", 1)


def test_check_bool_and_choice():
    assert V.check_bool(False, "abs") is False
    for bad in (1, 0, "True", None):
        with pytest.raises(V.InvalidParameterError, match=r"^abs must be a bool, got "):
            V.check_bool(bad, "abs")
    with pytest.raises(TypeError, match="abs must be a bool, got int 1"):
        V.check_bool(1, "abs")
    assert V.check_choice("l2", "norm", ("linf", "l2")) == "l2"
    with pytest.raises(ValueError, match=r"^norm must be one of \('linf', 'l2'\), got 'l1'$"):
        V.check_choice("l1", "norm", ["linf", "l2"])
    with pytest.raises(ValueError, match=r"p must be one of \(1, 2\), got 1\.0"):
        V.check_choice(1.0, "p", (1, 2))  # the type must match too
    with pytest.raises(ValueError, match=r"p must be one of \(1, 2\), got True"):
        V.check_choice(True, "p", (1, 2))


def test_check_internal_batch_size():
    assert V.check_internal_batch_size(None) is None and V.check_internal_batch_size("auto") == "auto"
    assert V.check_internal_batch_size(7) == 7
    with pytest.raises(ValueError, match=r"^internal_batch_size must be None, 'auto' or an int >= 1, got 0$"):
        V.check_internal_batch_size(0)
    for bad in ("AUTO", 2.0, True):
        with pytest.raises(V.InvalidParameterError, match=r"^chunk must be None, 'auto' or an int >= 1, got "):
            V.check_internal_batch_size(bad, "chunk")


def test_check_generator():
    g = torch.Generator()
    assert V.check_generator(None, torch.device("cpu")) is None
    assert V.check_generator(g, torch.device("cpu")) is g
    with pytest.raises(V.InvalidParameterError, match=r"^generator must be a torch.Generator or None, got int$"):
        V.check_generator(0, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"generator is on device cpu but the inputs are on cuda:0; "
                                         r"create it with torch.Generator\(device='cuda:0'\)"):
        V.check_generator(g, torch.device("cuda:0"))  # no GPU needed: only the device types are compared


def test_check_float_inputs():
    V.check_float_inputs((torch.zeros(2), torch.zeros(2, dtype=torch.float64)), True)
    with pytest.raises(TypeError, match=r"^inputs must be a floating-point tensor \(gradients\), got torch.int64$"):
        V.check_float_inputs((torch.zeros(2, dtype=torch.long),), False)
    with pytest.raises(TypeError, match=r"^inputs\[1\] must be a floating-point tensor \(noise\), got torch.bool$"):
        V.check_float_inputs((torch.zeros(2), torch.zeros(2, dtype=torch.bool)), True, "noise")


def test_checks_return_normalised_values():
    assert math.isclose(V.check_positive(3, "x"), 3.0)
    assert type(V.check_fraction(1, "x")) is float and type(V.check_nonnegative(0, "x")) is float


def test_check_kwargs_copies_a_mapping_and_refuses_reserved_names():
    from types import MappingProxyType

    given = {"n_steps": 8}
    out = V.check_kwargs(given, "attribution_kwargs", ("target",), "the attack passes target itself")
    assert out == given and out is not given
    assert V.check_kwargs(None, "attribution_kwargs", ("target",), "") == {}
    assert V.check_kwargs(MappingProxyType({"a": 1}), "kw", (), "") == {"a": 1}
    with pytest.raises(ValueError, match=r"kw must not set \['target'\]: the caller passes it"):
        V.check_kwargs({"target": 1, "n_steps": 2}, "kw", ("target", "inputs"), "the caller passes it")
    with pytest.raises(TypeError, match="kw must be a dict of keyword arguments or None, got list"):
        V.check_kwargs([("a", 1)], "kw", (), "")


def test_check_nonempty_batch_names_the_empty_part():
    assert V.check_nonempty_batch((torch.zeros(3, 2),)) == 3
    with pytest.raises(ValueError, match="inputs must hold at least one example, got a batch of 0"):
        V.check_nonempty_batch((torch.zeros(0, 2),))
    with pytest.raises(ValueError, match=r"inputs\[1\] must hold at least one example"):
        V.check_nonempty_batch((torch.zeros(2, 2), torch.zeros(0, 2)))
    with pytest.raises(ValueError, match="must have a batch dimension"):
        V.check_nonempty_batch((torch.tensor(1.0),))


def test_check_finite_refuses_meta_tensors():
    with pytest.raises(ValueError, match="inputs are on the meta device"):
        V.check_finite(torch.zeros(2, 3, device="meta"), "inputs")


def test_check_model_dtype_names_both_dtypes_and_the_fix():
    model = nn.Linear(3, 2)
    V.check_model_dtype(model, (torch.zeros(1, 3),))
    V.check_model_dtype(model, (torch.zeros(1, 3, dtype=torch.long),))  # integer inputs: another check's job
    V.check_model_dtype(lambda x: x, (torch.zeros(1, 3, dtype=torch.float64),))  # not a module: not checked
    with pytest.raises(TypeError, match=r"inputs are torch.float64 but the model's parameters are torch.float32.*inputs.float\(\)"):
        V.check_model_dtype(model, (torch.zeros(1, 3, dtype=torch.float64),))
    with pytest.raises(TypeError, match=r"inputs\[1\] are torch.bfloat16"):
        V.check_model_dtype(model, (torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bfloat16)))


def test_check_finite_outputs_counts_the_bad_examples():
    out = torch.zeros(4, 3)
    V.check_finite_outputs(out)
    out[2, 1] = float("nan")
    out[3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or inf for 2 of 4 examples \(first: example 2\)"):
        V.check_finite_outputs(out)


def test_check_forward_args_batch():
    V.check_forward_args_batch((torch.zeros(4, 2), torch.zeros(1, 2), torch.tensor(3.0), "x"), 4)
    with pytest.raises(ValueError, match=r"additional_forward_args\[1\] has 3 rows but inputs have 4 examples"):
        V.check_forward_args_batch((torch.zeros(4), torch.zeros(3, 2)), 4)
