"""Issue 18 for captum_robust.attr: every public class and function against bad and extreme input
(a table of (call, bad input, exception type, phrase)), the train-mode policy, vacuous and zero
certificates and their diagnosis."""

import json
import math
import warnings

import pytest
import torch
from torch import nn

from captum_robust.attr import (
    CAM,
    BatchedIntegratedGradients,
    CertifiedTopK,
    GradCAM,
    GradCAMPlusPlus,
    QuadraticSmoothGrad,
    RelaxedSparsifiedSmoothGrad,
    Saliency,
    ScaledSmoothGrad,
    SparsifiedSmoothGrad,
    attribute_with_shared_noise,
    certify,
)


class ArgNet(nn.Module):
    """conv(1->3) -> BN -> ReLU -> Dropout -> conv(3->4) [feature] -> GAP -> Linear(4, 10), times ``scale`` (B x 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.feat = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x, scale=None):
        a = self.feat(self.drop(self.act(self.bn(self.conv1(x)))))
        out = self.fc(a.mean(dim=(2, 3)))
        return out if scale is None else out * scale


def _model():
    torch.manual_seed(0)
    m = ArgNet()
    with torch.no_grad():  # non-trivial running statistics
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _gen():
    return torch.Generator().manual_seed(0)


# every public call of captum_robust.attr: (name, f(model, x, **kw) -> result)
CALLS = {
    "CAM": lambda m, x, **kw: CAM(m, m.feat, m.fc).attribute(x, **kw),
    "GradCAM": lambda m, x, **kw: GradCAM(m, m.feat).attribute(x, **kw),
    "GradCAMPlusPlus": lambda m, x, **kw: GradCAMPlusPlus(m, m.feat).attribute(x, **kw),
    "Saliency": lambda m, x, **kw: Saliency(m).attribute(x, **kw),
    "BatchedIntegratedGradients": lambda m, x, **kw: BatchedIntegratedGradients(m).attribute(x, n_steps=4, **kw),
    "ScaledSmoothGrad": lambda m, x, **kw: ScaledSmoothGrad(m, 0.1, 4).attribute(x, generator=_gen(), **kw),
    "QuadraticSmoothGrad": lambda m, x, **kw: QuadraticSmoothGrad(m, 0.1, 4).attribute(x, generator=_gen(), **kw),
    "SparsifiedSmoothGrad": lambda m, x, **kw: SparsifiedSmoothGrad(m, 0.1, 0.1, 4).attribute(
        x, generator=_gen(), **kw),
    "RelaxedSparsifiedSmoothGrad": lambda m, x, **kw: RelaxedSparsifiedSmoothGrad(m, 0.1, 0.01, 0.1, 4).attribute(
        x, generator=_gen(), **kw),
    "SparsifiedSmoothGrad.base_map": lambda m, x, **kw: SparsifiedSmoothGrad(m, 0.1, 0.1, 4).base_map(x, **kw),
    "attribute_with_shared_noise": lambda m, x, **kw: attribute_with_shared_noise(
        [ScaledSmoothGrad(m, 0.1, 4), SparsifiedSmoothGrad(m, 0.1, 0.1, 4)], x, generator=_gen(), **kw)[1],
    "CertifiedTopK": lambda m, x, **kw: CertifiedTopK(SparsifiedSmoothGrad(m, 0.1, 0.1, 4), k=5, rho=0.0).attribute(
        x, generator=_gen(), **kw)[0],
    "CertifiedTopK.certified_rank": lambda m, x, **kw: CertifiedTopK(
        SparsifiedSmoothGrad(m, 0.1, 0.1, 4), k=5, rho=0.0).certified_rank(x, generator=_gen(), **kw)[1],
}
TARGETED = {"Saliency", "BatchedIntegratedGradients"}  # need a target for a B x C model


def _call(name, model, x, **kw):
    if name in TARGETED and "target" not in kw:
        kw["target"] = 1
    return CALLS[name](model, x, **kw)


x0 = torch.rand(2, 1, 6, 6)

BAD = [
    ("empty batch", lambda: (x0[:0], {}), ValueError, "inputs must hold at least one example, got a batch of 0"),
    ("meta device", lambda: (torch.empty(2, 1, 6, 6, device="meta"), {}), ValueError, "meta device"),
    ("float64 inputs", lambda: (x0.double(), {}), TypeError,
     "inputs are torch.float64 but the model's parameters are torch.float32"),
    ("float16 inputs", lambda: (x0.half(), {}), TypeError, "inputs are torch.float16 but the model's parameters"),
    ("bfloat16 inputs", lambda: (x0.bfloat16(), {}), TypeError, "inputs are torch.bfloat16"),
    ("args rows", lambda: (x0, {"additional_forward_args": (torch.ones(3, 1),)}), ValueError,
     # IG takes B rows only (they are repeated along the path): its own message says so
     "additional_forward_args\\[0\\] has (3 rows but inputs have 2 examples|first dimension 3 but the inputs have "
     "batch size 2)"),
    ("no batch dimension", lambda: (x0[0], {}), ValueError, "lack a batch dimension"),
    ("wrong channel count", lambda: (torch.rand(2, 3, 6, 6), {}), ValueError,
     "have 3 channels but the model's first Conv2d \\('conv1'\\) expects 1"),
    ("logits overflow", lambda: (torch.full((2, 1, 6, 6), 3e38), {}), ValueError,
     "outputs.* contain NaN or inf for 2 of"),
]


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_table(name, case):
    _, make, exc, phrase = case
    x, kw = make()
    model = _model()
    if case[0] == "logits overflow":
        with torch.no_grad():  # a model whose logits overflow at finite inputs
            model.fc.weight.fill_(1e30)
    with pytest.raises(exc, match=phrase):
        _call(name, model, x, **kw)


def test_cam_logits_overflow_is_not_blamed_on_the_head():
    model = _model()
    with torch.no_grad():
        model.fc.weight.fill_(1e30)
    with pytest.raises(ValueError) as info:
        CAM(model, model.feat, model.fc).attribute(torch.full((2, 1, 6, 6), 3e38))
    assert "global average pool" not in str(info.value)
    assert "NaN or inf" in str(info.value)


@pytest.mark.parametrize("name", sorted(n for n in CALLS if "SmoothGrad" in n or "Certified" in n
                                        or n == "attribute_with_shared_noise"))
@pytest.mark.parametrize("target", [-1, [0, -3], 10])
def test_target_out_of_range_names_the_models_classes(name, target):
    bad = target if isinstance(target, int) else -3
    with pytest.raises(ValueError, match=rf"target holds class index {bad}, outside the model's range \[0, 9\]"):
        _call(name, _model(), x0, target=target)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_additional_forward_args_with_one_or_b_rows_work(name):
    model = _model()
    for rows in (1, 2):
        scale = torch.full((rows, 1), 2.0)
        if name == "BatchedIntegratedGradients" and rows == 1:
            continue  # IG repeats tensor arguments along the path: it takes B rows only (documented)
        out = _call(name, model, x0, additional_forward_args=(scale,))
        out = out if isinstance(out, torch.Tensor) else out[0]
        assert torch.isfinite(out.double()).all()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_inference_mode_inputs_work_and_equal_normal_inputs(name):
    model = _model()
    with torch.inference_mode():
        xi = x0.clone()
    assert xi.is_inference()
    got = _call(name, model, xi)
    want = _call(name, model, x0.clone())
    torch.testing.assert_close(got, want)
    assert xi.is_inference()  # the caller's tensor is left as it was


# ---------------------------------------------------------------- non-finite gradients


class NaNGradNet(nn.Module):
    """Finite outputs, NaN input gradients (the classic where-of-sqrt trap) for every input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 10)

    def forward(self, x):
        flat = x.flatten(1)
        trap = torch.where(flat > 1e9, (flat - 1e9).sqrt(), torch.zeros_like(flat))
        return self.fc(flat + trap)


