r"""Geometry shared by the attacks and the regularizers: tuples of tensors, per-example norms,
balls, boxes, projections, random points in and on balls, and steepest-ascent steps.

Everything is batched: every example keeps its own radius and step size in ``(B,)`` tensors.
Inputs are tuples of tensors (Captum's convention); the :math:`\ell_\infty` norm of a
perturbation is the largest absolute change over *all* input tensors of an example, the
:math:`\ell_2` norm the Euclidean norm of all of them together.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

Tensors = Tuple[Tensor, ...]
BoundType = Union[None, float, Tensor, Tuple[Union[None, float, Tensor], ...]]

_NORM_ALIASES = {"linf": "linf", "l_inf": "linf", "inf": "linf", "l2": "l2", "2": "l2"}


def check_norm(norm: Any) -> str:
    """The norms of this module: ``"linf"`` or ``"l2"`` (also ``"Linf"``, ``"L2"``, ``"inf"``,
    ``float("inf")``, ``2``); anything else is a ``ValueError`` naming the value."""
    if isinstance(norm, bool):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if isinstance(norm, numbers.Real):
        if math.isinf(float(norm)) and norm > 0:
            return "linf"
        if float(norm) == 2:
            return "l2"
    if isinstance(norm, str) and norm.lower() in _NORM_ALIASES:
        return _NORM_ALIASES[norm.lower()]
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def per_example(v: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` broadcastable against ``like``."""
    return v.reshape((v.shape[0],) + (1,) * (like.dim() - 1)).to(like.dtype)


def where(mask: Tensor, a: Tensors, b: Tensors) -> Tensors:
    """Per-example choice between two tuples of tensors."""
    return tuple(torch.where(mask.reshape((-1,) + (1,) * (x.dim() - 1)), x, y) for x, y in zip(a, b))


def detach_all(xs: Sequence[Tensor]) -> Tensors:
    return tuple(x.detach() for x in xs)


def norm_of(deltas: Sequence[Tensor], norm: str) -> Tensor:
    """The per-example norm of a perturbation given as a tuple of tensors."""
    b = deltas[0].shape[0]
    if norm == "linf":
        parts = [d.reshape(b, -1).abs().amax(dim=1) if d[0].numel() else d.new_zeros(b) for d in deltas]
        return torch.stack(parts, dim=0).amax(dim=0)
    total = sum(d.reshape(b, -1).pow(2).sum(dim=1) for d in deltas)
    return torch.sqrt(total)


class Box:
    """The data range: ``lower <= x <= upper`` elementwise (None: unbounded on that side).

    Bounds are floats, tensors broadcastable to an input (e.g. per-channel ``1 x C x 1 x 1``),
    or tuples with one such bound per input tensor.
    """

    def __init__(self, clip_min: BoundType, clip_max: BoundType) -> None:
        self.clip_min = clip_min
        self.clip_max = clip_max
        for name, value in (("clip_min", clip_min), ("clip_max", clip_max)):
            for v in value if isinstance(value, tuple) else (value,):
                if v is None:
                    continue
                if isinstance(v, Tensor):
                    if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
                        raise ValueError(f"{name} must hold finite floating-point values")
                elif isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                    raise ValueError(f"{name} must be None, a finite number, a tensor or a tuple of those, got {v!r}")
        if (
            isinstance(clip_min, numbers.Real)
            and isinstance(clip_max, numbers.Real)
            and not isinstance(clip_min, bool)
            and float(clip_min) > float(clip_max)
        ):
            raise ValueError(f"clip_min must be <= clip_max, got clip_min={clip_min} and clip_max={clip_max}")

    def _per_input(self, value: BoundType, n: int, name: str) -> Tuple[Any, ...]:
        if isinstance(value, tuple):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries but there are {n} input tensors")
            return value
        return (value,) * n

    def resolve(self, inputs: Tensors) -> List[Tuple[Optional[Tensor], Optional[Tensor]]]:
        lows = self._per_input(self.clip_min, len(inputs), "clip_min")
        highs = self._per_input(self.clip_max, len(inputs), "clip_max")
        out = []
        for i, (x, lo, hi) in enumerate(zip(inputs, lows, highs)):
            pair = []
            for v in (lo, hi):
                if v is None:
                    pair.append(None)
                else:
                    t = torch.as_tensor(v, dtype=x.dtype, device=x.device)
                    try:
                        torch.broadcast_shapes(t.shape, x.shape)
                    except RuntimeError:
                        raise ValueError(
                            f"a clip bound of shape {tuple(t.shape)} does not broadcast to input {i} "
                            f"of shape {tuple(x.shape)}"
                        ) from None
                    pair.append(t)
            if pair[0] is not None and pair[1] is not None and bool((pair[0] > pair[1]).any()):
                raise ValueError("clip_min must be <= clip_max everywhere")
            out.append((pair[0], pair[1]))
        return out


