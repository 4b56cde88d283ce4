r"""The machinery behind the SmoothGrad family: noise, gradients of noisy copies, top-k masks, averaging.

:mod:`captum_robust.attr._core.smoothgrad` holds the public classes; this module holds what
they share:

* :class:`_NoiseStream` -- standard normal noise drawn in fixed-size blocks, so sample ``j``
  gets the same noise for a given generator seed however the samples are chunked;
* :func:`gradient_rows` -- the input gradient of the selected score at many noisy rows
  (through :func:`~captum_robust.attr._core.saliency.input_gradient`), with the SmoothGrad
  target conventions (a fixed class per example, or the argmax of each noisy row);
* :func:`top_count_mask`, :func:`_kth_largest` -- exact top-``m`` selection with ties to the
  lowest index (the sparsified maps, Levine eq. 2.4 and 2.5);
* :func:`absolute_sigmas` -- the noise scale of every example (absolute or relative to its range);
* :func:`smooth` -- the sampling loop: ``internal_batch_size`` rows per pass, the base map of
  every method applied to the same gradients, averaged in float64;
* :func:`token_inputs`, :func:`token_maps` -- token models (``embedding_layer=``): the noise is
  added to the embedding output, and the base map is applied to per-token scores (the sum
  over the embedding dimension, :func:`~captum_robust.attr._core.tokens.token_scores`) of the
  real tokens only.

**Noise order.** The noise of sample ``j`` is ``torch.randn((block,) + x.shape)[j % block]`` of
the ``j // block``-th draw from the generator (one draw per input tensor, in order), with
``block = max(1, min(256, 2**20 // n))`` and ``n`` the number of elements of the whole batch
of one input set; it does not depend on ``internal_batch_size``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_robust._utils.validation import (
    output_tensor,
    POSITIVE,
    Interval,
    InvalidParameterError,
    TargetType,
    TensorOrTuple,
    check_finite_outputs,
    check_generator,
    check_forward_args_batch,
    check_int,
    check_number,
    format_additional_args,
    resolve_target,
)
from captum_robust._utils.compiled import second_order_model
from captum_robust.attr._core._inputs import call_mode, check_finite_copies, check_output_rows, input_shape_guard
from captum_robust.attr._core.saliency import input_gradient
from captum_robust.attr._core.tokens import TokenBatch, embed_tokens, embedding_sigma, token_scores

SigmaType = Union[float, Tensor, Sequence[Union[float, Tensor]]]

#: Default number of rows (noisy copies of all examples together) per forward/backward pass.
DEFAULT_INTERNAL_BATCH_SIZE = 256

# Noise is drawn in blocks of a fixed number of samples that depends only on the batch
# and the input size (never on internal_batch_size), so the same generator seed gives the
# same noisy points however the work is chunked.
_NOISE_BLOCK_ELEMENTS = 2**20
_MAX_NOISE_BLOCK_SAMPLES = 256


def ceil_fraction(fraction: float, n: int) -> int:
    """``ceil(fraction * n)``, robust to floating-point error (``0.07 * 100`` gives 7, not 8)."""
    return max(0, math.ceil(round(fraction * n, 9)))


# ---------------------------------------------------------------------------- argument checks


def check_values(value: Any, name: str, interval: Interval) -> Union[float, Tensor]:
    """A finite number inside ``interval``, or a tensor of them (one per example).

    Returns a float, or the detached tensor (integer tensors as float64). Messages:
    ``"sigma must be a finite number > 0, got sigma=0.0"``,
    ``"sigma must be finite and > 0, got [0.1, -0.1]"``.
    """
    if isinstance(value, Tensor):
        v = value.detach()
        if not v.is_floating_point():
            v = v.double()
        bad = ~torch.isfinite(v)
        if interval.low is not None:
            bad |= (v <= interval.low) if interval.closed in ("right", "neither") else (v < interval.low)
        if interval.high is not None:
            bad |= (v >= interval.high) if interval.closed in ("left", "neither") else (v > interval.high)
        if bool(bad.any()):
            raise ValueError(
                f"{name} must be finite and {interval.describe()}, got {value.detach().cpu().flatten()[:8].tolist()}"
            )
        return v
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(
            f"{name} must be a float {interval.describe()} or a tensor of them, got {type(value).__name__} {value!r}"
        )
    return check_number(value, name, interval)


def check_sigma(value: Any, name: str) -> Union[float, Tensor]:
    """A noise standard deviation: a float > 0, or a 0-/1-dim floating tensor of them."""
    if isinstance(value, Tensor) and (value.dim() > 1 or not value.is_floating_point()):
        raise ValueError(
            f"{name} as a tensor must be a 0-dim or 1-dim (one value per example) floating tensor, "
            f"got shape {tuple(value.shape)} and dtype {value.dtype}"
        )
    return check_values(value, name, POSITIVE)


# ---------------------------------------------------------------------------- noise


class _NoiseStream:
    """Standard normal noise for ``q`` samples of a batch, drawn block by block.

    Sample ``j`` always receives the same noise for a given generator state, batch shape,
    dtype and device, whatever sizes the caller takes it in.
    """

    def __init__(self, inputs: Tuple[Tensor, ...], generator: Optional[torch.Generator]) -> None:
        self.inputs = inputs
        self.generator = generator
        per_sample = sum(t.numel() for t in inputs)
        self.block = max(1, min(_MAX_NOISE_BLOCK_SAMPLES, _NOISE_BLOCK_ELEMENTS // max(1, per_sample)))
        self.buffer: Optional[List[Tensor]] = None
        self.pos = self.block

    def take(self, count: int) -> List[Tensor]:
        pieces: List[List[Tensor]] = []
        while count > 0:
            if self.pos == self.block:
                self.buffer = [
                    torch.randn(
                        (self.block,) + tuple(t.shape), generator=self.generator, dtype=t.dtype, device=t.device
                    )
                    for t in self.inputs
                ]
                self.pos = 0
            assert self.buffer is not None
            step = min(count, self.block - self.pos)
            pieces.append([b[self.pos : self.pos + step] for b in self.buffer])
            self.pos += step
            count -= step
        if len(pieces) == 1:
            return pieces[0]
        return [torch.cat([p[i] for p in pieces]) for i in range(len(self.inputs))]


def _expand_args(args: Tuple[Any, ...], batch: int, repeats: int) -> Tuple[Any, ...]:
    """Repeat tensor arguments with a leading batch dimension, sample-major like the noisy rows."""
    if repeats == 1:
        return args
    out = []
    for a in args:
        if isinstance(a, Tensor) and a.dim() >= 1 and a.shape[0] == batch:
            out.append(a.repeat((repeats,) + (1,) * (a.dim() - 1)))
        else:
            out.append(a)
    return tuple(out)


def absolute_sigmas(spec: SigmaType, relative: bool, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """The noise standard deviation of every example, one B-vector per input tensor.

    ``spec`` is a method's ``sigma`` (a float, a per-example tensor or a tuple of those, one
    per input tensor); with ``relative`` it is multiplied by each example's range.
    """
    batch = inputs[0].shape[0]
    if isinstance(spec, tuple):
        if len(spec) != len(inputs):
            raise ValueError(
                f"sigma has {len(spec)} entries but there are {len(inputs)} input tensors; "
                "give one sigma per input tensor or a single value"
            )
        specs: Sequence[Any] = spec
    else:
        specs = (spec,) * len(inputs)
    out = []
    for i, (s, x) in enumerate(zip(specs, inputs)):
        if not x.is_floating_point():
            raise TypeError(f"inputs[{i}] must be a floating-point tensor to add Gaussian noise, got {x.dtype}")
        if isinstance(s, Tensor):
            st = s.to(device=x.device, dtype=x.dtype)
            if st.dim() == 1 and st.shape[0] != batch:
                raise ValueError(f"sigma has {st.shape[0]} per-example values but the batch has {batch} examples")
            st = st.expand(batch).clone()
        else:
            st = torch.full((batch,), s, device=x.device, dtype=x.dtype)
        if relative:
            flat = x.detach().reshape(batch, -1)
            rng = flat.amax(dim=1) - flat.amin(dim=1)
            if bool((rng <= 0).any()):
                bad = int((rng <= 0).nonzero()[0])
                raise ValueError(
                    f"relative_sigma=True but example {bad} of input {i} is constant (range 0), so the "
                    "noise would be zero; pass an absolute sigma"
                )
            st = st * rng
        out.append(st)
    return tuple(out)


def effective_sigma(sigmas: Tuple[Tensor, ...]) -> Tensor:
    """Per example, the smallest noise standard deviation over the input tensors (B,)."""
    out = sigmas[0]
    for s in sigmas[1:]:
        out = torch.minimum(out, s)
    return out


# ---------------------------------------------------------------------------- token models


def check_token_call(embedding_layer: Optional[nn.Module], token_mask: Any) -> None:
    """Refuse ``token_mask`` without ``embedding_layer`` (float inputs have no tokens to mask)."""
    if embedding_layer is None and token_mask is not None:
        raise ValueError(
            "token_mask is only meaningful with embedding_layer= (token ids explained through an embedding "
            "module); pass embedding_layer, or drop token_mask for float inputs"
        )


@contextlib.contextmanager
def token_inputs(
    method: Any, inputs: Any, additional_forward_args: Any, embedding_layer: nn.Module, token_mask: Any,
    create_graph: bool = False, surrogate: Any = None,
) -> Iterator[TokenBatch]:
    """The model in its call mode (eval, restored on exit) and the ids embedded (:func:`embed_tokens`):
    the noise of the SmoothGrad family is added to ``TokenBatch.embeddings``."""
    who = type(method).__name__
    if surrogate is not None:
        raise ValueError(
            f"{who}: surrogate= cannot be combined with embedding_layer= (the embedding module belongs to "
            "forward_func); pass the smooth model itself as forward_func"
        )
    with call_mode(method.forward_func, who):
        # hooks do not reach into a torch.compile'd graph: the tokens run on its _orig_mod
        model = second_order_model(method.forward_func, who, True)
        tb = embed_tokens(model, embedding_layer, inputs, additional_forward_args, token_mask, create_graph)
        check_forward_args_batch(tb.args, tb.ids.shape[0])
        yield tb


def token_sigmas(spec: SigmaType, relative: bool, embeddings: Tensor, mask: Optional[Tensor]) -> Tensor:
    """The absolute noise standard deviation of every example (B,) in the space of the embeddings:
    ``spec`` itself, or with ``relative`` ``spec`` times the mean real-token embedding norm over
    ``sqrt(D)`` (:func:`~captum_robust.attr._core.tokens.embedding_sigma`)."""
    (absolute,) = absolute_sigmas(spec, False, (embeddings,))
    return absolute * embedding_sigma(1.0, embeddings, mask).to(absolute.dtype) if relative else absolute


def token_score_rows(methods: Sequence[Any], grads: Tensor, abs_grads: Optional[Tensor], n: int) -> Tuple[Any, Any]:
    """:func:`token_maps`' scores of gradient rows (rows x T*D, ``n = T``): the sums over D of ``|g|``
    (if some method uses it; ``abs_grads`` if computed) and of ``g`` (if some method does not), else None."""
    g, uses_abs = grads.reshape(grads.shape[0], n, -1), [m._uses_abs() for m in methods]
    absolute = token_scores(g.abs() if abs_grads is None else abs_grads.reshape(g.shape)) if any(uses_abs) else None
    return absolute, None if all(uses_abs) else token_scores(g)


def token_maps(method: Any, abs_scores: Optional[Tensor], scores: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
    """``method``'s base map of per-token scores (rows x T), applied to each row's real tokens only.

    ``abs_scores`` are the sums over the embedding dimension of ``|g|`` (for :meth:`map_from_abs`),
    ``scores`` those of ``g`` (for an overridden :meth:`map_from_gradients`). The real tokens of
    each row are packed in order into a row of their own length ``n_real`` (rows are grouped by
    ``n_real``: a loop over the distinct lengths, not the rows), so ``ceil(sparsity * n_real)`` and
    the maximum of a scaled map count real tokens only; padding entries are exactly 0.
    """
    if method._uses_abs():
        values, fn = abs_scores, method.map_from_abs
    else:
        values, fn = scores, method.map_from_gradients
    assert values is not None
    if mask is None or bool(mask.all()):
        return fn(values)
    counts = mask.sum(dim=1)
    out: Optional[Tensor] = None
    for n in counts.unique().tolist():
        rows = (counts == n).nonzero().squeeze(1)
        pos = (~mask[rows]).to(torch.uint8).argsort(dim=1, stable=True)[:, :n]  # real positions, in order
        h = fn(values[rows].gather(1, pos))
        if tuple(h.shape) != (rows.numel(), n):
            raise ValueError(f"{type(method).__name__}'s base map changed the shape {(rows.numel(), n)} to {tuple(h.shape)}")
        full = h.new_zeros((rows.numel(), values.shape[1])).scatter(1, pos, h)
        out = (full.new_zeros(values.shape) if out is None else out).index_copy(0, rows, full)
    assert out is not None
    return out


# ---------------------------------------------------------------------------- gradients


def row_target(
    target: TargetType, inputs: Tuple[Tensor, ...], model: Optional[Callable[..., Any]] = None,
    args: Tuple[Any, ...] = (),
) -> Optional[Tensor]:
    """A fixed per-example target as a (B,) tensor, or None (the argmax of every noisy row).

    With ``model``, one forward pass on the clean inputs gives the real number of classes, so
    a bad target is reported against the model's range ("target holds class index -1,
    outside the model's range [0, 9]"), and the clean outputs are checked for NaN/inf
    (logits that overflow at finite but huge inputs).
    """
    if target is None:
        return None
    batch, device = inputs[0].shape[0], inputs[0].device
    if model is None:
        # the class count is checked against the model's output at the first chunk
        return resolve_target(target, batch, 2**62, device)
    with torch.no_grad():
        out = output_tensor(model(*inputs, *args))
    if not isinstance(out, Tensor) or out.dim() == 0:
        raise ValueError(f"the forward function must return a tensor of scores, got {type(out).__name__}")
    check_output_rows(out, batch, inputs)
    check_finite_outputs(out)
    classes = out.shape[1] if out.dim() == 2 else 1
    return resolve_target(target, batch, classes, device)


def _selected_scores(out: Any, target_rows: Optional[Tensor], rows: int, batch: int) -> Tensor:
    """The score whose gradient is taken at each row: the target class's, the argmax class's
    (``target_rows=None``), or the model's only output."""
    out = output_tensor(out)  # the logits of a Hugging Face output
    if not isinstance(out, Tensor):
        raise ValueError(f"the forward function must return a tensor of scores, got {type(out).__name__}")
    if out.dim() >= 1 and out.shape[0] == rows:
        check_finite_copies(out, batch, "the model's outputs at the noisy points")
    if out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1):
        if target_rows is not None and bool((target_rows != 0).any()):
            raise ValueError("the model returns one score per example; target must be None or 0")
        return out.reshape(rows)
    if out.dim() != 2:
        raise ValueError(
            f"the forward function must return scores of shape (batch,) or (batch, classes), got {tuple(out.shape)}"
        )
    if target_rows is None:
        target_rows = out.detach().argmax(dim=1)
    elif int(target_rows.max()) >= out.shape[1] or int(target_rows.min()) < 0:
        bad = int(target_rows.max()) if int(target_rows.max()) >= out.shape[1] else int(target_rows.min())
        raise ValueError(f"target holds class index {bad}, outside the model's range [0, {out.shape[1] - 1}]")
    return out.gather(1, target_rows.unsqueeze(1)).squeeze(1)


