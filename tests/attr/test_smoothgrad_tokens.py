"""The SmoothGrad family and CertifiedTopK on token models through ``embedding_layer=`` (issue 16).

References: a model linear in its embeddings (constant gradient: every sample map is the clean
map, known in closed form, and the sparsified certificate has a closed form computed here with
scipy), and a brute-force loop over the same noise (drawn here in the documented order) with
``torch.autograd.grad`` on a tiny BERT whose embedding output is replaced, per-token maps
computed by hand on the real tokens.
"""

import math
import warnings

import pytest
import torch
from scipy.stats import norm
from torch import nn

from captum_robust.attr import (
    CertifiedTopK,
    QuadraticSmoothGrad,
    RelaxedSparsifiedSmoothGrad,
    ScaledSmoothGrad,
    SparsifiedSmoothGrad,
)
from captum_robust.attr._core.smoothgrad import SmoothGradBase, attribute_with_shared_noise
from captum_robust.attr._core.tokens import embed_tokens
from tests.helpers.text_models import tiny_text_classifier

transformers = pytest.importorskip("transformers", reason="transformers is needed for the token-model tests")


class LinearTokens(nn.Module):
    """logits_c = sum_t <W_ct, e_t> with e = emb(ids): the gradient in the embeddings is W_target."""

    def __init__(self, vocab=20, length=10, dim=4, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.weight = nn.Parameter(torch.randn(classes, length, dim))

    def forward(self, ids):
        return torch.einsum("btd,ctd->bc", self.emb(ids), self.weight)


def _linear(seed=0):
    torch.manual_seed(seed)
    model = LinearTokens().eval()
    ids = torch.randint(0, 20, (2, 10), generator=torch.Generator().manual_seed(seed + 1))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 8:] = 0  # two padding tokens in the second example
    return model, ids, mask


def _bert(dtype=torch.float64, seed=0):
    model, _ = tiny_text_classifier("bert", dtype, seed)
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(seed + 1))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return model, ids, mask


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- hand-made base maps


def _hand_maps(name, l1, real, sparsity=0.3, clip=0.1):
    """Base maps of per-token l1 gradient norms (B x T) over the real tokens (bool B x T), by hand."""
    out = torch.zeros_like(l1)
    for b in range(l1.shape[0]):
        a = l1[b][real[b]]
        n = a.numel()
        if name == "scaled":
            h = a / a.max()
        elif name == "quadratic":
            h = (a / a.max()) ** 2
        elif name == "sparsified":
            h = torch.zeros_like(a)
            h[a.topk(math.ceil(sparsity * n)).indices] = 1.0
        else:  # relaxed, Levine eq. 2.5
            srt = a.sort(descending=True).values
            m_tau, m_gamma = srt[math.ceil(sparsity * n) - 1], srt[max(1, math.ceil(clip * n)) - 1]
            h = torch.where(a >= m_tau, (a / m_gamma).clamp(max=1.0), torch.zeros_like(a))
        out[b][real[b]] = h
    return out


def _method(name, model, sigma, n_samples, relative=False):
    if name == "scaled":
        return ScaledSmoothGrad(model, sigma, n_samples, relative_sigma=relative)
    if name == "quadratic":
        return QuadraticSmoothGrad(model, sigma, n_samples, relative_sigma=relative)
    if name == "sparsified":
        return SparsifiedSmoothGrad(model, 0.3, sigma, n_samples, relative_sigma=relative)
    return RelaxedSparsifiedSmoothGrad(model, 0.3, 0.1, sigma, n_samples, relative_sigma=relative)


class SignedSigmoid(SmoothGradBase):
    """A user subclass of the signed gradient: h = sigmoid(score); per token the score is sum_d g."""

    _bounded_by_construction = True

    def map_from_gradients(self, gradients):
        return torch.sigmoid(gradients)


# ---------------------------------------------------------------------------- linear model: closed forms


@pytest.mark.parametrize("name", ["scaled", "quadratic", "sparsified", "relaxed"])
def test_linear_model_every_sample_is_the_clean_map(name):
    model, ids, mask = _linear()
    target = torch.tensor([0, 2])
    l1 = model.weight.detach()[target].abs().sum(-1)  # the constant gradient W_target, l1 per token
    expected = _hand_maps(name, l1, mask.bool())
    method = _method(name, model, 0.7, 16)
    maps = method.attribute(ids, target=target, embedding_layer=model.emb, token_mask=mask, generator=_gen())
    assert maps.shape == (2, 10)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)
    assert bool((maps[1, 8:] == 0).all())
    clean = method.base_map(ids, target=target, embedding_layer=model.emb, token_mask=mask)
    torch.testing.assert_close(clean, expected, atol=1e-6, rtol=0)
    if name == "sparsified":  # exactly 0/1, ones on the top ceil(0.3 n_real) real tokens: 3 of 10, 3 of 8
        assert set(maps.unique().tolist()) == {0.0, 1.0}
        assert maps.sum(1).tolist() == [3.0, 3.0]


