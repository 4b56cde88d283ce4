"""Run a forward pass while capturing one layer's output (or input)."""

from __future__ import annotations

from typing import Any, Callable, Tuple

import torch
from torch import Tensor, nn


def forward_with_layer(
    forward_func: Callable[..., Any],
    layer: nn.Module,
    inputs: Tuple[Tensor, ...],
    additional_args: Tuple[Any, ...],
    attribute_to_layer_input: bool = False,
    require_grad: bool = False,
    grad_enabled: bool = True,
) -> Tuple[Any, Tensor]:
    """Call ``forward_func(*inputs, *additional_args)`` and return ``(outputs, activation)``.

    ``activation`` is the tensor ``layer`` produced (or received, with
    ``attribute_to_layer_input``), still attached to the graph so gradients of the
    outputs with respect to it can be taken. The model continues with a copy of it, so
    code after the layer that works in place (``ReLU(inplace=True)``, ``out += identity``,
    DenseNet's concatenation followed by an in-place ReLU) changes the copy, never the
    captured values (Captum's layer methods see the layer's output the same way). With ``require_grad`` the activation is
    made a graph node even when nothing before it requires grad; ``grad_enabled=False``
    runs the pass under ``torch.no_grad()``. The hook is removed whatever happens.

    Raises:
        ValueError: the layer was not called, was called more than once, or did not
            produce a single tensor.
    """
    captured = []

    def _take(t: Any) -> Tensor:
        if not isinstance(t, Tensor):
            raise ValueError(
                f"layer {layer.__class__.__name__} must produce a single tensor, got {type(t).__name__}"
            )
        if require_grad and not t.requires_grad:
            t = t.detach().requires_grad_()
        captured.append(t)
        # the rest of the forward pass gets a copy: an in-place operation after the layer then
        # modifies the copy, and the captured activation keeps the values the layer produced
        # (the gradient with respect to it flows through the copy unchanged)
        return t.clone()

    if attribute_to_layer_input:

        def pre_hook(module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
            if len(args) != 1:
                raise ValueError(
                    f"attribute_to_layer_input needs a layer with exactly one positional input, "
                    f"{layer.__class__.__name__} got {len(args)}"
                )
            return (_take(args[0]),)

        handle = layer.register_forward_pre_hook(pre_hook)
    else:

        def hook(module: nn.Module, args: Tuple[Any, ...], output: Any) -> Tensor:
            return _take(output)

        handle = layer.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad_enabled or require_grad):
            outputs = forward_func(*inputs, *additional_args)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(
            f"layer {layer.__class__.__name__} was called {len(captured)} times in one forward pass; "
            "it must be called exactly once (is it a submodule used by the model's forward?)"
        )
    return outputs, captured[0]