def gradient_rows(
    model: Callable[..., Any],
    points: Sequence[Tensor],
    args: Tuple[Any, ...],
    target_rows: Optional[Tensor],
    create_graph: bool,
    batch: Optional[int] = None,
) -> Tensor:
    """Gradients of the selected score at every row of ``points`` (copies of a batch of ``batch``
    examples, copy-major), flattened to rows x n."""
    rows = points[0].shape[0]
    batch = rows if batch is None else batch

    def scores(*model_args: Any) -> Tensor:
        return _selected_scores(model(*model_args), target_rows, rows, batch)

    grads = input_gradient(scores, tuple(points), None, args, create_graph=create_graph)
    if len(grads) == 1:
        return grads[0].reshape(rows, -1)
    return torch.cat([g.reshape(rows, -1) for g in grads], dim=1)


# ---------------------------------------------------------------------------- top-k selection


def _kth_largest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th largest value of each row of ``values`` (rows x n), shape rows x 1.

    On the CPU (float32/float64, no autograd graph) this uses NumPy's introselect
    (``np.partition``), about ten times faster than ``torch.topk``, which sorts index
    pairs; elsewhere, and when the result must be differentiable, ``torch.topk``.
    """
    n = values.shape[1]
    if k <= 1:
        return values.amax(dim=1, keepdim=True)
    if k >= n:
        return values.amin(dim=1, keepdim=True)
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64) and not values.requires_grad:
        part = np.partition(values.detach().numpy(), n - k, axis=1)
        return torch.from_numpy(np.ascontiguousarray(part[:, n - k : n - k + 1]))
    if k <= n // 2:
        return values.topk(k, dim=1, largest=True, sorted=False).values.amin(dim=1, keepdim=True)
    return values.topk(n - k + 1, dim=1, largest=False, sorted=False).values.amax(dim=1, keepdim=True)


def _kth_largest_pair(values: Tensor, k1: int, k2: int) -> Tuple[Tensor, Tensor]:
    """The ``k1``-th (as a constant) and ``k2``-th (differentiable) largest values of each row.

    Two single selections: NumPy's multi-``kth`` partition is several times slower than two
    separate ones.
    """
    return _kth_largest(values.detach(), k1), _kth_largest(values, k2)


def _mask_as(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask as 0/1 values of ``dtype`` (through uint8, which converts faster than bool)."""
    return mask.view(torch.uint8).to(dtype)


