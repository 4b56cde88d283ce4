"""Where the rank measures compute: NumPy on the CPU, torch elsewhere, a chunk of rows at a time."""

from __future__ import annotations

from torch import Tensor

# Rows are processed in chunks of about this many elements: on the CPU small enough for the
# working set of the per-bit passes to stay in cache; on accelerators large (for parallelism)
# but bounded (a few int64 buffers of this size).
CPU_CHUNK = 1 << 17
DEVICE_CHUNK = 1 << 24

# NumPy's sort and selection are several times faster than torch.sort / torch.topk on the CPU;
# switched off in the tests to exercise the torch-only path that accelerators take.
_NUMPY_ON_CPU = True


def numpy_backend(t: Tensor) -> bool:
    """Whether ``t``'s rows are sorted and selected with NumPy (CPU tensors, unless switched off)."""
    return _NUMPY_ON_CPU and t.device.type == "cpu"
