"""Argument formatting and validation shared by attributions, attacks and regularizers.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument,
the value it got and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]
TargetType = Union[None, int, Sequence[int], Tensor]


def format_inputs(inputs: TensorOrTuple, name: str = "inputs") -> Tuple[bool, Tuple[Tensor, ...]]:
    """Return ``(was_tuple, inputs_as_tuple)`` after checking types and finiteness."""
    is_tuple = isinstance(inputs, tuple)
    formatted = inputs if is_tuple else (inputs,)
    if len(formatted) == 0:
        raise ValueError(f"{name} must be a tensor or a non-empty tuple of tensors, got an empty tuple")
    for i, t in enumerate(formatted):
        label = f"{name}[{i}]" if is_tuple else name
        if not isinstance(t, Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise ValueError(f"{label} must have a batch dimension, got a 0-dim tensor")
        if t.is_floating_point() or t.is_complex():
            check_finite(t, label)
    batch = formatted[0].shape[0]
    for i, t in enumerate(formatted[1:], start=1):
        if t.shape[0] != batch:
            raise ValueError(
                f"{name}[{i}] has batch size {t.shape[0]} but {name}[0] has {batch}; "
                "all inputs must share the first dimension"
            )
    return is_tuple, formatted


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or +-inf, or is on the ``meta`` device (no values to check)."""
    if tensor.device.type == "meta":
        raise ValueError(f"{name} are on the meta device (shapes without data): move them to a real device first")
    with torch.no_grad():
        if bool(torch.isfinite(tensor.sum())):  # one pass; a NaN or inf anywhere makes the sum non-finite
            return
        finite = torch.isfinite(tensor)
    if bool(finite.all()):  # the sum overflowed, every element is finite
        return
    n_bad = int((~finite).sum())
    raise ValueError(
        f"{name} contains {n_bad} NaN or infinite value(s) (of {tensor.numel()}); "
        "attributions of non-finite inputs are meaningless"
    )


def check_nonempty_batch(inputs: Sequence[Tensor], name: str = "inputs") -> int:
    """The batch size of ``inputs`` (a tuple of tensors), which must be at least 1 and the same for every tensor."""
    for i, x in enumerate(inputs):
        if x.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension (B x ...), got a 0-dimensional tensor")
        if x.shape[0] == 0:
            where = name if len(inputs) == 1 else f"{name}[{i}]"
            raise ValueError(f"{where} must hold at least one example, got a batch of 0")
    return int(inputs[0].shape[0])


def check_model_dtype(model: Any, inputs: Sequence[Tensor], name: str = "inputs") -> None:
    """``TypeError`` when floating-point ``inputs`` and the floating-point parameters of ``model``
    (an ``nn.Module``; anything else is not checked) have different dtypes."""
    if not isinstance(model, nn.Module):
        return
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is None:
        return
    for i, x in enumerate(inputs):
        if x.is_floating_point() and x.dtype != dtype:
            where = name if len(inputs) == 1 else f"{name}[{i}]"
            cast = {torch.float32: "float()", torch.float64: "double()", torch.float16: "half()",
                    torch.bfloat16: "bfloat16()"}.get(dtype, f"to({dtype})")
            raise TypeError(
                f"{where} are {x.dtype} but the model's parameters are {dtype}: convert one of them "
                f"(e.g. {where}.{cast} or model.to({x.dtype}))"
            )


def check_finite_outputs(outputs: Tensor, what: str = "the model's outputs") -> None:
    """``ValueError`` when ``outputs`` (B x ...) hold NaN or inf: a prediction, a kept label or a
    target's map computed from them would be meaningless (argmax of NaN is 0)."""
    with torch.no_grad():
        bad = ~torch.isfinite(outputs.reshape(outputs.shape[0], -1)).all(dim=1) if outputs.dim() else None
    if bad is None or not bool(bad.any()):
        return
    first = int(torch.nonzero(bad)[0, 0])
    raise ValueError(
        f"{what} contain NaN or inf for {int(bad.sum())} of {outputs.shape[0]} examples (first: example {first}): "
        "check the model's weights and the scale of the inputs"
    )


