r"""Saliency: the plain input gradient of a class score, differentiable.

The one gradient map that the attacks, the regularizers, the CLI and the benchmarks share
(Simonyan, Vedaldi, Zisserman 2014). Same numbers and signature as Captum's ``Saliency``,
plus ``create_graph=True`` so the map itself can be differentiated (attacks on saliency
maps, saliency regularizers) and a clear error where Captum fails deep inside autograd.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_robust._utils.validation import (
    output_tensor,
    TargetType,
    TensorOrTuple,
    check_bool,
    check_finite_outputs,
    check_float_inputs,
    resolve_target,
)
from captum_robust._utils.compiled import second_order_model
from captum_robust.attr._core._inputs import call_mode, input_shape_guard, prepare_inputs

__all__ = ["Saliency", "input_gradient"]


def _target_scores(outputs: Any, target: TargetType, batch: int) -> Tensor:
    """The score of every example whose gradient is taken: ``outputs[b, target[b]]``, or the
    per-example output itself when the model returns one number per example and ``target`` is None."""
    outputs = output_tensor(outputs)  # the logits of a Hugging Face output
    if not isinstance(outputs, Tensor):
        raise ValueError(f"the forward function must return a tensor, got {type(outputs).__name__}")
    if outputs.dim() == 0 or outputs.shape[0] != batch:
        raise ValueError(
            f"the forward function must return one row per example (batch {batch}), got shape {tuple(outputs.shape)}"
            + ("; do the inputs lack their batch dimension?" if outputs.dim() else "")
        )
    check_finite_outputs(outputs)
    if target is None:
        if outputs.numel() != batch:
            raise ValueError(
                f"target is None but the forward function returns {tuple(outputs.shape)} scores; "
                "pass target= (one class per example) or a forward function with one output per example"
            )
        return outputs.reshape(batch)
    if outputs.dim() != 2:
        raise ValueError(
            f"with a target the forward function must return class scores of shape (batch, classes), "
            f"got {tuple(outputs.shape)}"
        )
    t = resolve_target(target, batch, outputs.shape[1], outputs.device)
    return outputs.gather(1, t[:, None]).squeeze(1)


def input_gradient(
    forward_func: Callable[..., Any],
    inputs: Tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Tuple[Any, ...] = (),
    create_graph: bool = False,
) -> Tuple[Tensor, ...]:
    r"""The gradient of :math:`\sum_b f_{t_b}(x_b)` with respect to every input tensor.

    One batched backward pass gives every example's own gradient because examples do not
    interact in the forward pass (eval mode). Inputs that already require grad are
    differentiated in place of a detached copy, so with ``create_graph=True`` the result
    stays connected to whatever produced them (an attack's perturbation, for example).

    Args:
        forward_func: the model or any callable returning B x C scores (or B scores).
        inputs: a tuple of floating-point tensors sharing the batch dimension.
        target: the class of every example (Captum's forms), or None for a B-score output.
        additional_forward_args: passed after the inputs to ``forward_func``.
        create_graph: keep the graph of the gradient (second-order derivatives).

    Returns:
        A tuple of tensors shaped like ``inputs``.
    """
    xs = tuple(x if x.requires_grad else x.detach().requires_grad_(True) for x in inputs)
    with torch.enable_grad():
        scores = _target_scores(forward_func(*xs, *additional_forward_args), target, xs[0].shape[0])
        grads = torch.autograd.grad(scores.sum(), xs, create_graph=create_graph, allow_unused=True)
    out = tuple(torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads))
    return out if create_graph else tuple(g.detach() for g in out)


class Saliency(GradientAttribution):
    r"""Saliency (Simonyan et al. 2014): the gradient of the target's score with respect to the inputs,

    .. math:: S(x)_i = \frac{\partial f_t(x)}{\partial x_i},

    its absolute value by default, as Captum's ``Saliency``. It equals Captum's numbers for
    tensor and tuple inputs and for an int, per-example or ``None`` target (Captum's tuple
    targets for outputs with more than two dimensions are not supported); in addition
    ``create_graph=True`` keeps the graph, so the map is differentiable with respect to the
    inputs and the model's parameters (as the attribution attacks and saliency regularizers
    need). Second derivatives through ReLU are
    zero almost everywhere; use ``captum_robust.robust.attacks.softplus_surrogate`` where they
    matter. The model's mode, parameters and the inputs are left as found.

    Args:
        forward_func (Callable): the model, or any function returning class scores B x C (or
            one score per example when ``target`` is None).

    Example:
        >>> import torch
        >>> from captum_robust.attr import Saliency
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> maps = Saliency(model).attribute(x, target=1, abs=False)
        >>> torch.allclose(maps.flatten(1), model[1].weight[1].expand(2, 4))
        True
    """

    def __init__(self, forward_func: Callable[..., Any]) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable (a model or a function), got {type(forward_func).__name__}")
        super().__init__(forward_func)

    @log_usage()
    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, abs: bool = True, additional_forward_args: Any = None,
        create_graph: bool = False,
    ) -> TensorOrTuple:
        r"""The input gradient of every example.

        Args:
            inputs (Tensor or tuple of Tensor): floating-point inputs with a batch dimension.
            target (int, sequence of int, Tensor or None): the class of every example (Captum's
                forms); None when the forward function returns one score per example.
            abs (bool): return :math:`|S(x)|` (Captum's default) instead of the signed gradient.
                Default True.
            additional_forward_args (Any): extra arguments passed after the inputs.
            create_graph (bool): keep the graph so the map can be differentiated. Default False.

        Returns:
            Tensor or tuple of Tensor: maps shaped like ``inputs`` (a tuple for tuple inputs).

        Raises:
            TypeError: integer inputs or a non-bool ``abs``/``create_graph``.
            ValueError: non-finite inputs, a target of the wrong length or out of range.
        """
        is_tuple, xs, _, args = prepare_inputs(inputs, self.forward_func, additional_forward_args)
        check_float_inputs(xs, is_tuple, "saliency is a gradient")
        check_bool(abs, "abs")
        check_bool(create_graph, "create_graph")
        # a torch.compile'd model cannot differentiate twice: create_graph runs on its _orig_mod
        model = second_order_model(self.forward_func, "Saliency", create_graph)
        with call_mode(self.forward_func, "Saliency"), input_shape_guard(model, xs):
            grads = input_gradient(model, xs, target, args, create_graph=create_graph)
        if abs:
            grads = tuple(g.abs() for g in grads)
        return grads if is_tuple else grads[0]
