"""One Integrated Gradients call's path: its points, its target, and the weighted path gradients
of any rectangle of it (Chen et al. 2019, eq. 1-3; Lemma 1 for ``layer=``).

:class:`_Path` evaluates a rectangle -- steps ``[k0, k1)`` x examples ``[b0, b1)`` -- from a
sequence of "declared" tensors (inputs, baselines, tensor arguments), so that the chunked
integration in :mod:`captum_robust.attr._core._ig_chunking` can replay a rectangle in a
backward pass. Layer attributions take the path derivative of the layer's output with
forward-mode AD (:func:`torch.autograd.forward_ad`) in the same pass as the gradient.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from captum_robust._utils.layers import forward_with_layer
from captum_robust._utils.validation import output_tensor, resolve_target
from captum_robust.attr._core._inputs import check_finite_copies
from captum_robust.attr._core._quadrature import quadrature_rule

Rect = Tuple[int, int, int, int]  # steps [k0, k1) x examples [b0, b1)


# --------------------------------------------------------------------------- targets


def _flat_target(target: Any, out_shape: Tuple[int, ...], batch: int, device: torch.device) -> Optional[Tensor]:
    """Per-example flat index into ``output.reshape(B, -1)`` (``None`` for ``target=None``).

    Accepts Captum's target forms: an int / 0-dim tensor / list of ints / 1-D tensor for
    ``B x C`` outputs, a tuple of ints (every example) or a list of tuples (one per example)
    for outputs with more dimensions.
    """
    inner = tuple(out_shape[1:])
    if target is None:
        if math.prod(inner) != 1:
            raise ValueError(
                f"target=None needs a forward function that returns one scalar per example "
                f"(shape (N,), e.g. a per-example loss), got an output of shape {tuple(out_shape)}; "
                "pass target= to select one output per example"
            )
        return None
    is_tuple_target = isinstance(target, tuple)
    is_list_of_tuples = isinstance(target, list) and len(target) > 0 and all(isinstance(t, tuple) for t in target)
    if is_tuple_target or is_list_of_tuples:
        rows = [target] * batch if is_tuple_target else list(target)
        if len(rows) != batch:
            raise ValueError(f"target has {len(rows)} entries but the batch has {batch} examples")
        for r in rows:
            if len(r) != len(inner) or not all(isinstance(v, int) and not isinstance(v, bool) for v in r):
                raise ValueError(
                    f"target {r!r} must be a tuple of {len(inner)} ints indexing the output of shape "
                    f"{tuple(out_shape)} (one output per example)"
                )
        idx = torch.tensor(rows, dtype=torch.long, device=device).reshape(batch, len(inner))
        size = torch.tensor(inner, dtype=torch.long, device=device)
        if bool(((idx < 0) | (idx >= size)).any()):
            bad = rows[int(((idx < 0) | (idx >= size)).any(dim=1).nonzero()[0])]
            raise ValueError(f"target {bad!r} is outside the output's range {tuple(inner)}")
        strides = torch.tensor([math.prod(inner[j + 1 :]) for j in range(len(inner))], dtype=torch.long, device=device)
        return (idx * strides).sum(dim=1)
    if len(inner) != 1:
        raise ValueError(
            f"an int or per-example int target selects one column of a (N, C) output, but the output has "
            f"shape {tuple(out_shape)}; pass a tuple of {len(inner)} ints (or a list of such tuples)"
        )
    if isinstance(target, Tensor) and target.numel() == 1 and target.dim() <= 1 and batch != 1:
        target = target.reshape(())
    return resolve_target(target, batch, inner[0], device)


def check_target_type(target: Any, batch: int, device: torch.device) -> None:
    """Type/length checks that do not need the output shape (run before any forward pass)."""
    if target is None or isinstance(target, tuple):
        return
    if isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        if len(target) != batch:
            raise ValueError(f"target has {len(target)} entries but the batch has {batch} examples")
        return
    if not isinstance(target, (int, list, Tensor)):
        raise TypeError(
            f"target must be None, an int, a tuple, a list or an integer tensor, got {type(target).__name__}"
        )
    if isinstance(target, Tensor) and target.dim() == 1 and target.numel() == 1:
        target = target.reshape(())
    # the class count is checked against the output at the first chunk
    resolve_target(target, batch, 2**62, device)


# --------------------------------------------------------------------------- one call's state


class _Path:
    """Everything one ``attribute`` call needs to evaluate any rectangle of the path.

    ``tensors`` (the "declared" tensors) are the inputs, then the baselines, then the
    tensors among the additional forward arguments; rectangles are evaluated from a
    sequence of tensors laid out the same way, so that the evaluation can be replayed in a
    backward pass on the saved originals.
    """

    def __init__(
        self,
        forward_func: Any,
        multiply_by_inputs: bool,
        inputs: Tuple[Tensor, ...],
        baselines: Tuple[Tensor, ...],
        args: Tuple[Any, ...],
        target: Any,
        method: str,
        n_steps: int,
        layer: Optional[nn.Module],
        attribute_to_layer_input: bool,
    ) -> None:
        self.forward_func = forward_func
        self.multiply = multiply_by_inputs
        self.n_in = len(inputs)
        self.batch = inputs[0].shape[0]
        self.n_steps = n_steps
        self.shapes = [t.shape for t in inputs]
        self.args = args
        self.arg_slots = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        self.tensors: Tuple[Tensor, ...] = (*inputs, *baselines, *(args[i] for i in self.arg_slots))
        self.target = target
        self.flat_target: Optional[Tensor] = None
        self.target_resolved = False
        self.layer = layer
        self.attribute_to_layer_input = attribute_to_layer_input
        # path points made leaves by us (create_graph with inputs that do not require grad):
        # not parameters of the forward function, whatever the graph walk finds
        self.internal_leaves: "weakref.WeakSet[Tensor]" = weakref.WeakSet()
        # the train/eval flags the call runs with (eval mode), re-applied whenever a chunk is
        # evaluated: recomputations in a later backward pass must see the same Dropout/BatchNorm
        self.modes = [(m, m.training) for m in forward_func.modules()] if isinstance(forward_func, nn.Module) else []
        points, weights = quadrature_rule(method, n_steps)
        self.points = [torch.as_tensor(points, dtype=t.dtype, device=t.device) for t in inputs]
        self.weights = [torch.as_tensor(weights, dtype=t.dtype, device=t.device) for t in inputs]

    # -- pieces of a rectangle

    def _split(self, tensors: Sequence[Tensor]) -> Tuple[Sequence[Tensor], Sequence[Tensor], Tuple[Any, ...]]:
        n = self.n_in
        xs, bs = tensors[:n], tensors[n : 2 * n]
        args = list(self.args)
        for slot, t in zip(self.arg_slots, tensors[2 * n :]):
            args[slot] = t
        return xs, bs, tuple(args)

    def _expand_args(self, args: Tuple[Any, ...], b0: int, b1: int, k: int) -> Tuple[Any, ...]:
        out = []
        for a in args:
            if isinstance(a, Tensor) and a.dim() > 0:
                a = a[b0:b1]
                a = a.repeat(k, *([1] * (a.dim() - 1))) if k > 1 else a
            out.append(a)
        return tuple(out)

    def _select(self, out: Any, b0: int, b1: int, k: int) -> Tensor:
        out = output_tensor(out)  # the logits of a Hugging Face output
        rows = k * (b1 - b0)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != rows:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"forward_func must return a tensor with one entry per example along dimension 0 "
                f"(shape (N,) for a per-example scalar such as a loss, or (N, C) scores); it got {rows} "
                f"rows and returned {shape}"
            )
        check_finite_copies(out, b1 - b0)
        if not self.target_resolved:
            self.flat_target = _flat_target(self.target, tuple(out.shape), self.batch, out.device)
            self.target_resolved = True
        if self.flat_target is None:
            return out.reshape(rows)
        idx = self.flat_target[b0:b1]
        if k > 1:
            idx = idx.repeat(k)
        return out.reshape(rows, -1).gather(1, idx.unsqueeze(1)).squeeze(1)

    def _points(
        self, xs: Sequence[Tensor], bs: Sequence[Tensor], rect: Rect, create_graph: bool
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Path points ``a + t (x - a)`` (k*nb rows, step-major) and the tangents ``x - a``."""
        k0, k1, b0, b1 = rect
        k, nb = k1 - k0, b1 - b0
        points, tangents = [], []
        for i, (x, a) in enumerate(zip(xs, bs)):
            xb = x[b0:b1]
            ab = a.expand(x.shape)[b0:b1]
            d = xb - ab
            al = self.points[i][k0:k1].view(k, *([1] * x.dim()))
            r = (ab.unsqueeze(0) + al * d.unsqueeze(0)).reshape(k * nb, *x.shape[1:])
            if not create_graph:
                r = r.detach()
            if not r.requires_grad:
                r.requires_grad_()
                if create_graph:
                    self.internal_leaves.add(r)
            points.append(r)
            if self.layer is not None:
                tangents.append(d.unsqueeze(0).expand(k, *d.shape).reshape(k * nb, *x.shape[1:]))
        return points, tangents

    @contextlib.contextmanager
    def _call_modes(self) -> Iterator[None]:
        """The modules' train/eval flags of the call (restored after; only the flags, never ``.grad``,
        which a backward pass in progress may be accumulating)."""
        now = [(m, m.training) for m, _ in self.modes]
        try:
            for m, mode in self.modes:
                m.training = mode
            yield
        finally:
            for m, mode in now:
                m.training = mode

    def evaluate(self, tensors: Sequence[Tensor], rect: Rect, create_graph: bool) -> Tuple[Tensor, ...]:
        """Weighted path-gradient sums of one rectangle: one ``nb x ...`` tensor per input
        (or one for the layer), i.e. ``sum_k w_k dF/dr (r_k)`` over the rectangle's steps."""
        k0, k1, b0, b1 = rect
        k, nb = k1 - k0, b1 - b0
        xs, bs, args = self._split(tensors)
        with torch.enable_grad(), self._call_modes():
            points, tangents = self._points(xs, bs, rect, create_graph)
            args = self._expand_args(args, b0, b1, k)
            if self.layer is None:
                out = self.forward_func(*points, *args)
                s = self._select(out, b0, b1, k)
                grads = torch.autograd.grad(s.sum(), points, create_graph=create_graph, allow_unused=True)
                return tuple(
                    torch.tensordot(
                        w[k0:k1], (torch.zeros_like(r) if g is None else g).view(k, nb, *r.shape[1:]), dims=1
                    )
                    for w, r, g in zip(self.weights, points, grads)
                )
            return self._evaluate_layer(points, tangents, args, rect, create_graph)

    def _evaluate_layer(
        self, points: List[Tensor], tangents: List[Tensor], args: Tuple[Any, ...], rect: Rect, create_graph: bool
    ) -> Tuple[Tensor, ...]:
        k0, k1, b0, b1 = rect
        k, nb = k1 - k0, b1 - b0
        assert self.layer is not None
        with fwAD.dual_level():
            duals = tuple(fwAD.make_dual(r, t) for r, t in zip(points, tangents)) if self.multiply else tuple(points)
            out, h = forward_with_layer(
                self.forward_func, self.layer, duals, args, attribute_to_layer_input=self.attribute_to_layer_input
            )
            if h.dim() == 0 or h.shape[0] != k * nb:
                raise ValueError(
                    f"the layer's {'input' if self.attribute_to_layer_input else 'output'} has shape "
                    f"{tuple(h.shape)}; layer attributions need a batch-first tensor with {k * nb} rows"
                )
            s = self._select(out, b0, b1, k)
            (g,) = torch.autograd.grad(s.sum(), h, create_graph=create_graph, allow_unused=True)
            if g is None:
                g = torch.zeros_like(h)
            if self.multiply:
                tangent = fwAD.unpack_dual(h).tangent
                g = g * tangent if tangent is not None else torch.zeros_like(g)
        w = self.weights[0][k0:k1].to(g.dtype)
        return (torch.tensordot(w, g.reshape(k, nb, *h.shape[1:]), dims=1),)

    def endpoint_values(self, tensors: Sequence[Tensor], chunk: int) -> Tensor:
        """``F(x) - F(a)`` per example (the right-hand side of completeness)."""
        xs, bs, args = self._split(tensors)
        values = []
        for which in (xs, [b.expand(x.shape) for b, x in zip(bs, xs)]):
            parts = []
            for b0 in range(0, self.batch, max(1, chunk)):
                b1 = min(self.batch, b0 + max(1, chunk))
                out = self.forward_func(*(t[b0:b1] for t in which), *self._expand_args(args, b0, b1, 1))
                parts.append(self._select(out, b0, b1, 1))
            values.append(torch.cat(parts) if len(parts) > 1 else parts[0])
        return values[0] - values[1]
