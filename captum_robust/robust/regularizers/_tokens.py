r"""Token models in the regularizers: ``embedding_layer=``.

:class:`~captum_robust.robust.regularizers.IGNorm`, :class:`~captum_robust.robust.regularizers.IGSumNorm`,
:class:`~captum_robust.robust.regularizers.InputGradientRegularizer` and
:class:`~captum_robust.robust.regularizers.SaliencyStability` built with ``embedding_layer=`` (the
module inside the model whose output is the ``B x T x D`` embeddings, e.g. ``model.bert.embeddings``)
take ``B x T`` integer token ids; the model's other arguments (the ``attention_mask``) go through
``additional_forward_args`` and the padding through ``token_mask`` (1 = real token, 0 = padding;
a Hugging Face ``attention_mask`` works as it is)::

    reg = IGNorm(model, eps=0.05, embedding_layer=model.bert.embeddings)
    loss = F.cross_entropy(model(ids, attention_mask=mask).logits, y) \
        + reg(ids, y, additional_forward_args=(mask,), token_mask=mask)

**The space.** Everything runs on the embeddings :math:`e = \text{layer}(\text{ids})`
(:func:`~captum_robust.attr._core.tokens.embed_tokens`): the model is the original one on the ids with
the layer's output replaced by :math:`e`. The embeddings are computed with ``create_graph=True`` in the
attribution mode (eval mode by default: no embedding dropout), so the term reaches the embedding weights
(the rows of the ids used) as well as the rest of the model.

**Perturbations** of the inner attacks live in that space: :math:`e' = e + \delta`, with :math:`\delta`
found by the attack (detached) in the ball :math:`\lVert \delta_b \rVert \le \epsilon` measured on the
whole ``T x D`` embedding tensor of each example (:math:`\ell_\infty`: its largest coordinate;
:math:`\ell_2`: the norm of the flattened tensor). ``eps`` is *absolute*, in the units of the embedding
output (a BERT embedding output is LayerNorm-ed: its coordinates have a standard deviation of about 1,
so a token's norm is about :math:`\sqrt D`); there is no data box (``clip_min``/``clip_max`` are
ignored). With ``relative_eps=True`` (:class:`IGNorm`, :class:`IGSumNorm`, :class:`SaliencyStability`)
``eps`` (and ``step_size``) are instead fractions of each example's embedding size (:func:`radius_scale`):
:math:`\epsilon_b = \epsilon \cdot \bar n_b / \sqrt D` for :math:`\ell_\infty` (the root mean
square coordinate of the real tokens' embeddings, :math:`\bar n_b` their mean norm; the scale of
:func:`~captum_robust.attr._core.tokens.embedding_sigma`) and :math:`\epsilon_b = \epsilon \cdot
\bar n_b \sqrt{L_b}` for :math:`\ell_2` (about the norm of the :math:`L_b` real embeddings), so
``eps=0.1`` moves the embeddings by about 10% whatever their scale; the attack runs on
:math:`u = e\,\epsilon / \epsilon_b` with the radius :math:`\epsilon`, an exact change of variables
(per example, the same iterates as the absolute attack with :math:`\epsilon_b`). Padding positions are
never perturbed: the attack objective and the model see :math:`e` there
whatever the iterate holds, and the returned points (``last_adversarial``, the adversarial
*embeddings*) equal :math:`e` at padding. (An :math:`\ell_2` random start spreads over every coordinate,
the padding ones included, so its effective radius on the real tokens is a little smaller.)

**Masked measures.** Gradient norms and maps count the real tokens only (padding rows of the gradient
are zeroed; for BERT with its ``attention_mask`` they are exactly zero anyway).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from captum_robust._utils.validation import check_submodule
from captum_robust.attr._core.tokens import TokenBatch, embedding_sigma

__all__ = [
    "check_embedding_layer", "refuse_token_arguments", "real_tokens", "keep_padding", "zero_padding", "radius_scale",
    "eps_embedding", "MaskedTokenModel",
]


def check_embedding_layer(model: nn.Module, embedding_layer: Any, surrogate: Any = None) -> Optional[nn.Module]:
    """``embedding_layer``: None, or a submodule of ``model`` (``TypeError``/``ValueError`` otherwise);
    a ``surrogate`` is refused with it (its embedding module would be another module)."""
    if embedding_layer is None:
        return None
    check_submodule(model, embedding_layer, "embedding_layer")
    if surrogate is not None:
        raise ValueError(
            "surrogate= is not supported with embedding_layer= (the attack would need the surrogate's own embedding "
            "module); token models are usually smooth (GELU): pass surrogate=None"
        )
    return embedding_layer


def check_relative_eps(relative_eps: Any, embedding_layer: Optional[nn.Module]) -> bool:
    """``relative_eps``: a bool, True only with an ``embedding_layer``."""
    if not isinstance(relative_eps, bool):
        raise TypeError(f"relative_eps must be True or False, got {type(relative_eps).__name__}")
    if relative_eps and embedding_layer is None:
        raise ValueError(
            "relative_eps=True scales eps by the size of the token embeddings: it needs embedding_layer= (for float "
            "inputs eps is in the units of the inputs)"
        )
    return relative_eps


def radius_scale(embeddings: Tensor, mask: Tensor, norm: str) -> Tensor:
    r"""Per example, the absolute radius of a relative radius 1, shape ``(B,)``: :math:`\bar n_b / \sqrt D`
    for ``"linf"`` (:func:`~captum_robust.attr._core.tokens.embedding_sigma` with sigma 1), times
    :math:`\sqrt{L_b D}` for ``"l2"`` (:math:`\bar n_b` the mean norm of the :math:`L_b` real tokens'
    embeddings)."""
    scale = embedding_sigma(1.0, embeddings.detach(), mask)
    if norm == "l2":
        d = embeddings.shape[-1]
        scale = scale * (mask.sum(dim=1).to(scale.dtype) * d).sqrt()
    return scale


def eps_embedding(eps: float, tokens: TokenBatch, norm: str, relative: bool) -> float:
    """The radius in embedding units (``last_stats["eps_embedding"]``): ``eps``, or with a relative
    radius ``eps`` times the batch mean of :func:`radius_scale`."""
    if not relative:
        return eps
    return eps * float(radius_scale(tokens.embeddings.detach(), real_tokens(tokens), norm).mean())


def per_row(values: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` values shaped to broadcast over ``like`` (``B x ...``)."""
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