def check_forward_args_batch(args: Sequence[Any], batch_size: int, name: str = "additional_forward_args") -> None:
    """``ValueError`` when a tensor in ``args`` (the formatted ``additional_forward_args``) has a
    first dimension other than 1 or ``batch_size``: it would be paired with the wrong examples.
    Tensors without dimensions, and other objects, are passed through as they are."""
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] not in (1, batch_size):
            raise ValueError(
                f"{name}[{i}] has {a.shape[0]} rows but inputs have {batch_size} examples: give one row per "
                "example (or a single row to share)"
            )


def normal_tensor(value: Any) -> Any:
    """``value``, or a normal copy of it when it is a tensor created under ``torch.inference_mode()``
    (an inference tensor can neither enter a graph nor be saved for backward; its clone made outside
    inference mode can). Non-tensors are returned as they are."""
    if isinstance(value, Tensor) and value.is_inference():
        with torch.inference_mode(False):
            return value.clone()
    return value


def format_additional_args(additional_forward_args: Any) -> Tuple[Any, ...]:
    """Captum's convention: ``None`` -> ``()``, a single object -> a 1-tuple."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def resolve_target(target: TargetType, batch_size: int, num_classes: int, device: torch.device) -> Tensor:
    """Turn a Captum-style classification target into a ``(batch_size,)`` int64 tensor.

    Args:
        target: an int (same class for every example), a list/tuple of ints or a 1-D
            integer tensor with one class per example, or a 0-dim integer tensor.
        batch_size: number of examples.
        num_classes: size of the model's output dimension 1.
        device: device of the returned tensor.

    Raises:
        TypeError: a float/bool tensor or a non-integer value.
        ValueError: wrong length or a class index outside ``[0, num_classes)``.
    """
    if isinstance(target, bool):
        raise TypeError(f"target must be an int, a sequence of ints or an integer tensor, got bool {target}")
    if isinstance(target, int):
        t = torch.full((batch_size,), target, dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be an integer tensor, got dtype {target.dtype}")
        if target.dim() == 0:
            t = target.to(device=device, dtype=torch.long).expand(batch_size)
        elif target.dim() == 1:
            t = target.to(device=device, dtype=torch.long)
        else:
            raise ValueError(
                f"target must be 0- or 1-dimensional (one class per example), got shape {tuple(target.shape)}"
            )
    elif isinstance(target, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in target):
            raise TypeError(
                "target as a list/tuple must hold one int class index per example "
                f"(multi-dimensional Captum targets are not supported for classifiers), got {target!r}"
            )
        t = torch.tensor(list(target), dtype=torch.long, device=device)
    else:
        raise TypeError(
            f"target must be None, an int, a sequence of ints or an integer tensor, got {type(target).__name__}"
        )
    if t.shape[0] != batch_size:
        raise ValueError(f"target has {t.shape[0]} entries but the batch has {batch_size} examples")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = t[(t < 0) | (t >= num_classes)][0].item()
        raise ValueError(f"target holds class index {bad}, outside the model's range [0, {num_classes - 1}]")
    return t


def check_submodule(model: Any, layer: Any, name: str = "layer") -> None:
    """Check that ``layer`` is an ``nn.Module`` and, when ``model`` is one, that it is inside it."""
    if not isinstance(layer, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(layer).__name__}")
    if isinstance(model, nn.Module) and not any(m is layer for m in model.modules()):
        raise ValueError(
            f"{name} ({layer.__class__.__name__}) is not a submodule of the model "
            f"({model.__class__.__name__}); pass a module from model.modules()"
        )


def output_tensor(outputs: Any) -> Any:
    """A forward function's output as a tensor where it is a structured one: the ``.logits`` of an
    object (a Hugging Face ``ImageClassifierOutput``) or the ``"logits"`` of a mapping; anything
    else is returned as it is (the caller checks it)."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("logits"), Tensor):
        return outputs["logits"]
    if isinstance(getattr(outputs, "logits", None), Tensor):
        return outputs.logits
    return outputs


