"""torch.compile'd models (issue 15): attributions, attacks and regularizers give the uncompiled
model's numbers, second-order passes run on ``_orig_mod`` with one warning, nothing fails late.

``backend="aot_eager"`` runs AOT autograd without inductor: it reproduces the donated-buffers /
``create_graph`` failure of the default backend (see ``test_aot_eager_reproduces_the_failure``)
but compiles in seconds.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_robust._utils.compiled import CompiledModelWarning, is_compiled, uncompiled, warn_uncompiled
from captum_robust.attr import CAM, BatchedIntegratedGradients, Saliency, ScaledSmoothGrad
from captum_robust.models import Small
from captum_robust.robust.attacks import PGD, TopKAttack, softplus_surrogate
from captum_robust.robust.regularizers import IGNorm, InputGradientRegularizer, Int, PGDAdversarialLoss

pytest.importorskip("torch._dynamo")


def _compile(model):
    return torch.compile(model, backend="aot_eager", dynamic=False)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = Small(softplus=10.0).eval()
    x = torch.rand(4, 1, 12, 12)
    y = torch.tensor([0, 1, 2, 3])
    return model, x, y


def _compiled_warnings(record):
    return [w for w in record if issubclass(w.category, CompiledModelWarning)]


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


# --------------------------------------------------------------------------- the helpers


def test_is_compiled_and_uncompiled():
    model = nn.Linear(3, 2)
    compiled = _compile(model)
    assert is_compiled(compiled) and not is_compiled(model)
    assert uncompiled(compiled) is model and uncompiled(model) is model
    assert list(uncompiled(compiled).parameters())[0] is list(compiled.parameters())[0]

    def f(x):
        return x * 2

    assert is_compiled(_compile(f)) and uncompiled(_compile(f)) is f
    assert not is_compiled(f) and not is_compiled(None)


def test_warning_once_per_model_and_caller():
    compiled = _compile(nn.Linear(3, 2))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            warn_uncompiled(compiled, "Who")
        warn_uncompiled(compiled, "Other")
        warn_uncompiled(nn.Linear(3, 2), "Who")  # not compiled: silent
    msgs = [str(w.message) for w in _compiled_warnings(record)]
    assert len(msgs) == 2
    assert msgs[0].startswith("Who runs its second-order passes on the uncompiled module (model._orig_mod, same "
                              "parameters): torch.compile does not support create_graph=True")
    assert record[0].filename == __file__  # points at the caller's line, not the library's


def test_aot_eager_reproduces_the_failure(small):
    """The failure the fallback avoids: a double backward through a compiled graph."""
    model, x, y = small
    compiled = _compile(model)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(compiled(xr), y), xr, create_graph=True)
    with pytest.raises(RuntimeError, match="donated buffers|create_graph|double backward"):
        g.abs().sum().backward()


# --------------------------------------------------------------------------- attributions


def test_saliency_and_ig_maps_equal_uncompiled(small):
    model, x, y = small
    compiled = _compile(model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # first order: runs compiled, no warning
        s_ref, s_c = Saliency(model).attribute(x, target=y), Saliency(compiled).attribute(x, target=y)
        ig_ref = BatchedIntegratedGradients(model).attribute(x, target=y, n_steps=8)
        ig_c = BatchedIntegratedGradients(compiled).attribute(x, target=y, n_steps=8)
        assert not _compiled_warnings(record)
        torch.testing.assert_close(s_c, s_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ig_c, ig_ref, rtol=1e-5, atol=1e-6)
        # create_graph: falls back, one warning per method, gradient of the map equals uncompiled
        outs = []
        for m in (model, compiled):
            xr = x.clone().requires_grad_(True)
            a = Saliency(m).attribute(xr, target=y, create_graph=True).abs().sum()
            b = BatchedIntegratedGradients(m).attribute(xr, target=y, n_steps=8, create_graph=True).abs().sum()
            outs.append(torch.autograd.grad(a + b, xr)[0])
        xr = x.clone().requires_grad_(True)
        Saliency(compiled).attribute(xr, target=y, create_graph=True)  # a second call: no new warning
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    assert outs[0].abs().sum() > 0
    whos = sorted(str(w.message).split(" runs ")[0] for w in _compiled_warnings(record))
    assert whos == ["Integrated Gradients", "Saliency"]


def test_ig_layer_and_smoothgrad_on_compiled(small):
    model, x, y = small
    compiled = _compile(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompiledModelWarning)
        lay_ref = BatchedIntegratedGradients(model).attribute(x, target=y, n_steps=4, layer=model.feature_layer)
        lay_c = BatchedIntegratedGradients(compiled).attribute(x, target=y, n_steps=4, layer=model.feature_layer)
        sg = [ScaledSmoothGrad(m, sigma=0.1, n_samples=4).attribute(x, target=y,
                                                                   generator=torch.Generator().manual_seed(1))
              for m in (model, compiled)]
    torch.testing.assert_close(lay_c, lay_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sg[1], sg[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- regularizers


def _train_step(model, forward_model, reg_cls, x, y, **kw):
    model.zero_grad(set_to_none=True)
    if reg_cls is not InputGradientRegularizer:  # the only one without randomness
        kw = dict(kw, generator=torch.Generator().manual_seed(3))
    reg = reg_cls(forward_model, **kw)
    value = reg(x, y)
    loss = F.cross_entropy(forward_model(x), y) + value
    loss.backward()
    return float(value.detach()), float(loss.detach()), _grads(model)


@pytest.mark.parametrize("reg_cls, kw", [
    (IGNorm, dict(eps=0.1, n_steps=4, attack_n_steps=2, n_iterations=2, step_size=0.05)),
    (Int, dict(eps=0.1, n_iterations=2, step_size=0.05)),
    (InputGradientRegularizer, dict(lam=0.5)),
])
def test_regularizer_step_equals_uncompiled(small, reg_cls, kw):
    model, x, y = small
    compiled = _compile(model)
    ref = _train_step(model, model, reg_cls, x, y, **kw)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = _train_step(model, compiled, reg_cls, x, y, **kw)
        got2 = _train_step(model, compiled, reg_cls, x, y, **kw)  # a second regularizer, same model
    assert got[0] > 0 and torch.isfinite(torch.tensor(got[1]))
    assert got[0] == pytest.approx(ref[0], rel=1e-5) and got[1] == pytest.approx(ref[1], rel=1e-5)
    for g, r in zip(got[2], ref[2]):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    assert got2[0] == pytest.approx(got[0], rel=1e-6)
    found = _compiled_warnings(record)
    assert len(found) == 1 and str(found[0].message).startswith(f"{reg_cls.__name__} runs its second-order")
    assert found[0].filename == __file__
    assert model.training is False and all(p.requires_grad for p in model.parameters())


def test_first_order_objective_runs_without_warning(small):
    model, x, y = small
    compiled = _compile(model)
    kw = dict(eps=0.1, n_iterations=2, step_size=0.05, generator=torch.Generator().manual_seed(0))
    ref = PGDAdversarialLoss(model, **kw)(x, y)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        kw["generator"] = torch.Generator().manual_seed(0)
        got = PGDAdversarialLoss(compiled, **kw)(x, y)
    assert not _compiled_warnings(record)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)


def test_compiled_surrogate_is_unwrapped():
    relu = Small().eval()
    smooth = softplus_surrogate(_compile(relu), beta=5.0)
    assert not is_compiled(smooth) and smooth.classifier.weight is relu.classifier.weight


# --------------------------------------------------------------------------- attacks


def test_pgd_and_attribution_attack_equal_uncompiled(small):
    model, x, y = small
    compiled = _compile(model)
    results = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for m in (model, compiled):
            pgd = PGD(m, eps=0.1, step_size=0.03, n_iterations=3)
            x_pgd, _ = pgd.perturb(x, target=y, generator=torch.Generator().manual_seed(5))
            attack = TopKAttack(m, Saliency(m), k=20, eps=0.05, step_size=0.01, n_iterations=3)
            x_topk, res = attack.perturb(x, target=y)
            results.append((x_pgd, x_topk))
            cam = CAM(m, model.feature_layer, model.classifier)
            x_cam, _ = TopKAttack(m, cam, k=5, eps=0.05, step_size=0.01, n_iterations=2).perturb(x, target=y)
            results[-1] += (x_cam,)
    torch.testing.assert_close(results[1][2], results[0][2], rtol=0, atol=1e-6)
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0, atol=1e-6)
    assert (results[0][1] - x).abs().max() > 0  # the attack moved
    found = sorted(str(w.message) for w in _compiled_warnings(record))
    assert len(found) == 2 and found[0].startswith("the attack's CAM runs its attribution maps on the uncompiled")
    assert found[1].startswith("the attack's Saliency runs its attribution maps on the uncompiled")


def test_attack_with_surrogate_on_compiled_model():
    torch.manual_seed(0)
    relu = Small().eval()
    x, y = torch.rand(2, 1, 12, 12), torch.tensor([0, 1])
    compiled = _compile(relu)
    out = []
    for m in (relu, compiled):
        attack = TopKAttack(m, Saliency(m), k=10, eps=0.05, step_size=0.01, n_iterations=2,
                            surrogate=softplus_surrogate(m, beta=5.0))
        out.append(attack.perturb(x, target=y)[0])
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-6)
    assert (out[0] - x).abs().max() > 0


@pytest.mark.parametrize("method", ["CAM", "GradCAM", "GradCAMPlusPlus"])
def test_layer_methods_on_a_compiled_model_equal_uncompiled(method):
    """Hooks added after compiling never fire in the compiled graph: the layer methods run on the
    uncompiled module (one warning) and give its maps, also after the compiled model was called."""
    import captum_robust.attr as A
    from captum_robust._utils.compiled import CompiledModelWarning
    from captum_robust.models import Small

    torch.manual_seed(0)
    model = Small().eval()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    compiled(x)  # the compiled graph exists before any hook is added
    cls = getattr(A, method)
    make = (lambda m: cls(m, m.feature_layer, m.classifier)) if method == "CAM" else (lambda m: cls(m, m.feature_layer))
    expected = make(model).attribute(x, target=2)
    with pytest.warns(CompiledModelWarning, match="layer hooks"):
        got = make(compiled).attribute(x, target=2) if method == "CAM" else cls(compiled, model.feature_layer).attribute(x, target=2)
    torch.testing.assert_close(got, expected)


def test_token_attack_with_surrogate_on_compiled_model():
    # the embedding layer's name is looked up in the module inside torch.compile (it used to be
    # "_orig_mod.embedding", which the uncompiled surrogate does not have: a ValueError)
    from captum_robust.models import TokenBagClassifier

    torch.manual_seed(0)
    model = TokenBagClassifier(vocab_size=50, embedding_dim=8, n_classes=3, hidden=16, softplus=2.0).eval()
    ids = torch.randint(1, 50, (4, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 5:], ids[0, 5:] = 0, 0
    kw = dict(eps=0.05, n_iterations=4, step_size=0.02, k=2, embedding_layer=model.embedding)
    call = dict(additional_forward_args=(mask,), token_mask=mask)
    ref, ref_res = TopKAttack(model, Saliency(model), surrogate=model, **kw).perturb(ids, **call)
    compiled = _compile(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompiledModelWarning)
        adv, res = TopKAttack(compiled, Saliency(compiled), surrogate=model, **kw).perturb(ids, **call)
    assert not torch.equal(ref, model.embedding(ids))  # the attack moved the embeddings
    torch.testing.assert_close(adv, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.similarity, ref_res.similarity, atol=1e-6, rtol=0)
