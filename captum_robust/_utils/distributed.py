r"""Sharding work across the processes of ``torchrun`` (``torch.distributed``).

The command line (``captum-robust evaluate`` / ``certify``) splits its examples into fixed,
*global* batches of consecutive examples, gives batch ``b`` to rank ``b mod world_size``
(round-robin) and seeds each batch's randomness from ``(seed, b)`` only
(:func:`batch_seed`). A batch therefore holds the same examples and draws the same random
numbers whichever process computes it, so the per-example results gathered on rank 0
(:func:`gather_to_main`) equal those of a single process, and the summary statistics
computed there over *all* examples are the single-process ones.

Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) everything
here degrades to a single process: rank 0 of 1, no process group, gathering returns the
local result in a one-element list.

Example::

    >>> from captum_robust._utils.distributed import assign_batches, batch_seed
    >>> assign_batches(10, batch_size=3, rank=1, world_size=2)   # batches 1 and 3
    [(1, range(3, 6)), (3, range(9, 10))]
    >>> batch_seed(0, 1) == batch_seed(0, 1) != batch_seed(0, 2)
    True
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch

from captum_robust._utils.validation import check_int

__all__ = [
    "DistributedContext",
    "env_world",
    "distributed_session",
    "assign_batches",
    "batch_seed",
    "gather_to_main",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands.

    Attributes:
        rank (int): global rank, 0 .. world_size - 1 (0 for a single process).
        world_size (int): number of processes (1 for a single process).
        local_rank (int): rank on this machine (selects the CUDA device under ``torchrun``).
        backend (str or None): the process group's backend (``"gloo"``, ``"nccl"``), None
            without a process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def env_world() -> Tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the environment ``torchrun`` sets
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); ``(0, 1, 0)`` when they are absent.

    Raises:
        ValueError: a variable that is not an integer, or an inconsistent combination
            (``world_size < 1`` or ``rank`` outside ``[0, world_size)``).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"inconsistent torch.distributed environment: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}"
        )
    return rank, world_size, local_rank


@contextlib.contextmanager
def distributed_session(device: Optional[torch.device] = None) -> Iterator[DistributedContext]:
    """Join the ``torchrun`` process group for the duration of a ``with`` block.

    With ``WORLD_SIZE > 1`` the default process group is initialized from the environment
    (``init_method="env://"``) with the ``nccl`` backend when ``device`` is a CUDA device
    (after selecting ``cuda:LOCAL_RANK``) and ``gloo`` otherwise, and destroyed on exit (after a
    barrier on a normal exit, and a garbage collection of what still holds the group) --
    unless the caller had already initialized one, which is then used and left alone.
    Without ``torchrun`` this yields a single-process context and does nothing.

    Args:
        device (torch.device, optional): the device the model runs on.

    Yields:
        DistributedContext: rank, world size, local rank and backend.
    """
    import torch.distributed as dist

    rank, world_size, local_rank = env_world()
    if dist.is_available() and dist.is_initialized():  # the caller's own process group
        yield DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
        return
    if world_size == 1:
        yield DistributedContext(0, 1, local_rank, None)
        return
    if not dist.is_available():  # pragma: no cover - torch built without distributed support
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    cuda = device is not None and torch.device(device).type == "cuda"
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    try:
        yield DistributedContext(rank, world_size, local_rank, backend)
        dist.barrier()  # no rank tears down while a peer still communicates
    finally:
        gc.collect()  # objects holding the group go now, not during interpreter shutdown
        dist.destroy_process_group()


def assign_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> List[Tuple[int, range]]:
    """The global batches of ``n`` examples that rank ``rank`` computes.

    Batch ``b`` holds examples ``b * batch_size .. min((b + 1) * batch_size, n) - 1`` and goes
    to rank ``b mod world_size``. The batches do not depend on ``world_size``; only which
    process computes them does.

    Args:
        n (int): number of examples, >= 0.
        batch_size (int): examples per batch, >= 1.
        rank (int): this process's rank in ``[0, world_size)``.
        world_size (int): number of processes, >= 1.

    Returns:
        list of ``(batch_index, range_of_example_indices)``.

    Example::

        >>> assign_batches(5, 2)
        [(0, range(0, 2)), (1, range(2, 4)), (2, range(4, 5))]
    """
    n = check_int(n, "n", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    world_size = check_int(world_size, "world_size", 1)
    rank = check_int(rank, "rank", 0, world_size - 1)
    n_batches = (n + batch_size - 1) // batch_size
    return [(b, range(b * batch_size, min((b + 1) * batch_size, n))) for b in range(rank, n_batches, world_size)]


def batch_seed(seed: int, batch_index: int, *stream: int) -> int:
    """A 63-bit seed for global batch ``batch_index`` derived from ``(seed, batch_index, *stream)``
    with :class:`numpy.random.SeedSequence` (well-mixed: neighbouring batches and seeds get
    unrelated streams). It depends on nothing else, in particular not on the rank.

    Example::

        >>> batch_seed(0, 0) != batch_seed(1, 0)
        True
    """
    words = np.random.SeedSequence([int(seed), int(batch_index), *map(int, stream)]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31 | int(words[1]) >> 1) & (2**63 - 1)


def gather_to_main(obj: Any, ctx: DistributedContext) -> Optional[List[Any]]:
    """Gather one picklable object from every rank on rank 0.

    Returns:
        On rank 0 the list of the objects of ranks ``0 .. world_size - 1`` (in rank order);
        ``None`` on the other ranks. A single process gets ``[obj]``.
    """
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: Optional[List[Any]] = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out
