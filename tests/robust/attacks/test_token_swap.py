"""TokenSwapAttack: the discrete adversary on token models (issue 16).

Independent references written here: the nearest neighbours by brute-force distances between
the rows of the vocabulary table, the saliency maps by autograd through a forward hook that
replaces the embedding output, the masked measures by a sorted list / scipy, and, for
``max_swaps=1`` with every candidate evaluated, an exhaustive search over all allowed single
swaps."""

import pytest
import torch
from scipy import stats

transformers = pytest.importorskip("transformers", reason="transformers is needed for the token-model tests")

from captum_robust.attr import Saliency  # noqa: E402
from captum_robust.models import TokenBagClassifier  # noqa: E402
from captum_robust.robust.attacks import TokenSwapAttack, TokenSwapResult  # noqa: E402
from tests.helpers.text_models import (  # noqa: E402
    brute_topk_intersection, embedding_output, logits_with_embeddings, tiny_text_classifier, top_tokens,
)

V = 40


def _bert(dtype=torch.float32):
    model, layer = tiny_text_classifier("bert", dtype, vocab_size=V)
    return model, layer, layer.word_embeddings


def _bag(dtype=torch.float32):
    torch.manual_seed(0)
    model = TokenBagClassifier(vocab_size=V, embedding_dim=8, n_classes=3, hidden=16, softplus=2.0).to(dtype).eval()
    with torch.no_grad():
        model.embedding.weight.mul_(2.0)
    return model, model.embedding, model.embedding


def _batch(b=4, t=8):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, V, (b, t), generator=g)
    lengths = torch.tensor([8, 6, 7, 5])[:b]
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    ids[:, 0] = 1  # a [CLS]-like special token, forbidden
    ids[torch.arange(b), lengths - 1] = 2  # a [SEP]-like one
    return ids.masked_fill(mask == 0, 0), mask


def _prepared_maps(model, layer, ids, mask, target):
    """Ghorbani-prepared token saliency maps (|grad| summed over D, abs, scaled over the real tokens)."""
    e = embedding_output(model, layer, ids, mask).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(logits_with_embeddings(model, layer, ids, mask, e).gather(1, target[:, None]).sum(), e)
    s = g.abs().sum(-1) * mask
    return s * mask.sum(1, keepdim=True) / s.sum(1, keepdim=True)


def _nearest(word, token, n, forbidden):
    w = word.weight.detach().double()
    d = ((w - w[token]) ** 2).sum(1)
    d[list(forbidden)] = float("inf")
    d[token] = float("inf")
    return torch.sort(d, stable=True).indices[:n].tolist()


FORBIDDEN = (0, 1, 2)


@pytest.mark.parametrize("make", [_bert, _bag], ids=["bert", "bag"])
def test_invariants_and_reported_ranking_change(make):
    model, layer, word = make()
    ids, mask = _batch()
    attack = TokenSwapAttack(model, Saliency(model), layer, k=3, max_swaps=3, n_neighbours=6,
                             candidates_per_step=10, forbidden_ids=(1, 2))
    assert attack.word_embeddings is word and attack.forbidden_ids == FORBIDDEN  # padding_idx 0 added
    ids_adv, res = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask)
    assert isinstance(res, TokenSwapResult) and torch.equal(res.adversarial_ids, ids_adv)
    label = logits_with_embeddings(model, layer, ids, mask).argmax(1)
    # the label kept (the model run by hand on the adversarial ids)
    assert torch.equal(logits_with_embeddings(model, layer, ids_adv, mask).argmax(1), label)
    assert bool(res.prediction_kept.all()) and torch.equal(res.labels, label)
    changed = ids_adv != ids
    assert torch.equal(changed, res.swapped) and torch.equal(changed.sum(1), res.n_swaps)
    assert bool((res.n_swaps <= 3).all()) and int(res.n_swaps.sum()) > 0
    # padding and forbidden tokens untouched, never swapped in
    assert not bool((changed & (mask == 0)).any())
    assert not bool((changed & torch.isin(ids, torch.tensor(FORBIDDEN))).any())
    assert not bool(torch.isin(ids_adv[changed], torch.tensor(FORBIDDEN)).any())
    # every swapped token is among the n nearest of the original one
    for b, t in changed.nonzero().tolist():
        assert int(ids_adv[b, t]) in _nearest(word, int(ids[b, t]), 6, FORBIDDEN)
    # the reported maps and ranking change, recomputed by hand
    clean, adv = (_prepared_maps(model, layer, x, mask, label) for x in (ids, ids_adv))
    ref_topk = brute_topk_intersection(clean, adv, mask, 3)
    ref_tau = torch.tensor([stats.kendalltau(clean[i][mask[i].bool()].numpy(), adv[i][mask[i].bool()].numpy()).statistic
                            for i in range(4)])
    torch.testing.assert_close(res.topk_intersection, ref_topk, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.similarity, ref_topk, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.kendall, ref_tau.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(attack.similarity(ids, ids_adv, additional_forward_args=(mask,), token_mask=mask),
                               res.similarity)
    assert float(res.similarity.mean()) < 1.0
    # deterministic
    again, res2 = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask)
    assert torch.equal(again, ids_adv) and torch.equal(res2.similarity, res.similarity)


