"""Attacks on token models through ``embedding_layer=`` (issue 16): TopKAttack and L2TopKAttack
in the space of the embedding output.

References computed here by hand: the clean embeddings and the logits at the adversarial
embeddings with a forward hook that replaces the embedding module's output, the saliency map
by autograd on those logits, its token map (sum over D), Ghorbani's preparation over the real
tokens, and the masked measures by brute force on the unpadded tokens (a sorted list for the
top-k intersection, scipy for Kendall's tau)."""

import math

import pytest
import torch
from scipy import stats

transformers = pytest.importorskip("transformers", reason="transformers is needed for the token-model tests")

from captum_robust.attr import Saliency  # noqa: E402
from captum_robust.models import TokenBagClassifier  # noqa: E402
from tests.helpers.text_models import (  # noqa: E402
    brute_topk_intersection, embedding_output, logits_with_embeddings, tiny_text_classifier,
)
from captum_robust.robust.attacks import L2TopKAttack, MassCenterAttack, PGD, TopKAttack  # noqa: E402


def _bert(seed=0):
    model, layer = tiny_text_classifier("bert", seed=seed)
    return model, layer, lambda ids, m, emb=None: logits_with_embeddings(model, layer, ids, m, emb)


def _bag(seed=0):
    torch.manual_seed(seed)
    model = TokenBagClassifier(vocab_size=50, embedding_dim=8, n_classes=3, hidden=16, softplus=2.0).eval()
    layer = model.embedding
    return model, layer, lambda ids, m, emb=None: logits_with_embeddings(model, layer, ids, m, emb)


def _batch(seed=1, b=6, t=8):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (b, t), generator=g)
    lengths = torch.tensor([t, t, 5, 6, 4, 7])[:b]
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def _token_saliency(logits_fn, ids, mask, emb, target):
    e = emb.detach().clone().requires_grad_(True)
    out = logits_fn(ids, mask, e)
    (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), e)
    return g.abs().sum(-1)  # Saliency's |grad|, summed over D


def _ghorbani(scores, mask):
    a = scores.abs() * mask
    return a * mask.sum(1, keepdim=True) / a.sum(1, keepdim=True)


def _brute_kendall(a, b, mask):
    return torch.tensor([stats.kendalltau(a[i][mask[i].bool()].numpy(), b[i][mask[i].bool()].numpy()).statistic
                         for i in range(a.shape[0])])


def _attacks(model, layer, eps, measure="topk"):
    sal = Saliency(model)
    return {
        "topk_linf": TopKAttack(model, sal, k=3, eps=eps, step_size=max(eps, 1e-3) / 8, n_iterations=12,
                                embedding_layer=layer, measure=measure),
        "topk_l2": TopKAttack(model, sal, k=3, eps=eps, step_size=max(eps, 1e-3) / 8, n_iterations=12, norm="l2",
                              random_start=True, embedding_layer=layer, measure=measure),
        "l2topk": L2TopKAttack(model, sal, k=3, rho=max(eps, 1e-3) * 4, n_iterations=6, n_restarts=2,
                               embedding_layer=layer, measure=measure),
    }


@pytest.mark.parametrize("make", [_bert, _bag], ids=["bert", "bag"])
@pytest.mark.parametrize("measure", ["topk", "kendall"])
def test_embedding_attacks_invariants_and_reported_similarity(make, measure):
    model, layer, logits_fn = make()
    ids, mask = _batch()
    clean_emb = embedding_output(model, layer, ids, mask)
    pred0 = logits_fn(ids, mask).argmax(1)
    clean_map = _ghorbani(_token_saliency(logits_fn, ids, mask, clean_emb, pred0), mask)
    sims = {}
    for name, attack in _attacks(model, layer, 0.5, measure).items():
        eps, p = (attack.rho, 2) if name == "l2topk" else (attack.eps, math.inf if attack.norm == "linf" else 2)
        adv, res = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask,
                                  generator=torch.Generator().manual_seed(0))
        assert adv.shape == clean_emb.shape and adv.is_floating_point()
        # the prediction kept for every example (the model run by hand on the adversarial embeddings)
        assert torch.equal(logits_fn(ids, mask, adv).argmax(1), pred0), name
        # the ball, per example, on the embedding tensor
        delta = (adv - clean_emb).flatten(1)
        norms = delta.abs().amax(1) if p == math.inf else delta.norm(dim=1)
        assert bool((norms <= eps + 1e-6).all()), (name, norms)
        torch.testing.assert_close(res.norm, norms, atol=1e-5, rtol=0)
        # padding embeddings exactly as they were
        pad = mask == 0
        assert torch.equal(adv[pad], clean_emb[pad]), name
        # the reported similarity recomputed by hand
        adv_map = _ghorbani(_token_saliency(logits_fn, ids, mask, adv, pred0), mask)
        if measure == "topk":
            ref = brute_topk_intersection(clean_map, adv_map, mask, 3)
        else:
            ref = _brute_kendall(clean_map, adv_map, mask)
        torch.testing.assert_close(res.similarity, ref.to(res.similarity.dtype), atol=1e-5, rtol=0, equal_nan=True)
        torch.testing.assert_close(attack.similarity(ids, adv, additional_forward_args=(mask,), token_mask=mask),
                                   res.similarity, atol=1e-6, rtol=0, equal_nan=True)
        sims[name] = res.similarity
    # the attacks move the token ranking on average (the clean similarity is 1); the sign steps most
    # (measured means 0.39 / 0.11 top-k, -0.12 / -0.24 Kendall on BERT / the bag model)
    for name, s in sims.items():
        assert float(s.mean()) < 0.95, (name, s)
    assert float(sims["topk_linf"].mean()) < 0.6


