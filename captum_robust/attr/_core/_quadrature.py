"""Quadrature rules on [0, 1] for path integrals (Integrated Gradients and its variants).

The points and weights are those of Captum's ``captum.attr._utils.approximation_methods``
(same methods, same conventions), computed here in float64 and extended to ``n_steps = 1``
where the rule is defined for one point (Captum asserts ``n > 1`` for every Riemann rule):

* ``riemann_left``: points ``k / m`` (k = 0..m-1), weights ``1 / m``;
* ``riemann_right``: points ``(k + 1) / m``, weights ``1 / m``;
* ``riemann_middle``: points ``(k + 1/2) / m``, weights ``1 / m``;
* ``riemann_trapezoid``: points ``k / (m - 1)`` (needs m >= 2), weights ``1 / m`` halved
  at both ends;
* ``gausslegendre``: the Gauss-Legendre nodes mapped from [-1, 1] to [0, 1], and half the
  Gauss-Legendre weights.

Note that, exactly as in Captum, ``riemann_trapezoid`` puts its m points on the grid
``k / (m - 1)`` but uses weights ``1/m`` (halved at the ends), so its weights sum to
``1 - 1/m``, not 1: it is Captum's rule, kept for equality with Captum, and it is less
accurate than its name suggests (its error is O(1/m)). The other rules' weights sum to 1.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["SUPPORTED_METHODS", "quadrature_rule", "check_method"]

SUPPORTED_METHODS: Tuple[str, ...] = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)


def check_method(method: object, n_steps: object) -> None:
    """Raise ``ValueError``/``TypeError`` for an unknown method or a bad ``n_steps``."""
    if not isinstance(method, str) or method not in SUPPORTED_METHODS:
        raise ValueError(f"method must be one of {SUPPORTED_METHODS}, got {method!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise TypeError(f"n_steps must be an int, got {type(n_steps).__name__} {n_steps!r}")
    low = 2 if method == "riemann_trapezoid" else 1
    if n_steps < low:
        extra = " (the trapezoid rule needs both end points)" if low == 2 else ""
        raise ValueError(f"n_steps must be >= {low} for method={method!r}{extra}, got {n_steps}")


def quadrature_rule(method: str, n_steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Points ``t`` in [0, 1] and weights ``w`` (float64 arrays of length ``n_steps``) so that
    ``sum_k w_k g(t_k)`` approximates ``int_0^1 g(t) dt`` as Captum's ``method`` does.

    Args:
        method (str): one of :data:`SUPPORTED_METHODS`.
        n_steps (int): number of points (>= 1; >= 2 for ``riemann_trapezoid``).

    Returns:
        tuple[numpy.ndarray, numpy.ndarray]: ``(points, weights)``.
    """
    check_method(method, n_steps)
    m = int(n_steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(m)
        return 0.5 * (1.0 + nodes), 0.5 * weights
    weights = np.full(m, 1.0 / m)
    k = np.arange(m, dtype=np.float64)
    if method == "riemann_left":
        points = k / m
    elif method == "riemann_right":
        points = (k + 1.0) / m
    elif method == "riemann_middle":
        points = (k + 0.5) / m
    else:  # riemann_trapezoid, Captum's convention (see the module docstring)
        points = k / (m - 1)
        weights[0] /= 2.0
        weights[-1] /= 2.0
    return points, weights
