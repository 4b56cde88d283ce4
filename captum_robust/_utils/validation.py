"""Argument formatting and validation shared by attributions, attacks and regularizers.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument,
the value it got and what is allowed (DESIGN.md section 3, "Clear errors").
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

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
    """Raise ``ValueError`` if ``tensor`` holds NaN or +-inf."""
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


def classification_outputs(outputs: Any) -> Tensor:
    """Check that a forward function returned B x C class scores."""
    if not isinstance(outputs, Tensor) or outputs.dim() != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(
            f"the forward function must return class scores of shape (batch, classes), got {shape}"
        )
    return outputs


def check_int_range(value: Any, name: str, low: int, high: Optional[int] = None) -> int:
    """Check ``low <= value (<= high)`` for an int argument and return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value

