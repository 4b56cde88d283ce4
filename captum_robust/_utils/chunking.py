"""Choosing how many rows to evaluate at once (``internal_batch_size="auto"``).

Path methods (Integrated Gradients, SmoothGrad, ...) evaluate a model on
``n_steps x batch`` rows. Evaluating them all at once needs memory proportional to that
product; evaluating them in chunks of ``c`` rows needs memory proportional to ``c``.
:func:`auto_chunk_rows` picks ``c`` from a measurement of what one row costs:
:class:`SavedBytesMeter` counts the bytes autograd saves for the backward pass while a
probe chunk runs (these tensors are what a chunk holds at its peak), and the chunk is
sized so that a whole chunk's saved tensors fit a budget:

* **CPU:** ``budget = 16 MiB * threads`` (``threads = torch.get_num_threads()``).
  A throughput rule: on CPU the time per row falls while per-call overheads are amortised
  and rises again once a chunk's working set leaves the caches and every chunk allocates
  fresh, page-faulting memory; 16 MiB of saved tensors per chunk sits in the flat middle of
  that curve on the library's models. The sweep behind it is
  ``benchmarks/integrated_gradients.py --chunk-rule`` (results in ``benchmarks/README.md``);
  it ran on one thread, so scaling the budget with the thread count is an assumption.
* **CUDA:** ``budget = 1/4`` of the free device memory (``torch.cuda.mem_get_info``):
  GPUs are throughput-bound and get faster with larger chunks until memory runs out,
  so the rule is memory-driven (an assumption: this rule has not been measured on a GPU).

With ``create_graph=True`` the probe also records the tensors saved for the
differentiable backward pass, so the same rule applies to the larger per-row cost.
"""

from __future__ import annotations

from typing import Any, Optional, Set, Tuple

import torch
from torch import Tensor, nn

__all__ = ["SavedBytesMeter", "auto_chunk_rows", "CPU_BYTES_PER_THREAD", "CUDA_FREE_FRACTION"]

#: CPU budget for the bytes autograd saves per chunk, per intra-op thread (measured rule).
CPU_BYTES_PER_THREAD = 16 * 2**20
#: Fraction of the free CUDA memory one chunk's saved tensors may use.
CUDA_FREE_FRACTION = 0.25


class SavedBytesMeter(torch.autograd.graph.saved_tensors_hooks):
    """Count the bytes of the batch-sized tensors autograd saves inside the ``with`` block.

    Only tensors whose first dimension equals ``rows`` (the number of rows evaluated in the
    block) are counted, each storage once; parameters (and views of them) and the tensors in
    ``exclude`` are not part of the per-row cost. ``per_row`` is the measured cost of one row.

    Args:
        rows (int): the number of rows the block evaluates.
        exclude (iterable of Tensor, optional): tensors never counted (e.g. the parameters).
    """

    def __init__(self, rows: int, exclude: Any = ()) -> None:
        self.rows = int(rows)
        self.total = 0
        self._seen: Set[Tuple[int, int]] = set()
        self._excluded = {t.data_ptr() for t in exclude if isinstance(t, Tensor)}

        def pack(t: Tensor) -> Tensor:
            if (
                t.dim() >= 1
                and t.shape[0] == self.rows
                and t.data_ptr() not in self._excluded
                and not isinstance(t, nn.Parameter)
                and not isinstance(t._base, nn.Parameter)
            ):
                try:
                    storage = t.untyped_storage()
                    key = (storage.data_ptr(), storage.nbytes())
                except (RuntimeError, NotImplementedError):  # tensors without storage
                    key = (t.data_ptr(), t.numel() * t.element_size())
                if key not in self._seen:
                    self._seen.add(key)
                    self.total += key[1]
            return t

        super().__init__(pack, lambda t: t)

    @property
    def per_row(self) -> float:
        """Measured saved bytes per row (at least 1)."""
        return max(1.0, self.total / max(1, self.rows))


def auto_chunk_rows(
    bytes_per_row: float,
    total_rows: int,
    device: torch.device,
    budget_bytes: Optional[float] = None,
) -> int:
    """Rows per chunk for a measured per-row cost (the rule in the module docstring).

    Args:
        bytes_per_row (float): bytes autograd saves per evaluated row
            (:attr:`SavedBytesMeter.per_row`).
        total_rows (int): rows to evaluate in total (the result never exceeds it).
        device (torch.device): where the rows are evaluated.
        budget_bytes (float, optional): override the budget.

    Returns:
        int: the chunk size, in ``[1, total_rows]``.
    """
    if budget_bytes is None:
        if device.type == "cuda" and torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = CUDA_FREE_FRACTION * free
        else:
            budget_bytes = CPU_BYTES_PER_THREAD * max(1, torch.get_num_threads())
    rows = int(budget_bytes // max(1.0, float(bytes_per_row)))
    return max(1, min(int(total_rows), rows))