def test_linear_model_signed_subclass_scores_are_sums_of_gradients():
    model, ids, mask = _linear()
    w = model.weight.detach()[1].sum(-1)  # sum_d g per token (signed)
    maps = SignedSigmoid(model, 0.5, 8).attribute(ids, target=1, embedding_layer=model.emb, token_mask=mask,
                                                  generator=_gen())
    expected = torch.sigmoid(w).expand(2, 10).clone()
    expected[1, 8:] = 0.0
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)


def _closed_form_overlap(k, rho, sigma, n_real_max, q, confidence):
    """Levine Thm. 2 on a map of k exact ones and zeros: k if L_hat(1) > 0, else 0 (2k <= n_real)."""
    c = math.sqrt(math.log(2 * n_real_max / (1 - confidence)) / (2 * q))
    floor_one = norm.cdf(norm.ppf(1 - c) - 2 * rho / sigma) - c
    return (k if floor_one > 0 else 0), c


@pytest.mark.parametrize("factor", [0.97, 1.03])
def test_certificate_on_a_known_answer(factor):
    model, ids, mask = _linear()
    q, sigma, conf = 256, 0.5, 0.95
    c = math.sqrt(math.log(2 * 10 / (1 - conf)) / (2 * q))  # n = 10 real tokens (the longest example)
    rho_star = sigma * norm.ppf(1 - c)  # L_hat(1) = 0 there: Phi(Phi^-1(1 - c) - 2 rho / sigma) = c
    rho = factor * rho_star
    ssg = SparsifiedSmoothGrad(model, 0.2, sigma, q)  # ceil(0.2 * 10) = ceil(0.2 * 8) = 2 ones per sample
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        maps, cert = CertifiedTopK(ssg, k=2, rho=rho, confidence=conf).attribute(
            ids, target=0, embedding_layer=model.emb, token_mask=mask, generator=_gen())
    # beyond rho*, no map of this n_samples certifies: the warning says so, at the caller's line
    vacuous = [w for w in record if "makes every top-k certificate vacuous" in str(w.message)]
    assert len(vacuous) == (factor > 1) and all(w.filename == __file__ for w in vacuous)
    if vacuous:
        assert "n=10," in str(vacuous[0].message)
    want, c_hand = _closed_form_overlap(2, rho, sigma, 10, q, conf)
    assert want == (2 if factor < 1 else 0)
    assert cert.overlap.tolist() == [want, want]
    assert cert.margin == pytest.approx(c_hand, rel=1e-12)
    assert cert.n_features == 10 and cert.k == 2
    torch.testing.assert_close(cert.sigma, torch.full((2,), sigma))
    l1 = model.weight.detach()[0].abs().sum(-1)
    top0 = sorted(l1.topk(2).indices.tolist())  # both smoothed values are 1: ties go to the lower index
    top1 = sorted(l1[:8].topk(2).indices.tolist())
    assert cert.top_k.tolist() == [top0, top1]
    assert cert.vacuous.tolist() == [factor > 1] * 2
    # certified ranks: a top token gets m + 1 = 3 when L_hat(1) > 0 (the two ones stay above the
    # floor), otherwise the example's real length; zeros and padding get the real length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the vacuous warning, checked above
        _, ranks = CertifiedTopK(ssg, k=2, rho=rho, confidence=conf).certified_rank(
            ids, target=0, embedding_layer=model.emb, token_mask=mask, generator=_gen())
    for b, n_real in enumerate((10, 8)):
        expect = torch.full((10,), n_real)
        expect[cert.top_k[b]] = 3 if factor < 1 else n_real
        assert ranks[b].tolist() == expect.tolist()
    # the diagnosis reads the same certificate (margin over the real tokens, padding no competitor)
    d = cert.diagnose(maps)
    assert d.overlap.tolist() == cert.overlap.tolist() and d.margin == pytest.approx(cert.margin)
    assert d.n_features == 10
    torch.testing.assert_close(d.radius, torch.full((2,), rho_star, dtype=torch.float64), atol=1e-9, rtol=0)


