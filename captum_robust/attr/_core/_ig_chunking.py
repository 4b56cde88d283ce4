"""Chunked, memory-bounded integration of an Integrated Gradients path.

The path (``n_steps x B`` rows) is covered by rectangles of at most ``internal_batch_size``
rows (:func:`_rectangles`). Without ``create_graph`` each rectangle's weighted gradients are
added under ``no_grad``. With ``create_graph`` the first rectangle keeps its graph and every
later one is a :class:`_RecomputedChunk`, an autograd function that recomputes the rectangle
in the backward pass (with the random-number state of the first evaluation), so the graph of
the whole path is never held at once and higher derivatives stay right. ``"auto"`` measures
the first chunk's saved bytes per row and sizes the rest by :mod:`captum_robust._utils.chunking`.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from captum_robust._utils.chunking import SavedBytesMeter, auto_chunk_rows
from captum_robust.attr._core._ig_path import Rect, _Path

#: rows of the first chunk with ``internal_batch_size="auto"``, which measures the per-row cost
AUTO_PROBE_ROWS = 64


# --------------------------------------------------------------------------- chunk plan


def _blocks(b_start: int, batch: int, chunk: int) -> List[Tuple[int, int]]:
    """Split examples ``[b_start, batch)`` into the fewest blocks of at most ``chunk``, evenly."""
    count = batch - b_start
    if count <= 0:
        return []
    n_blocks = -(-count // chunk)
    size = -(-count // n_blocks)
    return [(b0, min(b0 + size, batch)) for b0 in range(b_start, batch, size)]


def _rectangles(k_start: int, n_steps: int, batch: int, chunk: int) -> Iterator[Rect]:
    """Cover steps ``[k_start, n_steps)`` x all examples with rectangles of at most ``chunk`` rows.

    With ``chunk >= batch`` a rectangle is at most ``chunk // batch`` whole steps (Captum's
    chunking), the steps spread evenly over the fewest chunks (no ragged last chunk); with
    ``chunk < batch`` it is an even slice of the examples at one step.
    """
    if chunk >= batch:
        steps = n_steps - k_start
        if steps <= 0:
            return
        n_chunks = -(-steps // (chunk // batch))
        q, extra = divmod(steps, n_chunks)
        k0 = k_start
        for i in range(n_chunks):
            k1 = k0 + q + (1 if i < extra else 0)
            yield k0, k1, 0, batch
            k0 = k1
    else:
        blocks = _blocks(0, batch, chunk)
        for k0 in range(k_start, n_steps):
            for b0, b1 in blocks:
                yield k0, k0 + 1, b0, b1


def _rest_after_probe(probe: Rect, n_steps: int, batch: int, chunk: int) -> Iterator[Rect]:
    """The rectangles that cover the path once ``probe`` (a prefix of step 0) is done."""
    for b0, b1 in _blocks(probe[3], batch, chunk):
        yield 0, 1, b0, b1
    yield from _rectangles(1, n_steps, batch, chunk)


# --------------------------------------------------------------------------- recomputed chunks


class _RngState:
    """The RNG states a chunk ran with, so that its recomputation draws the same numbers."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda_devices = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.cuda_devices]

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.cpu)
            for d, s in zip(self.cuda_devices, self.cuda):
                torch.cuda.set_rng_state(s, d)
            yield


