"""Captum ``Attribution`` subclasses for robust explanations.

Everything here follows Captum's conventions (``attribute(inputs, target=...,
additional_forward_args=...)``, tensor-or-tuple inputs) and adds what robustness work
needs: every class at once, ``create_graph`` for differentiable maps, clear errors.
"""

from captum_robust.attr._core.cam import CAM, GradCAM, GradCAMPlusPlus

__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus"]