def test_relative_sigma_is_relative_to_the_embedding_norm():
    model, ids, mask = _linear()
    real = mask.bool()
    e = model.emb(ids).detach()
    # sigma_b = sigma * mean over the real tokens of ||e_t|| / sqrt(D), by hand
    hand = torch.stack([0.3 * e[b][real[b]].norm(dim=-1).mean() / 2.0 for b in range(2)])
    q, conf = 512, 0.95
    c = math.sqrt(math.log(2 * 10 / (1 - conf)) / (2 * q))
    thresholds = hand.double() * norm.ppf(1 - c)  # the largest certified radius of each example
    rho = float(thresholds.mean())  # between the two: one example certified, the other not
    assert float(thresholds.min()) < rho < float(thresholds.max())
    ssg = SparsifiedSmoothGrad(model, 0.2, 0.3, q, relative_sigma=True)
    _, cert = CertifiedTopK(ssg, k=2, rho=rho).attribute(ids, target=0, embedding_layer=model.emb, token_mask=mask,
                                                         generator=_gen())
    torch.testing.assert_close(cert.sigma, hand, atol=1e-6, rtol=1e-6)
    assert cert.overlap.tolist() == [2 if float(t) > rho else 0 for t in thresholds]
    # the public sigma helpers give the same numbers for token ids (absolute and relative)
    torch.testing.assert_close(ssg.smoothing_sigma(ids, embedding_layer=model.emb, token_mask=mask), hand,
                               atol=1e-6, rtol=1e-6)
    (abs_sig,) = SparsifiedSmoothGrad(model, 0.2, 0.3, q).absolute_sigmas(ids, embedding_layer=model.emb)
    assert abs_sig.tolist() == pytest.approx([0.3, 0.3])
    with pytest.raises(ValueError, match="token_mask is only meaningful with embedding_layer"):
        ssg.smoothing_sigma(e, token_mask=mask)


def test_k_as_fraction_uses_the_shortest_real_length_and_too_large_k_names_the_example():
    model, ids, mask = _linear()
    ssg = SparsifiedSmoothGrad(model, 0.2, 0.5, 64)
    _, cert = CertifiedTopK(ssg, k=0.5, rho=0.01).attribute(ids, target=0, embedding_layer=model.emb,
                                                            token_mask=mask, generator=_gen())
    assert cert.k == 4  # ceil(0.5 * 8), the second example's real length
    assert not bool((cert.top_k[1] >= 8).any())  # padding never in the top-k
    with pytest.raises(ValueError, match="k=9 exceeds the 8 real tokens of example 1"):
        CertifiedTopK(ssg, k=9, rho=0.01).attribute(ids, target=0, embedding_layer=model.emb, token_mask=mask)


# ---------------------------------------------------------------------------- tiny BERT: brute force


