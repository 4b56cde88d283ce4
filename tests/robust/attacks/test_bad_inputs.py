"""Every public attack against bad and extreme input (issue 18): one clear error for an empty
batch, meta tensors, a dtype mismatch, wrongly sized extra arguments and NaN logits at the clean
input; no iterate with non-finite logits is ever accepted or counted as a success; inputs made
under ``torch.inference_mode()`` work; a train-mode BatchNorm + Dropout model is left bit-identical."""

import pytest
import torch
from torch import nn

from captum_robust.attr import CAM
from captum_robust.robust.attacks import (
    AAI,
    ISA,
    PGD,
    AttributionPGD,
    L2TopKAttack,
    MassCenterAttack,
    TargetedAttributionAttack,
    TopKAttack,
)
from tests.helpers.models import TinyGapNet
from tests.robust.attacks._models import one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


class ArgNet(TinyGapNet):
    """TinyGapNet whose logits are multiplied by an optional per-example weight ``w`` (B or 1 rows)."""

    def forward(self, x, w=None):
        out = super().forward(x)
        return out if w is None else out * w.reshape(-1, 1)


class NaNRegionNet(TinyGapNet):
    """TinyGapNet whose logits are NaN wherever a pixel exceeds 0.9 (finite at the clean inputs)."""

    def forward(self, x, w=None):
        out = super().forward(x)
        bad = x.flatten(1).amax(dim=1, keepdim=True) > 0.9
        return out + torch.where(bad, torch.full_like(out, float("nan")), torch.zeros_like(out))


def _loss(model):
    def objective(x_adv, x, target, args):
        return nn.functional.cross_entropy(model(x_adv, *(args or ())), target, reduction="none")
    return objective


#: name -> (model, attribution) -> attack, each small enough to run in well under a second
FACTORIES = {
    "TopKAttack": lambda m, a: TopKAttack(m, a, k=3, eps=0.5, step_size=0.1, n_iterations=3, random_start=True),
    "MassCenterAttack": lambda m, a: MassCenterAttack(m, a, eps=0.5, step_size=0.1, n_iterations=3,
                                                      random_start=True),
    "TargetedAttributionAttack": lambda m, a: TargetedAttributionAttack(
        m, a, torch.eye(5, dtype=torch.bool), eps=0.5, step_size=0.1, n_iterations=3, random_start=True),
    "AAI": lambda m, a: AAI(m, a, eps=0.5, step_size=0.1, n_iterations=3, k=3),
    "ISA": lambda m, a: ISA(m, a, eps_max=0.5, n_iterations=3, n_eps_rounds=2, n_weight_rounds=1),
    "L2TopKAttack": lambda m, a: L2TopKAttack(m, a, k=3, rho=1.5, n_iterations=3, n_restarts=2, random_budget=5),
    "AttributionPGD": lambda m, a: AttributionPGD(m, _loss(m), eps=0.5, step_size=0.1, n_iterations=3,
                                                  keep_prediction=True),
    "PGD": lambda m, a: PGD(m, eps=0.5, step_size=0.1, n_iterations=3, n_restarts=2),
}


def _make(name, model):
    return FACTORIES[name](model, CAM(model, model.conv2, model.fc))


def _perturb(name, attack, model, x, **kwargs):
    """``perturb`` with the arguments every attack accepts; ISA needs a target class != the prediction,
    PGD and AttributionPGD the labels."""
    if name in ("ISA", "PGD", "AttributionPGD"):
        with torch.no_grad():
            pred = model(x, *(kwargs.get("additional_forward_args") or ())).argmax(1)
        kwargs.setdefault("target", (pred + 1) % 3 if name == "ISA" else pred)
    return attack.perturb(x, **kwargs)


def _setup(cls=ArgNet):
    torch.manual_seed(0)
    return cls().eval(), 0.4 * torch.rand(4, 2, 5, 5)


ALL = sorted(FACTORIES)


# --------------------------------------------------------------------------- one clear error each


