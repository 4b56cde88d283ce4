r"""Token models in the regularizers (issue 16): ``embedding_layer=``.

:class:`~captum_robust.robust.regularizers.IGNorm`,
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
ignored). Padding positions are never perturbed: the attack objective and the model see :math:`e` there
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
from captum_robust.attr._core.tokens import TokenBatch

__all__ = ["check_embedding_layer", "refuse_token_arguments", "real_tokens", "keep_padding", "MaskedTokenModel"]


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
    """``forward(e, e0, mask, ids, *args)``: the embedding-replaced model at ``e`` with the padding
    positions taken from ``e0``; the clean embeddings and the mask travel as (batch-indexed) model
    arguments, so an attack on ``e`` can neither move nor see the padding."""

    def __init__(self, replaced: nn.Module) -> None:
        super().__init__()
        self.replaced = replaced

    def forward(self, e: Tensor, e0: Tensor, mask: Tensor, ids: Tensor, *args: Any) -> Any:
        return self.replaced(keep_padding(e, e0, mask), ids, *args)
