"""ROAR (remove and retrain): the masking helper against a brute-force ranking, an oracle
attribution against the random baseline on data whose label lives in four known pixels, the
reference point against an independently trained model, seeds and errors."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_robust.robust.evaluation import (
    ROARResult,
    remove_features,
    replacement_values,
    roar,
    top_fraction_mask,
)
from captum_robust.training import evaluate_accuracy, train_classifier

SIGNAL = torch.tensor([9, 22, 41, 54])  # flat indices of the four pixels that carry the label (8 x 8)


def _signal_data(n, seed):
    """4 classes; class c sets pixel SIGNAL[c] to 1 and the other three signal pixels to 0;
    every other pixel is uniform noise in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 64, generator=g)
    x[:, SIGNAL] = 0.0
    x[torch.arange(n), SIGNAL[y]] = 1.0
    return x.view(n, 1, 8, 8), y


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


def _oracle(inputs, target):
    m = torch.zeros(inputs.shape[0], 64, dtype=inputs.dtype)
    m[:, SIGNAL] = 1.0
    return m.view_as(inputs)


@pytest.fixture(scope="module")
def data():
    return _signal_data(480, 0), _signal_data(240, 1)


def _brute_force_mask(scores, k):
    """Sort (score descending, flat index ascending) in plain Python and mark the first k."""
    rows = scores.reshape(scores.shape[0], -1).tolist()
    out = torch.zeros(len(rows), len(rows[0]), dtype=torch.bool)
    for b, row in enumerate(rows):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))
        out[b, order[:k]] = True
    return out.view(scores.shape)


@pytest.mark.parametrize(
    "n, expected",
    # round(f * n) with halves up, by hand: 13 -> 1.3, 3.9, 6.5, 9.1, 11.7; 64 -> 6.4, 19.2, 32, 44.8, 57.6
    [(13, [1, 4, 7, 9, 12]), (64, [6, 19, 32, 45, 58])],
)
def test_top_fraction_mask_matches_a_brute_force_ranking_with_ties(n, expected):
    g = torch.Generator().manual_seed(n)
    scores = torch.randint(0, 4, (6, n), generator=g).double()  # many ties
    for f, k in zip((0.1, 0.3, 0.5, 0.7, 0.9), expected):
        mask = top_fraction_mask(scores, f)
        assert mask.sum(dim=1).tolist() == [k] * 6
        assert torch.equal(mask, _brute_force_mask(scores, k))
        # every marked score >= every unmarked one
        low = torch.where(mask, scores, torch.inf).min(dim=1).values
        high = torch.where(mask, -torch.inf, scores).max(dim=1).values
        assert (low >= high).all()


def test_top_fraction_mask_ties_go_to_the_lower_index_and_shape_is_kept():
    scores = torch.zeros(2, 1, 2, 3)
    scores[1, 0, 1, 2] = 5.0
    mask = top_fraction_mask(scores, 0.5)  # k = 3 of 6
    assert mask.shape == scores.shape
    assert mask[0].flatten().tolist() == [True, True, True, False, False, False]
    assert mask[1].flatten().tolist() == [True, True, False, False, False, True]


def test_remove_features_full_maps_pixel_maps_and_signed_ranking():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 4, 4, generator=g) + 1.0  # never equal to the value 0 -> changes are countable
    x0 = x.clone()
    full = torch.randn(4, 3, 4, 4, generator=g)
    out = remove_features(x, full, 0.3, value=0.0)
    changed = out == 0
    assert changed.flatten(1).sum(1).tolist() == [14] * 4  # round(0.3 * 48) = 14.4 -> 14
    assert torch.equal(changed, _brute_force_mask(full.abs(), 14))
    assert torch.equal(out[~changed], x[~changed])
    assert torch.equal(x, x0)  # inputs untouched

    # channel-summed maps rank pixels: round(0.3 * 16) = 5 pixels, every channel replaced
    pix = torch.randn(4, 1, 4, 4, generator=g)
    for maps in (pix, pix[:, 0]):
        out = remove_features(x, maps, 0.3, value=0.0)
        pixel_mask = _brute_force_mask(pix.abs(), 5)
        assert torch.equal(out == 0, pixel_mask.expand_as(x))
    # aggregate_channels sums |map| over the channels
    agg = remove_features(x, full, 0.3, value=0.0, aggregate_channels=True)
    assert torch.equal(agg == 0, _brute_force_mask(full.abs().sum(1, keepdim=True), 5).expand_as(x))
    # signed ranking: the most negative features stay
    signed = remove_features(x, full, 0.3, value=0.0, absolute=False)
    assert torch.equal(signed == 0, _brute_force_mask(full, 14))
    # per-channel values broadcast
    value = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    out = remove_features(x, pix, 0.5, value=value)
    m = _brute_force_mask(pix.abs(), 8)[:, 0]
    for c in range(3):
        assert (out[:, c][m] == value.flatten()[c]).all()