def _exhaustive(model, layer, word, ids, mask, n, k):
    """The best allowed single swap of every example by trying them all (None where none improves)."""
    label = logits_with_embeddings(model, layer, ids, mask).argmax(1)
    clean = _prepared_maps(model, layer, ids, mask, label)
    out = ids.clone()
    for i in range(ids.shape[0]):
        top0 = top_tokens(clean[i], mask[i], k)
        cands = []
        for t in mask[i].nonzero().flatten().tolist():
            if int(ids[i, t]) in FORBIDDEN:
                continue
            for w in _nearest(word, int(ids[i, t]), n, FORBIDDEN):
                c = ids[i].clone()
                c[t] = w
                cands.append(c)
        c = torch.stack(cands)
        m = mask[i].expand_as(c)
        lab = label[i].expand(c.shape[0])
        keep = logits_with_embeddings(model, layer, c, m).argmax(1) == lab
        maps = _prepared_maps(model, layer, c, m, lab)
        def topk(v):
            return float(brute_topk_intersection(clean[i][None], v[None], mask[i][None], k, torch.float64))

        best, best_key = None, (topk(clean[i]), float(clean[i][list(top0)].sum()))
        for j in range(c.shape[0]):
            key = (topk(maps[j]), float(maps[j][list(top0)].sum()))
            if keep[j] and key < best_key:
                best, best_key = j, key
        if best is not None:
            out[i] = c[best]
    return out


@pytest.mark.parametrize("make", [_bert, _bag], ids=["bert", "bag"])
def test_single_exhaustive_swap_equals_brute_force(make):
    model, layer, word = make(torch.float64)
    ids, mask = _batch()
    attack = TokenSwapAttack(model, Saliency(model), layer, k=2, max_swaps=1, n_neighbours=5,
                             candidates_per_step=None, forbidden_ids=(1, 2))
    ids_adv, res = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask)
    ref = _exhaustive(model, layer, word, ids, mask, 5, 2)
    assert torch.equal(ids_adv, ref)
    assert int(res.n_swaps.sum()) >= 2  # not a trivial agreement on "no swap"


def test_target_label_mode_and_refusals():
    model, layer, word = _bert()
    model.train()
    ids, mask = _batch()
    pred = logits_with_embeddings(model.eval(), layer, ids, mask).argmax(1)
    model.train()
    other = (pred + 1) % 3
    attack = TokenSwapAttack(model, Saliency(model), layer, k=3, max_swaps=2, n_neighbours=6, forbidden_ids=(1, 2))
    with pytest.warns(UserWarning, match="training mode"):
        ids_adv, res = attack.perturb(ids, target=other, additional_forward_args=(mask,), token_mask=mask)
    assert model.training  # restored
    # the label is the target: a swap is only accepted where the prediction becomes/stays the target
    assert torch.equal(res.labels, other)
    done = res.n_swaps > 0
    assert torch.equal(res.predictions[done], other[done])
    assert torch.equal(res.prediction_kept, res.predictions == other)
    model.eval()
    with pytest.raises(ValueError, match="n_neighbours must be at most 36"):
        TokenSwapAttack(model, Saliency(model), layer, n_neighbours=37, forbidden_ids=(1, 2))
    with pytest.raises(ValueError, match="forbidden_ids"):
        TokenSwapAttack(model, Saliency(model), layer, forbidden_ids=(V,))
    with pytest.raises(TypeError, match="nn.Embedding"):
        TokenSwapAttack(model, Saliency(model), layer, word_embeddings=layer)
    with pytest.raises(TypeError, match="integer tensor"):
        attack.perturb(ids.float(), additional_forward_args=(mask,))