@pytest.mark.parametrize("cls", [SparsifiedSmoothGrad, RelaxedSparsifiedSmoothGrad, ScaledSmoothGrad])
def test_nan_gradients_raise_instead_of_zero_maps(cls):
    model = NaNGradNet()
    out = model(x0)
    assert torch.isfinite(out).all()  # the trap: only the gradient is NaN
    args = (0.1, 0.01, 0.1, 4) if cls is RelaxedSparsifiedSmoothGrad else (0.1, 0.1, 4)
    if cls is ScaledSmoothGrad:
        args = (0.1, 4)
    method = cls(model, *args)
    with pytest.raises(ValueError, match="the smoothed map contains NaN: the model's gradient is NaN or infinite"):
        method.attribute(x0, target=0, generator=_gen())
    with pytest.raises(ValueError, match="smoothed map contains NaN"):
        CertifiedTopK(method, k=5, rho=0.0).attribute(x0, target=0, generator=_gen())
    with pytest.raises(ValueError, match="smoothed map contains NaN"):
        method.base_map(x0, target=0)


def test_nan_weights_are_refused_by_every_call():
    for name in CALLS:
        model = _model()
        with torch.no_grad():
            model.fc.weight[0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN or inf"):
            _call(name, model, x0)


# ---------------------------------------------------------------- train-mode policy


@pytest.mark.parametrize("name", sorted(CALLS))
def test_train_mode_model_runs_in_eval_mode_and_is_left_as_found(name):
    model = _model()
    want = _call(name, model, x0)
    model.train()
    model.drop.eval()  # a mixed state must come back exactly
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    with pytest.warns(UserWarning, match="is in training mode with BatchNorm/Dropout layers"):
        got = _call(name, model, x0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k  # running statistics and num_batches_tracked untouched
    assert [m.training for m in model.modules()] == modes
    torch.testing.assert_close(got, want)  # no Dropout, BatchNorm with its running statistics
    if "SmoothGrad" not in name and "Certified" not in name and name != "attribute_with_shared_noise":
        assert torch.equal(torch.get_rng_state(), rng)  # Dropout did not draw from the global generator


def test_eval_mode_model_does_not_warn():
    model = _model()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for name in CALLS:
            _call(name, model, x0)
    assert not [w for w in rec if "training mode" in str(w.message)]


def test_ig_create_graph_recomputation_uses_the_calls_eval_mode():
    # chunks recomputed in a later backward pass must see the model as the call did (eval),
    # not as it is then (train): the parameter gradients equal those of the eval-mode model
    model = _model().double()
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)

    def param_grads():
        attr = BatchedIntegratedGradients(model).attribute(x, target=2, n_steps=5, internal_batch_size=4,
                                                           create_graph=True)
        return torch.autograd.grad(attr.pow(2).sum(), [model.conv1.weight, model.fc.weight])

    want = param_grads()
    model.train()
    with pytest.warns(UserWarning):
        got = param_grads()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert model.training


# ---------------------------------------------------------------- vacuous and zero certificates


def test_vacuous_certificate_is_returned_with_the_warning():
    model = _model()
    ssg = SparsifiedSmoothGrad(model, 0.1, 0.1, 16)
    with pytest.warns(UserWarning, match="no practical n_samples helps at rho/sigma = 10") as rec:
        maps, cert = CertifiedTopK(ssg, k=5, rho=1.0).attribute(x0, target=1, generator=_gen())
    text = str(rec[0].message)
    assert "sigma above" in text and "rho below" in text
    assert maps.shape == x0.shape and torch.isclose(maps.sum(), torch.tensor(2.0 * 4))  # ceil(0.1*36) = 4 ones
    assert cert.overlap.tolist() == [0, 0] and bool(cert.vacuous.all())
    # the quoted sigma and rho are the boundary where the best possible map (1s and 0s) is certified
    c = certify.hoeffding_margin(36, 16)
    z = float(torch.special.ndtri(torch.tensor(1.0 - c, dtype=torch.float64)))
    best = torch.tensor([[1.0] * 5 + [0.0] * 31])
    assert int(certify.topk_certificate(best, 5, 1.0, 1.0 / z * 1.001, c)) == 5
    assert int(certify.topk_certificate(best, 5, 1.0, 1.0 / z * 0.999, c)) == 0
    assert f"sigma above {1.0 / z:.4g}" in text


def test_min_n_samples_without_a_practical_answer_says_so():
    with pytest.raises(ValueError, match="no practical n_samples .* rho / sigma = 10"):
        certify.min_n_samples(784, 1.0, 0.1)
    assert certify.min_n_samples(784, 1.0, 0.2) > 10**12  # large but finite
    # the closed form, checked on both sides where the floor resolves the boundary
    q = certify.min_n_samples(784, 0.5, 0.2)
    assert 10**5 < q < 10**6
    for qq, ok in ((q, True), (q - 1, False)):
        c = certify.hoeffding_margin(784, qq)
        assert (float(certify.empirical_floor(1.0, 0.5, 0.2, c)) > 0) == ok


def _random_maps(b=6, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=torch.float64) ** 3


@pytest.mark.parametrize("m", [1, 3])
def test_diagnosis_numbers_are_the_certificates_boundaries(m):
    maps, k, rho, sigma, q = _random_maps(), 5, 0.3, 0.5, 200
    d = certify.diagnose_certificate(maps, k, rho, sigma, q, 0.95, min_overlap=m)
    c = certify.hoeffding_margin(40, q)
    assert torch.equal(d.overlap, certify.topk_certificate(maps, k, rho, sigma, c))
    for b in range(maps.shape[0]):
        row = maps[b : b + 1]
        need = float(d.n_samples_needed[b])
        if math.isfinite(need) and need > 1:
            cert_at = lambda qq: int(certify.topk_certificate(row, k, rho, sigma, certify.hoeffding_margin(40, qq)))
            assert cert_at(int(need)) >= m > cert_at(int(need) - 1)
        s_need = float(d.sigma_needed[b])
        if math.isfinite(s_need):
            assert int(certify.topk_certificate(row, k, rho, s_need * 1.0001, c)) >= m
            assert int(certify.topk_certificate(row, k, rho, s_need * 0.9999, c)) < m
        r = float(d.radius[b])
        if r > 0:
            assert int(certify.topk_certificate(row, k, r * 0.999, sigma, c)) >= m
            assert int(certify.topk_certificate(row, k, r * 1.001, sigma, c)) < m
            torch.testing.assert_close(d.radius[b : b + 1], certify.certified_radius(row, k, m, sigma, c))


def test_zero_certificates_are_explained_with_the_median_requirements():
    maps = _random_maps(b=5)
    d = certify.diagnose_certificate(maps, 5, 0.5, 0.5, 50, 0.95)
    assert int(d.overlap.max()) == 0  # every example certifies nothing
    s = d.summary()
    assert s["zero"] == 5 and s["certified"] == 0
    # the median requirement is met by at least half of the examples, not by fewer
    need = d.n_samples_needed
    assert int((need <= s["median_n_samples_needed"]).sum()) >= 3
    assert int((need < s["median_n_samples_needed"]).sum()) < 3
    text = d.explanation()
    assert "5 of 5 examples have fewer than 1 of the top-5 certified at rho=0.5 (5 have none)" in text
    assert f"c={d.margin:.4f}" in text and "median gap" in text
    if math.isfinite(s["median_n_samples_needed"]):
        assert f"n_samples >= {int(s['median_n_samples_needed'])}" in text
    json.dumps(d.to_dict())  # plain values only
    both = certify.CertificateDiagnosis.cat([d, certify.diagnose_certificate(maps[:2], 5, 0.5, 0.5, 50, 0.95)])
    assert both.overlap.shape == (7,) and torch.equal(both.gap[5:], d.gap[:2])


def test_topk_certificate_diagnose_matches_the_function():
    model = _model()
    maps, cert = CertifiedTopK(SparsifiedSmoothGrad(model, 0.1, 0.3, 64), k=5, rho=0.05).attribute(
        x0, target=1, generator=_gen())
    d = cert.diagnose(maps, min_overlap=2)
    ref = certify.diagnose_certificate(maps, 5, 0.05, cert.sigma, 64, cert.confidence, 2)
    torch.testing.assert_close(d.n_samples_needed, ref.n_samples_needed)
    assert torch.equal(d.overlap, cert.overlap)


def test_keep_model_mode_runs_the_callers_mode_without_warning():
    # the opt-out for training terms that want batch statistics (regularizers' eval_mode=False)
    from captum_robust.attr._core._inputs import keep_model_mode

    model = _model()
    model.drop.p = 0.0
    eval_maps = CAM(model, model.feat, model.fc).attribute(x0)
    model.train()
    with torch.no_grad():
        train_ref = CAM(model, model.feat, model.fc)  # built here, called below under the opt-out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with keep_model_mode():
            buffers = {k: v.clone() for k, v in model.state_dict().items()}
            got = train_ref.attribute(x0)
    assert model.training
    assert (got - eval_maps).abs().max() > 1e-4  # batch statistics, not the running ones
    assert not torch.equal(model.bn.num_batches_tracked, buffers["bn.num_batches_tracked"])  # the caller's mode