@pytest.mark.parametrize("make", [_bert, _bag], ids=["bert", "bag"])
def test_eps_zero_changes_nothing(make):
    model, layer, logits_fn = make()
    ids, mask = _batch()
    clean_emb = embedding_output(model, layer, ids, mask)
    for name, attack in _attacks(model, layer, 0.0).items():
        if name == "l2topk":
            continue  # rho must be > 0
        adv, res = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask,
                                  generator=torch.Generator().manual_seed(0))
        assert torch.equal(adv, clean_emb), name
        assert bool((res.similarity == 1).all()) and not bool(res.accepted.any())


def test_helpers_in_token_mode_and_model_state():
    model, layer, logits_fn = _bert()
    model.train()  # the attack runs it in eval mode and restores the mode
    ids, mask = _batch()
    attack = TopKAttack(model, Saliency(model), k=3, eps=0.5, step_size=0.1, n_iterations=3, norm="l2",
                        embedding_layer=layer)
    with pytest.warns(UserWarning, match="BertForSequenceClassification is in training mode"):
        maps = attack.attribution_maps(ids, additional_forward_args=(mask,), token_mask=mask)
    assert model.training
    model.eval()
    clean_emb = embedding_output(model, layer, ids, mask)
    pred0 = logits_fn(ids, mask).argmax(1)
    e = clean_emb.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(logits_fn(ids, mask, e).gather(1, pred0[:, None]).sum(), e)
    torch.testing.assert_close(maps, g.abs(), atol=1e-6, rtol=0)
    prepared = attack.prepare_maps(maps, token_mask=mask)
    torch.testing.assert_close(prepared, _ghorbani(g.abs().sum(-1), mask), atol=1e-5, rtol=0)
    # similarity of the ids with themselves (ids as inputs_adv) is 1
    assert bool((attack.similarity(ids, ids, additional_forward_args=(mask,), token_mask=mask) == 1).all())
    # no token mask: every token counts
    _, res = attack.perturb(ids, additional_forward_args=(mask,))
    assert res.similarity.shape == (6,)


def test_surrogate_in_token_mode():
    torch.manual_seed(0)
    model = TokenBagClassifier(vocab_size=50, embedding_dim=8, n_classes=3, hidden=16).eval()  # ReLU
    from captum_robust.robust.attacks import softplus_surrogate

    ids, mask = _batch()
    sal = Saliency(model)
    attack = TopKAttack(model, sal, k=3, eps=0.5, step_size=0.1, n_iterations=8, norm="l2",
                        embedding_layer=model.embedding, surrogate=softplus_surrogate(model, beta=2.0))
    adv, res = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask)
    logits_fn = lambda i, m, emb=None: logits_with_embeddings(model, model.embedding, i, m, emb)  # noqa: E731
    clean_emb = embedding_output(model, model.embedding, ids, mask)
    pred0 = logits_fn(ids, mask).argmax(1)
    assert torch.equal(logits_fn(ids, mask, adv).argmax(1), pred0)
    a = _ghorbani(_token_saliency(logits_fn, ids, mask, clean_emb, pred0), mask)
    b = _ghorbani(_token_saliency(logits_fn, ids, mask, adv, pred0), mask)
    # reported on the real (ReLU) model
    torch.testing.assert_close(res.similarity, brute_topk_intersection(a, b, mask, 3), atol=1e-6, rtol=0)
    assert float(res.similarity.mean()) < 1.0


def test_refusals():
    model, layer, _ = _bert()
    ids, mask = _batch()
    with pytest.raises(ValueError, match="does not support embedding_layer"):
        MassCenterAttack(model, Saliency(model), embedding_layer=layer)
    with pytest.raises(ValueError, match="not a submodule|inside|submodule"):
        TopKAttack(model, Saliency(model), k=3, embedding_layer=torch.nn.Embedding(5, 4))
    attack = TopKAttack(model, Saliency(model), k=3, eps=0.1, n_iterations=2, embedding_layer=layer)
    with pytest.raises(TypeError, match="integer tensor"):
        attack.perturb(ids.float(), additional_forward_args=(mask,))
    with pytest.raises(ValueError, match="token_mask"):
        attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask[:, :-1])
    with pytest.raises(ValueError, match="token_mask= is for token ids"):
        PGD(model, eps=0.1).perturb(torch.rand(2, 3), token_mask=mask[:2])
    big_k = TopKAttack(model, Saliency(model), k=9, eps=0.1, n_iterations=2, embedding_layer=layer)
    with pytest.raises(ValueError, match=r"k must be in \[1, 8\]"):
        big_k.perturb(ids, additional_forward_args=(mask,), token_mask=mask)
    wrapped = Saliency(lambda i, m: model(i, m).logits)
    with pytest.raises(ValueError, match="built on the model given to the attack"):
        TopKAttack(model, wrapped, k=3, embedding_layer=layer).perturb(ids, additional_forward_args=(mask,))