def classification_outputs(outputs: Any) -> Tensor:
    """Return the B x C class scores of a forward function's output, or raise.

    Accepts a tensor, an object with a ``.logits`` tensor (a Hugging Face
    ``ImageClassifierOutput``) or a mapping with a ``"logits"`` tensor, so Hugging Face
    models work without a wrapper; the logits are returned as they are (same graph).

    Raises:
        ValueError: no tensor of scores could be found, or it is not 2-D (batch, classes).
    """
    scores = output_tensor(outputs)
    if not isinstance(scores, Tensor):
        raise ValueError(
            "the forward function must return class scores of shape (batch, classes): a tensor, an object "
            f"with a .logits tensor or a dict with 'logits', got {type(outputs).__name__}; wrap the model, "
            "e.g. lambda *x: model(*x)[0]"
        )
    if scores.dim() != 2:
        where = "" if scores is outputs else " (the .logits of the model's output)"
        raise ValueError(
            f"the forward function must return class scores of shape (batch, classes), got {tuple(scores.shape)}"
            + where
        )
    return scores


def check_int_range(value: Any, name: str, low: int, high: Optional[int] = None) -> int:
    """Check ``low <= value (<= high)`` for an int argument and return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value



# --------------------------------------------------------------------------------------------
# The one validation system: typed checks of hyper-parameters. Each returns the normalised
# value and raises an ``InvalidParameterError`` (both a ``ValueError`` and a ``TypeError``, as
# scikit-learn's) for a value of the wrong type, or a ``ValueError`` for one out of range; the
# message names the argument, the value it got and what is allowed. ``Interval`` is the one
# declarative piece: a range of numbers that knows how to describe itself, shared by the
# library's checks and the CLI's argument types (``captum_robust.cli._types``).
# --------------------------------------------------------------------------------------------


class InvalidParameterError(ValueError, TypeError):
    """A hyper-parameter of the wrong type (a ``ValueError`` and a ``TypeError``, like scikit-learn's)."""


@dataclass(frozen=True)
class Interval:
    """A range of real numbers (or integers) with open or closed ends.

    Args:
        low: the lower end, or None for no lower bound.
        high: the upper end, or None for no upper bound.
        closed: which ends belong to the interval: ``"both"``, ``"left"``, ``"right"`` or ``"neither"``.
        integer: only integers belong to the interval.

    Example:
        >>> Interval(0, 1, closed="right").describe()
        'in (0, 1]'
        >>> Interval(0, None, closed="neither").describe()
        '> 0'
        >>> 0.5 in Interval(0, 1, closed="neither")
        True
    """

    low: Optional[float] = None
    high: Optional[float] = None
    closed: str = "both"
    integer: bool = False

    def __post_init__(self) -> None:
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be 'both', 'left', 'right' or 'neither', got {self.closed!r}")

    @property
    def _left_closed(self) -> bool:
        return self.closed in ("both", "left")

    @property
    def _right_closed(self) -> bool:
        return self.closed in ("both", "right")

    def __contains__(self, value: Any) -> bool:
        v = float(value)
        if not math.isfinite(v) or (self.integer and not v.is_integer()):
            return False
        if self.low is not None and (v < self.low or (v == self.low and not self._left_closed)):
            return False
        if self.high is not None and (v > self.high or (v == self.high and not self._right_closed)):
            return False
        return True

    def describe(self) -> str:
        """The range in words as the error messages use it: ``'> 0'``, ``'>= 1'``, ``'in (0, 1]'``."""
        low, high = _fmt_bound(self.low), _fmt_bound(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'[' if self._left_closed else '('}{low}, {high}{']' if self._right_closed else ')'}"
        if self.low is not None:
            return f"{'>=' if self._left_closed else '>'} {low}"
        if self.high is not None:
            return f"{'<=' if self._right_closed else '<'} {high}"
        return ""


def _space(text: str) -> str:
    return f" {text}" if text else ""


def _fmt_bound(value: Optional[float]) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE = Interval(0, None, closed="neither")
NONNEGATIVE = Interval(0, None, closed="left")
FRACTION = Interval(0, 1, closed="right")  # (0, 1]: sparsity, clip, k as a fraction
OPEN_UNIT = Interval(0, 1, closed="neither")  # (0, 1): confidence, a probability strictly inside


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real_in(value: Any, interval: Interval, wrong_type: str, out_of_range: str) -> float:
    """``value`` as a float if it is a real number (not a bool) inside ``interval``; otherwise raise
    ``InvalidParameterError(wrong_type + ", got <type> <value>")`` or ``ValueError(out_of_range)``."""
    if not _is_real(value):
        raise InvalidParameterError(f"{wrong_type}, got {type(value).__name__} {value!r}")
    if value not in interval:
        raise ValueError(out_of_range)
    return float(value)


def check_number(value: Any, name: str, interval: Interval = Interval(), *, allow_none: bool = False) -> Any:
    """Check a finite real number inside ``interval`` and return it as a float (None if allowed).

    Messages: ``"sigma must be a finite number > 0, got sigma=0.0"``; a non-number is an
    ``InvalidParameterError``.
    """
    if value is None and allow_none:
        return None
    expected = f"{name} must be a finite number{_space(interval.describe())}{' or None' if allow_none else ''}"
    return _real_in(value, interval, expected, f"{expected}, got {name}={value!r}")


def check_positive(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """``check_number(value, name, POSITIVE)``: a finite number > 0."""
    return check_number(value, name, POSITIVE, allow_none=allow_none)


def check_nonnegative(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """``check_number(value, name, NONNEGATIVE)``: a finite number >= 0."""
    return check_number(value, name, NONNEGATIVE, allow_none=allow_none)


def check_fraction(value: Any, name: str, interval: Interval = FRACTION) -> float:
    """A fraction in ``(0, 1]`` (or in another unit interval such as ``OPEN_UNIT``): ``"sparsity must be in (0, 1], got 0"``."""
    allowed = interval.describe()
    return _real_in(value, interval, f"{name} must be a float {allowed}", f"{name} must be {allowed}, got {value!r}")


def check_int(value: Any, name: str, low: Optional[int] = None, high: Optional[int] = None,
              *, allow_none: bool = False) -> Any:
    """Check an int (not a bool) in ``[low, high]`` and return it: ``"n_steps must be an int >= 1, got 0"``."""
    if value is None and allow_none:
        return None
    allowed = Interval(low, high, integer=True).describe()
    none = " or None" if allow_none else ""
    if not _is_int(value):
        raise InvalidParameterError(f"{name} must be an int {allowed}{none}, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int {allowed}{none}, got {name}={value!r}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """Check a bool: ``"show_progress must be a bool, got int 1"``."""
    if not isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_kwargs(value: Any, name: str, reserved: Sequence[str], why: str) -> Dict[str, Any]:
    """Check extra keyword arguments: None or a mapping that sets none of ``reserved``; returns a
    new dict. ``why`` ends the message, e.g. ``"interpreter_kwargs must not set ['target']: the
    regularizer passes inputs, target and create_graph itself"``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParameterError(f"{name} must be a dict of keyword arguments or None, got {type(value).__name__}")
    bad = [k for k in value if k in reserved]
    if bad:
        raise ValueError(f"{name} must not set {bad}: {why}")
    return dict(value)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Check that ``value`` is one of ``choices``: ``"method must be one of ('a', 'b'), got 'c'"``."""
    if isinstance(value, bool) or not any(value == c and type(value) is type(c) for c in choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_internal_batch_size(value: Any, name: str = "internal_batch_size") -> Union[None, int, str]:
    """``None`` (no chunking), ``"auto"`` (chunks sized from free memory) or an int >= 1."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if not _is_int(value):
        raise InvalidParameterError(f"{name} must be None, 'auto' or an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be None, 'auto' or an int >= 1, got {value}")
    return int(value)


def check_generator(generator: Any, device: torch.device) -> Optional[torch.Generator]:
    """``None`` or a ``torch.Generator`` on the inputs' device type."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise InvalidParameterError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on device {generator.device} but the inputs are on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )
    return generator


def check_float_inputs(inputs: Sequence[Tensor], is_tuple: bool, why: str = "gradients") -> None:
    """Every input a floating-point tensor: ``"inputs must be a floating-point tensor (...), got torch.int64"``."""
    for i, x in enumerate(inputs):
        if not x.is_floating_point():
            label = f"inputs[{i}]" if is_tuple else "inputs"
            raise TypeError(f"{label} must be a floating-point tensor ({why}), got {x.dtype}")
