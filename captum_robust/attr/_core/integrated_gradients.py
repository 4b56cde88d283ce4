r"""Batched, differentiable Integrated Gradients (Sundararajan et al. 2017).

:class:`BatchedIntegratedGradients` returns the same numbers as Captum's
``IntegratedGradients`` (same ``method``, same ``n_steps``) and adds what robust-attribution
training and attacks need:

* ``create_graph=True``: the attributions are differentiable with respect to the inputs,
  the baselines and the model parameters, including the second-order terms, for every
  chunk size. (Captum's IG returns a tensor with a ``grad_fn`` but drops the dependence of
  the path gradients on the inputs and parameters, and its chunking detaches every chunk
  after the first.)
* memory bounded by ``internal_batch_size`` rows in both modes: with ``create_graph`` every
  chunk but the first is recomputed in the backward pass (a custom autograd function), so
  the graph of the whole path is never held at once; ``internal_batch_size="auto"``
  chooses the chunk from a measured per-row memory cost;
* IG of any per-example scalar (``forward_func`` returning shape ``(B,)``, e.g. a loss);
* ``layer=``: attributions to a hidden layer along the *input* path (Chen et al. 2019,
  Lemma 1), with the path derivative of the layer computed by forward-mode AD.

**Quadrature** (points :math:`t_k`, weights :math:`w_k`): ``method`` takes Captum's rules:
``riemann_left`` (Chen eq. 3, :math:`t_k = k/m` for :math:`k = 0..m-1`), ``riemann_right``
(Boopathy eq. 2 and Chen's code, :math:`t_k = k/m` for :math:`k = 1..m`), ``riemann_middle``,
``riemann_trapezoid`` and ``gausslegendre`` (the default, as in Captum). The midpoint and
Gauss-Legendre rules are far more accurate than the left/right/trapezoid sums at equal
``n_steps`` on smooth (e.g. softplus) models; on a ReLU model, whose path gradient jumps at
every activation change, every rule converges only like :math:`1/m`. Captum's
``riemann_trapezoid`` uses the weights ``1/m`` halved at both ends on the grid
:math:`k/(m-1)`, whose sum is :math:`1 - 1/m`, so its error is at least about :math:`1/m`; it
is kept for equality with Captum. The measured errors are in ``benchmarks/README.md``.

**IG of a loss** (Chen et al. 2019): :math:`\mathrm{IG}^{\ell_y}(x, x')`, from :math:`x` to
:math:`x'`, is this class with ``baselines=x``, ``inputs=x'`` and the per-example loss
:math:`\ell_y` as ``forward_func`` (returning shape ``(B,)``); its :math:`\ell_1` norm is the
IG-Norm regularizer (Chen eq. 4).

**Layer attributions along the input path** (``layer=``; Chen et al. 2019, Lemma 1, eq. 2,
summed as in eq. 3): for a hidden layer :math:`h`, the input path :math:`r(t)` induces

.. math::

    \mathrm{IG}^h_j(x, a) = \int_0^1 \frac{\partial F}{\partial h_j}(h(r(t)))\,
        \frac{d h_j(r(t))}{dt}\, dt, \qquad
    \frac{d h(r(t))}{dt} = J_h(r(t))\,(x - a),

the Jacobian-vector product being computed with forward-mode AD in the same pass as the
gradient. Completeness holds over the layer, :math:`\sum_j \mathrm{IG}^h_j = F(x) - F(a)`.
This is *not* Captum's ``LayerIntegratedGradients``, which integrates along the straight
line from :math:`h(a)` to :math:`h(x)` in layer space: both are complete, they coincide when
:math:`h` is affine in the input and differ in general. With ``multiply_by_inputs=False``
the layer result is the path-averaged gradient :math:`\int_0^1 \partial F / \partial h
(h(r(t)))\, dt`.

**Differentiability** (``create_graph=True``): with respect to ``inputs``, ``baselines``,
tensors in ``additional_forward_args`` and the parameters of ``forward_func``, with the
second-order terms (the path gradients' own dependence on :math:`x`, :math:`a` and the
parameters), for every ``internal_batch_size``. *Second derivatives through ReLU are zero
almost everywhere*: for a ReLU network the gradient of an IG-based loss only sees the
piecewise-linear regions it is in; use a softplus copy of the model (``softplus=`` in
:mod:`captum_robust.models`) when an attack or regularizer needs informative second-order
terms. If ``forward_func`` uses a *non-leaf* tensor that requires grad and is created
outside the call (pass such tensors through ``additional_forward_args`` instead), the chunks
fall back to ``torch.utils.checkpoint``: still correct and bounded, about one extra forward
and backward pass per chunk slower.

**Model state**: the model is run as given, in chunks of path points: it is not switched to
eval mode (BatchNorm in training mode would normalise with each chunk's statistics, as in
Captum), and its train/eval flags, parameters' ``.grad`` and ``requires_grad`` and the
caller's tensors are left as found.

The path and its evaluation are in :mod:`captum_robust.attr._core._ig_path`, the chunked
integration in :mod:`captum_robust.attr._core._ig_chunking`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple, Union

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_robust._utils.compiled import second_order_model
from captum_robust._utils.validation import (
    TensorOrTuple,
    check_bool,
    check_finite,
    check_float_inputs,
    check_internal_batch_size,
    check_submodule,
    format_additional_args,
)
from captum_robust.attr._core._inputs import call_mode, input_shape_guard, normal_tensors, prepare_inputs
from captum_robust.attr._core._ig_chunking import integrate
from captum_robust.attr._core._ig_path import _Path, check_target_type
from captum_robust.attr._core._quadrature import check_method
from captum_robust.attr._core.tokens import embed_tokens, embedding_output

# The chunk plan and the integration moved to _ig_chunking, the path to _ig_path; these names
# stay importable from here, where they were.
from captum_robust.attr._core._ig_chunking import (  # noqa: F401
    AUTO_PROBE_ROWS,
    _auto_chunk,
    _graph_leaves,
    _RecomputedChunk,
    _rectangles,
    _rest_after_probe,
)
from captum_robust.attr._core._ig_path import Rect, _flat_target  # noqa: F401
from captum_robust.attr._core._quadrature import SUPPORTED_METHODS, quadrature_rule  # noqa: F401

__all__ = ["BatchedIntegratedGradients"]

BaselineType = Union[None, int, float, Tensor, Tuple[Union[int, float, Tensor], ...]]


class BatchedIntegratedGradients(GradientAttribution):
    r"""Integrated Gradients, batched over the path, chunked with bounded memory and differentiable.

    For a per-example scalar :math:`F` (a selected logit ``f_c``, or any function returning
    shape ``(B,)`` such as the loss :math:`\ell_y(x) = \mathrm{CE}(f(x), y)`), inputs
    :math:`x` and baselines :math:`a`, Integrated Gradients along the straight path
    :math:`r(t) = a + t (x - a)` (Chen et al. 2019, eq. 1; Boopathy et al. 2020, eq. 2) is

    .. math::

        \mathrm{IG}_i(x, a) = (x_i - a_i) \int_0^1 \frac{\partial F(a + t (x - a))}{\partial x_i}\, dt
        \;\approx\; (x_i - a_i) \sum_{k=1}^{m} w_k\, \frac{\partial F(a + t_k (x - a))}{\partial x_i},

    with completeness :math:`\sum_i \mathrm{IG}_i(x, a) = F(x) - F(a)` up to the quadrature error.
    Quadrature rules, the IG of a loss (Chen's :math:`\mathrm{IG}^{\ell_y}`, second example),
    ``layer=`` (Chen Lemma 1), ``create_graph`` and model state: see the module documentation.

    Args:
        forward_func (nn.Module or callable): the model or any function of the inputs (and
            ``additional_forward_args``) returning ``(N, ...)`` outputs or ``(N,)`` scalars.
        multiply_by_inputs (bool): multiply the integrated gradients by ``x - a`` (global
            attribution, default) or not (local attribution), as in Captum.

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import BatchedIntegratedGradients
        >>> model = Small().eval()
        >>> x, y = torch.rand(4, 1, 28, 28), torch.tensor([3, 1, 4, 1])
        >>> ig = BatchedIntegratedGradients(model)
        >>> attr, delta = ig.attribute(x, target=y, n_steps=20, method="riemann_middle", return_convergence_delta=True)
        >>> # Chen's IG of the loss from x to x', differentiable for a regularizer:
        >>> loss_ig = BatchedIntegratedGradients(lambda r, t: F.cross_entropy(model(r), t, reduction="none"))
        >>> x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
        >>> reg = loss_ig.attribute(x_adv, baselines=x, additional_forward_args=(y,),
        ...                         create_graph=True, internal_batch_size="auto").abs().sum()
        >>> reg.backward()   # gradients reach the model's parameters
        >>> model.feature_layer.weight.grad.abs().sum() > 0
        tensor(True)
    """

    def __init__(self, forward_func: Callable[..., Any], multiply_by_inputs: bool = True) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        GradientAttribution.__init__(self, forward_func)
        self._multiply_by_inputs = check_bool(multiply_by_inputs, "multiply_by_inputs")

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True

    @log_usage()
    def attribute(  # type: ignore[override]
        self, inputs: TensorOrTuple, baselines: BaselineType = None, target: Any = None,
        additional_forward_args: Any = None, n_steps: int = 50, method: str = "gausslegendre",
        internal_batch_size: Union[None, int, str] = None, return_convergence_delta: bool = False, *,
        create_graph: bool = False, layer: Optional[nn.Module] = None, attribute_to_layer_input: bool = False,
        show_progress: bool = False, embedding_layer: Optional[nn.Module] = None,
    ) -> Union[TensorOrTuple, Tuple[TensorOrTuple, Tensor]]:
        r"""Compute Integrated Gradients (of the inputs, or of ``layer``).

        Args:
            inputs (Tensor or tuple[Tensor, ...]): floating-point inputs, batch first; a tuple
                for a multi-input ``forward_func``. The end point :math:`x` of the path.
            baselines (scalar, Tensor or tuple, optional): the start point :math:`a`: a
                scalar, or a tensor (or a tuple of scalars/tensors, one per input) that
                broadcasts to the input's shape (same shape, or first dimension 1, ...).
                Default: zeros.
            target (int, tuple, list, Tensor or None): which output to explain, as in
                Captum: an int or a list/1-D tensor with one class per example for
                ``(N, C)`` outputs, a tuple (or list of tuples) for outputs with more
                dimensions; ``None`` when ``forward_func`` returns one scalar per example,
                shape ``(N,)`` (e.g. a per-example loss).
            additional_forward_args (Any, optional): extra arguments passed to
                ``forward_func`` after the inputs. Tensors with a batch dimension must have
                the batch size of the inputs; they are repeated along the path, as in Captum.
            n_steps (int): number of path points :math:`m` (>= 1; >= 2 for the trapezoid).
                Default 50.
            method (str): one of ``riemann_left``, ``riemann_right``, ``riemann_middle``,
                ``riemann_trapezoid``, ``gausslegendre`` (default, as in Captum).
            internal_batch_size (int, "auto" or None): rows (path points x examples) per
                forward/backward pass. ``None``: all ``n_steps x B`` rows at once. An int:
                at most that many rows, in whole steps when it is at least the batch size
                (Captum's chunking) and in slices of the batch otherwise (unlike Captum,
                which then falls back to the batch size), so memory is bounded by it.
                ``"auto"``: the first chunk (at most 64 rows) measures the bytes autograd
                saves per row and the rest is chunked by the rule of
                :mod:`captum_robust._utils.chunking` (CPU: 16 MiB per thread; CUDA: a quarter
                of the free memory), rounded to the nearest whole number of steps when that
                is at least one step. Default None.
            return_convergence_delta (bool): also return the completeness error
                :math:`\sum \mathrm{IG} - (F(x) - F(a))` per example (summed over every
                input, or over the layer). Needs ``multiply_by_inputs=True``.
            create_graph (bool): return attributions differentiable with respect to the
                inputs, the baselines and the parameters (see the class docstring), with
                memory still bounded by ``internal_batch_size``. Default False (the result
                is detached).
            layer (nn.Module, optional): attribute to this submodule's output (or input, with
                ``attribute_to_layer_input``) along the input path (Chen Lemma 1), instead
                of to the inputs.
            attribute_to_layer_input (bool): with ``layer``, explain the layer's input.
            show_progress (bool): show a tqdm progress bar over the path's rows.
            embedding_layer (nn.Module, optional): explain integer (token id) inputs through
                this submodule's output, as Captum's ``LayerIntegratedGradients``: the path
                runs from the module's output on the baselines to its output on the inputs,
                the model being run on the input ids with the module's output replaced by
                the path point (see :mod:`captum_robust.attr._core.tokens`). ``inputs`` is
                then one tensor of ids; ``baselines`` token ids (an int such as the pad
                id, or a tensor broadcasting to the inputs' shape) or ``None`` for zeros of
                the embedding output (Captum's ``None`` means token id 0 instead). Returns
                attributions of the embedding output's shape (``B x T x D``); sum them per
                token with :func:`~captum_robust.attr.token_attributions`. Not with ``layer``.

        Returns:
            Tensor or tuple[Tensor, ...] (and a ``(B,)`` delta with
            ``return_convergence_delta``): attributions shaped like the inputs (a tuple for
            tuple inputs), or like the layer's output (input) with ``layer``.

        Raises:
            ValueError: ``n_steps`` < 1 (< 2 for the trapezoid), unknown ``method``,
                ``internal_batch_size`` < 1, baselines that do not broadcast to the inputs,
                NaN or infinite inputs or baselines, a target out of range, a ``layer``
                that is not a submodule of the model, an additional tensor argument whose
                first dimension is not the batch size.
            TypeError: non-tensor or integer inputs, a float target, a bad argument type.
        """
        if embedding_layer is not None:
            return self._attribute_tokens(
                inputs, baselines, target, additional_forward_args, n_steps, method, internal_batch_size,
                return_convergence_delta, create_graph, layer, attribute_to_layer_input, show_progress,
                embedding_layer,
            )
        is_tuple, inputs_t, _, _ = prepare_inputs(inputs, self.forward_func)
        check_float_inputs(inputs_t, is_tuple, "IG needs gradients")
        check_method(method, n_steps)
        n_steps = int(n_steps)
        chunk_arg = check_internal_batch_size(internal_batch_size)
        check_bool(return_convergence_delta, "return_convergence_delta")
        check_bool(create_graph, "create_graph")
        check_bool(attribute_to_layer_input, "attribute_to_layer_input")
        check_bool(show_progress, "show_progress")
        if layer is not None:
            check_submodule(self.forward_func, layer, "layer")
        elif attribute_to_layer_input:
            raise ValueError("attribute_to_layer_input=True needs a layer")
        if return_convergence_delta and not self.multiplies_by_inputs:
            raise ValueError(
                "return_convergence_delta=True needs multiply_by_inputs=True: completeness "
                "(sum of attributions = F(x) - F(a)) only holds for the multiplied attributions"
            )
        baselines_t = normal_tensors(_format_baselines(baselines, inputs_t, is_tuple))
        args = tuple(
            normal_tensors([a])[0] if isinstance(a, Tensor) else a for a in format_additional_args(additional_forward_args)
        )
        batch = inputs_t[0].shape[0]
        for i, a in enumerate(args):
            if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] != batch:
                raise ValueError(
                    f"additional_forward_args[{i}] has first dimension {a.shape[0]} but the inputs have "
                    f"batch size {batch}; tensor arguments are repeated along the path and must be batch-first "
                    "(pass per-call constants as 0-dim tensors or non-tensor objects)"
                )
        check_target_type(target, batch, inputs_t[0].device)

        # a torch.compile'd model differentiates once and ignores hooks added after compiling:
        # create_graph and layer= (hooks, forward-mode AD) run on its _orig_mod (same parameters)
        model = second_order_model(self.forward_func, "Integrated Gradients", create_graph or layer is not None)
        with call_mode(self.forward_func, "Integrated Gradients"), input_shape_guard(model, inputs_t):
            path = _Path(
                model, self.multiplies_by_inputs, inputs_t, baselines_t, args, target, method, n_steps,
                layer, attribute_to_layer_input,
            )
            declared = path.tensors if create_graph else tuple(t.detach() for t in path.tensors)
            with torch.set_grad_enabled(create_graph):
                totals, chunk = integrate(path, declared, chunk_arg, create_graph, show_progress)
                xs, bs, _ = path._split(declared)
                if layer is not None or not self.multiplies_by_inputs:
                    attributions = tuple(totals)
                else:
                    attributions = tuple(
                        (x - b.expand(x.shape)) * tot.to(x.dtype) for x, b, tot in zip(xs, bs, totals)
                    )
                delta = None
                if return_convergence_delta:
                    total_attr = sum(a.reshape(batch, -1).sum(dim=1) for a in attributions)
                    delta = total_attr - path.endpoint_values(declared, chunk).to(total_attr.dtype)
        if layer is not None or not is_tuple:
            result: TensorOrTuple = attributions[0]
        else:
            result = attributions
        return (result, delta) if return_convergence_delta else result

    def _attribute_tokens(
        self, inputs: Any, baselines: Any, target: Any, additional_forward_args: Any, n_steps: int, method: str,
        internal_batch_size: Any, return_convergence_delta: bool, create_graph: bool, layer: Any,
        attribute_to_layer_input: bool, show_progress: bool, embedding_layer: nn.Module,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """``embedding_layer=``: IG on the path between the embedding outputs of the baselines and
        the inputs (module :mod:`captum_robust.attr._core.tokens`), by the float-input engine run on
        a model whose embedding output is replaced by the path point."""
        if layer is not None or attribute_to_layer_input:
            raise ValueError(
                "embedding_layer= and layer= (or attribute_to_layer_input=True) cannot be used together: "
                "embedding_layer explains token ids through the embedding output (Captum's "
                "LayerIntegratedGradients), layer= a hidden layer along the input path (Chen's Lemma 1); "
                "pass one of them"
            )
        check_bool(create_graph, "create_graph")
        # embeddings (input and baseline) in eval mode too: the embedding dropout of a model left in train mode
        with call_mode(self.forward_func, "Integrated Gradients"):
            model = second_order_model(self.forward_func, "Integrated Gradients", True)
            tokens = embed_tokens(model, embedding_layer, inputs, additional_forward_args, create_graph=create_graph)
            ids, args, emb_x = tokens.ids, tokens.args, tokens.embeddings
            base_ids: Optional[Tensor] = None
            if baselines is not None:
                if isinstance(baselines, tuple) and len(baselines) == 1:
                    baselines = baselines[0]
                (base_ids,) = _format_baselines(baselines, (ids,), False)
                base_ids = base_ids.expand(ids.shape)
            with torch.set_grad_enabled(create_graph):
                emb_b = (
                    torch.zeros_like(emb_x) if base_ids is None else embedding_output(model, embedding_layer, base_ids, args)
                )
            inner = BatchedIntegratedGradients(tokens.model, self.multiplies_by_inputs)
            return inner.attribute(
                emb_x, baselines=emb_b, target=target, additional_forward_args=tokens.forward_args, n_steps=n_steps,
                method=method, internal_batch_size=internal_batch_size,
                return_convergence_delta=return_convergence_delta, create_graph=create_graph,
                show_progress=show_progress,
            )


def _format_baselines(baselines: BaselineType, inputs: Tuple[Tensor, ...], is_tuple: bool) -> Tuple[Tensor, ...]:
    """One tensor per input that broadcasts to the input's shape (not yet expanded)."""
    if baselines is None:
        raw: Tuple[Any, ...] = (0.0,) * len(inputs)
    elif isinstance(baselines, tuple):
        raw = baselines
    else:
        raw = (baselines,)
    if len(raw) != len(inputs):
        raise ValueError(f"baselines has {len(raw)} entries but there are {len(inputs)} inputs; give one per input")
    out = []
    for i, (a, x) in enumerate(zip(raw, inputs)):
        label = f"baselines[{i}]" if is_tuple else "baselines"
        if isinstance(a, bool) or not isinstance(a, (int, float, Tensor)):
            raise TypeError(f"{label} must be a number or a tensor, got {type(a).__name__}")
        if isinstance(a, Tensor):
            if a.device != x.device:
                raise ValueError(f"{label} is on {a.device} but its input is on {x.device}")
            if a.is_complex():
                raise TypeError(f"{label} must be real, got {a.dtype}")
            try:
                shape = torch.broadcast_shapes(a.shape, x.shape)
            except RuntimeError:
                shape = None
            if shape != x.shape:
                raise ValueError(
                    f"{label} of shape {tuple(a.shape)} does not broadcast to the input's shape "
                    f"{tuple(x.shape)}; give the input's shape, a shape with first dimension 1, or a scalar"
                )
            if a.dtype != x.dtype:
                a = a.to(x.dtype)
            if a.is_floating_point():
                check_finite(a, label)
        else:
            if not math.isfinite(float(a)):
                raise ValueError(f"{label} is {a}; baselines must be finite")
            a = torch.tensor(float(a), dtype=x.dtype, device=x.device)
        out.append(a)
    return tuple(out)