def top_count_mask(values: Tensor, count: int) -> Tensor:
    """Boolean rows x n mask with exactly ``count`` True per row: the ``count`` largest values.

    Ties at the threshold go to the lowest column index (the order of the flattened
    inputs), so the mask is deterministic.
    """
    n = values.shape[1]
    if count >= n:
        return torch.ones_like(values, dtype=torch.bool)
    if count <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    thr = _kth_largest(values, count)
    mask = values >= thr
    counts = mask.sum(dim=1)
    tied = counts != count
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        v, t = values[rows], thr[rows]
        above = v > t
        need = count - above.sum(dim=1, keepdim=True)
        equal = v == t
        mask[rows] = above | (equal & (equal.cumsum(dim=1) <= need))
    return mask


# ---------------------------------------------------------------------------- the sampling loop


def unflatten(flat: Tensor, inputs: Tuple[Tensor, ...], is_tuple: bool) -> TensorOrTuple:
    """B x n maps (all input tensors flattened and concatenated) back to the inputs' shapes."""
    outs = []
    start = 0
    for x in inputs:
        size = x[0].numel()
        outs.append(flat[:, start : start + size].reshape(x.shape))
        start += size
    return tuple(outs) if is_tuple else outs[0]


def base_maps(method: Any, grads: Tensor, abs_grads: Optional[Tensor]) -> Tensor:
    """``method``'s base map of a set of gradient rows (``abs_grads``: ``|grads|`` if computed)."""
    if method._uses_abs():
        return method.map_from_abs(grads.abs() if abs_grads is None else abs_grads)
    return method.map_from_gradients(grads)


