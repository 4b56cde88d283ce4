"""train_classifier / evaluate_accuracy: they learn, respect budgets and leave global state alone;
trained_digits_model: the shared cached recipe returns independent copies."""

import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_robust.training import TrainedDigits, evaluate_accuracy, train_classifier, trained_digits_model


def _separable(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def _loader(ds, seed=0):
    return DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))


def test_learns_a_separable_problem_and_counts_steps():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    before = evaluate_accuracy(model, _loader(_separable(256, seed=1)))
    stats = train_classifier(model, _loader(_separable()), epochs=30, lr=1e-2, generator=torch.Generator().manual_seed(0))
    assert stats["steps"] == 30 * 8 and stats["epochs_completed"] == 30 and not stats["stopped_by_time"]
    assert stats["history"][-1]["loss"] < stats["history"][0]["loss"]
    after = evaluate_accuracy(model, _loader(_separable(256, seed=1)))  # held-out draw of the same problem
    assert after > 0.9 and after > before


def test_same_generator_same_weights_and_global_rng_untouched():
    def run():
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
        state = torch.random.get_rng_state()
        train_classifier(model, _loader(_separable()), epochs=2, generator=torch.Generator().manual_seed(3))
        assert torch.equal(torch.random.get_rng_state(), state)
        return [p.detach().clone() for p in model.parameters()]

    a, b = run(), run()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_time_budget_stops_early():
    model = nn.Linear(4, 2)
    stats = train_classifier(model, _loader(_separable()), epochs=10_000, max_seconds=0.2)
    assert stats["stopped_by_time"] and stats["steps"] < 10_000 * 8
    assert stats["seconds"] < 5


def test_modes_restored_and_accuracy_exact():
    model = nn.Sequential(nn.Linear(4, 2), nn.Dropout())
    model.eval()
    train_classifier(model, _loader(_separable()), epochs=1)
    assert not any(m.training for m in model.modules())
    model.train()
    # hand-made classifier: predicts class 1 iff x0 > 0
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight[:] = torch.tensor([[-1.0], [1.0]])
        lin.bias.zero_()
    x = torch.tensor([[-2.0], [-1.0], [1.0], [3.0], [0.5]])
    y = torch.tensor([0, 1, 1, 1, 0])
    assert evaluate_accuracy(lin, DataLoader(TensorDataset(x, y), batch_size=2)) == pytest.approx(3 / 5)
    assert lin.training


@pytest.mark.parametrize(
    "kwargs, err",
    [({"epochs": 0}, ValueError), ({"lr": -1.0}, ValueError), ({"max_seconds": 0}, ValueError),
     ({"generator": 3}, TypeError)],
)
def test_bad_arguments(kwargs, err):
    with pytest.raises(err):
        train_classifier(nn.Linear(4, 2), _loader(_separable()), **kwargs)


def test_empty_loader():
    with pytest.raises(ValueError, match="empty"):
        train_classifier(nn.Linear(4, 2), DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0).long())))
    with pytest.raises(ValueError):
        evaluate_accuracy(nn.Linear(4, 2), DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0).long())))


def test_regularizer_is_added_to_the_loss_like_a_hand_written_loop():
    """train_classifier(regularizer=r) takes the same Adam steps as a loop on CE + r(x, y)."""
    ds = _separable(64)

    def make():
        torch.manual_seed(2)
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))

    def penalty(model):
        # depends on the inputs, the labels and the parameters
        return lambda x, y: 0.3 * (model(x).gather(1, y[:, None]) ** 2).mean()

    model = make()
    stats = train_classifier(model, _loader(ds), epochs=2, lr=1e-2, regularizer=penalty(model))
    ref = make()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    reg = penalty(ref)
    terms = []
    loader = _loader(ds)
    for _ in range(2):
        for x, y in loader:
            term = reg(x, y)
            loss = nn.functional.cross_entropy(ref(x), y) + term
            terms.append(term.item() * len(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    assert stats["history"][1]["regularizer"] == pytest.approx(sum(terms[4:]) / 64, rel=1e-6)
    plain = make()
    train_classifier(plain, _loader(ds), epochs=2, lr=1e-2)
    assert max(float((a - b).detach().abs().max()) for a, b in zip(plain.parameters(), model.parameters())) > 1e-3


def test_regularizer_errors():
    model = nn.Linear(4, 2)
    with pytest.raises(TypeError, match="regularizer"):
        train_classifier(model, _loader(_separable()), epochs=1, regularizer=0.1)
    with pytest.raises(ValueError, match="scalar"):
        train_classifier(model, _loader(_separable()), epochs=1, regularizer=lambda x, y: x.sum(1))


# ---------------------------------------------------------------------------- trained_digits_model

#: a small recipe (8 x 8 images, one epoch) no other test asks for, so its first call trains
_SMALL = dict(epochs=1, size=8, seed=11, batch_size=32)


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_trained_digits_model_defaults_learn():
    result = trained_digits_model()
    assert isinstance(result, TrainedDigits)
    model, train, test, accuracy = result
    assert accuracy > 0.7
    assert not any(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    x, y = test.tensors
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) == pytest.approx(accuracy)
    assert train.tensors[0].shape[1:] == (1, 28, 28) and len(train) + len(test) == 1797


def test_trained_digits_model_leaves_global_state_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    trained_digits_model(**dict(_SMALL, seed=13))  # trains: no other test asks for these arguments
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_trained_digits_model_is_cached_and_returns_copies():
    first = trained_digits_model(**_SMALL)
    original = _weights(first.model)
    with torch.no_grad():
        for p in first.model.parameters():
            p.add_(1.0)
    first.model.train()
    start = time.perf_counter()
    second = trained_digits_model(**_SMALL)
    assert time.perf_counter() - start < 1.0  # cached: no training
    assert second.model is not first.model and not second.model.training
    assert all(torch.equal(a, b) for a, b in zip(_weights(second.model), original))
    assert second.accuracy == first.accuracy
    third = trained_digits_model(**dict(_SMALL, seed=12))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(third.model), original))