def _brute_force(model, ids, mask, target, sigma, q, seed, base_map):
    """The mean over q noisy embeddings (noise drawn in the documented order) of base_map(grads B x T x D)."""
    tb = embed_tokens(model, model.bert.embeddings, ids, (mask,))
    e = tb.embeddings
    noise = torch.randn((max(1, min(256, 2**20 // e.numel())),) + tuple(e.shape), generator=_gen(seed),
                        dtype=e.dtype)[:q]
    total = torch.zeros(ids.shape, dtype=torch.float64)
    for j in range(q):
        x = (e + sigma * noise[j]).requires_grad_(True)
        logits = tb.model(x, *tb.forward_args).logits
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
        total += base_map(g)
    return total / q


@pytest.mark.parametrize("name", ["scaled", "sparsified", "relaxed", "signed"])
def test_bert_equals_brute_force_on_the_same_noise(name):
    model, ids, mask = _bert()
    target, q, sigma = torch.tensor([0, 2]), 8, 0.4
    real = mask.bool()
    if name == "signed":
        method = SignedSigmoid(model, sigma, q)

        def base(g):
            return torch.where(real, torch.sigmoid(g.sum(-1)), torch.zeros(()))
    else:
        method = _method(name, model, sigma, q)

        def base(g):
            return _hand_maps(name, g.abs().sum(-1), real)
    ref = _brute_force(model, ids, mask, target, sigma, q, 3, base)
    assert float(ref.std()) > 0.05  # not a constant map
    for ibs in (None, 2):  # 2 rows: one noisy copy of the batch per pass
        ours = method.attribute(ids, target=target, additional_forward_args=(mask,), internal_batch_size=ibs,
                                embedding_layer=model.bert.embeddings, token_mask=mask, generator=_gen(3))
        torch.testing.assert_close(ours.double(), ref, atol=1e-10, rtol=0)
        assert bool((ours[1, 4:] == 0).all())


def test_bert_sparsified_sums_relative_sigma_and_shared_noise():
    model, ids, mask = _bert()
    ssg = SparsifiedSmoothGrad(model, 0.3, 0.2, 16, relative_sigma=True)
    maps = ssg.attribute(ids, target=1, additional_forward_args=(mask,), embedding_layer=model.bert.embeddings,
                         token_mask=mask, generator=_gen(5))
    assert maps.sum(1).tolist() == pytest.approx([2.0, 2.0])  # ceil(0.3 * 6), ceil(0.3 * 4)
    assert 0 < float(maps[0].max()) and bool((maps[1, 4:] == 0).all())
    # relative sigma = the absolute per-example sigma of embedding_sigma's formula, by hand
    e = model.bert.embeddings(input_ids=ids).detach()
    hand = torch.stack([0.2 * e[b][mask[b].bool()].norm(dim=-1).mean() / 4.0 for b in range(2)])
    absolute = SparsifiedSmoothGrad(model, 0.3, hand, 16).attribute(
        ids, target=1, additional_forward_args=(mask,), embedding_layer=model.bert.embeddings, token_mask=mask,
        generator=_gen(5))
    torch.testing.assert_close(absolute, maps, atol=0, rtol=0)
    # several methods on the same noise: each equals its own call with the same generator seed
    sg = ScaledSmoothGrad(model, 0.2, 16, relative_sigma=True)
    scaled, sparse = attribute_with_shared_noise(
        [sg, ssg], ids, target=1, additional_forward_args=(mask,), generator=_gen(5),
        embedding_layer=model.bert.embeddings, token_mask=mask)
    torch.testing.assert_close(sparse, maps, atol=0, rtol=0)
    alone = sg.attribute(ids, target=1, additional_forward_args=(mask,), embedding_layer=model.bert.embeddings,
                         token_mask=mask, generator=_gen(5))
    torch.testing.assert_close(scaled, alone, atol=1e-12, rtol=0)


def test_bert_model_mode_restored_and_create_graph_matches_finite_differences():
    model, ids, mask = _bert()
    model.train()
    sg = ScaledSmoothGrad(model, 0.3, 4)
    kw = dict(target=0, additional_forward_args=(mask,), embedding_layer=model.bert.embeddings, token_mask=mask)
    with pytest.warns(UserWarning, match="Dropout"):
        maps = sg.attribute(ids, generator=_gen(1), **kw)
    assert all(m.training for m in model.modules())  # mode restored
    with pytest.warns(UserWarning, match="Dropout"), pytest.raises(ValueError, match="k=5 exceeds the 4 real"):
        CertifiedTopK(SparsifiedSmoothGrad(model, 0.3, 0.3, 4), k=5, rho=0.1).attribute(ids, **kw)
    assert all(m.training for m in model.modules())  # also when an error escapes
    model.eval()
    torch.testing.assert_close(maps, sg.attribute(ids, generator=_gen(1), **kw), atol=0, rtol=0)  # ran in eval
    # create_graph: the map is differentiable in the parameters (here the word embeddings, which the noisy
    # points start from); compare d<map, w>/dW along a random direction with central differences
    weight = model.bert.embeddings.word_embeddings.weight
    w = torch.randn(2, 6, dtype=torch.float64, generator=_gen(2))
    direction = torch.randn(weight.shape, dtype=torch.float64, generator=_gen(3))
    loss = (sg.attribute(ids, generator=_gen(1), create_graph=True, **kw) * w).sum()
    (grad,) = torch.autograd.grad(loss, weight)
    eps = 1e-6
    with torch.no_grad():
        weight += eps * direction
        up = (sg.attribute(ids, generator=_gen(1), **kw) * w).sum()
        weight -= 2 * eps * direction
        down = (sg.attribute(ids, generator=_gen(1), **kw) * w).sum()
        weight += eps * direction
    fd = (up - down) / (2 * eps)
    assert abs(float(fd)) > 1e-3
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
    assert weight.grad is None


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_other_architectures(arch):
    model, layer = tiny_text_classifier(arch, large_weights=False)
    ids = torch.randint(3, 50, (2, 7), generator=_gen(4))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    ssg = SparsifiedSmoothGrad(model, 0.25, 0.3, 32)
    maps, cert = CertifiedTopK(ssg, k=2, rho=0.01).attribute(
        ids, target=1, additional_forward_args=(mask,), embedding_layer=layer, token_mask=mask, generator=_gen(6))
    assert maps.sum(1).tolist() == pytest.approx([2.0, 2.0])  # ceil(0.25 * 5), ceil(0.25 * 7)
    assert bool((maps[0, 5:] == 0).all()) and not bool((cert.top_k[0] >= 5).any())
    # the certified top-k is the map's top-k over the real tokens
    top = maps.masked_fill(~mask.bool(), -1.0).sort(dim=1, descending=True, stable=True).indices[:, :2]
    assert cert.top_k.tolist() == top.tolist()


# ---------------------------------------------------------------------------- refusals


def test_refusals():
    model, ids, mask = _linear()
    sg = ScaledSmoothGrad(model, 0.5, 4)
    with pytest.raises(ValueError, match="token_mask is only meaningful with embedding_layer"):
        sg.attribute(torch.randn(2, 10, 4), target=0, token_mask=mask)
    with pytest.raises(ValueError, match="token_mask is only meaningful with embedding_layer"):
        CertifiedTopK(SparsifiedSmoothGrad(model, 0.2, 0.5, 4), k=1, rho=0.1).attribute(
            torch.randn(2, 10, 4), target=0, token_mask=mask)
    with pytest.raises(ValueError, match="tuple of 2 inputs"):
        sg.attribute((ids, ids), target=0, embedding_layer=model.emb)
    with pytest.raises(TypeError, match="must be an integer tensor"):
        sg.attribute(ids.float(), target=0, embedding_layer=model.emb)
    with pytest.raises(ValueError, match="surrogate= cannot be combined with embedding_layer="):
        sg.attribute(ids, target=0, embedding_layer=model.emb, surrogate=model)
    with pytest.raises(ValueError, match="embedding_layer"):
        sg.attribute(ids, target=0, embedding_layer=nn.Embedding(20, 4))  # not a submodule of the model
    with pytest.raises(ValueError, match="marks no real token in example 1"):
        sg.attribute(ids, target=0, embedding_layer=model.emb, token_mask=torch.cat([mask[:1], mask[:1] * 0]))
    with pytest.raises(ValueError, match="piecewise constant"):
        SparsifiedSmoothGrad(model, 0.2, 0.5, 4).attribute(ids, target=0, embedding_layer=model.emb, create_graph=True)


def test_diagnosis_with_padding_matches_the_unpadded_example_and_has_no_competitor_beyond_the_real_tokens():
    from captum_robust.attr.certify import diagnose_certificate, topk_certificate

    maps = torch.rand(2, 10, generator=_gen(7), dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 8:] = False
    maps[1, 8:] = 0.0
    # K = 5, m = 2: the competitor has rank 2K - m + 1 = 9, a real token of example 0 but beyond the 8
    # real tokens of example 1 (which shares 2K - 8 = 2 tokens with any top-5 anyway)
    d = diagnose_certificate(maps, k=5, rho=0.05, sigma=0.5, n_samples=400, min_overlap=2, token_mask=mask)
    ref = diagnose_certificate(maps[:1], k=5, rho=0.05, sigma=0.5, n_samples=400, min_overlap=2)  # n = 10 too
    for name in ("overlap", "upper", "lower", "gap", "max_margin", "n_samples_needed", "sigma_needed", "radius"):
        torch.testing.assert_close(getattr(d, name)[:1], getattr(ref, name), atol=0, rtol=0)
    assert float(d.lower[1]) == -math.inf and float(d.max_margin[1]) == math.inf
    assert float(d.radius[1]) == math.inf and int(d.n_samples_needed[1]) == 1
    assert float(d.upper[1]) == float(maps[1, :8].sort(descending=True).values[1])
    assert d.margin == pytest.approx(math.sqrt(math.log(2 * 10 / 0.05) / 800))
    # without the mask the padding zeros would be competitors: example 1 then has a finite radius
    plain = diagnose_certificate(maps, k=5, rho=0.05, sigma=0.5, n_samples=400, min_overlap=2)
    assert math.isfinite(float(plain.radius[1]))
    assert int(topk_certificate(maps[1:, :8], 5, 0.05, 0.5, d.margin)) == int(d.overlap[1])
