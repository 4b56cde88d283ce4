"""Captum ``Attribution`` subclasses for robust explanations.

Everything here follows Captum's conventions (``attribute(inputs, target=...,
additional_forward_args=...)``, tensor-or-tuple inputs) and adds what robustness work
needs: every class at once, ``create_graph`` for differentiable maps, clear errors.
"""

from captum_robust.attr._core.cam import CAM, GradCAM, GradCAMPlusPlus
from captum_robust.attr._core.certified_topk import CertifiedTopK, TopKCertificate
from captum_robust.attr._core.integrated_gradients import BatchedIntegratedGradients
from captum_robust.attr._core.layer_finder import CAMLayers, find_cam_layers
from captum_robust.attr._core.reshape import vit_reshape_transform
from captum_robust.attr._core.saliency import Saliency
from captum_robust.attr._core.tokens import TokenBatch, check_token_mask, embed_tokens, embedding_sigma, token_attributions
from captum_robust.attr._core.tokens import token_scores
from captum_robust.attr._core.smoothgrad import (
    QuadraticSmoothGrad,
    RelaxedSparsifiedSmoothGrad,
    ScaledSmoothGrad,
    SparsifiedSmoothGrad,
    attribute_with_shared_noise,
)

__all__ = [
    "CAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "find_cam_layers",
    "CAMLayers",
    "vit_reshape_transform",
    "ScaledSmoothGrad",
    "QuadraticSmoothGrad",
    "SparsifiedSmoothGrad",
    "RelaxedSparsifiedSmoothGrad",
    "CertifiedTopK",
    "TopKCertificate",
    "BatchedIntegratedGradients",
    "Saliency",
    "token_attributions",
    "TokenBatch",
    "embed_tokens",
    "embedding_sigma",
    "token_scores",
    "check_token_mask",
    "attribute_with_shared_noise",
]