def test_replacement_values_per_channel_mean():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).view(2, 3, 2, 2)
    v = replacement_values(x, "mean")
    expected = [sum(x[:, c].flatten().tolist()) / 8 for c in range(3)]
    assert v.shape == (1, 3, 1, 1)
    assert v.flatten().tolist() == pytest.approx(expected)
    assert float(replacement_values(x, "zero")) == 0.0
    assert float(replacement_values(x, -0.5)) == -0.5


def test_oracle_destroys_accuracy_random_keeps_it(data):
    train, test = data
    kwargs = dict(fractions=(0.1,), epochs=15, lr=1e-2, batch_size=32, include_reference=False)
    oracle = roar(_mlp, _oracle, train, test, generator=torch.Generator().manual_seed(0), **kwargs)
    rand = roar(_mlp, "random", train, test, generator=torch.Generator().manual_seed(0), **kwargs)
    acc_oracle, acc_random = oracle.mean[0], rand.mean[0]
    # chance is 0.25: the four signal pixels are all among the top 6 of 64 and replaced by the mean
    assert acc_oracle < 0.40, acc_oracle
    assert acc_random > 0.85, acc_random
    assert acc_random - acc_oracle > 0.5


def test_reference_point_equals_a_model_trained_by_hand_with_the_same_seed(data):
    (x, y), test = data
    result = roar(_mlp, "random", (x, y), test, fractions=(0.5,), epochs=3, lr=1e-2, batch_size=32,
                  repeats=2, generator=torch.Generator().manual_seed(11))
    # the documented seed scheme, recomputed independently
    seeds = torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(11)).tolist()
    by_hand = []
    for s in seeds[:2]:
        torch.manual_seed(s)
        model = _mlp()
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(s))
        train_classifier(model, loader, epochs=3, lr=1e-2, generator=torch.Generator().manual_seed(s))
        by_hand.append(evaluate_accuracy(model, DataLoader(TensorDataset(*test), batch_size=100)))
    assert result.fractions == [0.0, 0.5]
    assert result.accuracies[0] == by_hand
    assert result.reference_accuracy == pytest.approx(sum(by_hand) / 2)
    assert result.std[0] == pytest.approx(torch.tensor(by_hand, dtype=torch.float64).std().item())
    # AUC by the trapezoid rule, by hand
    assert result.auc == pytest.approx(0.5 * (result.mean[0] + result.mean[1]) / 2)
    assert result.normalized_auc == pytest.approx(result.auc / 0.5)
    assert result.settings["seeds"] == seeds[:2]