def clamp_box(xs: Sequence[Tensor], bounds: Sequence[Tuple[Optional[Tensor], Optional[Tensor]]]) -> Tensors:
    out = []
    for x, (lo, hi) in zip(xs, bounds):
        if lo is not None:
            x = torch.maximum(x, lo)
        if hi is not None:
            x = torch.minimum(x, hi)
        out.append(x)
    return tuple(out)


def check_inside_box(xs: Tensors, bounds: Sequence[Tuple[Optional[Tensor], Optional[Tensor]]], is_tuple: bool) -> None:
    for i, (x, (lo, hi)) in enumerate(zip(xs, bounds)):
        label = f"inputs[{i}]" if is_tuple else "inputs"
        if lo is not None and bool((x < lo).any()):
            raise ValueError(
                f"{label} has values below clip_min (minimum {float(x.min()):.6g}); the attack keeps inputs in "
                "[clip_min, clip_max]: pass the data range of your inputs (or None for no bound)"
            )
        if hi is not None and bool((x > hi).any()):
            raise ValueError(
                f"{label} has values above clip_max (maximum {float(x.max()):.6g}); the attack keeps inputs in "
                "[clip_min, clip_max]: pass the data range of your inputs (or None for no bound)"
            )


def project(
    x0: Tensors, xs: Sequence[Tensor], eps: Tensor, norm: str, bounds: Sequence[Tuple[Optional[Tensor], Optional[Tensor]]]
) -> Tensors:
    """Project ``xs`` onto the ball of radius ``eps`` (``(B,)``) around ``x0``, then into the box.

    Clamping to the box after the ball projection keeps the point in the ball, because
    ``x0`` is in the box (each coordinate only moves towards ``x0``).
    """
    deltas = [x - c for x, c in zip(xs, x0)]
    if norm == "linf":
        e = [per_example(eps, d) for d in deltas]
        deltas = [torch.maximum(torch.minimum(d, ei), -ei) for d, ei in zip(deltas, e)]
    else:
        n = norm_of(deltas, "l2")
        factor = torch.where(n > eps, eps / torch.where(n > 0, n, torch.ones_like(n)), torch.ones_like(n))
        deltas = [d * per_example(factor, d) for d in deltas]
    return clamp_box([c + d for c, d in zip(x0, deltas)], bounds)


def _rand(shape: Tuple[int, ...], like: Tensor, generator: Optional[torch.Generator], normal: bool) -> Tensor:
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator, dtype=like.dtype, device=like.device)


def random_in_ball(
    x0: Tensors, eps: Tensor, norm: str, bounds: Sequence[Tuple[Optional[Tensor], Optional[Tensor]]],
    generator: Optional[torch.Generator],
) -> Tensors:
    """A uniform random point of the ball (then clamped into the box)."""
    if norm == "linf":
        xs = [c + (2 * _rand(tuple(c.shape), c, generator, False) - 1) * per_example(eps, c) for c in x0]
        return clamp_box(xs, bounds)
    direction = [_rand(tuple(c.shape), c, generator, True) for c in x0]
    n = norm_of(direction, "l2")
    dim = sum(c[0].numel() for c in x0)
    radius = eps * _rand((x0[0].shape[0],), x0[0], generator, False).pow(1.0 / max(dim, 1))
    scale = radius / torch.where(n > 0, n, torch.ones_like(n))
    return clamp_box([c + d * per_example(scale, d) for c, d in zip(x0, direction)], bounds)


def random_on_sphere(
    x0: Tensors, eps: Tensor, bounds: Sequence[Tuple[Optional[Tensor], Optional[Tensor]]],
    generator: Optional[torch.Generator],
) -> Tensors:
    """A uniform random point of the l2 sphere of radius ``eps`` (then clamped into the box)."""
    direction = [_rand(tuple(c.shape), c, generator, True) for c in x0]
    n = norm_of(direction, "l2")
    scale = eps / torch.where(n > 0, n, torch.ones_like(n))
    return clamp_box([c + d * per_example(scale, d) for c, d in zip(x0, direction)], bounds)


def steepest_step(xs: Sequence[Tensor], grads: Sequence[Tensor], alpha: Tensor, norm: str) -> Tensors:
    """``x + alpha * s`` with ``s`` the steepest ascent direction of unit norm: ``sign(g)`` for
    l-inf, ``g / ||g||_2`` for l2 (no step where the gradient is zero)."""
    if norm == "linf":
        return tuple(x + per_example(alpha, x) * g.sign() for x, g in zip(xs, grads))
    n = norm_of(grads, "l2")
    scale = alpha / torch.where(n > 0, n, torch.ones_like(n))
    scale = torch.where(n > 0, scale, torch.zeros_like(scale))
    return tuple(x + per_example(scale, x) * g for x, g in zip(xs, grads))
