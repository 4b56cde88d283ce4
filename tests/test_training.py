"""train_classifier / evaluate_accuracy: they learn, respect budgets and leave global state alone."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_robust.training import evaluate_accuracy, train_classifier


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
