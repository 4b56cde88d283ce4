"""PGDAdversarialLoss, TRADESLoss and DistillationLoss: values against independent
recomputations and closed forms, Danskin gradients, no side effects, schedules, errors, and
the effect of adversarial training on PGD accuracy (digits at 8x8)."""

import copy
import doctest
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from scipy.special import rel_entr
from torch import nn

import captum_robust.robust.regularizers.adversarial as adversarial_module
import captum_robust.robust.regularizers.distillation as distillation_module
from captum_robust.robust.attacks import PGD
from captum_robust.robust.regularizers._base import EpsilonSchedule
from captum_robust.robust.regularizers.adversarial import DistillationLoss, PGDAdversarialLoss, TRADESLoss
from tests.helpers.models import TinyGapNet


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(b=6, dtype=torch.float32, classes=3):
    g = _gen(1)
    x = torch.rand(b, 2, 5, 5, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    return x, y


def _tiny(scale=3.0, dtype=torch.float32, softplus=None):
    torch.manual_seed(0)
    m = TinyGapNet(softplus=softplus)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)  # sharper logits: the attacks have something to find
    return m.to(dtype)


class BNNet(nn.Module):
    """conv -> BatchNorm -> softplus -> linear: a model whose train/eval mode changes its output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.Softplus()
        self.fc = nn.Linear(75, 3)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x))).flatten(1))


class ConstLogits(nn.Module):
    """Returns fixed (learnable) logits, one row per example, whatever the input."""

    def __init__(self, z):
        super().__init__()
        self.z = nn.Parameter(torch.as_tensor(z, dtype=torch.float64))

    def forward(self, x):
        return self.z + 0 * x.flatten(1).sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------- docstrings


def test_docstring_examples():
    results = []
    for module in (adversarial_module, distillation_module):  # DistillationLoss moved to distillation.py
        with torch.random.fork_rng():
            torch.manual_seed(0)
            results.append(
                doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
            )
    assert all(r.attempted > 0 and r.failed == 0 for r in results), results
    assert sum(r.attempted for r in results) >= 15


# --------------------------------------------------------------------------- PGDAdversarialLoss


def test_pgd_loss_is_cross_entropy_at_the_returned_point_inside_ball_and_box():
    model = _tiny()
    x, y = _batch()
    reg = PGDAdversarialLoss(model, eps=0.2, n_iterations=20, generator=_gen())
    loss = reg(x, y)
    x_adv = reg.last_adversarial
    assert not x_adv.requires_grad
    with torch.no_grad():
        logits = model(x_adv)
        expected = F.cross_entropy(logits, y)
        clean = F.cross_entropy(model(x), y)
    torch.testing.assert_close(loss.detach(), expected)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert loss.item() > float(clean) + 0.5, "the attack must raise the loss well above the clean loss"
    assert reg.last_stats["loss_adv"] == pytest.approx(float(expected))
    assert reg.last_stats["attack_success"] == pytest.approx(float((logits.argmax(1) != y).float().mean()))
    # PGD-AT evaluates the robust accuracy the same way: our point is as good as PGD's own
    _, res = PGD(model, eps=0.2, n_iterations=20).perturb(x, target=y, generator=_gen())
    assert loss.item() >= float(res.loss.mean()) - 1e-5


def _linear2(d=16):
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 2))


def _ce_ascent_direction(model, y):
    """For 2 classes the CE gradient w.r.t. x is p_other * (w_other - w_y): a fixed direction."""
    w = model[1].weight.detach()
    return torch.where(y[:, None] == 0, w[1] - w[0], w[0] - w[1])


def test_pgd_loss_linear_linf_reaches_the_closed_form_corner():
    model = _linear2()
    g = _gen(2)
    x = torch.rand(8, 1, 4, 4, generator=g)  # some coordinates near the box edges
    y = torch.randint(0, 2, (8,), generator=g)
    eps = 0.1
    reg = PGDAdversarialLoss(model, eps=eps, generator=_gen())  # 40 steps of 0.01 from a random start
    loss = reg(x, y)
    s = _ce_ascent_direction(model, y).sign().reshape(x.shape)
    corner = (x + eps * s).clamp(0, 1)  # the maximizer of a linear score over ball ∩ box
    torch.testing.assert_close(reg.last_adversarial, corner, atol=1e-6, rtol=0)
    inside = ((x + eps * s) >= 0) & ((x + eps * s) <= 1)
    assert inside.float().mean() > 0.7 and (~inside).any()  # both cases occur
    with torch.no_grad():
        torch.testing.assert_close(loss.detach(), F.cross_entropy(model(corner), y))


def test_pgd_loss_linear_l2_ball_and_maximizer():
    model = _linear2()
    x = 0.3 + 0.4 * torch.rand(6, 1, 4, 4, generator=_gen(4))
    y = torch.randint(0, 2, (6,), generator=_gen(5))
    u = _ce_ascent_direction(model, y)
    u = u / u.norm(dim=1, keepdim=True)
    # from x, the l2 steps are colinear with u: the maximizer eps * u exactly
    reg = PGDAdversarialLoss(model, eps=0.2, step_size=0.05, norm="l2", random_start=False)
    reg(x, y)
    d = (reg.last_adversarial - x).flatten(1)
    torch.testing.assert_close(d, 0.2 * u, atol=1e-6, rtol=0)
    # from a random start: on the sphere, pointing along u
    reg = PGDAdversarialLoss(model, eps=0.2, step_size=0.05, norm="l2", generator=_gen())
    reg(x, y)
    d = (reg.last_adversarial - x).flatten(1)
    assert (d.norm(dim=1) <= 0.2 + 1e-6).all() and (d.norm(dim=1) >= 0.2 - 1e-4).all()
    assert (F.cosine_similarity(d, u, dim=1) > 0.999).all()


def test_pgd_loss_eps_zero_is_clean_cross_entropy():
    model = _tiny()
    x, y = _batch()
    reg = PGDAdversarialLoss(model, eps=0.0)
    loss = reg(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))
    assert torch.equal(reg.last_adversarial, x)


def _param_grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def test_pgd_loss_gradient_is_the_gradient_at_the_fixed_maximizer():
    model = _tiny()
    x, y = _batch()
    reg = PGDAdversarialLoss(model, eps=0.2, n_iterations=10, generator=_gen())
    g_reg = _param_grads(model, reg(x, y))
    g_fixed = _param_grads(model, F.cross_entropy(model(reg.last_adversarial), y))
    g_at = _param_grads(model, reg.objective_at(x, y, reg.last_adversarial))
    g_clean = _param_grads(model, F.cross_entropy(model(x), y))
    for a, b, c in zip(g_reg, g_fixed, g_at):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    assert max(float((a - c).abs().max()) for a, c in zip(g_reg, g_clean)) > 1e-2


def test_pgd_loss_final_forward_in_users_mode_attack_in_eval_mode():
    model = BNNet().train()
    x, y = _batch(8)
    reference = copy.deepcopy(model)
    reg = PGDAdversarialLoss(model, eps=0.2, n_iterations=5, generator=_gen())
    loss = reg(x, y)
    assert model.training and model.bn.training
    # the attack left no trace in the running statistics: only the final train-mode forward did
    expected = F.cross_entropy(reference(reg.last_adversarial), y)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model.bn.running_mean, reference.bn.running_mean)
    torch.testing.assert_close(model.bn.running_var, reference.bn.running_var)
    assert int(model.bn.num_batches_tracked) == 1
    with torch.no_grad():
        eval_loss = F.cross_entropy(copy.deepcopy(model).eval()(reg.last_adversarial), y)
    assert abs(float(eval_loss) - loss.item()) > 1e-3, "the value must use batch statistics (train mode)"


def test_pgd_loss_eval_mode_false_attacks_with_batch_statistics_and_restores_buffers():
    model = BNNet().train()
    x, y = _batch(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = PGDAdversarialLoss(model, eps=0.2, n_iterations=5, generator=_gen(), eval_mode=False)
    b = PGDAdversarialLoss(model, eps=0.2, n_iterations=5, generator=_gen(), eval_mode=True)
    a(x, y)
    # one training forward only: running stats of a single train-mode pass on x'
    ref = BNNet()
    ref.load_state_dict(before)
    ref.train()(a.last_adversarial)
    torch.testing.assert_close(model.bn.running_mean, ref.bn.running_mean)
    model.load_state_dict(before)
    b(x, y)
    assert not torch.equal(a.last_adversarial, b.last_adversarial)


def test_forward_passes_through_the_wrapper_attacks_through_the_module():
    inner = _tiny()
    wrapped = nn.DataParallel(inner)  # on CPU it simply calls the module
    calls = []
    wrapped.register_forward_hook(lambda m, i, o: calls.append(1))
    x, y = _batch()
    PGDAdversarialLoss(wrapped, eps=0.1, n_iterations=3, generator=_gen())(x, y)
    assert len(calls) == 1
    calls.clear()
    TRADESLoss(wrapped, eps=0.1, n_iterations=3, generator=_gen())(x, y)
    assert len(calls) == 2
    calls.clear()
    DistillationLoss(wrapped, _tiny(scale=1.0))(x, y)
    assert len(calls) == 1


# --------------------------------------------------------------------------- TRADES


def test_trades_equals_cross_entropy_plus_beta_kl_recomputed():
    model = _tiny()
    x, y = _batch()
    reg = TRADESLoss(model, eps=0.2, beta=2.5, n_iterations=10, generator=_gen())
    loss = reg(x, y)
    x_adv = reg.last_adversarial
    logits, logits_adv = model(x), model(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
    torch.testing.assert_close(loss, F.cross_entropy(logits, y) + 2.5 * kl)
    assert kl.item() > 1e-3
    assert reg.last_stats["kl"] == pytest.approx(kl.item(), rel=1e-5)
    assert reg.last_stats["attack_success"] == pytest.approx(float((logits_adv.argmax(1) != y).float().mean()))
    # scipy, float64
    p = F.softmax(logits.detach().double(), 1).numpy()
    q = F.softmax(logits_adv.detach().double(), 1).numpy()
    assert reg.last_stats["kl"] == pytest.approx(float(rel_entr(p, q).sum(axis=1).mean()), rel=1e-4)
    # gradient: through f(x) and f(x'), not through the attack
    g_reg = _param_grads(model, reg.objective_at(x, y, x_adv))
    g_ref = _param_grads(model, F.cross_entropy(model(x), y) + 2.5 * F.kl_div(
        F.log_softmax(model(x_adv), 1), F.softmax(model(x), 1), reduction="batchmean"))
    for a, b in zip(g_reg, g_ref):
        torch.testing.assert_close(a, b)


def test_trades_maximizer_beats_random_points_of_the_ball():
    model = _tiny()
    x, y = _batch()
    eps = 0.2
    reg = TRADESLoss(model, eps=eps, beta=1.0, generator=_gen())
    reg(x, y)
    with torch.no_grad():
        logp = F.log_softmax(model(x), 1)

        def kl(z):
            return (logp.exp() * (logp - F.log_softmax(model(z), 1))).sum(1)

        k_adv = kl(reg.last_adversarial)
        g = _gen(7)
        rand = torch.stack([kl((x + (2 * torch.rand(x.shape, generator=g) - 1) * eps).clamp(0, 1)) for _ in range(200)])
        signs = [torch.randint(0, 2, x.shape, generator=g).mul(2).sub(1) for _ in range(200)]
        corners = torch.stack([kl((x + eps * s).clamp(0, 1)) for s in signs])
    best_random = torch.maximum(rand.max(0).values, corners.max(0).values)
    assert (k_adv >= best_random).all(), (k_adv, best_random)
    assert float((k_adv / best_random).min()) > 1.5


def test_trades_beta_zero_and_eps_zero_are_clean_cross_entropy():
    model = _tiny()
    x, y = _batch()
    clean = F.cross_entropy(model(x), y)
    for reg in (TRADESLoss(model, eps=0.2, beta=0.0), TRADESLoss(model, eps=0.0, beta=6.0)):
        torch.testing.assert_close(reg(x, y), clean)
        assert torch.equal(reg.last_adversarial, x) and reg.last_stats["kl"] == 0.0


# --------------------------------------------------------------------------- distillation


def test_distillation_closed_form_on_hand_made_logits():
    ln2, ln3 = math.log(2), math.log(3)
    # T = 2: teacher rows / T = [0, ln 3] and [0, 0] -> soft labels [1/4, 3/4], [1/2, 1/2];
    # student rows / T = [0, 0] and [ln 2, 0] -> log-probabilities [-ln 2, -ln 2], [ln 2/3, ln 1/3]
    teacher = ConstLogits([[0.0, 2 * ln3], [0.0, 0.0]])
    student = ConstLogits([[0.0, 0.0], [2 * ln2, 0.0]])
    reg = DistillationLoss(student, teacher, temperature=2.0)
    x, y = torch.zeros(2, 1, 1, dtype=torch.float64), torch.tensor([0, 1])
    loss = reg(x, y)
    row1 = ln2
    row2 = -0.5 * (math.log(2 / 3) + math.log(1 / 3))
    assert loss.item() == pytest.approx((row1 + row2) / 2, abs=1e-12)
    assert reg.last_stats["accuracy"] == 0.5 and reg.last_stats["teacher_agreement"] == 0.5
    assert reg.last_adversarial is None


@pytest.mark.parametrize("temperature", [1.0, 5.0, 100.0])
def test_distillation_gradient_wrt_student_logits(temperature):
    g = _gen(3)
    z_s = torch.randn(5, 4, generator=g, dtype=torch.float64) * 10
    z_t = torch.randn(5, 4, generator=g, dtype=torch.float64) * 10
    student, teacher = ConstLogits(z_s), ConstLogits(z_t)
    reg = DistillationLoss(student, teacher, temperature=temperature)
    reg(torch.zeros(5, 1, dtype=torch.float64), torch.zeros(5, dtype=torch.long)).backward()
    expected = (torch.softmax(z_s / temperature, 1) - torch.softmax(z_t / temperature, 1)) / temperature / 5
    torch.testing.assert_close(student.z.grad, expected, atol=1e-14, rtol=1e-10)
    assert teacher.z.grad is None


def test_distillation_teacher_untouched_and_not_owned():
    torch.manual_seed(0)
    teacher = BNNet().train()
    teacher.fc.weight.grad = torch.full_like(teacher.fc.weight, 7.0)
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = BNNet()
    reg = DistillationLoss(student, teacher, temperature=10.0)
    assert list(reg.parameters()) == [] and reg.state_dict() == {}
    x, y = _batch(8)
    reg(x, y).backward()
    assert teacher.training and teacher.bn.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, state[k]), k  # incl. running statistics: the teacher ran in eval mode
    assert torch.equal(teacher.fc.weight.grad, torch.full_like(teacher.fc.weight, 7.0))
    assert teacher.conv.weight.grad is None and all(p.requires_grad for p in teacher.parameters())
    assert student.conv.weight.grad is not None
    # the teacher's soft labels are the eval-mode ones
    with torch.no_grad():
        soft = torch.softmax(copy.deepcopy(teacher).eval()(x) / 10.0, 1)
        z_s = copy.deepcopy(student).train()(x)
    expected = -(soft * F.log_softmax(z_s / 10.0, 1)).sum(1).mean()
    reg2 = DistillationLoss(copy.deepcopy(student).train(), teacher, temperature=10.0)
    torch.testing.assert_close(reg2(x, y), expected)


def test_distillation_teacher_checks():
    student = _tiny()
    with pytest.raises(ValueError, match="teacher is the student"):
        DistillationLoss(student, student)
    with pytest.raises(ValueError, match="teacher is the student"):
        DistillationLoss(nn.DataParallel(student), student)
    shared = nn.Sequential(student.conv1, nn.Flatten(), nn.Linear(75, 3))
    with pytest.raises(ValueError, match="shares the parameter '0.weight'"):
        DistillationLoss(student, shared)
    aliased = copy.deepcopy(student)
    aliased.fc.weight = nn.Parameter(student.fc.weight.data)  # same storage
    with pytest.raises(ValueError, match="fc.weight"):
        DistillationLoss(student, aliased)
    with pytest.raises(TypeError, match="teacher"):
        DistillationLoss(student, lambda x: x)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            DistillationLoss(student, _tiny(1.0), temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        DistillationLoss(student, _tiny(1.0), temperature="100")
    other = TinyGapNet(num_classes=4)
    with pytest.raises(ValueError, match="same classes"):
        DistillationLoss(student, other)(*_batch())


# --------------------------------------------------------------------------- shared properties


FACTORIES = {
    "pgd": lambda m, **kw: PGDAdversarialLoss(m, n_iterations=kw.pop("n_iterations", 4), **kw),
    "pgd_l2": lambda m, **kw: PGDAdversarialLoss(
        m, norm="l2", step_size=0.1, n_iterations=kw.pop("n_iterations", 4), **kw
    ),
    "trades": lambda m, **kw: TRADESLoss(m, n_iterations=kw.pop("n_iterations", 4), **kw),
}


@pytest.mark.parametrize("name", list(FACTORIES) + ["distillation"])
def test_no_side_effects(name):
    torch.manual_seed(0)
    model = BNNet().train()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.conv.bias.requires_grad_(False)
    reference = copy.deepcopy(model)
    x, y = _batch(8)
    x_before, y_before = x.clone(), y.clone()
    if name == "distillation":
        reg = DistillationLoss(model, BNNet().eval(), temperature=5.0)
    else:
        reg = FACTORIES[name](model, eps=0.2, generator=_gen())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model in training mode is expected: no BatchNorm warning
        reg(x, y)
    assert all(m.training for m in model.modules())
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight)) and model.conv.weight.grad is None
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in reference.parameters()]
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    # the running statistics moved only by the final train-mode forward pass(es)
    if name == "trades":
        reference(x)
    reference(x if name == "distillation" else reg.last_adversarial)
    for (k, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    model.eval()
    reg(x, y)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", list(FACTORIES))
def test_schedule_steps_in_training_mode_only(name):
    model = _tiny()
    x, y = _batch()
    sched = EpsilonSchedule(0.2, warmup_steps=1, ramp_steps=2)
    reg = FACTORIES[name](model, eps=sched, generator=_gen())
    clean = F.cross_entropy(model(x), y)
    values, seen = [], []
    for _ in range(3):
        values.append(reg(x, y))
        seen.append(reg.last_stats["eps"])
    assert sched.current_step == 3
    assert seen == [0.0, 0.0, pytest.approx(0.1)]
    torch.testing.assert_close(values[0], clean)  # epsilon 0: no attack
    assert values[2].item() > clean.item() + 1e-3
    reg.eval()
    reg(x, y)
    assert sched.current_step == 3 and reg.last_stats["eps"] == pytest.approx(0.2)
    reg.train()
    reg(x, y)
    assert sched.current_step == 4


@pytest.mark.parametrize("name", list(FACTORIES))
def test_same_generator_seed_same_value(name):
    model = _tiny()
    x, y = _batch()
    # PGD's default first run starts at the clean input: "always" makes its one run random (TRADES' always is)
    kw = {"random_start": "always"} if name.startswith("pgd") else {}
    a = FACTORIES[name](model, eps=0.2, generator=_gen(5), **kw)
    b = FACTORIES[name](model, eps=0.2, generator=_gen(5), **kw)
    c = FACTORIES[name](model, eps=0.2, generator=_gen(6), **kw)
    va, vb, vc = a(x, y), b(x, y), c(x, y)
    assert torch.equal(va, vb) and torch.equal(a.last_adversarial, b.last_adversarial)
    assert not torch.equal(a.last_adversarial, c.last_adversarial)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_dtypes(name, dtype):
    model = _tiny(dtype=dtype)
    x, y = _batch(dtype=dtype)
    reg = FACTORIES[name](model, eps=0.2, generator=_gen())
    value = reg(x, y)
    assert value.dtype == dtype and reg.last_adversarial.dtype == dtype
    torch.testing.assert_close(value, reg.objective_at(x, y, reg.last_adversarial))
    value.backward()
    assert all(p.grad is not None and p.grad.dtype == dtype for p in model.parameters())


def test_distillation_float64():
    student, teacher = _tiny(dtype=torch.float64), _tiny(scale=1.0, dtype=torch.float64)
    x, y = _batch(dtype=torch.float64)
    value = DistillationLoss(student, teacher, temperature=3.0)(x, y)
    soft = torch.softmax(teacher(x) / 3.0, 1)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, -(soft * F.log_softmax(student(x) / 3.0, 1)).sum(1).mean())


def test_argument_errors():
    model = _tiny()
    x, y = _batch()
    with pytest.raises(ValueError, match="eps"):
        PGDAdversarialLoss(model, eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        TRADESLoss(model, eps=-0.1)
    with pytest.raises(ValueError, match="beta"):
        TRADESLoss(model, beta=-1.0)
    with pytest.raises(ValueError, match="step_size"):
        PGDAdversarialLoss(model, step_size=0.0)
    with pytest.raises(ValueError, match="norm"):
        TRADESLoss(model, norm="l1")
    with pytest.raises(ValueError, match="n_restarts"):
        PGDAdversarialLoss(model, n_restarts=0)
    with pytest.raises(TypeError, match="n_iterations"):
        PGDAdversarialLoss(model, n_iterations=2.5)
    with pytest.raises(ValueError, match="clip_min"):
        PGDAdversarialLoss(model, clip_min=1.0, clip_max=0.0)
    for reg in (PGDAdversarialLoss(model, n_iterations=2), TRADESLoss(model, n_iterations=2),
                DistillationLoss(model, _tiny(1.0))):
        with pytest.raises(TypeError, match="integer tensor"):
            reg(x, y.float())
        with pytest.raises(ValueError, match=r"shape \(6,\)"):
            reg(x, y[:4])
        with pytest.raises(ValueError, match="class index 7"):
            reg(x, torch.tensor([0, 1, 2, 7, 0, 1]))
    reg = PGDAdversarialLoss(model, n_iterations=2)
    with pytest.raises(ValueError, match="inputs_adv"):
        reg.objective_at(x, y, x[:, :1])
    with pytest.raises(ValueError, match="above clip_max"):
        reg(x + 1.0, y)


# --------------------------------------------------------------------------- effect


def test_effect_pgd_training_raises_pgd_accuracy_on_digits():
    """Digits at 8x8, a tiny MLP, 150 Adam steps with the plain cross-entropy vs with
    PGDAdversarialLoss (eps 0.2, 5 steps of 0.05): PGD accuracy on the held-out images (eps 0.2,
    20 steps, 2 restarts). Measured on this machine with this seed: normal 0.006, adversarial
    0.350 (clean accuracy 0.967 vs 0.911); over model/batch seeds 0-4 normal 0.003-0.014,
    adversarial 0.303-0.367, so the asserted margin of 0.25 has room."""
    from captum_robust.data import load_digits

    data = load_digits(size=8, seed=0)
    xtr, ytr = data.train.tensors
    xte, yte = data.test.tensors
    eps = 0.2

    def train(adversarial):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        objective = PGDAdversarialLoss(model, eps=eps, step_size=0.05, n_iterations=5, generator=_gen(0))
        g = _gen(1)
        for _ in range(150):
            idx = torch.randint(0, len(ytr), (64,), generator=g)
            x, y = xtr[idx], ytr[idx]
            loss = objective(x, y) if adversarial else F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            clean = float((model(xte).argmax(1) == yte).float().mean())
        attack = PGD(model, eps=eps, step_size=0.02, n_iterations=20, n_restarts=2)
        _, res = attack.perturb(xte, target=yte, generator=_gen(2))
        return clean, float(1 - res.success.float().mean())

    clean_n, robust_n = train(False)
    clean_a, robust_a = train(True)
    assert clean_n > 0.9 and clean_a > 0.8
    assert robust_n < 0.05
    assert robust_a > robust_n + 0.25, (robust_n, robust_a)
