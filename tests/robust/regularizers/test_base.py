"""EpsilonSchedule and the RobustTerm base: schedule arithmetic, stepping rules, checks, ownership."""

import copy

import pytest
import torch
from torch import nn

from captum_robust.robust.regularizers._base import EpsilonSchedule, RobustTerm, check_weight, unwrap_model


class _Probe(RobustTerm):
    """Records the epsilon each call saw; its value depends on the model so gradients can flow."""

    def __init__(self, model, eps=0.3, **kw):
        super().__init__(model, eps, **kw)
        self.seen = []

    def _forward(self, inputs, target, eps):
        self.seen.append(eps)
        self.last_stats = {"extra": 1.0}
        return self.module(inputs).gather(1, target[:, None]).mean() * eps


def _model():
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize(
    "final,warm,ramp",
    [(0.3, 0, 0), (0.3, 3, 0), (0.3, 0, 5), (8 / 255, 7, 13), (1.0, 2000, 8000)],
)
def test_schedule_matches_piecewise_linear_reference(final, warm, ramp):
    s = EpsilonSchedule(final, warm, ramp)
    for t in list(range(0, 40)) + [warm - 1, warm, warm + ramp // 2, warm + ramp, warm + ramp + 1, 10**6]:
        if t < 0:
            continue
        if t < warm:
            ref = 0.0
        elif ramp == 0:
            ref = final
        else:
            ref = final * min(1.0, (t - warm) / ramp)
        assert s(t) == pytest.approx(ref, abs=1e-15)
    # Boopathy's MNIST recipe: 0 until step 2000, 0.3 at step 10000, half-way at 6000
    b = EpsilonSchedule(0.3, 2000, 8000)
    assert (b(1999), b(2000), b(6000), b(10000), b(20000)) == (0.0, 0.0, pytest.approx(0.15), 0.3, 0.3)


def test_schedule_steps_state_and_reset():
    s = EpsilonSchedule(0.2, warmup_steps=1, ramp_steps=2)
    values = []
    for _ in range(5):
        values.append(s.value)
        s.step()
    assert values == [0.0, 0.0, pytest.approx(0.1), 0.2, 0.2]
    s.step(3)
    assert s.current_step == 8
    state = s.state_dict()
    other = EpsilonSchedule(1.0)
    other.load_state_dict(state)
    assert other.state_dict() == state and other.value == s.value
    s.reset()
    assert s.current_step == 0 and s.value == 0.0


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"final": -0.1}, ValueError, "final"),
        ({"final": float("nan")}, ValueError, "final"),
        ({"final": "0.3"}, TypeError, "final"),
        ({"final": 0.3, "warmup_steps": -1}, ValueError, "warmup_steps"),
        ({"final": 0.3, "ramp_steps": 2.5}, TypeError, "ramp_steps"),
    ],
)
def test_schedule_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        EpsilonSchedule(**kwargs)


def test_schedule_step_errors():
    s = EpsilonSchedule(0.3)
    with pytest.raises(ValueError, match="n"):
        s.step(-1)
    with pytest.raises(ValueError, match="step"):
        s(-2)


def test_term_reads_and_steps_schedule_only_in_training_mode():
    sched = EpsilonSchedule(0.3, warmup_steps=1, ramp_steps=2)
    reg = _Probe(_model(), eps=sched)
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    for _ in range(4):
        reg(x, y)
    assert reg.seen == [0.0, 0.0, pytest.approx(0.15), pytest.approx(0.3)]
    reg.eval()
    reg(x, y)
    reg(x, y)
    assert sched.current_step == 4 and reg.seen[-2:] == [pytest.approx(0.3)] * 2
    reg.train()
    manual = _Probe(_model(), eps=EpsilonSchedule(0.3, 0, 4), auto_step=False)
    manual(x, y)
    manual(x, y)
    assert manual.seen == [0.0, 0.0] and manual.schedule.current_step == 0
    manual.schedule.step(2)
    manual(x, y)
    assert manual.seen[-1] == pytest.approx(0.15)