def test_trained_digits_model_softplus():
    from captum_robust.models import Small

    model = trained_digits_model(**_SMALL, softplus=10.0).model
    assert isinstance(model, Small)
    assert any(isinstance(m, nn.Softplus) for m in model.modules())
    assert not any(isinstance(m, nn.Softplus) for m in trained_digits_model(**_SMALL).model.modules())


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"epochs": 0}, ValueError, r"epochs must be an int >= 1, got epochs=0"),
        ({"epochs": 2.0}, TypeError, r"epochs must be an int >= 1, got float 2.0"),
        ({"size": 0}, ValueError, r"size must be an int >= 1, got size=0"),
        ({"seed": -1}, ValueError, r"seed must be an int >= 0, got seed=-1"),
        ({"lr": 0.0}, ValueError, r"lr must be a finite number > 0, got lr=0.0"),
        ({"lr": float("nan")}, ValueError, r"lr must be a finite number > 0, got lr=nan"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1, got batch_size=0"),
        ({"softplus": -1.0}, ValueError, r"softplus must be a finite number > 0 or None, got softplus=-1.0"),
        ({"softplus": "10"}, TypeError, r"softplus must be a finite number > 0 or None, got str '10'"),
        ({"one_cycle": 1}, TypeError, r"one_cycle must be a bool, got int 1"),
    ],
)
def test_trained_digits_model_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        trained_digits_model(**kwargs)


def test_trained_digits_model_one_cycle_is_the_examples_schedule():
    """one_cycle=True steps a OneCycleLR (max_lr=lr) once per batch: same weights as a hand-written loop."""
    from captum_robust.data import load_digits
    from captum_robust.models import Small

    epochs, size, seed, lr, bs = 2, 8, 14, 1e-2, 64
    got = trained_digits_model(epochs, size=size, seed=seed, lr=lr, batch_size=bs, one_cycle=True).model
    torch.manual_seed(seed)
    x, y = load_digits(size=size, seed=seed).train.tensors
    ref = Small()
    opt = torch.optim.Adam(ref.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * -(-len(x) // bs))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            loss = nn.functional.cross_entropy(ref(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    for a, b in zip(got.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    plain = trained_digits_model(epochs, size=size, seed=seed, lr=lr, batch_size=bs).model
    assert not all(torch.equal(a, b) for a, b in zip(got.parameters(), plain.parameters()))


def test_trained_digits_model_options_are_keyword_only():
    with pytest.raises(TypeError):
        trained_digits_model(1, 8)


def test_train_classifier_and_evaluate_accuracy_read_logits_of_structured_outputs():
    """A model whose output has ``.logits`` (Hugging Face style) trains and is evaluated exactly
    like the same model returning the tensor."""
    from types import SimpleNamespace

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from captum_robust.training import evaluate_accuracy, train_classifier

    class Structured(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return SimpleNamespace(logits=self.inner(x))

    data = TensorDataset(torch.rand(32, 4, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 3)
    torch.manual_seed(0)
    plain = nn.Linear(4, 3)
    structured = Structured(nn.Linear(4, 3))
    structured.inner.load_state_dict(plain.state_dict())
    for m in (plain, structured):
        train_classifier(m, DataLoader(data, batch_size=8), epochs=2, lr=0.1)
    torch.testing.assert_close(structured.inner.weight, plain.weight)
    loader = DataLoader(data, batch_size=8)
    assert evaluate_accuracy(structured, loader) == evaluate_accuracy(plain, loader)