def test_docstring_example_runs():
    import doctest

    from captum_robust.robust.attacks import token_swap

    with torch.random.fork_rng():
        torch.manual_seed(0)
        result = doctest.testmod(token_swap, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_word_embedding_gradient_matches_finite_differences():
    """The first-order ranking's gradient is taken at the word-embedding table's output, through
    the position embeddings and the LayerNorm that follow it: central differences of the
    objective (computed by hand) along a random direction there agree with it."""
    from captum_robust.robust.attacks._base import AttackCall, attack_mode

    model, layer, word = _bert(torch.float64)
    ids, mask = _batch()
    attack = TokenSwapAttack(model, Saliency(model), layer, k=3, forbidden_ids=(1, 2))
    with attack_mode(model):
        tb, view = attack._token_view(ids, (mask,), mask)
        ctx = view._context(AttackCall(tb.embeddings, None, tb.forward_args), None)
        grad = attack._word_gradient(tb, view, ctx, ids.clone(), torch.arange(4))
    label = logits_with_embeddings(model, layer, ids, mask).argmax(1)
    clean = _prepared_maps(model, layer, ids, mask, label)
    top = torch.zeros_like(clean)
    for i in range(4):
        top[i, list(top_tokens(clean[i], mask[i], 3))] = 1.0

    def objective(delta):
        h = word.register_forward_hook(lambda mod, i, o: o + delta)
        try:
            return (_prepared_maps(model, layer, ids, mask, label) * top).sum(1)
        finally:
            h.remove()

    v = torch.randn(grad.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * mask[..., None]
    step = 1e-5
    fd = (objective(step * v) - objective(-step * v)) / (2 * step)
    torch.testing.assert_close((grad * v).sum((1, 2)), fd, atol=1e-6, rtol=1e-5)
    assert float(fd.abs().min()) > 1e-3  # not a comparison of zeros
    assert not bool(grad[mask == 0].any())  # padding gets no gradient


def test_kendall_measure():
    model, layer, word = _bag()
    ids, mask = _batch()
    attack = TokenSwapAttack(model, Saliency(model), layer, k=3, max_swaps=2, n_neighbours=6, measure="kendall",
                             forbidden_ids=(1, 2))
    ids_adv, res = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask)
    torch.testing.assert_close(res.similarity, res.kendall)
    assert float(res.kendall.mean()) < 1.0 and bool((res.n_swaps > 0).any())


def test_vocabulary_table_is_the_models_input_embeddings_not_the_largest():
    # 64 position embeddings outnumber a 30-token vocabulary: the table is get_input_embeddings()
    model, _ = tiny_text_classifier("bert", vocab_size=30, max_position_embeddings=64)
    attack = TokenSwapAttack(model, Saliency(model), model.bert.embeddings, n_neighbours=5)
    assert attack.word_embeddings is model.bert.embeddings.word_embeddings
    ids = torch.randint(1, 30, (2, 6))
    adv, res = attack.perturb(ids, additional_forward_args=(torch.ones_like(ids),))
    assert int(adv.max()) < 30 and bool(res.prediction_kept.all())

    class TwoTables(torch.nn.Module):  # no get_input_embeddings: ambiguous, so an error naming both
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Module()
            self.emb.tok, self.emb.pos = torch.nn.Embedding(30, 4), torch.nn.Embedding(64, 4)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, ids):
            return self.head((self.emb.tok(ids) + self.emb.pos.weight[: ids.shape[1]]).mean(1))

    two = TwoTables()
    with pytest.raises(ValueError, match=r"tok \(30 rows\), pos \(64 rows\); pass word_embeddings="):
        TokenSwapAttack(two, Saliency(two), two.emb)
    assert TokenSwapAttack(two, Saliency(two), two.emb, word_embeddings=two.emb.tok).word_embeddings is two.emb.tok
