"""Map-specific argument checks shared by the discrepancy and rank measures (not public API).

Generic hyper-parameter checks live in :mod:`captum_robust._utils.validation`. Every check raises ``ValueError`` or ``TypeError`` naming the argument, the value it got
and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.validation import check_nonempty_batch

ClassesType = Union[None, int, Sequence[int], Sequence[Sequence[int]], Tensor]


def check_maps(maps: Any, name: str, min_dim: int = 2, floating: bool = True) -> Tensor:
    """Check a batch of maps ``B x ...``: a tensor with a batch dimension and only finite values."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of maps (B x ...), got {type(maps).__name__}")
    if maps.dim() < min_dim:
        raise ValueError(
            f"{name} must be batched with at least {min_dim} dimensions (B x ...), got shape {tuple(maps.shape)}; "
            "add a batch dimension with maps[None] for a single map"
        )
    check_nonempty_batch((maps,), name)  # the one empty-batch rule of the library, also for the measures
    if maps.device.type == "meta":
        raise ValueError(f"{name} are on the meta device (shapes without data): move them to a real device first")
    if maps.is_complex() or maps.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {maps.dtype}")
    if floating and not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {maps.dtype}")
    if maps.is_floating_point():
        with torch.no_grad():
            if not bool(torch.isfinite(maps.sum())):
                n_bad = int((~torch.isfinite(maps)).sum())
                if n_bad:
                    raise ValueError(
                        f"{name} contains {n_bad} NaN or infinite value(s) (of {maps.numel()}); "
                        "the measures need finite maps"
                    )
    return maps


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; put both on one device")


def check_pair(a: Any, b: Any, name_a: str, name_b: str, min_dim: int = 2, floating: bool = True) -> None:
    check_maps(a, name_a, min_dim, floating)
    check_maps(b, name_b, min_dim, floating)
    check_same_shape(a, b, name_a, name_b)


def rank_pair(maps_a: Any, maps_b: Any) -> Tuple[Tensor, Tensor, torch.dtype]:
    """Check two batches of maps of any real dtype for a rank measure (``maps_a``, ``maps_b``);
    return them detached and flattened to ``B x n`` (views when possible) and the result dtype
    (the maps' floating dtype, else the default dtype)."""
    check_pair(maps_a, maps_b, "maps_a", "maps_b", floating=False)
    out_dtype = result_dtype(maps_a) if maps_a.is_floating_point() else result_dtype(maps_b)
    return flatten_maps(maps_a.detach()), flatten_maps(maps_b.detach()), out_dtype


def check_k(k: Any, n: int, name: str = "k") -> int:
    """``k`` must be an int in ``[1, n]`` (n = number of map elements)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be an int in [1, {n}] (the number of map elements), got {k!r}")
    k = int(k)
    if k < 1 or k > n:
        raise ValueError(f"{name} must be in [1, {n}] (the number of map elements), got {name}={k}")
    return k


def check_p(p: Any) -> int:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2 (the l1 or l2 norm of Boopathy et al. eq. 3), got p={p!r}")
    return int(p)


def result_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


def resolve_classes(
    classes: ClassesType, batch_size: int, num_classes: int, device: torch.device, name: str = "classes"
) -> Tensor:
    """Turn a class set into a ``B x m`` int64 index tensor.

    ``None`` -> every class; an int -> that class for every example; a 1-D sequence/tensor of
    length B -> one class per example; a 2-D sequence/tensor ``B x m`` -> m classes per example.
    """
    if classes is None:
        return torch.arange(num_classes, device=device).expand(batch_size, num_classes)
    if isinstance(classes, bool):
        raise TypeError(f"{name} must be None, an int, or B / B x m class indices, got bool {classes}")
    if isinstance(classes, numbers.Integral):
        idx = torch.full((batch_size, 1), int(classes), dtype=torch.long, device=device)
    else:
        if isinstance(classes, Tensor):
            if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
                raise TypeError(f"{name} must be an integer tensor, got dtype {classes.dtype}")
            idx = classes.to(device=device, dtype=torch.long)
        elif isinstance(classes, (list, tuple)):
            try:
                idx = torch.as_tensor(classes, dtype=torch.long, device=device)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(
                    f"{name} as a list must hold ints (B) or equal-length lists of ints (B x m), got {classes!r}"
                ) from err
            if any(isinstance(v, (bool, float)) for v in _flat(classes)):
                raise TypeError(f"{name} must hold int class indices, got {classes!r}")
        else:
            raise TypeError(
                f"{name} must be None, an int, a sequence or an integer tensor, got {type(classes).__name__}"
            )
        if idx.dim() == 0:
            idx = idx.reshape(1, 1).expand(batch_size, 1)
        elif idx.dim() == 1:
            idx = idx[:, None]
        elif idx.dim() != 2:
            raise ValueError(f"{name} must be 1-D (B) or 2-D (B x m), got shape {tuple(idx.shape)}")
        if idx.shape[0] != batch_size:
            raise ValueError(
                f"{name} has {idx.shape[0]} rows but the batch has {batch_size} maps; give one row per example "
                "(expand a shared class set with .expand(B, m))"
            )
        if idx.shape[1] == 0:
            raise ValueError(f"{name} must name at least one class per example, got an empty class set")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        bad = int(idx[(idx < 0) | (idx >= num_classes)][0])
        raise ValueError(f"{name} holds class index {bad}, outside the maps' range [0, {num_classes - 1}]")
    return idx


def _flat(x: Any):
    for v in x:
        if isinstance(v, (list, tuple)):
            yield from _flat(v)
        else:
            yield v


def flatten_maps(maps: Tensor) -> Tensor:
    """``B x ...`` -> ``B x n`` (a view when possible)."""
    return maps.reshape(maps.shape[0], math.prod(maps.shape[1:]))


def split_rows(batch: int, n: int, budget: Optional[int]) -> Tuple[int, ...]:
    """Row chunk boundaries so each chunk holds about ``budget`` elements (whole rows)."""
    if budget is None:
        return (0, batch)
    rows = max(1, budget // max(n, 1))
    return tuple(range(0, batch, rows)) + (batch,)


def resolve_class_index(value: Any, name: str, batch_size: int, num_classes: int, device: torch.device) -> Tensor:
    """One class per example (an int, ``B`` indices as a list or tensor) -> ``(B,)`` int64."""
    idx = resolve_classes(value, batch_size, num_classes, device, name)
    if value is None or idx.shape[1] != 1:
        raise ValueError(f"{name} must be an int or one class index per example ({batch_size}), got {value!r}")
    return idx[:, 0]