def test_same_seed_same_result_with_a_noisy_attribution_object(data):
    from captum_robust.attr import ScaledSmoothGrad

    train, test = data
    model = _mlp()
    train_classifier(model, DataLoader(TensorDataset(*train), batch_size=32), epochs=2, lr=1e-2)
    model.train()
    params = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    sg = ScaledSmoothGrad(model, sigma=0.2, n_samples=4)
    x0 = train[0].clone()

    def run(seed):
        return roar(_mlp, sg, train, test, fractions=(0.2, 0.6), epochs=2, lr=1e-2, internal_batch_size=100,
                    include_reference=False, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(5), run(5), run(6)
    assert a.accuracies == b.accuracies
    assert a.settings["noise_seed"] == b.settings["noise_seed"] != c.settings["noise_seed"]
    assert a.accuracies != c.accuracies
    # no side effects on the explained model or the caller's data
    assert model.training
    assert all(torch.equal(p, q) and p.grad is gr for p, q, gr in zip(model.parameters(), params, grads))
    assert torch.equal(train[0], x0)


def test_loader_dataset_and_tensor_pair_give_the_same_result(data, tmp_path):
    train, test = data
    kwargs = dict(fractions=(0.3,), epochs=1, include_reference=False)
    a = roar(_mlp, _oracle, train, test, generator=torch.Generator().manual_seed(2), **kwargs)
    b = roar(_mlp, _oracle, DataLoader(TensorDataset(*train), batch_size=50), TensorDataset(*test),
             generator=torch.Generator().manual_seed(2), json_path=tmp_path / "r.json", **kwargs)
    assert a.accuracies == b.accuracies
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["accuracies"] == b.accuracies and saved["settings"]["attribution"] == "_oracle"
    assert isinstance(b, ROARResult) and "| 0.3 |" in b.to_markdown()


def test_prediction_target_and_captum_saliency(data):
    from captum.attr import Saliency

    train, test = data
    model = _mlp()
    train_classifier(model, DataLoader(TensorDataset(*train), batch_size=32), epochs=5, lr=1e-2)
    model.eval()
    r = roar(_mlp, Saliency(model), train, test, fractions=(0.1,), epochs=15, lr=1e-2, batch_size=32,
             target="prediction", include_reference=False, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= r.mean[0] <= 1.0 and r.settings["target"] == "prediction"
    assert not model.training


def test_errors(data):
    train, test = data
    ok = dict(epochs=1, include_reference=False)
    for bad in [(0.0,), (1.0,), (-0.1, 0.5), (0.5, 0.3), (0.3, 0.3), (), (float("nan"),)]:
        with pytest.raises(ValueError, match="fractions"):
            roar(_mlp, "random", train, test, fractions=bad, **ok)
    with pytest.raises(TypeError, match="nn.Module"):
        roar(lambda: "not a model", "random", train, test, fractions=(0.5,), **ok)
    with pytest.raises(TypeError, match="model_factory"):
        roar(_mlp(), "random", train, test, fractions=(0.5,), **ok)
    with pytest.raises(ValueError, match="train_data is empty"):
        roar(_mlp, "random", (train[0][:0], train[1][:0]), test, fractions=(0.5,), **ok)
    with pytest.raises(ValueError, match="test_data is empty"):
        roar(_mlp, "random", train, DataLoader(TensorDataset(test[0][:0], test[1][:0])), fractions=(0.5,), **ok)
    with pytest.raises(ValueError, match=r"shape \(96, 1, 8, 8\).*got \(96, 1, 4, 4\).*upsample"):
        roar(_mlp, lambda x, t: torch.ones(x.shape[0], 1, 4, 4), train, test, fractions=(0.5,),
             internal_batch_size=96, **ok)
    with pytest.raises(ValueError, match="maps must have"):
        roar(_mlp, lambda x, t: torch.ones(x.shape[0], 64), train, test, fractions=(0.5,), **ok)
    with pytest.raises(ValueError, match="NaN"):
        roar(_mlp, lambda x, t: torch.full_like(x, float("nan")), train, test, fractions=(0.5,), **ok)
    with pytest.raises(ValueError, match="replacement"):
        roar(_mlp, "random", train, test, fractions=(0.5,), replacement="blur", **ok)
    with pytest.raises(ValueError, match="attribution"):
        roar(_mlp, "gradient", train, test, fractions=(0.5,), **ok)
    with pytest.raises(ValueError, match="target"):
        roar(_mlp, "random", train, test, fractions=(0.5,), target="prediction", **ok)
    with pytest.raises(ValueError, match="repeats"):
        roar(_mlp, "random", train, test, fractions=(0.5,), repeats=0, **ok)
    with pytest.raises(TypeError, match="attribution"):
        roar(_mlp, 3, train, test, fractions=(0.5,), **ok)
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_mask(torch.rand(2, 4), 1.5)
