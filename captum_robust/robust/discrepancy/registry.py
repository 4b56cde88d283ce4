"""The one registry of built-in measure names.

Attacks (``measure=``), the evaluation runner (``measures=``) and the CLI (``--measures``) name
the measures between a clean and an attacked map with the strings of :data:`MEASURES`;
:func:`measure_function` turns a name into the function that computes it.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from captum_robust.robust.discrepancy.center import center_dislocation
from captum_robust.robust.discrepancy.rank import kendall_tau, spearman
from captum_robust.robust.discrepancy.topk import topk_intersection

__all__ = ["MEASURES", "MeasureFn", "measure_function"]

MeasureFn = Callable[[Tensor, Tensor], Tensor]

#: The built-in measure names: the top-``k`` intersection, Kendall's tau, Spearman's rho, the
#: center-of-mass dislocation (Ghorbani et al. 2019) and the l1 / l2 distance between the maps.
MEASURES = ("topk", "kendall", "spearman", "center_dislocation", "l1", "l2")


def _lp_distance(p: int) -> MeasureFn:
    def distance(maps_a: Tensor, maps_b: Tensor) -> Tensor:
        return torch.linalg.vector_norm((maps_a - maps_b).flatten(1), ord=p, dim=1)

    distance.__name__ = f"l{p}"
    return distance


def measure_function(name: str, k: Optional[int] = None) -> MeasureFn:
    """The measure called ``name``, as a function ``(clean_maps, adversarial_maps) -> (B,)``.

    Args:
        name (str): one of :data:`MEASURES`.
        k (int, optional): the size of the top sets; needed by ``"topk"`` only (checked against
            the number of features when the function is called).

    Returns:
        callable: one value per example (maps ``B x ...``, flattened after the batch dimension);
        ``"topk"``, ``"kendall"`` and ``"spearman"`` also take ``mask=`` (the entries that count).

    Raises:
        ValueError: for an unknown name (the message lists the allowed ones), or ``"topk"`` without ``k``.

    Example::

        >>> import torch
        >>> from captum_robust.robust.discrepancy import measure_function
        >>> a = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
        >>> measure_function("topk", k=2)(a, a.flip(1)).tolist()
        [0.0]
        >>> measure_function("l1")(a, a.flip(1)).tolist()
        [8.0]
    """
    if name == "topk":
        if k is None:
            raise ValueError("measure 'topk' needs k, the size of the top sets")
        def topk(maps_a: Tensor, maps_b: Tensor, mask: Optional[Tensor] = None) -> Tensor:
            return topk_intersection(maps_a, maps_b, k, mask=mask)

        return topk
    if name == "kendall":
        return kendall_tau
    if name == "spearman":
        return spearman
    if name == "center_dislocation":
        return center_dislocation
    if name in ("l1", "l2"):
        return _lp_distance(1 if name == "l1" else 2)
    raise ValueError(f"unknown measure {name!r}; the built-in measures are {', '.join(MEASURES)}")
