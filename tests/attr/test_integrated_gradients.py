"""BatchedIntegratedGradients: agreement with Captum, differentiability (gradcheck, gradgradcheck,
chunked vs unchunked parameter gradients), IG of a per-example loss, layer IG along the input
path against brute force, errors, side effects."""

import math

import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerIntegratedGradients, NoiseTunnel
from torch import nn

import captum_robust.attr._core._ig_chunking as ig_chunking
from captum_robust.attr import BatchedIntegratedGradients
from captum_robust.models import Pool, Small
from tests.helpers.models import TinyGapNet, TwoInputNet

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]


def mlp(softplus=None, d_in=4, hidden=5, d_out=3, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    act = nn.ReLU() if softplus is None else nn.Softplus(beta=softplus)
    act2 = nn.ReLU() if softplus is None else nn.Softplus(beta=softplus)
    return nn.Sequential(nn.Linear(d_in, hidden), act, nn.Linear(hidden, hidden), act2, nn.Linear(hidden, d_out)).to(
        dtype
    )


class GridOut(nn.Module):
    """Returns a (N, 2, 3) output, for tuple targets."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6))

    def forward(self, x):
        return self.net(x).view(-1, 2, 3)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_rel(a, b, tol):
    if isinstance(a, tuple):
        for u, v in zip(a, b):
            assert_rel(u, v, tol)
        return
    assert a.shape == b.shape and a.dtype == b.dtype
    assert rel_err(a, b) <= tol, rel_err(a, b)


# --------------------------------------------------------------------------- equality with Captum


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_captum_small_every_chunk_size(method, dtype):
    model = Small(in_channels=1).to(dtype).eval()
    x = torch.rand(3, 1, 16, 16, dtype=dtype)
    base = torch.rand(1, 1, 16, 16, dtype=dtype) * 0.2
    target = [2, 7, 0]
    ref, ref_delta = IntegratedGradients(model).attribute(
        x, base, target=target, n_steps=4, method=method, return_convergence_delta=True
    )
    ig = BatchedIntegratedGradients(model)
    for ibs in (None, 1, 2, 5, "auto"):
        got, delta = ig.attribute(
            x, base, target=target, n_steps=4, method=method, internal_batch_size=ibs, return_convergence_delta=True
        )
        assert_rel(got, ref, 1e-5)
        torch.testing.assert_close(delta, ref_delta.to(dtype), rtol=1e-4, atol=1e-5 * float(ref.abs().sum()))


@pytest.mark.parametrize("method", METHODS)
def test_equals_captum_tuple_inputs_additional_args_per_example_targets(method):
    model = TwoInputNet().eval()
    x1, x2 = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    b1, b2 = torch.rand(4, 1, 5, 5) * 0.1, 0.25
    target = torch.tensor([0, 3, 1, 2])
    ref = IntegratedGradients(model).attribute(
        (x1, x2), (b1, b2), target=target, additional_forward_args=(0.7,), n_steps=6, method=method
    )
    for ibs in (None, 3, 8, 24):
        got = BatchedIntegratedGradients(model).attribute(
            (x1, x2), (b1, b2), target=target, additional_forward_args=(0.7,), n_steps=6, method=method,
            internal_batch_size=ibs,
        )
        assert isinstance(got, tuple) and len(got) == 2
        assert_rel(got, ref, 1e-5)


@pytest.mark.parametrize("model_fn", [lambda: Pool(in_channels=1), lambda: TinyGapNet(softplus=2.0)])
def test_equals_captum_other_models_and_local_attribution(model_fn):
    model = model_fn().eval()
    shape = (1, 28, 28) if isinstance(model, Pool) else (2, 5, 5)
    x = torch.rand(3, *shape)
    for multiply in (True, False):
        ref = IntegratedGradients(model, multiply_by_inputs=multiply).attribute(x, target=1, n_steps=5)
        got = BatchedIntegratedGradients(model, multiply_by_inputs=multiply).attribute(
            x, target=1, n_steps=5, internal_batch_size=4
        )
        assert_rel(got, ref, 1e-5)
    assert BatchedIntegratedGradients(model, multiply_by_inputs=False).multiplies_by_inputs is False


def test_tensor_additional_args_and_tuple_targets_equal_captum():
    torch.manual_seed(1)
    model = GridOut().double()

    def fwd(x, scale):  # scale: a batch tensor, repeated along the path
        return model(x) * scale.view(-1, 1, 1)

    x = torch.randn(5, 4, dtype=torch.float64)
    scale = torch.rand(5, dtype=torch.float64) + 0.5
    for target in [(1, 2), [(0, 0), (1, 1), (0, 2), (1, 0), (0, 1)]]:
        ref = IntegratedGradients(fwd).attribute(x, target=target, additional_forward_args=scale, n_steps=7)
        for ibs in (None, 2, 5, 11):
            got = BatchedIntegratedGradients(fwd).attribute(
                x, target=target, additional_forward_args=scale, n_steps=7, internal_batch_size=ibs
            )
            assert_rel(got, ref, 1e-7)  # Captum rounds its step sizes to float32


def test_per_example_scalar_output_equals_captum_and_chen_completeness():
    model = Small(in_channels=1, softplus=1.0).double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([4, 1, 9])
    x_adv = (x + 0.3 * torch.sign(torch.randn_like(x))).clamp(0, 1)

    def loss(r, labels):
        return F.cross_entropy(model(r), labels, reduction="none")

    ref = IntegratedGradients(loss).attribute(x_adv, baselines=x, additional_forward_args=(y,), n_steps=8)
    ig = BatchedIntegratedGradients(loss)
    got, delta = ig.attribute(
        x_adv, baselines=x, additional_forward_args=(y,), n_steps=8, internal_batch_size=5,
        return_convergence_delta=True,
    )
    assert_rel(got, ref, 1e-7)  # Captum rounds its step sizes to float32
    # Chen's IG^{l_y}(x, x') is complete: its sum is l_y(x') - l_y(x) (Gauss-Legendre, smooth net)
    fine = ig.attribute(x_adv, baselines=x, additional_forward_args=(y,), n_steps=64)
    torch.testing.assert_close(fine.sum(dim=(1, 2, 3)), loss(x_adv, y) - loss(x, y), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(delta, got.sum(dim=(1, 2, 3)) - (loss(x_adv, y) - loss(x, y)))


def test_one_step_right_riemann_is_gradient_times_difference():
    # Chen Prop. 2: with m = 1 (right rule) IG^l(x, x') = (x' - x) * grad l(x')
    model = mlp(softplus=1.0)
    x, x_adv = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    xa = x_adv.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
    got = BatchedIntegratedGradients(lambda r: F.cross_entropy(model(r), y, reduction="none")).attribute(
        x_adv, baselines=x, n_steps=1, method="riemann_right"
    )
    torch.testing.assert_close(got, (x_adv - x) * g, rtol=1e-12, atol=1e-14)


def test_noise_tunnel_wraps_it_like_captum():
    model = TinyGapNet(softplus=1.0).eval()
    x = torch.rand(2, 2, 5, 5)
    torch.manual_seed(3)
    ref = NoiseTunnel(IntegratedGradients(model)).attribute(x, nt_samples=3, stdevs=0.1, target=1, n_steps=5)
    torch.manual_seed(3)
    got = NoiseTunnel(BatchedIntegratedGradients(model)).attribute(
        x, nt_samples=3, stdevs=0.1, target=1, n_steps=5, internal_batch_size=7
    )
    assert_rel(got, ref, 1e-5)


# --------------------------------------------------------------------------- create_graph


def _ig_fn(model_fn, ibs, method="gausslegendre", n_steps=3, layer=None, multiply=True):
    """IG as a function of (inputs, baselines, *params) for gradcheck; params enter the closure."""

    def fn(x, a, *params):
        ig = BatchedIntegratedGradients(lambda r: model_fn(r, params), multiply_by_inputs=multiply)
        return ig.attribute(x, a, target=1, n_steps=n_steps, method=method, internal_batch_size=ibs, create_graph=True)

    return fn


def _functional_mlp(softplus):
    act = (lambda z: F.softplus(z, beta=softplus)) if softplus else F.relu

    def model(r, params):
        w1, b1, w2, b2 = params
        return F.linear(act(F.linear(r, w1, b1)), w2, b2)

    torch.manual_seed(0)
    params = (
        torch.randn(6, 3, dtype=torch.float64),
        torch.randn(6, dtype=torch.float64),
        torch.randn(3, 6, dtype=torch.float64),
        torch.randn(3, dtype=torch.float64),
    )
    return model, [p.requires_grad_() for p in params]


@pytest.mark.parametrize("softplus", [1.0, None])
@pytest.mark.parametrize("ibs", [None, 1, 2, 5, "auto"])
def test_gradcheck_inputs_baselines_parameters(softplus, ibs):
    model, params = _functional_mlp(softplus)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    a = (0.3 * torch.randn(2, 3, dtype=torch.float64)).requires_grad_()
    fn = _ig_fn(model, ibs)
    assert torch.autograd.gradcheck(fn, (x, a, *params), eps=1e-6, atol=1e-6)
    if softplus:  # third derivatives of a ReLU net are zero a.e. and finite differences cross kinks
        assert torch.autograd.gradgradcheck(fn, (x, a, *params), eps=1e-6, atol=1e-5)


def test_gradgradcheck_relu_net_inputs_only():
    model, params = _functional_mlp(None)
    params = [p.detach() for p in params]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    a = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    fn = _ig_fn(model, 2)
    assert torch.autograd.gradgradcheck(lambda x, a: fn(x, a, *params), (x, a), eps=1e-6, atol=1e-5)


def _naive_loss_ig(model, x, x_adv, y, n_steps, method):
    """Independent reference: the whole path in one batch, create_graph, no chunking."""
    from captum_robust.attr._core._quadrature import quadrature_rule

    t, w = quadrature_rule(method, n_steps)
    t = torch.as_tensor(t, dtype=x.dtype).view(-1, *([1] * x.dim()))
    w = torch.as_tensor(w, dtype=x.dtype).view(-1, *([1] * x.dim()))
    r = (x.unsqueeze(0) + t * (x_adv - x).unsqueeze(0)).reshape(-1, *x.shape[1:])
    out = F.cross_entropy(model(r), y.repeat(n_steps), reduction="none")
    (g,) = torch.autograd.grad(out.sum(), r, create_graph=True)
    return (x_adv - x) * (w * g.view(n_steps, *x.shape)).sum(0)


@pytest.mark.parametrize("softplus", [2.0, None])
def test_parameter_gradients_of_l1_norm_equal_for_every_chunk_size(softplus):
    model = Small(in_channels=1, softplus=softplus).double().eval()
    params = list(model.parameters())
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    x_adv = (x + 0.3 * torch.randn_like(x)).requires_grad_()
    y = torch.tensor([1, 5, 2])
    n_steps, method = 4, "riemann_right"
    ref_attr = _naive_loss_ig(model, x, x_adv, y, n_steps, method)
    ref = torch.autograd.grad(ref_attr.abs().sum(), params + [x_adv])
    ig = BatchedIntegratedGradients(lambda r, t: F.cross_entropy(model(r), t, reduction="none"))
    for ibs in [None, 1, 2, 3, 4, 5, 7, 11, 12, "auto"]:
        attr = ig.attribute(
            x_adv, x, additional_forward_args=(y,), n_steps=n_steps, method=method, internal_batch_size=ibs,
            create_graph=True,
        )
        torch.testing.assert_close(attr, ref_attr, rtol=1e-10, atol=1e-12)
        got = torch.autograd.grad(attr.abs().sum(), params + [x_adv])
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)
    # the second-order term matters: dropping it (Captum's behaviour) changes the gradient
    nonzero = [float(r.abs().max()) for r in ref[:-1]]
    assert min(nonzero[:-1]) > 0  # every layer but the final bias gets a gradient


def test_chunks_are_recomputed_not_kept():
    """Rows per forward call stay within internal_batch_size, in the forward and the backward pass."""
    model = Small(in_channels=1, softplus=1.0).double().eval()
    calls = []

    def fwd(r, t):
        calls.append(r.shape[0])
        return F.cross_entropy(model(r), t, reduction="none")

    x = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    attr = BatchedIntegratedGradients(fwd).attribute(
        x + 0.1, x, additional_forward_args=(y,), n_steps=5, internal_batch_size=8, create_graph=True
    )
    assert max(calls) <= 8 and sum(calls) == 20
    calls.clear()
    attr.abs().sum().backward()
    # the first chunk (8 rows) keeps its graph; the other two (8 + 4 rows) are recomputed once
    assert calls == [8, 4] or calls == [4, 8]


def test_create_graph_with_nothing_to_differentiate_skips_the_recomputation():
    model = mlp(softplus=1.0).requires_grad_(False)
    calls = []

    def fwd(r):
        calls.append(r.shape[0])
        return model(r)

    x = torch.randn(4, 4, dtype=torch.float64)
    ig = BatchedIntegratedGradients(fwd)
    plain = ig.attribute(x, target=1, n_steps=5, internal_batch_size=8)
    calls.clear()
    attr = ig.attribute(x, target=1, n_steps=5, internal_batch_size=8, create_graph=True)
    torch.testing.assert_close(attr, plain, rtol=1e-12, atol=1e-14)
    attr.sum().backward()  # reaches only the path points made inside the call
    assert calls == [8, 8, 4]  # no chunk was recomputed
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_auto_chunk_follows_the_measured_budget(monkeypatch):
    from captum_robust._utils import chunking

    model = mlp(softplus=1.0)
    calls = []

    def fwd(r):
        calls.append(r.shape[0])
        return model(r)

    x = torch.randn(5, 4, dtype=torch.float64)
    ig = BatchedIntegratedGradients(fwd)
    ref = ig.attribute(x, target=0, n_steps=6)
    for budget, expected in ((1, [5] + [1] * 25), (10**12, [5, 25])):
        monkeypatch.setattr(chunking, "CPU_BYTES_PER_THREAD", budget)
        calls.clear()
        got = ig.attribute(x, target=0, n_steps=6, internal_batch_size="auto")
        assert calls == expected  # the probe (one step), then chunks sized by the budget
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)


def test_gradient_to_additional_tensor_argument_and_captured_non_leaf_fallback():
    model = mlp(softplus=1.0)
    x = torch.randn(3, 4, dtype=torch.float64)
    soft = torch.softmax(torch.randn(3, 3, dtype=torch.float64), 1).requires_grad_()
    temp0 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)

    def grads(ibs):
        temp = temp0 * 2  # a captured non-leaf tensor that requires grad

        def fwd(r, p):
            return -(p * torch.log_softmax(model(r) / temp, 1)).sum(1)

        attr = BatchedIntegratedGradients(fwd).attribute(
            x, additional_forward_args=(soft,), n_steps=5, internal_batch_size=ibs, create_graph=True
        )
        return torch.autograd.grad(attr.pow(2).sum(), [soft, temp0, temp] + list(model.parameters()), allow_unused=True)

    ref = grads(None)
    for ibs in (1, 4, 7):
        for g, r in zip(grads(ibs), ref):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_recomputation_replays_the_random_numbers_of_the_forward_pass(monkeypatch):
    # Dropout in train mode: our recompute (RNG restored by us) must give the gradients that
    # torch.utils.checkpoint (RNG restored by torch) gives on the same chunks.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Softplus(), nn.Dropout(0.5), nn.Linear(16, 3)).double().train()
    x = torch.randn(4, 4, dtype=torch.float64)

    def grads():
        torch.manual_seed(7)
        attr = BatchedIntegratedGradients(model).attribute(x, target=0, n_steps=6, internal_batch_size=8, create_graph=True)
        params = list(model.parameters())[:-1]  # the last bias does not change an input gradient
        return [attr.detach()] + list(torch.autograd.grad(attr.pow(2).sum(), params))

    ours = grads()
    monkeypatch.setattr(ig_chunking, "_graph_leaves", lambda *a, **k: None)  # force the checkpoint path
    checkpointed = grads()
    for g, r in zip(ours, checkpointed):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)
    assert model.training


# --------------------------------------------------------------------------- layer IG along the input path


def _brute_force_layer_ig(model, layer_index, x, a, target, n_steps, method, multiply=True):
    """Loop over examples and path points; full Jacobians of the layer with autograd.functional."""
    from captum_robust.attr._core._quadrature import quadrature_rule

    head = model[: layer_index + 1]
    tail = model[layer_index + 1 :]
    t, w = quadrature_rule(method, n_steps)
    rows = []
    for b in range(x.shape[0]):
        total = 0
        for tk, wk in zip(t, w):
            r = a[b] + float(tk) * (x[b] - a[b])
            jac = torch.autograd.functional.jacobian(head, r)  # (H, D)
            h = head(r).detach().requires_grad_()
            (gh,) = torch.autograd.grad(tail(h)[target[b]], h)
            total = total + wk * (gh * (jac @ (x[b] - a[b])) if multiply else gh)
        rows.append(total)
    return torch.stack(rows)


@pytest.mark.parametrize("layer_index", [1, 2, 3])
@pytest.mark.parametrize("ibs", [None, 2, 5])
def test_layer_ig_equals_brute_force_and_is_complete(layer_index, ibs):
    model = mlp(softplus=1.5)
    x = torch.randn(3, 4, dtype=torch.float64)
    a = 0.2 * torch.randn(3, 4, dtype=torch.float64)
    target = [0, 2, 1]
    ig = BatchedIntegratedGradients(model)
    got, delta = ig.attribute(
        x, a, target=target, n_steps=6, method="riemann_middle", layer=model[layer_index], internal_batch_size=ibs,
        return_convergence_delta=True,
    )
    ref = _brute_force_layer_ig(model, layer_index, x, a, target, 6, "riemann_middle")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    out = model(x).gather(1, torch.tensor(target)[:, None]).squeeze(1) - model(a).gather(
        1, torch.tensor(target)[:, None]
    ).squeeze(1)
    torch.testing.assert_close(delta, got.sum(1) - out)
    fine = ig.attribute(x, a, target=target, n_steps=40, layer=model[layer_index])
    torch.testing.assert_close(fine.sum(1), out, rtol=1e-9, atol=1e-11)  # completeness (Gauss-Legendre)
    local = BatchedIntegratedGradients(model, multiply_by_inputs=False).attribute(
        x, a, target=target, n_steps=6, method="riemann_middle", layer=model[layer_index], internal_batch_size=ibs
    )
    ref_local = _brute_force_layer_ig(model, layer_index, x, a, target, 6, "riemann_middle", multiply=False)
    torch.testing.assert_close(local, ref_local, rtol=1e-10, atol=1e-12)


def test_layer_ig_identity_and_affine_layers_match_input_ig_and_captum():
    model = mlp(softplus=1.0)
    wrapped = nn.Sequential(nn.Identity(), *model)
    x = torch.randn(4, 4, dtype=torch.float64)
    ig = BatchedIntegratedGradients(wrapped)
    # the identity layer's output is the input: layer IG = input IG
    torch.testing.assert_close(
        ig.attribute(x, target=2, n_steps=7, layer=wrapped[0]), ig.attribute(x, target=2, n_steps=7), rtol=1e-12,
        atol=1e-14,
    )
    # for an affine first layer the input path maps to the straight line in layer space, so
    # Chen's Lemma 1 and Captum's LayerIntegratedGradients coincide ...
    ours = ig.attribute(x, target=2, n_steps=7, layer=wrapped[1])
    captum = LayerIntegratedGradients(wrapped, wrapped[1]).attribute(x, target=2, n_steps=7)
    torch.testing.assert_close(ours, captum, rtol=1e-7, atol=1e-10)  # Captum: float32 step sizes
    # ... but not after a nonlinearity when the rest of the network mixes the units (a tail
    # sum_j g_j(h_j) would make both equal to g_j(h_j(x)) - g_j(h_j(a))); both are complete
    ours3 = ig.attribute(x, target=2, n_steps=60, layer=wrapped[2])
    captum3 = LayerIntegratedGradients(wrapped, wrapped[2]).attribute(x, target=2, n_steps=60)
    assert rel_err(ours3, ig.attribute(x, target=2, n_steps=90, layer=wrapped[2])) < 1e-9  # converged
    assert rel_err(captum3, LayerIntegratedGradients(wrapped, wrapped[2]).attribute(x, target=2, n_steps=90)) < 1e-6
    assert rel_err(ours3, captum3) > 1e-4  # a real difference, far above both quadrature errors
    torch.testing.assert_close(ours3.sum(1), captum3.sum(1), rtol=1e-8, atol=1e-10)


def test_layer_input_and_conv_layer_completeness():
    model = Small(in_channels=1, softplus=2.0).double().eval()
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    ig = BatchedIntegratedGradients(model)
    logits = model(x)[:, 3] - model(torch.zeros_like(x))[:, 3]
    for to_input in (False, True):
        attr = ig.attribute(
            x, target=3, n_steps=30, layer=model.feature_layer, attribute_to_layer_input=to_input, internal_batch_size=16
        )
        assert attr.shape == ((2, 32, 4, 4) if to_input else (2, 100, 4, 4))
        torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), logits, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("ibs", [None, 2, 3])
def test_layer_ig_create_graph_gradcheck(ibs):
    model, params = _functional_mlp(1.0)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    a = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    hidden = nn.Softplus(beta=1.0)  # the layer we attribute to, called inside the model

    def fwd(r):
        w1, b1, w2, b2 = params
        return F.linear(hidden(F.linear(r, w1, b1)), w2, b2)

    def fn(x, a, *ps):
        return BatchedIntegratedGradients(fwd).attribute(
            x, a, target=0, n_steps=3, layer=hidden, internal_batch_size=ibs, create_graph=True
        )

    assert torch.autograd.gradcheck(fn, (x, a, *params), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- errors and side effects


def test_errors_name_the_argument():
    model = TinyGapNet().eval()
    x = torch.rand(2, 2, 5, 5)
    ig = BatchedIntegratedGradients(model)
    cases = [
        (dict(n_steps=0), ValueError, "n_steps must be >= 1"),
        (dict(n_steps=1, method="riemann_trapezoid"), ValueError, "n_steps must be >= 2"),
        (dict(method="simpson"), ValueError, "method must be one of"),
        (dict(internal_batch_size=0), ValueError, "internal_batch_size must be None, 'auto' or an int >= 1, got 0"),
        (dict(internal_batch_size=-3), ValueError, "internal_batch_size must be None, 'auto' or an int >= 1, got -3"),
        (dict(internal_batch_size="big"), TypeError, "internal_batch_size must be None, 'auto'"),
        (dict(internal_batch_size=2.5), TypeError, "internal_batch_size must be None, 'auto'"),
        (dict(baselines=torch.zeros(3, 2, 5, 5)), ValueError, r"baselines of shape \(3, 2, 5, 5\) does not broadcast"),
        (dict(baselines=torch.zeros(2, 2, 4)), ValueError, "does not broadcast"),
        (dict(baselines=(0.0, 0.0)), ValueError, "baselines has 2 entries"),
        (dict(baselines=float("nan")), ValueError, "baselines is nan"),
        (dict(baselines=torch.full((1, 2, 5, 5), float("inf"))), ValueError, "baselines contains 50 NaN or infinite"),
        (dict(target=3), ValueError, r"outside the model's range \[0, 2\]"),
        (dict(target=[0, 1, 2]), ValueError, "target has 3 entries but the batch has 2"),
        (dict(target=torch.tensor([0.0, 1.0])), TypeError, "integer tensor"),
        (dict(target=None), ValueError, "target=None needs a forward function that returns one scalar per example"),
        (dict(target=(0, 1)), ValueError, "must be a tuple of 1 ints"),
        (dict(layer=nn.Linear(2, 2)), ValueError, "not a submodule"),
        (dict(layer="conv1"), TypeError, "layer must be a torch.nn.Module"),
        (dict(attribute_to_layer_input=True), ValueError, "needs a layer"),
        (dict(additional_forward_args=(torch.zeros(3),)), ValueError, r"additional_forward_args\[0\] has first dimension 3"),
        (dict(create_graph=1), TypeError, "create_graph must be a bool"),
    ]
    for kwargs, exc, match in cases:
        kwargs.setdefault("target", 0)
        if kwargs.get("additional_forward_args") is not None:
            fwd = BatchedIntegratedGradients(lambda r, extra: model(r))
            with pytest.raises(exc, match=match):
                fwd.attribute(x, **kwargs)
            continue
        with pytest.raises(exc, match=match):
            ig.attribute(x, **kwargs)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="inputs contains 1 NaN"):
        ig.attribute(bad, target=0)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"inputs\[1\] contains 1 NaN or infinite"):
        BatchedIntegratedGradients(TwoInputNet()).attribute((x[:, :1], bad[:, :1]), target=0)
    with pytest.raises(TypeError, match="must be a floating-point tensor"):
        ig.attribute(torch.ones(2, 2, 5, 5, dtype=torch.long), target=0)
    with pytest.raises(ValueError, match="needs multiply_by_inputs=True"):
        BatchedIntegratedGradients(model, multiply_by_inputs=False).attribute(x, target=0, return_convergence_delta=True)
    with pytest.raises(TypeError, match="multiply_by_inputs must be a bool"):
        BatchedIntegratedGradients(model, multiply_by_inputs="yes")
    with pytest.raises(ValueError, match="one entry per example"):
        BatchedIntegratedGradients(lambda r: model(r).sum()).attribute(x)


def test_no_side_effects_also_on_exceptions():
    model = nn.Sequential(nn.Linear(4, 6), nn.Softplus(), nn.Dropout(0.2), nn.BatchNorm1d(6), nn.Linear(6, 3))
    model.train()
    model[3].eval()  # mixed modes must come back exactly
    model[0].weight.requires_grad_(False)
    sentinel = torch.full_like(model[4].weight, 7.0)
    model[4].weight.grad = sentinel
    x = torch.randn(5, 4, requires_grad=True)
    base = torch.randn(1, 4)
    x_before, base_before = x.detach().clone(), base.clone()
    modes = [m.training for m in model.modules()]

    def check():
        assert [m.training for m in model.modules()] == modes
        assert model[4].weight.grad is sentinel and model[0].weight.grad is None
        assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]
        assert torch.equal(x, x_before) and x.requires_grad and x.grad is None and x.is_leaf
        assert torch.equal(base, base_before) and not base.requires_grad

    ig = BatchedIntegratedGradients(model)
    for kwargs in (dict(), dict(create_graph=True, internal_batch_size=4), dict(layer=model[1], internal_batch_size="auto")):
        out = ig.attribute(x, base, target=1, n_steps=4, **kwargs)
        if kwargs.get("create_graph"):
            assert out.requires_grad
        else:
            assert not out.requires_grad
        check()

    calls = []

    def flaky(r):
        calls.append(1)
        model.eval()  # the forward function itself changes the mode, then fails on the 2nd chunk
        if len(calls) == 2:
            raise RuntimeError("boom")
        return model(r)

    wrapped = nn.ModuleDict({"m": model})

    class Owner(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = wrapped

        def forward(self, r):
            return flaky(r)

    with pytest.raises(RuntimeError, match="boom"):
        BatchedIntegratedGradients(Owner()).attribute(x, base, target=1, n_steps=4, internal_batch_size=5)
    check()


def test_show_progress_and_global_grad_mode_do_not_change_results():
    model = TinyGapNet(softplus=1.0).eval()
    x = torch.rand(3, 2, 5, 5)
    ig = BatchedIntegratedGradients(model)
    ref = ig.attribute(x, target=2, n_steps=5)
    torch.testing.assert_close(ig.attribute(x, target=2, n_steps=5, show_progress=True, internal_batch_size=4), ref)
    with torch.no_grad():
        torch.testing.assert_close(ig.attribute(x, target=2, n_steps=5), ref)
        differentiable = ig.attribute(x.requires_grad_(), target=2, n_steps=5, create_graph=True)
    assert differentiable.requires_grad
    torch.testing.assert_close(differentiable.detach(), ref)


def test_docstring_example_runs():
    import doctest

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(BatchedIntegratedGradients, globs={"torch": torch}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.cuda
def test_cuda_matches_cpu_and_create_graph_works():
    model = Small(in_channels=1, softplus=1.0).double().eval()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([1, 2, 3, 4])
    ig_cpu = BatchedIntegratedGradients(model)
    ref = ig_cpu.attribute(x, target=y, n_steps=6, internal_batch_size=7)
    model_cuda = Small(in_channels=1, softplus=1.0).double().eval().cuda()
    model_cuda.load_state_dict(model.state_dict())
    ig = BatchedIntegratedGradients(model_cuda)
    got = ig.attribute(x.cuda(), target=y.cuda(), n_steps=6, internal_batch_size="auto")
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-9, atol=1e-12)
    attr = ig.attribute(x.cuda(), target=y.cuda(), n_steps=6, internal_batch_size=7, create_graph=True)
    g_cuda = torch.autograd.grad(attr.abs().sum(), list(model_cuda.parameters()))
    attr_cpu = ig_cpu.attribute(x, target=y, n_steps=6, create_graph=True)
    g_cpu = torch.autograd.grad(attr_cpu.abs().sum(), list(model.parameters()))
    for a, b in zip(g_cuda, g_cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-10)
    layer = ig.attribute(x.cuda(), target=y.cuda(), n_steps=6, layer=model_cuda.feature_layer, internal_batch_size=5)
    assert layer.is_cuda and math.isfinite(float(layer.sum()))


@pytest.mark.parametrize("ibs", [3, 8])
def test_chunked_create_graph_with_inputs_and_baselines_from_one_graph(ibs):
    # x' = x + 0.3 and the baseline x both depend on W (IG-Norm's path between a point and its attack):
    # the recomputed chunks once counted the path x' -> x twice (gradient off by 0.057 of 0.116)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    W = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, 6, dtype=torch.float64)

    def grads(chunk, second=False):
        x = z @ W
        ig = BatchedIntegratedGradients(net).attribute(
            x + 0.3 * torch.tanh(x), baselines=x, target=0, n_steps=8, create_graph=True, internal_batch_size=chunk)
        (g,) = torch.autograd.grad(ig.pow(2).sum(), W, create_graph=second)
        if not second:
            return g
        (gg,) = torch.autograd.grad(g.pow(2).sum(), W)
        return g, gg

    ref = grads(None)
    assert ref.abs().max() > 1e-3  # measured 2.7e-3
    torch.testing.assert_close(grads(ibs), ref, atol=1e-12, rtol=1e-10)
    g_ref, gg_ref = grads(None, True)
    g, gg = grads(ibs, True)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(gg, gg_ref, atol=1e-10, rtol=1e-8)