class _RecomputedChunk(torch.autograd.Function):
    """One chunk of the path whose graph is not kept.

    The chunk's path-gradient sums are computed without a graph *before* the function is
    applied (inside ``Function.forward`` forward-mode AD is disabled, and layer attributions
    need it) and passed in as ``values``; ``forward`` only returns copies of them. The
    backward pass recomputes the sums with ``create_graph=True`` (with the random-number
    state of the first evaluation) and returns their vector-Jacobian product with respect to
    the declared tensors (inputs, baselines, additional-argument tensors) and the leaves the
    forward function uses (its parameters). The backward pass is itself differentiable, so
    higher derivatives (``gradgradcheck``) are right too.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, path: _Path, rect: Rect, rng: "_RngState", n_values: int, n_declared: int, *tensors: Tensor
    ) -> Tuple[Tensor, ...]:
        ctx.path, ctx.rect, ctx.rng, ctx.n_declared = path, rect, rng, n_declared
        ctx.n_values = n_values
        ctx.save_for_backward(*tensors[n_values:])
        return tuple(v.detach().clone() for v in tensors[:n_values])

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:  # type: ignore[override]
        tensors = ctx.saved_tensors
        offset = 5 + ctx.n_values  # path, rect, rng, n_values, n_declared, *values
        outer_create_graph = torch.is_grad_enabled()
        wanted = [i for i, t in enumerate(tensors) if ctx.needs_input_grad[offset + i]]
        result: List[Optional[Tensor]] = [None] * len(tensors)
        if wanted:
            with torch.enable_grad(), ctx.rng.restored():
                # The declared tensors enter the recomputation as fresh graph nodes, so the gradient
                # of each counts only its own use here: when one declared tensor depends on another
                # (inputs x + d and baselines x from one graph) or on a parameter, the paths between
                # them belong to the outer graph, which autograd follows once more after this
                # backward returns (without the cut they were counted twice). Detached leaves for a
                # first-order backward; views (still attached, for higher derivatives) otherwise.
                declared = [
                    t.view_as(t) if outer_create_graph else t.detach().requires_grad_(t.requires_grad)
                    for t in tensors[: ctx.n_declared]
                ]
                targets = [declared[i] if i < ctx.n_declared else tensors[i] for i in wanted]
                outs = ctx.path.evaluate(tuple(declared), ctx.rect, create_graph=True)
                pairs = [(o, g) for o, g in zip(outs, grad_outputs) if g is not None and o.requires_grad]
                if pairs:
                    grads = torch.autograd.grad(
                        [o for o, _ in pairs],
                        targets,
                        [g for _, g in pairs],
                        create_graph=outer_create_graph,
                        allow_unused=True,
                    )
                    for i, g in zip(wanted, grads):
                        result[i] = g
        return (None, None, None, None, None, *([None] * ctx.n_values), *result)


def _current_sequence_nr() -> int:
    """The autograd node counter of this thread (nodes created later get larger numbers)."""
    with torch.enable_grad():
        probe = torch.zeros((), requires_grad=True) * 1.0
    return probe.grad_fn._sequence_nr()  # type: ignore[union-attr]


def _graph_leaves(
    roots: Sequence[Tensor], declared: Sequence[Tensor], created_after: int, internal: Any = ()
) -> Optional[List[Tensor]]:
    """The leaf tensors (parameters, ...) the graph of ``roots`` reaches without passing through
    a declared tensor, or ``None`` if it reaches a node created before the call that is not
    a declared tensor's (a captured non-leaf tensor requiring grad, which the recomputing
    autograd function could not return gradients for)."""
    stop = {t.grad_fn for t in declared if t.grad_fn is not None}
    declared_ids = {id(t) for t in declared} | {id(t) for t in internal}
    leaves: List[Tensor] = []
    leaf_ids = set()
    seen = set()
    stack = [r.grad_fn for r in roots if r.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in stop:
            continue
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):  # AccumulateGrad: a leaf
            if id(variable) not in declared_ids and id(variable) not in leaf_ids:
                leaf_ids.add(id(variable))
                leaves.append(variable)
            continue
        if node._sequence_nr() < created_after:
            return None
        stack.extend(fn for fn, _ in node.next_functions)
    return leaves


# --------------------------------------------------------------------------- integration


def integrate(
    path: _Path,
    declared: Tuple[Tensor, ...],
    chunk_arg: Union[None, int, str],
    create_graph: bool,
    show_progress: bool,
) -> Tuple[List[Tensor], int]:
    """Sum the weighted path gradients over every rectangle; returns (totals, chunk rows)."""
    n, batch = path.n_steps, path.batch
    total_rows = n * batch
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_rows, desc="BatchedIntegratedGradients", unit="row")
    try:
        seq_start = _current_sequence_nr() if create_graph else 0
        first, contribs, chunk, rest = _first_chunk(path, declared, chunk_arg, create_graph)
        rows0 = (first[1] - first[0]) * (first[3] - first[2])
        if progress is not None:
            progress.update(rows0)
        totals = [_accumulator(c, batch) for c in contribs]
        _add(totals, contribs, first, create_graph)

        mode: Optional[str] = None  # how the remaining chunks are evaluated, chosen at the first one
        leaves: List[Tensor] = []
        for rect in rest:
            if mode is None:
                mode, leaves = _chunk_mode(path, declared, contribs, create_graph, seq_start)
            _add(totals, _evaluate_chunk(path, declared, rect, mode, leaves), rect, create_graph)
            if progress is not None:
                progress.update((rect[1] - rect[0]) * (rect[3] - rect[2]))
        if mode == "keep" and total_rows > rows0:
            warnings.warn(
                "BatchedIntegratedGradients: forward_func uses a non-leaf tensor that requires grad and was "
                "created outside attribute(); with layer= and create_graph=True every chunk's graph is then "
                "kept (memory grows with n_steps). Pass such tensors through additional_forward_args.",
                stacklevel=3,
            )
    finally:
        if progress is not None:
            progress.close()
    return totals, chunk


def _first_chunk(
    path: _Path, declared: Tuple[Tensor, ...], chunk_arg: Union[None, int, str], create_graph: bool
) -> Tuple[Rect, Tuple[Tensor, ...], int, Iterator[Rect]]:
    """Evaluate the first rectangle (with its graph); returns it, its sums, the chunk size and
    the rectangles left. With ``"auto"`` the first rectangle is a probe of at most
    :data:`AUTO_PROBE_ROWS` rows of step 0 that measures the bytes saved per row."""
    n, batch = path.n_steps, path.batch
    if chunk_arg is None:
        first: Rect = (0, n, 0, batch)
        return first, path.evaluate(declared, first, create_graph), n * batch, iter(())
    if chunk_arg == "auto":
        first = (0, 1, 0, min(batch, AUTO_PROBE_ROWS))
        exclude = list(path.forward_func.parameters()) if isinstance(path.forward_func, nn.Module) else []
        meter = SavedBytesMeter(first[3], exclude=exclude)
        with meter:
            contribs = path.evaluate(declared, first, create_graph)
        chunk = _auto_chunk(meter.per_row, batch, n * batch, declared[0].device)
        return first, contribs, chunk, _rest_after_probe(first, n, batch, chunk)
    chunk = int(chunk_arg)
    first = next(_rectangles(0, n, batch, chunk))
    contribs = path.evaluate(declared, first, create_graph)
    if first[1] == 1 and first[3] < batch:
        return first, contribs, chunk, _rest_after_probe(first, n, batch, chunk)
    return first, contribs, chunk, _rectangles(first[1], n, batch, chunk)


def _evaluate_chunk(
    path: _Path, declared: Tuple[Tensor, ...], rect: Rect, mode: str, leaves: List[Tensor]
) -> Sequence[Tensor]:
    """One rectangle after the first, evaluated as :func:`_chunk_mode` decided."""
    if mode == "recompute":
        rng = _RngState(declared)
        values = path.evaluate(declared, rect, create_graph=False)
        return _RecomputedChunk.apply(path, rect, rng, len(values), len(declared), *values, *declared, *leaves)
    if mode == "checkpoint":
        return torch.utils.checkpoint.checkpoint(
            lambda *ts: path.evaluate(ts, rect, create_graph=True), *declared, use_reentrant=False
        )
    return path.evaluate(declared, rect, create_graph=mode == "keep")


def _auto_chunk(bytes_per_row: float, batch: int, total_rows: int, device: torch.device) -> int:
    """``internal_batch_size="auto"``: the rows the budget allows, rounded to the nearest whole
    number of steps when that is at least one step (chunks are whole steps then)."""
    chunk = auto_chunk_rows(bytes_per_row, total_rows, device)
    if chunk >= batch:
        chunk = min(total_rows, max(1, round(chunk / batch)) * batch)
    return chunk


def _chunk_mode(
    path: _Path, declared: Sequence[Tensor], first: Sequence[Tensor], create_graph: bool, seq_start: int
) -> Tuple[str, List[Tensor]]:
    """How to evaluate the chunks after the first (whose graph is kept), and the leaves to
    differentiate: ``"plain"`` (nothing to differentiate), ``"recompute"`` (the autograd
    function), ``"checkpoint"`` / ``"keep"`` (fallbacks for captured non-leaf tensors)."""
    if not create_graph or not any(c.requires_grad for c in first):
        return "plain", []
    wanted = [t for t in declared if t.requires_grad]
    found = _graph_leaves(first, wanted, seq_start, internal=path.internal_leaves)
    if found is None:
        return ("checkpoint" if path.layer is None else "keep"), []
    if not found and not wanted:
        return "plain", []
    return "recompute", found


def _accumulator(contrib: Tensor, batch: int) -> Tensor:
    return torch.zeros((batch, *contrib.shape[1:]), dtype=contrib.dtype, device=contrib.device)


def _add(totals: List[Tensor], contribs: Sequence[Tensor], rect: Rect, differentiable: bool) -> None:
    _, _, b0, b1 = rect
    whole = b0 == 0 and b1 == totals[0].shape[0]
    for i, c in enumerate(contribs):
        if differentiable:
            if whole:
                totals[i] = totals[i] + c
            else:
                idx = torch.arange(b0, b1, device=c.device)
                totals[i] = totals[i].index_add(0, idx, c)
        else:
            with torch.no_grad():
                totals[i][b0:b1] += c.detach()
