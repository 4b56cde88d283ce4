"""The shared token-model foundation of ``attr/_core/tokens.py``: ``embed_tokens``/``TokenBatch``,
``check_token_mask``, ``token_scores``, ``token_attributions(token_mask=)`` and ``embedding_sigma``.

References: the original model's logits (the replaced-output model must reproduce them exactly),
hand-computed norms and sums.
"""

import math

import pytest
import torch
from torch import nn

from captum_robust.attr import TokenBatch, embed_tokens, token_attributions
from captum_robust.attr._core.tokens import check_token_mask, embedding_sigma, token_scores


class _Bag(nn.Module):
    """Embedding + position table, a per-token tanh layer and masked mean pooling."""

    def __init__(self, vocab=20, dim=5, classes=3):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(8, dim))
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids, mask):
        e = self.embedding(ids) + self.pos[: ids.shape[1]]
        h = torch.tanh(self.mix(e)) * mask.unsqueeze(-1)
        return self.head(h.sum(1) / mask.sum(1, keepdim=True))


def _setup():
    torch.manual_seed(0)
    model = _Bag().eval()
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    return model, ids, mask


def test_replaced_model_reproduces_the_model_and_reads_the_path_point():
    model, ids, mask = _setup()
    tb = embed_tokens(model, model.embedding, ids, (mask,), token_mask=mask)
    assert isinstance(tb, TokenBatch) and tb.embeddings.shape == (2, 4, 5) and not tb.embeddings.requires_grad
    torch.testing.assert_close(tb.embeddings, model.embedding(ids), atol=0, rtol=0)
    torch.testing.assert_close(tb.model(tb.embeddings, *tb.forward_args), model(ids, mask), atol=0, rtol=0)
    # a different path point changes the output exactly as feeding it by hand does
    e2 = tb.embeddings + 0.3
    by_hand = model.head((torch.tanh(model.mix(e2 + model.pos[:4])) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))
    torch.testing.assert_close(tb.model(e2, *tb.forward_args), by_hand, atol=1e-6, rtol=0)
    assert tb.mask.dtype == torch.bool and tb.mask.tolist() == [[True] * 4, [True, True, False, False]]


def test_create_graph_keeps_the_embedding_weights_in_the_graph():
    model, ids, mask = _setup()
    tb = embed_tokens(model, model.embedding, ids, (mask,), create_graph=True)
    (g,) = torch.autograd.grad(tb.model(tb.embeddings, *tb.forward_args).sum(), model.embedding.weight)
    assert g[3].abs().sum() > 0 and g[1].abs().sum() == 0  # rows of used ids only


@pytest.mark.parametrize("bad,err,match", [
    (torch.rand(2, 4), TypeError, "integer tensor"),
    (torch.tensor([1, 2]), ValueError, "B x T"),
    (torch.zeros(0, 4, dtype=torch.long), ValueError, "non-empty"),
    ((torch.zeros(2, 4, dtype=torch.long),) * 2, ValueError, "tuple of 2"),
])
def test_bad_ids_are_refused(bad, err, match):
    model, _, mask = _setup()
    with pytest.raises(err, match=match):
        embed_tokens(model, model.embedding, bad, (mask,))


def test_layer_not_in_model_or_not_called():
    model, ids, mask = _setup()
    with pytest.raises(ValueError):
        embed_tokens(model, nn.Embedding(3, 3), ids, (mask,))
    model.unused = nn.Embedding(3, 5)
    with pytest.raises(ValueError, match="not called"):
        embed_tokens(model, model.unused, ids, (mask,))


@pytest.mark.parametrize("bad,err,match", [
    ([[1, 1]], TypeError, "tensor"),
    (torch.ones(2, 3, dtype=torch.long), ValueError, "shape"),
    (torch.ones(2, 4), TypeError, "bool or integer"),
    (torch.full((2, 4), 2), ValueError, "only 0"),
    (torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]), ValueError, "example 1"),
])
def test_bad_token_masks_are_refused(bad, err, match):
    _, ids, _ = _setup()
    with pytest.raises(err, match=match):
        check_token_mask(bad, ids)


def test_token_scores_and_token_attributions_mask_padding():
    maps = torch.arange(2 * 4 * 3, dtype=torch.float64).reshape(2, 4, 3)
    mask = check_token_mask(torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]), maps)
    by_hand = [[sum(maps[b, t].tolist()) for t in range(4)] for b in range(2)]
    assert token_scores(maps).tolist() == by_hand
    s = token_scores(maps, mask, float("-inf"))
    assert s[1, 2:].tolist() == [float("-inf")] * 2 and s[0].tolist() == by_hand[0]
    a = token_attributions(maps, torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    assert a[1].tolist() == by_hand[1][:2] + [0.0, 0.0]


def test_embedding_sigma_is_relative_to_the_mean_real_token_norm():
    e = torch.zeros(2, 3, 4, dtype=torch.float64)
    e[0, :, 0] = torch.tensor([3.0, 4.0, 5.0])  # token norms 3, 4, 5 -> mean 4
    e[1, 0, :] = 2.0                            # norm 4; the two padding tokens are ignored
    e[1, 1:, :] = 100.0
    mask = torch.tensor([[True] * 3, [True, False, False]])
    sig = embedding_sigma(0.25, e, mask)
    torch.testing.assert_close(sig, torch.tensor([0.25 * 4 / 2, 0.25 * 4 / 2], dtype=torch.float64))
    # the noise norm per token is then about sigma times the mean norm: sqrt(D) * sigma_b
    assert math.isclose(float(sig[0]) * math.sqrt(4), 0.25 * 4)
    with pytest.raises(ValueError, match="all zero"):
        embedding_sigma(0.1, torch.zeros(1, 2, 3))
