r"""Feature removal, the building blocks of ROAR: rank the features by an attribution and replace the top ones.

Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks" (NeurIPS
2019), sec. 3: :func:`top_fraction_mask` marks the top :math:`\lfloor f n + \tfrac12 \rfloor`
features of every example, :func:`replacement_values` gives the uninformative value and
:func:`remove_features` combines the two; :func:`~captum_robust.robust.evaluation.roar`
retrains on the result.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import torch
from torch import Tensor

from captum_robust._utils.validation import OPEN_UNIT, check_fraction

__all__ = ["top_fraction_mask", "replacement_values", "remove_features"]


def _n_removed(fraction: float, n_features: int) -> int:
    """``round(fraction * n_features)`` with halves rounded up (``floor(f n + 1/2)``)."""
    return int(math.floor(fraction * n_features + 0.5))


def top_fraction_mask(scores: Tensor, fraction: float) -> Tensor:
    r"""Boolean mask of the ``round(fraction * n)`` highest scores of every example.

    ``scores`` is ``B x ...``; each example's ``n`` scores are ranked (descending, stable:
    among equal scores the one with the lower flat index ranks first, so ties are broken
    deterministically) and the first :math:`k = \lfloor f n + \tfrac12 \rfloor` are marked.

    Args:
        scores (Tensor): ``B x ...`` importance scores (higher = more important), finite.
        fraction (float): the fraction :math:`f` in (0, 1) to mark.

    Returns:
        Tensor: bool, the shape of ``scores``, exactly ``k`` True entries per example.

    Raises:
        ValueError: ``fraction`` outside (0, 1), scores with fewer than 2 dimensions or
            with NaN.

    Example::

        >>> import torch
        >>> top_fraction_mask(torch.tensor([[0.1, 0.9, 0.5, 0.9]]), 0.5)
        tensor([[False,  True, False,  True]])
    """
    f = check_fraction(fraction, "fraction", OPEN_UNIT)
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a tensor, got {type(scores).__name__}")
    if scores.dim() < 2:
        raise ValueError(f"scores must be batched (B x ...), got shape {tuple(scores.shape)}")
    flat = scores.detach().reshape(scores.shape[0], -1)
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN; cannot rank the features")
    k = _n_removed(f, flat.shape[1])
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    if k > 0:
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
        mask.scatter_(1, order, True)
    return mask.view(scores.shape)


def replacement_values(inputs: Tensor, replacement: Any = "mean") -> Tensor:
    """The uninformative value that replaces removed features, broadcastable to ``inputs``.

    ``"mean"``: the per-channel mean of ``inputs`` (over the batch and every dimension after
    the channel dimension 1; for ``N x D`` inputs every feature is its own channel) -- Hooker
    et al.'s choice, computed on the *unmodified training set*; ``"zero"``: 0; a number: that
    constant.

    Args:
        inputs (Tensor): ``N x C x ...`` (or ``N x D``) training inputs.
        replacement (str or float): ``"mean"`` (default), ``"zero"`` or a finite number.

    Returns:
        Tensor: ``1 x C x 1 ...`` (``"mean"``) or a 0-dimensional tensor, inputs' dtype and device.

    Example::

        >>> import torch
        >>> replacement_values(torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]]), "mean").flatten()
        tensor([1., 1.])
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or inputs.shape[0] == 0:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a non-empty batched tensor N x C x ..., got {got}")
    if isinstance(replacement, str):
        if replacement == "mean":
            dims = [0] + list(range(2, inputs.dim()))
            return inputs.detach().mean(dim=dims, keepdim=True)
        if replacement == "zero":
            return torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        raise ValueError(f"replacement must be 'mean', 'zero' or a number, got {replacement!r}")
    if isinstance(replacement, bool) or not isinstance(replacement, (int, float)) or not math.isfinite(replacement):
        raise ValueError(f"replacement must be 'mean', 'zero' or a finite number, got {replacement!r}")
    return torch.tensor(float(replacement), dtype=inputs.dtype, device=inputs.device)


