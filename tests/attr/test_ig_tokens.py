"""Integrated Gradients of token models through ``embedding_layer=`` (issue 16, first bullet).

References: Captum's ``LayerIntegratedGradients`` on the same embedding module (independent
implementation), completeness against logits computed by hand with the embedding output
replaced, finite differences for ``create_graph=True``.
"""

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="transformers is needed for the token-model tests")
from captum.attr import LayerIntegratedGradients  # noqa: E402

from captum_robust.attr import BatchedIntegratedGradients, token_attributions  # noqa: E402
from tests.helpers.text_models import logits_with_embeddings, tiny_text_classifier  # noqa: E402


def _bert(dtype=torch.float32, seed=0):
    # large weights and random biases (tests/helpers/text_models.py says why)
    model, _ = tiny_text_classifier("bert", dtype, seed)
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0  # padding in the second example
    return model, ids, mask


def _captum(model, ids, mask, base, target, method, n_steps):
    lig = LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits, model.bert.embeddings)
    return lig.attribute(ids, baselines=base, target=target, additional_forward_args=(mask,), n_steps=n_steps,
                         method=method)


@pytest.mark.parametrize("method", ["riemann_middle", "gausslegendre"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-10)])
def test_equals_captum_layer_ig(method, dtype, tol):
    model, ids, mask = _bert(dtype)
    base = torch.zeros_like(ids)  # the pad token
    target = torch.tensor([0, 2])
    ours = BatchedIntegratedGradients(model).attribute(
        ids, baselines=base, target=target, embedding_layer=model.bert.embeddings, additional_forward_args=(mask,),
        n_steps=16, method=method)
    ref = _captum(model, ids, mask, base, target, method, 16)
    assert ours.shape == (2, 6, 16) and ours.dtype == dtype
    assert ref.abs().max() > 1e-2  # not a trivial comparison
    if dtype == torch.float64 and method == "gausslegendre":
        # Captum multiplies the gradients by float32 step sizes (captum/attr/_core/integrated_gradients.py:
        # torch.tensor(step_sizes).float()): its float64 Gauss-Legendre weights carry float32 rounding
        # (measured difference 4.5e-10 on values up to 0.48), ours are float64
        tol = 1e-8
    torch.testing.assert_close(ours, ref, atol=tol * max(1.0, float(ref.abs().max())), rtol=0)
    # an int baseline (the pad id) is the same as the tensor of pad ids; the submodule word_embeddings works too
    ours_int = BatchedIntegratedGradients(model).attribute(
        ids, baselines=0, target=target, embedding_layer=model.bert.embeddings, additional_forward_args=(mask,),
        n_steps=16, method=method)
    torch.testing.assert_close(ours_int, ours, atol=0, rtol=0)
    if dtype == torch.float64 and method == "gausslegendre":
        lig = LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits,
                                       model.bert.embeddings.word_embeddings)
        ref_w = lig.attribute(ids, baselines=base, target=target, additional_forward_args=(mask,), n_steps=16,
                              method=method)
        ours_w = BatchedIntegratedGradients(model).attribute(
            ids, baselines=base, target=target, embedding_layer=model.bert.embeddings.word_embeddings,
            additional_forward_args=(mask,), n_steps=16, method=method)
        torch.testing.assert_close(ours_w, ref_w, atol=1e-8 * float(ref_w.abs().max()), rtol=0)


def test_completeness_and_zero_embedding_baseline():
    model, ids, mask = _bert(torch.float64)
    target = torch.tensor([1, 0])
    ig = BatchedIntegratedGradients(model)
    # baselines=None: the path starts at zeros of the embedding output
    attr, delta = ig.attribute(ids, target=target, embedding_layer=model.bert.embeddings,
                               additional_forward_args=(mask,), n_steps=64, return_convergence_delta=True)
    with torch.no_grad():
        emb = model.bert.embeddings(ids)
        f_x = model(ids, attention_mask=mask).logits[[0, 1], target]
        f_0 = logits_with_embeddings(model, model.bert.embeddings, ids, mask, torch.zeros_like(emb))[[0, 1], target]
    total = token_attributions(attr).sum(dim=1)
    assert token_attributions(attr).shape == (2, 6)
    # measured on this model (Gauss-Legendre): |error| 2e-4 with 16 points, 7e-13 with 64
    torch.testing.assert_close(total, f_x - f_0, atol=1e-10, rtol=0)
    torch.testing.assert_close(delta, total - (f_x - f_0), atol=1e-12, rtol=0)
    assert (f_x - f_0).abs().min() > 1e-2


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_internal_batch_size_same_result(chunk):
    model, ids, mask = _bert(torch.float64)
    ig = BatchedIntegratedGradients(model)
    kw = dict(baselines=0, target=2, embedding_layer=model.bert.embeddings, additional_forward_args=(mask,),
              n_steps=7, method="riemann_middle")
    torch.testing.assert_close(ig.attribute(ids, internal_batch_size=chunk, **kw), ig.attribute(ids, **kw),
                               atol=1e-12, rtol=0)


