r"""Integrated Gradients of token models through their embedding module (``embedding_layer=``).

Token ids are integers, so the path of Integrated Gradients cannot run between the input
ids and the baseline ids; as in Captum's ``LayerIntegratedGradients`` it runs in the space
of an embedding module's output :math:`e`:

.. math::

    \mathrm{IG}_{t,d} = (e(x) - e(a))_{t,d} \int_0^1
        \frac{\partial F}{\partial e_{t,d}}\big(e(a) + \alpha (e(x) - e(a))\big)\, d\alpha ,

where the model is run on the input ids with the embedding module's output *replaced* by the
path point (a forward hook), so positional/segment embeddings and normalisation inside the
module are part of :math:`e`. Completeness: :math:`\sum_{t,d} \mathrm{IG}_{t,d} = F(x) - F(a)`
up to the quadrature error. :func:`token_attributions` sums over the embedding dimension to
get one score per token.

Example::

    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from captum_robust.attr import BatchedIntegratedGradients, token_attributions
    >>> cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                  intermediate_size=32, max_position_embeddings=16, num_labels=3)
    >>> model = BertForSequenceClassification(cfg).eval()
    >>> ids, mask = torch.randint(1, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    >>> attr = BatchedIntegratedGradients(model).attribute(
    ...     ids, baselines=torch.zeros_like(ids), target=0, embedding_layer=model.bert.embeddings,
    ...     additional_forward_args=(mask,), n_steps=20)
    >>> attr.shape, token_attributions(attr).shape
    (torch.Size([2, 6, 16]), torch.Size([2, 6]))
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor, nn

__all__ = ["token_attributions"]


def token_attributions(attributions: Tensor) -> Tensor:
    r"""One score per token: the attributions of an embedding output summed over its last dimension.

    For attributions :math:`\mathrm{IG}_{b,t,d}` of shape ``B x T x D`` (e.g. from
    ``BatchedIntegratedGradients.attribute(..., embedding_layer=...)``) returns
    :math:`\sum_d \mathrm{IG}_{b,t,d}`, shape ``B x T``; by completeness its row sums are
    :math:`F(x) - F(a)`. Differentiable when the input is.

    Args:
        attributions (Tensor): ``B x T x D`` (or any ``B x ... x D``) floating-point tensor.

    Returns:
        Tensor: ``attributions.sum(-1)``.

    Example::

        >>> import torch
        >>> token_attributions(torch.ones(2, 6, 16)).shape
        torch.Size([2, 6])
    """
    if not isinstance(attributions, Tensor):
        raise TypeError(f"attributions must be a tensor, got {type(attributions).__name__}")
    if attributions.dim() < 2 or not attributions.is_floating_point():
        raise ValueError(
            f"attributions must be a floating-point B x T x D tensor (the embedding output's shape), got "
            f"shape {tuple(attributions.shape)} and dtype {attributions.dtype}"
        )
    return attributions.sum(dim=-1)


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the embedding output is known."""


def embedding_output(model: Any, layer: nn.Module, ids: Tensor, args: Tuple[Any, ...]) -> Tensor:
    """The output of ``layer`` when ``model(ids, *args)`` runs (the rest of the model is skipped)."""
    captured = []

    def hook(module: nn.Module, inp: Any, out: Any) -> None:
        captured.append(out)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(ids, *args)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(
            f"embedding_layer ({layer.__class__.__name__}) was not called by the model's forward pass; "
            "pass the module that embeds the token ids (e.g. model.bert.embeddings)"
        )
    out = captured[0]
    if not isinstance(out, Tensor) or not out.is_floating_point() or out.dim() == 0 or out.shape[0] != ids.shape[0]:
        desc = f"shape {tuple(out.shape)}, dtype {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"embedding_layer ({layer.__class__.__name__}) must return one floating-point batch-first tensor, "
            f"got {desc}; pass the module whose output is the B x T x D embeddings"
        )
    return out


class _EmbeddingReplaced(nn.Module):
    """``forward(e, ids, *args)``: ``model(ids, *args)`` with ``layer``'s output replaced by ``e``."""

    def __init__(self, model: Any, layer: nn.Module) -> None:
        super().__init__()
        self.model = model  # registered when it is a module: its train/eval flags and parameters
        self.layer = layer

    def forward(self, e: Tensor, ids: Tensor, *args: Any) -> Any:
        def hook(module: nn.Module, inp: Any, out: Any) -> Tensor:
            if not isinstance(out, Tensor) or out.shape != e.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"embedding_layer returned {got} on the path but {tuple(e.shape)} on the inputs; "
                    "its output must have a fixed shape"
                )
            return e.clone()  # a copy: in-place code after the layer must not touch the path point

        handle = self.layer.register_forward_hook(hook)
        try:
            return self.model(ids, *args)
        finally:
            handle.remove()