@pytest.mark.parametrize("name", ALL)
def test_empty_batch_is_one_clear_error(name):
    model, x = _setup()
    with pytest.raises(ValueError, match="inputs must hold at least one example, got a batch of 0"):
        _make(name, model).perturb(x[:0], target=torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("name", ALL)
def test_meta_inputs_are_refused_by_name(name):
    model, x = _setup()
    with pytest.raises(ValueError, match="inputs are on the meta device"):
        _make(name, model).perturb(x.to("meta"), target=0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtype_mismatch_names_both_dtypes_and_the_fix(name, dtype):
    model, x = _setup()
    with pytest.raises(TypeError, match=f"inputs are {dtype} but the model's parameters are torch.float32: convert"):
        _make(name, model).perturb(x.to(dtype), target=0)


@pytest.mark.parametrize("name", ALL)
def test_forward_args_with_a_wrong_batch_size_are_refused(name):
    model, x = _setup()
    with pytest.raises(ValueError, match=r"additional_forward_args\[0\] has 3 rows but inputs have 4 examples"):
        _make(name, model).perturb(x, target=0, additional_forward_args=(torch.ones(3),))


@pytest.mark.parametrize("name", ALL)
def test_a_single_row_of_forward_args_is_shared(name):
    model, x = _setup()
    attack = _make(name, model)
    g = torch.Generator().manual_seed(0)
    one, r_one = _perturb(name, attack, model, x, additional_forward_args=(torch.full((1,), 2.0),), generator=g)
    g = torch.Generator().manual_seed(0)
    every, r_every = _perturb(name, attack, model, x, additional_forward_args=(torch.full((4,), 2.0),), generator=g)
    assert torch.equal(one, every)
    assert torch.equal(r_one.accepted, r_every.accepted)


@pytest.mark.parametrize("name", ALL)
def test_nan_logits_at_the_clean_input_are_an_error_not_a_success(name):
    model, x = _setup()
    with torch.no_grad():
        model.fc.bias[1] = float("nan")  # argmax of NaN would be class 1 for every example
    with pytest.raises(ValueError, match=r"the model's outputs contain NaN or inf for 4 of 4 examples \(first: example 0\)"):
        _make(name, model).perturb(x, target=0)


@pytest.mark.parametrize("name", ALL)
def test_inf_logits_at_the_clean_input_are_an_error(name):
    model, x = _setup()
    with torch.no_grad():
        model.conv2.bias.fill_(10.0)
        model.fc.weight.fill_(3e38)  # finite weights (below 3.4e38), overflowing logits
    with pytest.raises(ValueError, match="the model's outputs contain NaN or inf"):
        _make(name, model).perturb(x, target=0)


@pytest.mark.parametrize("name", ALL)
def test_no_returned_point_has_non_finite_logits(name):
    # clean inputs in [0, 0.4], finite logits; every pixel above 0.9 makes the logits NaN, and
    # the balls reach it. Before the check an argmax of NaN (class 0) counted as "prediction
    # kept" or "misclassified" and a NaN point could be returned as the attack's answer.
    model, x = _setup(NaNRegionNet)
    x = x + 0.35  # in [0.35, 0.75]: a step of 0.5 reaches the NaN region
    # a map that does not itself look at the logits (CAM refuses NaN logits on its own)
    attack = FACTORIES[name](model, lambda m, inputs, target, *args: inputs * 1.0)
    for seed in range(3):
        x_adv, result = _perturb(name, attack, model, x, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            logits = model(x_adv)
        assert bool(torch.isfinite(logits).all()), (name, seed)


def test_pgd_never_counts_a_nan_iterate_as_success():
    # logits [0, 10] (class 1) everywhere, NaN above 0.9: the only "misclassification" is the
    # argmax of NaN (index 0); before the fix PGD reported success with a NaN point
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.tensor([0.0, 10.0]))

        def forward(self, x):
            out = self.b.expand(x.shape[0], 2) + 0 * x.flatten(1).sum(1, keepdim=True)
            bad = x.flatten(1).amax(dim=1, keepdim=True) > 0.9
            return out + torch.where(bad, torch.full_like(out, float("nan")), torch.zeros_like(out))

    model, x = Const(), torch.full((6, 1, 5, 5), 0.5)
    attack = PGD(model, eps=0.5, step_size=0.1, n_iterations=2, n_restarts=3)
    _, result = attack.perturb(x, target=torch.ones(6, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    assert not bool(result.accepted.any())
    assert not bool(result.succeeded.any())


# --------------------------------------------------------------------------- inputs that must work


@pytest.mark.parametrize("name", ALL)
def test_inference_mode_inputs_work_and_give_the_same_result(name):
    model, x = _setup()
    with torch.inference_mode():
        x_inf = x.clone()
        w_inf = torch.full((4,), 1.5)
    assert x_inf.is_inference()
    attack = _make(name, model)
    a, ra = _perturb(name, attack, model, x_inf, additional_forward_args=(w_inf,),
                     generator=torch.Generator().manual_seed(0))
    b, rb = _perturb(name, attack, model, x.clone(), additional_forward_args=(torch.full((4,), 1.5),),
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.equal(ra.norm, rb.norm)
    assert torch.equal(x_inf, x)


class BNDropNet(TinyGapNet):
    """TinyGapNet with BatchNorm and Dropout after the first convolution."""

    def __init__(self):
        super().__init__(softplus=4.0)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x, w=None):
        a = self.conv2(self.drop(self.act(self.bn(self.conv1(x)))))
        return self.fc(a.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ALL)
def test_train_mode_batchnorm_dropout_model_is_left_bit_identical(name):
    torch.manual_seed(0)
    model, x = BNDropNet(), 0.4 * torch.rand(4, 2, 5, 5)
    model.train()
    with torch.no_grad():
        model(x * 3)  # running statistics that differ from the batch's
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    attack = _make(name, model)
    target = torch.tensor([0, 1, 2, 0])
    if name == "ISA":
        model.eval()
        with torch.no_grad():
            pred = model(x).argmax(1)
        model.train()
        target = (pred + 1) % 3
    kwargs = dict(target=target, generator=torch.Generator().manual_seed(0))
    if name == "AttributionPGD":  # the regularizers' inner maximizer: train mode is expected, no warning
        attack.perturb(x, **kwargs)
    else:
        with pytest.warns(UserWarning, match="training mode"):
            attack.perturb(x, **kwargs)
    assert all(m.training for m in model.modules())
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert torch.equal(torch.get_rng_state(), rng)  # no Dropout draw from the global generator


@pytest.mark.parametrize("method", ["attribution_maps", "similarity"])
def test_map_attack_helpers_check_too(method):
    model, x = _setup()
    attack = _make("TopKAttack", model)
    args = (x.double(),) if method == "attribution_maps" else (x.double(), x.double())
    with pytest.raises(TypeError, match="inputs are torch.float64 but the model's parameters are torch.float32"):
        getattr(attack, method)(*args)
    args = (x[:0],) if method == "attribution_maps" else (x[:0], x[:0])
    with pytest.raises(ValueError, match="inputs must hold at least one example, got a batch of 0"):
        getattr(attack, method)(*args)