def refuse_token_arguments(additional_forward_args: Any, token_mask: Any) -> None:
    """The token keywords of a call without ``embedding_layer``: a ``ValueError`` saying what to do."""
    if token_mask is not None:
        raise ValueError(
            "token_mask is for token models: build the regularizer with embedding_layer= (the module that embeds "
            "the token ids, e.g. model.bert.embeddings) and pass B x T token ids"
        )
    if additional_forward_args is not None:
        raise ValueError(
            "additional_forward_args is for token models (e.g. their attention_mask): build the regularizer with "
            "embedding_layer=; without it the regularizers take one input tensor"
        )


def real_tokens(tokens: TokenBatch) -> Tensor:
    """The ``B x T`` bool mask of the real tokens (all true without a ``token_mask``)."""
    if tokens.mask is not None:
        return tokens.mask
    return torch.ones(tokens.ids.shape[:2], dtype=torch.bool, device=tokens.ids.device)


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    return mask.reshape(tuple(mask.shape) + (1,) * (like.dim() - mask.dim()))


def keep_padding(embeddings_adv: Tensor, embeddings: Tensor, mask: Tensor) -> Tensor:
    """``embeddings_adv`` at the real tokens, ``embeddings`` at the padding positions."""
    return torch.where(_expand(mask, embeddings_adv), embeddings_adv, embeddings)


def zero_padding(maps: Tensor, mask: Tensor) -> Tensor:
    """``maps`` (``B x T x ...``) with the rows of the padding positions set to 0."""
    return maps * _expand(mask, maps).to(maps.dtype)


class MaskedTokenModel(nn.Module):
    """``forward(u, e0, mask, scale, ids, *args)``: the embedding-replaced model at ``e = u * scale``
    (``scale``: ``(B,)``, ones for an absolute radius) with the padding positions taken from ``e0``; the
    clean embeddings, the mask and the scale travel as (batch-indexed) model arguments, so an attack on
    ``u`` can neither move nor see the padding."""

    def __init__(self, replaced: nn.Module) -> None:
        super().__init__()
        self.replaced = replaced

    def forward(self, u: Tensor, e0: Tensor, mask: Tensor, scale: Tensor, ids: Tensor, *args: Any) -> Any:
        return self.replaced(keep_padding(u * per_row(scale, u), e0, mask), ids, *args)