def check_map_shape(shape: Tuple[int, ...], maps: Any) -> None:
    """Raise unless ``maps`` has the inputs' ``shape`` or a channel-summed one."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"attribution maps must be tensors, got {type(maps).__name__}")
    shape, ms = tuple(shape), tuple(maps.shape)
    allowed = [shape]
    if len(shape) >= 3:
        allowed += [s for s in ((shape[0], 1) + shape[2:], (shape[0],) + shape[2:]) if s != shape]
    if ms not in allowed:
        hint = ""
        if len(shape) >= 3 and len(ms) == len(shape) and ms[:2] in (shape[:2], (shape[0], 1)) and ms[2:] != shape[2:]:
            hint = " (a low-resolution map such as CAM's: pass attribution_kwargs={'upsample': True})"
        others = " or ".join(str(a) for a in allowed[1:])
        raise ValueError(
            f"attribution maps must have the inputs' shape {shape}"
            + (f" or the channel-summed shape {others}" if others else "")
            + f", got {ms}{hint}"
        )


def feature_scores(inputs: Tensor, maps: Tensor, absolute: bool, aggregate_channels: bool) -> Tensor:
    """Validate ``maps`` against ``inputs`` and return the scores (``B x C x ...`` or ``B x 1 x ...``)."""
    check_map_shape(tuple(inputs.shape), maps)
    scores = maps.detach()
    if inputs.dim() >= 3 and scores.dim() == inputs.dim() - 1:
        scores = scores.unsqueeze(1)
    if absolute:
        scores = scores.abs()
    if aggregate_channels and scores.dim() >= 3 and scores.shape[1] > 1:
        scores = scores.sum(dim=1, keepdim=True)
    if not torch.isfinite(scores).all():
        raise ValueError("attribution maps contain NaN or inf; cannot rank the features")
    return scores


def remove_features(
    inputs: Tensor,
    maps: Tensor,
    fraction: float,
    value: Any = 0.0,
    *,
    absolute: bool = True,
    aggregate_channels: bool = False,
) -> Tensor:
    r"""Replace the top ``fraction`` of every example's features, ranked by ``maps``, with ``value``.

    The ROAR modification (Hooker et al., 2019, sec. 3): for every example the
    :math:`\lfloor f n + \tfrac12 \rfloor` features with the largest score are replaced by an
    uninformative value (:func:`top_fraction_mask`; ties go to the lower flat index). The
    score is :math:`|m|` (``absolute=True``, default: the sign of a gradient says in which
    direction a feature moves the output, not how much it matters) or the signed map.

    A map with the inputs' shape ranks every element (``n = C H W``). A channel-summed map
    (``B x 1 x H x W`` or ``B x H x W``) ranks pixels (``n = H W``) and a removed pixel is
    replaced in all channels; ``aggregate_channels=True`` turns a full map into that by
    summing the scores over the channels.

    Args:
        inputs (Tensor): ``B x C x ...`` (or ``B x D``) inputs; not modified.
        maps (Tensor): attribution maps, shaped as described above.
        fraction (float): the fraction in (0, 1) to remove.
        value (Tensor or float): the replacement, broadcastable to ``inputs`` (e.g.
            :func:`replacement_values`). Default 0.
        absolute (bool): rank by ``|maps|``. Default True.
        aggregate_channels (bool): rank whole pixels by the channel sum of the scores.

    Returns:
        Tensor: a modified copy of ``inputs``.

    Example::

        >>> import torch
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> remove_features(x, torch.tensor([[[[0.0, -5.0], [1.0, 2.0]]]]), 0.5, value=0.0)
        tensor([[[[1., 0.],
                  [3., 0.]]]])
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
    scores = feature_scores(inputs, maps, absolute, aggregate_channels)
    mask = top_fraction_mask(scores, fraction)
    value_t = torch.as_tensor(value, dtype=inputs.dtype, device=inputs.device)
    return torch.where(mask, value_t, inputs.detach())