def test_last_stats_reset_each_call_and_hold_value_and_eps():
    reg = _Probe(_model(), eps=0.25)
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2])
    out = reg(x, y)
    assert reg.last_stats["value"] == pytest.approx(out.item()) and reg.last_stats["eps"] == 0.25
    assert reg.last_stats["extra"] == 1.0
    reg.eps = 0.5
    out = reg(x, y)
    assert reg.last_stats["eps"] == 0.5 and reg.last_stats["value"] == pytest.approx(out.item())


def test_model_is_not_owned_by_the_term():
    model = _model()
    reg = _Probe(model)
    assert list(reg.parameters()) == [] and reg.state_dict() == {}
    model.train()
    reg.eval()
    assert model.training, "switching the regularizer's mode must not switch the model's"
    assert reg.model is model and reg.module is model
    clone = copy.deepcopy(reg)
    assert isinstance(clone.model, nn.Sequential)


def test_unwrap_model_data_parallel():
    model = _model()
    assert unwrap_model(nn.DataParallel(model)) is model
    assert unwrap_model(model) is model


@pytest.mark.parametrize(
    "target,exc,match",
    [
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "integer tensor"),
        (torch.tensor([True, False, True]), TypeError, "integer tensor"),
        (torch.tensor([0, 1]), ValueError, r"shape \(3,\)"),
        (torch.tensor([[0, 1, 2]]), ValueError, r"shape \(3,\)"),
        (1, TypeError, "target"),
    ],
)
def test_target_errors(target, exc, match):
    reg = _Probe(_model())
    with pytest.raises(exc, match=match):
        reg(torch.rand(3, 1, 2, 2), target)


def test_input_and_constructor_errors():
    reg = _Probe(_model())
    y = torch.tensor([0, 1, 2])
    with pytest.raises(TypeError, match="floating-point"):
        reg(torch.ones(3, 1, 2, 2, dtype=torch.long), y)
    with pytest.raises(TypeError, match="single-tensor"):
        reg((torch.rand(3, 1, 2, 2),), y)
    with pytest.raises(ValueError, match="NaN"):
        reg(torch.full((3, 1, 2, 2), float("nan")), y)
    with pytest.raises(ValueError, match="eps"):
        _Probe(_model(), eps=-0.1)
    with pytest.raises(TypeError, match="model"):
        _Probe(lambda x: x)
    with pytest.raises(TypeError, match="generator"):
        _Probe(_model(), generator=0)
    with pytest.raises(ValueError, match="eps"):
        reg.eps = -1.0
    assert reg(torch.rand(3, 1, 2, 2), [0, 1, 2]).dim() == 0  # a list of ints is accepted


def test_check_weight():
    assert check_weight(0, "lam") == 0.0
    for bad, exc in ((-1e-9, ValueError), (float("inf"), ValueError), (True, TypeError), (None, TypeError)):
        with pytest.raises(exc, match="lam"):
            check_weight(bad, "lam")


def test_old_module_paths_reexport_the_classes():
    """The modules named after the papers' authors (and gradient.py) keep working as re-exports."""
    import importlib

    import captum_robust.robust.regularizers as package

    old = {
        "boopathy": ("Int", "Int2", "IntOneClass", "IntAdv", "Int2Adv", "TUNED_GAMMA"),
        "chen": ("IGNorm", "IGSumNorm"),
        "gradient": ("InputGradientRegularizer",),
        "adversarial": ("PGDAdversarialLoss", "TRADESLoss", "DistillationLoss"),
        "saliency": ("SaliencyAlignment", "SaliencyStability"),
    }
    for module, names in old.items():
        m = importlib.import_module(f"captum_robust.robust.regularizers.{module}")
        for name in names:
            assert getattr(m, name) is getattr(package, name), (module, name)
