"""The checks every public entry point of :mod:`captum_robust.attr` runs on its inputs (issue 18).

:func:`prepare_inputs` is the one place where an attribution call turns user input into
what the methods compute on:

* Captum's tensor-or-tuple convention and finiteness (:func:`~captum_robust._utils.validation.format_inputs`;
  ``meta`` tensors are refused there with a clear message);
* at least one example (``check_nonempty_batch``: "inputs must hold at least one example, got a batch of 0");
* the inputs' floating dtype equals the model's (``check_model_dtype``: float16/bfloat16/float64
  inputs to a float32 model end in one ``TypeError`` naming the fix, not in torch's
  "Input type and bias type should be the same");
* every tensor in ``additional_forward_args`` has 1 or B rows (``check_forward_args_batch``);
* tensors created under ``torch.inference_mode()`` are cloned into normal tensors (an
  inference tensor cannot be saved for backward, so every gradient method would fail).

:func:`input_shape_guard` turns the two shape mistakes that otherwise fail (or silently
go wrong) inside the model's first convolution into one clear ``ValueError``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence, Tuple

from torch import Tensor, nn

from captum_robust._utils.state import call_mode, keep_model_mode  # noqa: F401  (re-exported for the attr modules)
from captum_robust._utils.validation import (
    normal_tensor,
    check_finite_outputs,
    check_forward_args_batch,
    check_model_dtype,
    check_nonempty_batch,
    format_additional_args,
    format_inputs,
)

__all__ = ["keep_model_mode", "call_mode", "prepare_inputs", "normal_tensors", "input_shape_guard", "check_output_rows", "check_finite_copies"]


def normal_tensors(tensors: Sequence[Tensor]) -> Tuple[Tensor, ...]:
    """Clone tensors created under ``torch.inference_mode()`` into normal tensors (others as they are)."""
    return tuple(normal_tensor(t) for t in tensors)


def prepare_inputs(
    inputs: Any, model: Any, additional_forward_args: Any = None, name: str = "inputs"
) -> Tuple[bool, Tuple[Tensor, ...], int, Tuple[Any, ...]]:
    """Check and normalise the arguments of one attribution call.

    Returns ``(was_tuple, inputs as a tuple, batch size B, additional_forward_args as a tuple)``.
    Inference-mode tensors (inputs and tensor arguments) come back as normal clones.
    """
    is_tuple, inputs_t = format_inputs(inputs, name)
    batch = check_nonempty_batch(inputs_t, name)
    check_model_dtype(model, inputs_t, name)
    args = format_additional_args(additional_forward_args)
    check_forward_args_batch(args, batch)
    inputs_t = normal_tensors(inputs_t)
    if any(isinstance(a, Tensor) and a.is_inference() for a in args):
        args = tuple(normal_tensors([a])[0] if isinstance(a, Tensor) else a for a in args)
    return is_tuple, inputs_t, batch, args


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@contextlib.contextmanager
def input_shape_guard(model: Any, inputs: Sequence[Tensor]) -> Iterator[None]:
    """Check the inputs at the model's first convolution, during the block's forward passes.

    A convolution that receives one of the user's input tensors (the same shape, so also
    the noisy copies and path points of the smoothed and integrated methods) must see
    ``B x C_in x ...`` with its ``in_channels``; otherwise torch fails deep inside the layer
    ("expected input to have 3 channels") or, for an input without its batch dimension,
    silently treats it as one unbatched example. Only convolutions that are called with a
    tensor of an input's trailing shape are checked, so models that reshape their inputs
    are left alone.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, _CONV)]
    if not convs:
        yield
        return
    shapes = [tuple(x.shape) for x in inputs]
    seen = [False]

    def check(name: str, conv: nn.Module, args: Tuple[Any, ...]) -> None:
        if seen[0] or not args or not isinstance(args[0], Tensor):
            return
        seen[0] = True  # only the first convolution called sees the raw inputs
        x = args[0]
        nd = len(conv.kernel_size)  # type: ignore[arg-type]
        if not getattr(conv, "in_channels", 0):  # lazy modules: nothing to compare with yet
            return
        for shape in shapes:
            if len(shape) < 2 or x.dim() != len(shape) or tuple(x.shape[1:]) != shape[1:]:
                continue
            label = name or type(conv).__name__
            if len(shape) == nd + 1:
                raise ValueError(
                    f"inputs of shape {shape} lack a batch dimension: the model's first {type(conv).__name__} "
                    f"('{label}') expects B x {conv.in_channels} x ... ({nd + 2} dimensions); "  # type: ignore[attr-defined]
                    "add it, e.g. inputs.unsqueeze(0)"
                )
            if len(shape) == nd + 2 and shape[1] != conv.in_channels:  # type: ignore[attr-defined]
                raise ValueError(
                    f"inputs of shape {shape} have {shape[1]} channels but the model's first "
                    f"{type(conv).__name__} ('{label}') expects {conv.in_channels}: "  # type: ignore[attr-defined]
                    "pass images with that many channels (B x C x H x W)"
                )

    handles = [
        m.register_forward_pre_hook(lambda mod, a, _n=n: check(_n, mod, a)) for n, m in convs
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def check_output_rows(outputs: Any, batch: int, inputs: Sequence[Tensor]) -> None:
    """The model returned one row per example (else the inputs probably lack their batch dimension)."""
    if isinstance(outputs, Tensor) and outputs.dim() >= 1 and outputs.shape[0] != batch:
        raise ValueError(
            f"the model returned {outputs.shape[0]} rows for {batch} examples (inputs of shape "
            f"{tuple(inputs[0].shape)}): do the inputs lack their batch dimension?"
        )


def check_finite_copies(outputs: Tensor, batch: int, what: str = "the model's outputs") -> None:
    """:func:`~captum_robust._utils.validation.check_finite_outputs` for the outputs of ``k``
    copies of a batch stacked copy-major (``k * batch`` rows: noisy samples, path points),
    counted per example."""
    out = outputs.detach()
    if out.dim() == 0 or out.shape[0] % batch:
        return
    k = out.shape[0] // batch
    check_finite_outputs(out.reshape(k, batch, -1).transpose(0, 1).reshape(batch, -1), what)
