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

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_robust._utils.validation import check_submodule, format_additional_args, normal_tensor

__all__ = ["token_attributions", "TokenBatch", "embed_tokens", "check_token_mask", "token_scores", "embedding_sigma"]


def token_attributions(attributions: Tensor, token_mask: Optional[Tensor] = None) -> Tensor:
    r"""One score per token: the attributions of an embedding output summed over its last dimension.

    For attributions :math:`\mathrm{IG}_{b,t,d}` of shape ``B x T x D`` (e.g. from
    ``BatchedIntegratedGradients.attribute(..., embedding_layer=...)``) returns
    :math:`\sum_d \mathrm{IG}_{b,t,d}`, shape ``B x T``; by completeness its row sums are
    :math:`F(x) - F(a)`. Differentiable when the input is.

    Args:
        attributions (Tensor): ``B x T x D`` (or any ``B x ... x D``) floating-point tensor.
        token_mask (Tensor, optional): ``B x T`` (bool or 0/1 integers), true for the real
            tokens; the scores of the other (padding) tokens are set to 0.

    Returns:
        Tensor: ``attributions.sum(-1)``, 0 at masked tokens.

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
    scores = attributions.sum(dim=-1)
    if token_mask is not None:
        mask = check_token_mask(token_mask, scores)
        scores = scores.masked_fill(~mask, 0.0)
    return scores


def check_token_mask(token_mask: Any, like: Tensor, name: str = "token_mask") -> Tensor:
    """``token_mask`` as a bool tensor of ``like``'s first two dimensions (``B x T``), true for real tokens.

    Accepts bool or 0/1 integer tensors (a Hugging Face ``attention_mask``). Raises
    ``TypeError``/``ValueError`` naming the problem: not a tensor, wrong shape or device,
    values other than 0/1, or an example without any real token.
    """
    if not isinstance(token_mask, Tensor):
        raise TypeError(f"{name} must be a B x T tensor of 0/1 (or bool), got {type(token_mask).__name__}")
    want = tuple(like.shape[:2])
    if tuple(token_mask.shape) != want:
        raise ValueError(f"{name} must have the token ids' shape {want}, got {tuple(token_mask.shape)}")
    if token_mask.device != like.device:
        raise ValueError(f"{name} is on {token_mask.device} but the token ids are on {like.device}")
    if token_mask.is_floating_point() or token_mask.is_complex():
        raise TypeError(f"{name} must be bool or integer (1 = real token, 0 = padding), got {token_mask.dtype}")
    if token_mask.dtype != torch.bool:
        if bool(((token_mask != 0) & (token_mask != 1)).any()):
            raise ValueError(f"{name} must hold only 0 (padding) and 1 (real token)")
        token_mask = token_mask != 0
    empty = (~token_mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{name} marks no real token in example {int(empty[0])}; every example needs one")
    return token_mask


def token_scores(maps: Tensor, token_mask: Optional[Tensor] = None, fill: float = 0.0) -> Tensor:
    """Per-token scores of maps on the embedding output: the sum over the embedding dimension.

    The one rule of the library for turning ``B x T x D`` maps into ``B x T`` token maps
    (attacks, measures, the SmoothGrad family in token mode); masked (padding) tokens get
    ``fill`` (e.g. ``-inf`` to keep them out of a top-k). Differentiable.
    """
    scores = maps.sum(dim=-1) if maps.dim() >= 3 else maps
    if token_mask is not None:
        scores = scores.masked_fill(~token_mask, fill)
    return scores


def embedding_sigma(sigma: float, embeddings: Tensor, token_mask: Optional[Tensor] = None) -> Tensor:
    r"""Absolute noise standard deviation for a noise level relative to the embedding norm (B,).

    :math:`\sigma_b = \sigma \cdot \overline{\lVert e_{b,t} \rVert_2} / \sqrt{D}`, the mean over
    the real tokens of example ``b``: per-coordinate noise of this standard deviation has a
    norm of about ``sigma`` times the mean token-embedding norm on every token.
    """
    d = embeddings.shape[-1]
    norms = embeddings.detach().flatten(2).norm(dim=-1) if embeddings.dim() >= 3 else embeddings.detach().abs()
    if token_mask is None:
        mean = norms.mean(dim=1)
    else:
        w = token_mask.to(norms.dtype)
        mean = (norms * w).sum(dim=1) / w.sum(dim=1)
    if bool((mean == 0).any()):
        bad = int((mean == 0).nonzero()[0])
        raise ValueError(f"the embeddings of example {bad} are all zero; a sigma relative to their norm would be 0")
    return sigma * mean / math.sqrt(d)


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


@dataclass(frozen=True)
class TokenBatch:
    """A batch of token ids seen in the space of an embedding module's output.

    Float-input methods run on token models by taking ``embeddings`` as their inputs,
    ``model`` as the forward function and ``forward_args`` as ``additional_forward_args``:
    ``model(e, *forward_args)`` is the original model on ``ids`` with the embedding
    module's output replaced by ``e``, so ``model(embeddings, *forward_args)`` equals the
    original model's output.

    Attributes:
        ids (Tensor): ``B x T`` token ids.
        args (tuple): the original model's additional forward arguments.
        embeddings (Tensor): ``B x T x D`` output of the embedding module at ``ids``
            (attached to the graph when built with ``create_graph=True``).
        model (nn.Module): ``forward(e, ids, *args)``.
        mask (Tensor or None): ``B x T`` bool, true for real tokens (None: all real).
    """

    ids: Tensor
    args: Tuple[Any, ...]
    embeddings: Tensor
    model: nn.Module
    mask: Optional[Tensor]

    @property
    def forward_args(self) -> Tuple[Any, ...]:
        """``(ids, *args)``: the ``additional_forward_args`` of ``model``."""
        return (self.ids, *self.args)


def embed_tokens(
    forward_func: Any, embedding_layer: nn.Module, inputs: Any, additional_forward_args: Any = None,
    token_mask: Any = None, create_graph: bool = False,
) -> TokenBatch:
    """Check token-id inputs and compute their embeddings (see :class:`TokenBatch`).

    ``inputs`` is one ``B x T`` tensor of token ids (or a 1-tuple of it); other model inputs
    go through ``additional_forward_args``. ``create_graph=True`` keeps the embedding output
    attached to the graph, so a training loss built on it reaches the embedding weights.
    """
    check_submodule(forward_func, embedding_layer, "embedding_layer")
    if isinstance(inputs, tuple):
        if len(inputs) != 1:
            raise ValueError(
                f"embedding_layer= explains one tensor of token ids, got a tuple of {len(inputs)} inputs; "
                "pass the other inputs through additional_forward_args"
            )
        inputs = inputs[0]
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or inputs.shape[0] == 0:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a non-empty B x T tensor of token ids, got {got}")
    if inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool:
        raise TypeError(
            f"with embedding_layer= the inputs are token ids and must be an integer tensor, got {inputs.dtype}"
        )
    ids = normal_tensor(inputs)
    args = tuple(normal_tensor(a) for a in format_additional_args(additional_forward_args))
    mask = None if token_mask is None else check_token_mask(token_mask, ids)
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        emb = embedding_output(forward_func, embedding_layer, ids, args)
    if not create_graph:
        emb = emb.detach()
    if emb.dim() < 3 or tuple(emb.shape[:2]) != tuple(ids.shape[:2]):
        raise ValueError(
            f"embedding_layer must return B x T x D embeddings for B x T token ids {tuple(ids.shape)}, "
            f"got {tuple(emb.shape)}"
        )
    return TokenBatch(ids, args, emb, _EmbeddingReplaced(forward_func, embedding_layer), mask)


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