def test_create_graph_parameter_gradients():
    model, ids, mask = _bert(torch.float64)
    ig = BatchedIntegratedGradients(model)
    w = model.classifier.weight
    e = model.bert.embeddings.word_embeddings.weight
    mode = [m.training for m in model.modules()]

    def loss(chunk=None):
        # baseline token 1 (not among the ids): row 0 of the table is BERT's padding_idx, whose gradient
        # nn.Embedding sets to zero by definition (finite differences would see it)
        a = ig.attribute(ids, baselines=1, target=torch.tensor([0, 1]), embedding_layer=model.bert.embeddings,
                         additional_forward_args=(mask,), n_steps=6, method="riemann_middle",
                         internal_batch_size=chunk, create_graph=True)
        return (token_attributions(a) ** 2).sum()

    g_full = torch.autograd.grad(loss(), (w, e))
    g_chunk = torch.autograd.grad(loss(3), (w, e))
    for a, b in zip(g_full, g_chunk):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    assert g_full[1][1].abs().sum() > 0 and g_full[1][int(ids[0, 2])].abs().sum() > 0  # both path ends
    assert not (ids == 1).any()
    # central finite differences on a few entries of each parameter
    for p, g in ((w, g_full[0]), (e, g_full[1])):
        for idx in [(1, 0), (1, 3), (int(ids[0, 2]), 5)] if p is e else [(0, 0), (1, 3), (2, 7)]:
            eps = 1e-6
            with torch.no_grad():
                p[idx] += eps
                up = float(loss())
                p[idx] -= 2 * eps
                down = float(loss())
                p[idx] += eps
            assert abs((up - down) / (2 * eps) - float(g[idx])) <= 1e-6 * max(1.0, abs(float(g[idx])))
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == mode
    # without create_graph the result is detached
    a = ig.attribute(ids, baselines=0, target=0, embedding_layer=model.bert.embeddings,
                     additional_forward_args=(mask,), n_steps=4)
    assert a.grad_fn is None and not a.requires_grad


def test_errors():
    model, ids, mask = _bert()
    ig = BatchedIntegratedGradients(model)
    with pytest.raises(ValueError, match="embedding_layer .* is not a submodule"):
        ig.attribute(ids, target=0, embedding_layer=nn.Embedding(50, 16), additional_forward_args=(mask,))
    with pytest.raises(TypeError, match="embedding_layer must be a torch.nn.Module"):
        ig.attribute(ids, target=0, embedding_layer="bert.embeddings", additional_forward_args=(mask,))
    with pytest.raises(ValueError, match="cannot be used together"):
        ig.attribute(ids, target=0, embedding_layer=model.bert.embeddings, layer=model.bert.pooler,
                     additional_forward_args=(mask,))
    with pytest.raises(ValueError, match="one tensor of token ids"):
        ig.attribute((ids, ids), target=0, embedding_layer=model.bert.embeddings, additional_forward_args=(mask,))
    with pytest.raises(ValueError, match="does not broadcast"):
        ig.attribute(ids, baselines=torch.zeros(3, 6, dtype=torch.long), target=0,
                     embedding_layer=model.bert.embeddings, additional_forward_args=(mask,))
    # a module of the model that the forward pass never calls
    model.unused = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="was not called"):
        ig.attribute(ids, target=0, embedding_layer=model.unused, additional_forward_args=(mask,))
    # without embedding_layer, integer inputs are still refused as before
    with pytest.raises(TypeError, match="floating-point"):
        ig.attribute(ids, target=0, additional_forward_args=(mask,))
    with pytest.raises(ValueError, match="B x T x D"):
        token_attributions(torch.ones(3))


def test_train_mode_model_is_explained_in_eval_mode_and_left_in_train_mode():
    # the embeddings of the inputs and of the baselines are computed in eval mode as well: with the
    # embedding dropout active they would be random (hidden_dropout_prob 0.5 makes that visible)
    model, ids, mask = _bert(torch.float64)
    model.config.hidden_dropout_prob = 0.5
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.5
    kw = dict(baselines=1, target=0, embedding_layer=model.bert.embeddings, additional_forward_args=(mask,), n_steps=8)
    ref = BatchedIntegratedGradients(model.eval()).attribute(ids, **kw)
    model.train()
    with pytest.warns(UserWarning):
        got = BatchedIntegratedGradients(model).attribute(ids, **kw)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_equals_captum_layer_ig_on_other_encoders(arch):
    model, layer = tiny_text_classifier(arch, torch.float64)
    ids = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    target = torch.tensor([2, 0])
    ours = BatchedIntegratedGradients(model).attribute(
        ids, baselines=1, target=target, embedding_layer=layer, additional_forward_args=(mask,), n_steps=32,
        method="gausslegendre")
    ref = LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits, layer).attribute(
        ids, baselines=torch.ones_like(ids), target=target, additional_forward_args=(mask,), n_steps=32,
        method="gausslegendre")
    assert ref.abs().max() > 1e-2
    # Captum's float32 step sizes (see test_equals_captum_layer_ig)
    torch.testing.assert_close(ours, ref, atol=1e-7 * float(ref.abs().max()), rtol=0)