def smooth(
    methods: Sequence[Any],
    inputs: Tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any,
    n_samples: Optional[int],
    internal_batch_size: Optional[int],
    generator: Optional[torch.Generator],
    create_graph: bool,
    surrogate: Optional[Callable[..., Any]],
    show_progress: bool,
    tokens: Optional[TokenBatch] = None,
) -> Tuple[List[Tensor], Tensor, int]:
    """Smooth the base maps of ``methods`` over the noisy samples of the first one, with one
    gradient pass per sample.

    With ``tokens`` (from :func:`token_inputs`; ``inputs`` and ``additional_forward_args`` are
    then ignored) the noise is added to the embeddings, the model is ``tokens.model`` and the maps
    are per token (:func:`token_maps`, ``n = T``).

    Returns ``(one mean map B x n per method, effective sigma (B,), n_samples)``.
    """
    first = methods[0]
    q = first.n_samples if n_samples is None else check_int(n_samples, "n_samples", 1)
    ibs = check_int(internal_batch_size, "internal_batch_size", 1, allow_none=True)
    for method in methods:
        if create_graph and not method.differentiable:
            raise ValueError(
                f"{type(method).__name__} is piecewise constant in the input (its gradient is zero almost "
                "everywhere), so create_graph=True is meaningless; attack RelaxedSparsifiedSmoothGrad instead"
            )
    if tokens is not None:
        inputs, args, model = (tokens.embeddings,), tokens.forward_args, tokens.model
        sigmas: Tuple[Tensor, ...] = (token_sigmas(first.sigma, first.relative_sigma, inputs[0], tokens.mask),)
    else:
        sigmas = absolute_sigmas(first.sigma, first.relative_sigma, inputs)
        # a torch.compile'd model cannot differentiate twice: create_graph runs on its _orig_mod
        model = surrogate if surrogate is not None else second_order_model(first.forward_func, type(first).__name__,
                                                                            create_graph)
        args = format_additional_args(additional_forward_args)
    check_generator(generator, inputs[0].device)
    loop = _SamplingLoop(methods, inputs, sigmas, args, create_graph, tokens is not None,
                         None if tokens is None else tokens.mask)
    per_chunk = max(1, (DEFAULT_INTERNAL_BATCH_SIZE if ibs is None else ibs) // inputs[0].shape[0])
    who = type(first).__name__
    with call_mode(first.forward_func, who), call_mode(surrogate, f"{who} (surrogate)"), \
            input_shape_guard(model, inputs), torch.set_grad_enabled(create_graph):
        target_t = row_target(target, inputs, model, args)
        stream = _NoiseStream(inputs, generator)
        done = 0
        n_chunks = -(-q // per_chunk)
        for _ in tqdm(range(n_chunks), disable=not show_progress, desc=type(first).__name__, leave=False):
            s = min(per_chunk, q - done)
            loop.add(model, stream.take(s), target_t, s)
            done += s
    return loop.means(q), effective_sigma(sigmas), q


def _check_finite_gradients(grads: Tensor, batch: int) -> None:
    """``ValueError`` when a gradient row is NaN or infinite: every base map of it would be
    meaningless (the sparsified maps would even look fine: a top-k of NaN is an arbitrary 0/1 mask)."""
    with torch.no_grad():
        if bool(torch.isfinite(grads.sum())):
            return
        bad = ~torch.isfinite(grads).all(dim=1)
    if not bool(bad.any()):
        return  # the sum overflowed, every gradient is finite
    first = int(torch.nonzero(bad)[0, 0])
    raise ValueError(
        f"the smoothed map contains NaN: the model's gradient is NaN or infinite at {int(bad.sum())} of "
        f"{grads.shape[0]} noisy points (first: example {first % batch}); check the model's weights and the "
        "scale of the inputs"
    )


class _SamplingLoop:
    """The running sums of :func:`smooth`: each chunk of noisy samples adds every method's base maps."""

    def __init__(
        self,
        methods: Sequence[Any],
        inputs: Tuple[Tensor, ...],
        sigmas: Tuple[Tensor, ...],
        args: Tuple[Any, ...],
        create_graph: bool,
        tokens: bool = False,
        token_mask: Optional[Tensor] = None,
    ) -> None:
        self.methods, self.inputs, self.args, self.create_graph = methods, inputs, args, create_graph
        self.batch = inputs[0].shape[0]
        # token mode: one map entry per token (B x T x D embeddings -> T)
        self.tokens, self.token_mask = tokens, token_mask
        self.n_features = inputs[0].shape[1] if tokens else sum(t[0].numel() for t in inputs)
        self.acc_dtype = torch.float64 if inputs[0].device.type != "mps" else inputs[0].dtype
        self.sums = [
            torch.zeros(self.batch, self.n_features, dtype=self.acc_dtype, device=inputs[0].device) for _ in methods
        ]
        self.sig_shapes = [s.view((1, self.batch) + (1,) * (x.dim() - 1)) for s, x in zip(sigmas, inputs)]
        self.base = [x.unsqueeze(0) if create_graph else x.detach().unsqueeze(0) for x in inputs]
        self.lows: List[Optional[Tensor]] = [None] * len(methods)
        self.highs: List[Optional[Tensor]] = [None] * len(methods)

    def add(self, model: Callable[..., Any], noise: List[Tensor], target: Optional[Tensor], s: int) -> None:
        """Evaluate ``s`` noisy copies of the batch and add their base maps."""
        batch = self.batch
        points = [
            (b + sg * e).reshape((s * batch,) + tuple(x.shape[1:]))
            for b, sg, e, x in zip(self.base, self.sig_shapes, noise, self.inputs)
        ]
        t_rows = None if target is None else target.repeat(s)
        grads = gradient_rows(model, points, _expand_args(self.args, batch, s), t_rows, self.create_graph, batch)
        _check_finite_gradients(grads, batch)
        abs_grads = grads.abs() if any(m._uses_abs() for m in self.methods) else None
        if self.tokens:
            abs_scores, scores = token_score_rows(self.methods, grads, abs_grads, self.n_features)
            mask = None if self.token_mask is None else self.token_mask.repeat(s, 1)
        for i, method in enumerate(self.methods):
            if self.tokens:
                maps = token_maps(method, abs_scores, scores, mask)
            else:
                maps = base_maps(method, grads, abs_grads)
            # the gradients are finite (checked above): maps bounded by construction need no range check
            if not method._bounded_by_construction:
                low, high = maps.detach().amin(), maps.detach().amax()
            else:
                low = high = torch.zeros((), dtype=maps.dtype, device=maps.device)
            self.lows[i] = low if self.lows[i] is None else torch.minimum(self.lows[i], low)  # type: ignore[arg-type]
            self.highs[i] = high if self.highs[i] is None else torch.maximum(self.highs[i], high)  # type: ignore[arg-type]
            self.sums[i] = self.sums[i] + maps.reshape(s, batch, self.n_features).sum(dim=0).to(self.acc_dtype)

    def means(self, q: int) -> List[Tensor]:
        """The averages, in the inputs' dtype, after checking every base map stayed in [0, 1]."""
        out = []
        for method, acc, low_t, high_t in zip(self.methods, self.sums, self.lows, self.highs):
            lo, hi = float(low_t), float(high_t)  # type: ignore[arg-type]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("the smoothed map contains NaN: the model's gradient is not finite at some noisy points")
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{type(method).__name__}.map_from_gradients returned values in [{lo}, {hi}]; base maps must "
                    "lie in [0, 1] (the certificate holds for smoothed maps of bounded functions)"
                )
            out.append((acc / q).clamp(0.0, 1.0).to(self.inputs[0].dtype))
        return out
