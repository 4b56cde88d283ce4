"""The attribution-robustness runner: skipping, statistics, adversarial accuracy, kept examples, JSON/markdown."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from captum_robust.attr import CAM
from captum_robust.robust.attacks import AAI, PGD, TopKAttack
from captum_robust.robust.discrepancy import kendall_tau
from captum_robust.robust.evaluation import RobustnessReport, attribution_robustness, summarize
from tests.robust.attacks._models import gradient_map, one_thread, trained_digits


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture
def setup():
    model, xt, yt = trained_digits()
    x, y = xt[:24].clone(), yt[:24].clone()
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert 0 < int((~correct).sum())  # some misclassified examples to skip
    cam = CAM(model, model.feature_layer, model.classifier)
    return model, cam, x, y, correct


def test_summarize_matches_scipy():
    rng = np.random.default_rng(0)
    v = rng.normal(0.3, 0.2, size=37)
    s = summarize(list(v) + [float("nan")], confidence=0.9)
    lo, hi = stats.t.interval(0.9, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert s["n"] == 37 and s["n_nan"] == 1
    assert math.isclose(s["mean"], v.mean(), rel_tol=1e-12)
    assert math.isclose(s["median"], np.median(v), rel_tol=1e-12)
    assert math.isclose(s["ci_low"], lo, rel_tol=1e-9) and math.isclose(s["ci_high"], hi, rel_tol=1e-9)
    assert math.isclose(s["q_low"], np.quantile(v, 0.05), rel_tol=1e-9)
    assert math.isclose(s["q_high"], np.quantile(v, 0.95), rel_tol=1e-9)
    assert math.isclose(summarize([1.0, 2.0, 3.0, 10.0])["median"], 2.5)
    assert math.isnan(summarize([0.5])["ci_low"]) and summarize([]) ["n"] == 0


@pytest.mark.slow
def test_runner_skips_misclassified_and_reports_the_attacks_numbers(setup, tmp_path):
    model, cam, x, y, correct = setup
    attack = AAI(model, cam, eps=0.2, step_size=0.05, n_iterations=8)
    pgd = PGD(model, eps=0.2, step_size=0.05, n_iterations=5)
    loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=False)
    path = tmp_path / "report.json"
    report = attribution_robustness(
        model, cam, attack, loader, measures=("topk", "kendall", "spearman"), k=8, pgd=pgd,
        generator=torch.Generator().manual_seed(0), json_path=path, show_progress=True,
    )
    assert isinstance(report, RobustnessReport)
    s, rows = report.summary, report.per_example
    assert s["n_examples"] == 24 and rows["index"] == list(range(24))
    assert rows["attacked"] == correct.tolist()
    assert s["n_attacked"] == int(correct.sum())
    assert math.isclose(s["clean_accuracy"], int(correct.sum()) / 24)
    # misclassified examples are not attacked: NaN measures, their clean prediction kept
    bad = [i for i in range(24) if not rows["attacked"][i]]
    assert all(math.isnan(rows["kendall"][i]) for i in bad)
    # the runner's Kendall column is what the attack reports for the same examples (same maps,
    # same preparation), batch by batch with the same generator stream
    g = torch.Generator().manual_seed(0)
    expected = []
    for start in range(0, 24, 10):
        xb, yb = x[start:start + 10], y[start:start + 10]
        ok = correct[start:start + 10]
        _, res = attack.perturb(xb[ok], target=yb[ok], generator=g)
        pgd.perturb(xb, target=yb, generator=g)
        expected += res.similarity.tolist()
    got = [rows["kendall"][i] for i in range(24) if rows["attacked"][i]]
    assert np.allclose(got, expected, atol=1e-6)
    # statistics over the kept examples
    kept = [i for i in range(24) if rows["kept"][i]]
    assert all(rows["attacked"][i] for i in kept)
    assert s["n_kept"] == len(kept) and math.isclose(s["kept_fraction"], len(kept) / s["n_attacked"])
    ref = summarize([rows["kendall"][i] for i in kept])
    assert s["measures"]["kendall"] == ref
    assert set(s["measures"]) == {"top8", "kendall", "spearman"}
    # adversarial accuracy: PGD over all 24 examples, misclassified ones count as errors
    pgd_pred = torch.tensor(rows["pgd_prediction"])
    assert math.isclose(s["adversarial_accuracy"], int((pgd_pred == y).sum()) / 24)
    assert s["adversarial_accuracy"] <= s["clean_accuracy"] + 1e-12
    # JSON and markdown
    loaded = json.loads(path.read_text())
    assert loaded["summary"]["n_attacked"] == s["n_attacked"]
    assert loaded["per_example"]["label"] == y.tolist()
    md = report.to_markdown()
    assert md.count("\n| ") >= 3 and "| kendall |" in md and "adversarial accuracy (PGD)" in md
    assert s["settings"]["attack"] == "AAI" and s["settings"]["attack_parameters"]["eps"] == 0.2
    assert s["seconds"]["attack"] > 0 and s["seconds"]["total"] >= s["seconds"]["attack"]


@pytest.mark.slow
def test_runner_defaults_tuple_data_and_max_examples(setup):
    model, cam, x, y, correct = setup
    attack = TopKAttack(model, gradient_map, k=50, eps=0.1, step_size=0.05, n_iterations=2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the ReLU gradient map cannot be attacked
        report = attribution_robustness(model, None, attack, (x, y), max_examples=10)
    s = report.summary
    assert s["n_examples"] == 10
    # the attack cannot move a ReLU gradient map, so every map is unchanged
    assert s["measures"]["top50"]["mean"] == 1.0 and s["accepted_fraction"] == 0.0
    assert s["settings"]["pgd"]["eps"] == 0.1 and s["settings"]["pgd"]["norm"] == "linf"
    assert s["adversarial_accuracy"] is not None


@pytest.mark.slow
def test_measures_are_summarized_over_the_examples_whose_prediction_was_kept(setup):
    # an attack that does not keep the prediction: PGD on the loss through AttributionPGD
    model, cam, x, y, correct = setup
    import torch.nn.functional as F

    from captum_robust.robust.attacks import AttributionPGD

    loss = lambda xa, x0, t, a: F.cross_entropy(model(xa), t, reduction="none")  # noqa: E731
    attack = AttributionPGD(model, loss, eps=0.04, step_size=0.02, n_iterations=3)
    report = attribution_robustness(model, cam, attack, (x, y), measures={"tau": "kendall"}, map_preparation=None,
                                    pgd=None, generator=torch.Generator().manual_seed(0))
    s, rows = report.summary, report.per_example
    kept = [i for i in range(24) if rows["kept"][i]]
    flipped = [i for i in range(24) if rows["attacked"][i] and not rows["kept"][i]]
    assert kept and flipped
    assert all(rows["prediction"][i] != rows["clean_prediction"][i] for i in flipped)
    assert s["measures"]["tau"]["n"] == len(kept)
    assert s["measures"]["tau"] == summarize([rows["tau"][i] for i in kept])
    assert s["adversarial_accuracy"] is None and "not measured" in report.to_markdown()


def test_runner_errors(setup):
    model, cam, x, y, _ = setup
    attack = AAI(model, cam, n_iterations=1)
    with pytest.raises(TypeError, match="perturb"):
        attribution_robustness(model, cam, object(), (x, y))
    from captum_robust.robust.attacks import ISA

    with pytest.raises(TypeError, match="ISA is a targeted"):
        attribution_robustness(model, cam, ISA(model, cam), (x, y))
    with pytest.raises(ValueError, match="unknown measure"):
        attribution_robustness(model, cam, attack, (x, y), measures=("pearson",), pgd=None)
    with pytest.raises(ValueError, match="no examples"):
        attribution_robustness(model, cam, attack, [], pgd=None)
    with pytest.raises(ValueError, match="pgd must be"):
        attribution_robustness(model, cam, attack, (x, y), pgd="strong")
    with pytest.raises(ValueError, match="max_examples"):
        attribution_robustness(model, cam, attack, (x, y), max_examples=0)


def test_explicit_attribution_takes_the_attacks_settings_through_attribution_kwargs(setup):
    """Measuring an explicit IG with the attack's attribution_kwargs gives the same numbers as
    measuring the attack's own maps; with IG's defaults the numbers differ."""
    from captum_robust.attr import BatchedIntegratedGradients
    from captum_robust.robust.attacks import softplus_surrogate

    model, _, x, y, correct = setup
    ig = BatchedIntegratedGradients(model)
    kwargs = {"n_steps": 4, "method": "riemann_middle"}
    attack = TopKAttack(model, ig, k=20, eps=0.1, step_size=0.02, n_iterations=3,
                        surrogate=softplus_surrogate(model, beta=10.0), attribution_kwargs=kwargs)
    data = (x[:10], y[:10])

    def run(**kw):
        return attribution_robustness(model, kw.pop("attribution"), attack, data, measures=("kendall",), pgd=None,
                                      generator=torch.Generator().manual_seed(1), **kw).per_example["kendall"]

    own = run(attribution=None)
    same = run(attribution=ig, attribution_kwargs=kwargs)
    default = run(attribution=ig)
    attacked = [i for i, v in enumerate(own) if not math.isnan(v)]
    assert attacked
    assert np.allclose([own[i] for i in attacked], [same[i] for i in attacked], atol=1e-9)
    assert max(abs(own[i] - default[i]) for i in attacked) > 1e-4
    with pytest.raises(ValueError, match="attribution_kwargs"):
        attribution_robustness(model, None, attack, data, attribution_kwargs=kwargs, pgd=None)


def test_merge_of_halves_recomputes_the_summary_over_all_examples(setup):
    model, cam, x, y, correct = setup
    attack = AAI(model, cam, eps=0.2, step_size=0.05, n_iterations=4)

    def run(lo, hi, seed):
        return attribution_robustness(model, cam, attack, (x[lo:hi], y[lo:hi]), measures=("kendall",), k=8,
                                      generator=torch.Generator().manual_seed(seed))

    a, b = run(0, 10, 1), run(10, 24, 2)
    merged = RobustnessReport.merge([a, b])
    cols = merged.per_example
    assert cols["index"] == list(range(24))
    assert cols["kendall"] == a.per_example["kendall"] + b.per_example["kendall"]
    kept = [i for i in range(24) if cols["attacked"][i] and cols["kept"][i]]
    s = merged.summary
    assert s["measures"]["kendall"] == summarize([cols["kendall"][i] for i in kept])
    assert s["n_attacked"] == a.summary["n_attacked"] + b.summary["n_attacked"] == int(correct.sum())
    n_adv = sum(int(p == t) for p, t in zip(cols["pgd_prediction"], y.tolist()))
    assert math.isclose(s["adversarial_accuracy"], n_adv / 24)
    assert math.isclose(s["seconds"]["attack"], a.summary["seconds"]["attack"] + b.summary["seconds"]["attack"])
    # one report merges into itself
    same = RobustnessReport.merge([a]).summary
    assert {k: v for k, v in same.items() if k != "seconds"} == {k: v for k, v in a.summary.items() if k != "seconds"}
    with pytest.raises(TypeError):
        RobustnessReport.merge([])
    c = attribution_robustness(model, cam, attack, (x[:5], y[:5]), measures=("kendall",), k=8, pgd=None)
    with pytest.raises(ValueError, match="PGD"):
        RobustnessReport.merge([a, c])


def test_keep_examples_holds_the_attacks_inputs_and_the_measured_maps(setup):
    """The kept adversarial inputs are what the attack returns for the same generator stream, and
    the kept maps give the reported measures; only attacked (correct) examples are kept, in order."""
    from captum_robust.robust.evaluation import AttackedExamples

    model, cam, x, y, correct = setup
    attack = AAI(model, cam, eps=0.2, step_size=0.05, n_iterations=4)
    loader = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=False)
    keep = 8  # more than one batch holds
    report = attribution_robustness(model, cam, attack, loader, measures=("kendall", "l2"), k=8, pgd=None,
                                    keep_examples=keep, generator=torch.Generator().manual_seed(3))
    ex = report.examples
    assert isinstance(ex, AttackedExamples) and len(ex) == keep
    first = torch.nonzero(correct).squeeze(1)[:keep]
    assert ex.index.tolist() == first.tolist()
    assert torch.equal(ex.inputs, x[first]) and torch.equal(ex.target, y[first])
    # the attack's own outputs, batch by batch with the same generator stream
    g = torch.Generator().manual_seed(3)
    x_adv, maps, maps_adv = [], [], []
    for start in range(0, 24, 6):
        xb, yb = x[start:start + 6], y[start:start + 6]
        ok = correct[start:start + 6]
        xa, _ = attack.perturb(xb[ok], target=yb[ok], generator=g)
        x_adv.append(xa)
        maps.append(attack.prepare_maps(cam.attribute(xb[ok], target=yb[ok])))
        maps_adv.append(attack.prepare_maps(cam.attribute(xa, target=yb[ok])))
    torch.testing.assert_close(ex.inputs_adv, torch.cat(x_adv)[:keep], rtol=0, atol=0)
    torch.testing.assert_close(ex.maps, torch.cat(maps)[:keep])
    torch.testing.assert_close(ex.maps_adv, torch.cat(maps_adv)[:keep])
    assert (ex.inputs_adv - ex.inputs).abs().max() > 0  # the attack moved them
    rows = report.per_example
    got = [rows["kendall"][i] for i in ex.index.tolist()]
    assert np.allclose(got, kendall_tau(ex.maps, ex.maps_adv).tolist(), atol=1e-6)
    l2 = (ex.maps - ex.maps_adv).reshape(keep, -1).norm(dim=1)
    assert np.allclose([rows["l2"][i] for i in ex.index.tolist()], l2.tolist(), rtol=1e-5)
    assert not ex.inputs.requires_grad and ex.inputs_adv.device.type == "cpu"
    # none by default; merge keeps the first report's
    plain = attribution_robustness(model, cam, attack, (x[:4], y[:4]), measures=("kendall", "l2"), k=8, pgd=None)
    assert plain.examples is None
    assert RobustnessReport.merge([report, plain]).examples is ex
    assert RobustnessReport.merge([plain, report]).examples is None
    with pytest.raises(ValueError, match="keep_examples"):
        attribution_robustness(model, cam, attack, (x, y), pgd=None, keep_examples=-1)


@pytest.mark.parametrize("name", ["", "._stats", ".robustness", ".removal", ".roar"])
def test_docstring_examples(name):
    """The examples in the evaluation modules' docstrings run as written."""
    import doctest
    import importlib

    module = importlib.import_module("captum_robust.robust.evaluation" + name)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_stability_metrics_next_to_the_attack_measures(setup):
    """The runner's stability columns equal the metric called directly on the attacked (correctly
    classified) examples with the same perturbations; they are summarized over all attacked examples."""
    from captum_robust.attr import Saliency
    from captum_robust.robust.stability import max_sensitivity, relative_representation_stability

    model, cam, x, y, correct = setup
    n = 5
    noise = torch.rand((n,) + tuple(x.shape), generator=torch.Generator().manual_seed(3)) * 0.1 - 0.05
    calls = []

    def perturb(inputs, n_samples, generator):  # the noise of the examples handed over, by their identity
        rows = torch.tensor([int(torch.nonzero((x == r).flatten(1).all(1))[0]) for r in inputs])
        calls.append(rows)
        return inputs.unsqueeze(0) + noise[:, rows]

    sal = Saliency(model)
    attack = TopKAttack(model, sal, eps=0.03, n_iterations=2, k=20)
    report = attribution_robustness(
        model, sal, attack, (x, y), measures=("topk", "max_sensitivity", "relative_representation_stability"),
        pgd=None, stability_kwargs={"n_samples": n, "perturb_func": perturb, "layer": model.feature_layer},
    )
    xc, yc = x[correct], y[correct]
    direct = max_sensitivity(sal, xc, yc, n_samples=n, perturb_func=perturb)
    rrs = relative_representation_stability(sal, xc, yc, layer=model.feature_layer, n_samples=n,
                                            perturb_func=perturb, forward_func=model)
    got = torch.tensor(report.per_example["max_sensitivity"], dtype=torch.float64)
    got_rrs = torch.tensor(report.per_example["relative_representation_stability"], dtype=torch.float64)
    assert torch.isnan(got[~correct]).all()
    torch.testing.assert_close(got[correct], direct.values.double(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got_rrs[correct], rrs.values.double(), rtol=1e-5, atol=1e-7)
    assert report.summary["measures"]["max_sensitivity"]["n"] == int(correct.sum())  # all attacked, not only kept
    changed = report.per_example["relative_representation_stability_n_prediction_changed"]
    assert [c for c, ok in zip(changed, correct.tolist()) if ok] == rrs.n_prediction_changed.tolist()
    assert report.summary["stability"]["relative_representation_stability"]["n_prediction_changed"] == int(
        rrs.n_prediction_changed.sum())
    assert report.summary["stability"]["max_sensitivity"]["n_prediction_changed"] is None
    assert "Stability metrics (max_sensitivity, relative_representation_stability)" in report.to_markdown()
    assert report.measure("topk") is report.summary["measures"]["top20"]
    merged = RobustnessReport.merge([report, report])
    assert merged.summary["measures"]["max_sensitivity"]["n"] == 2 * int(correct.sum())


def test_stability_kwargs_are_checked(setup):
    model, cam, x, y, _ = setup
    attack = AAI(model, cam, n_iterations=1)
    found = attribution_robustness(model, cam, attack, (x[:6], y[:6]), measures=("relative_representation_stability",),
                                   pgd=None, stability_kwargs={"n_samples": 2})  # the layer is found (issue 15)
    assert len(found.per_example["relative_representation_stability"]) == 6
    with pytest.raises(ValueError, match="stability_kwargs sets layer"):
        attribution_robustness(model, cam, attack, (x, y), measures=("max_sensitivity",), pgd=None,
                               stability_kwargs={"layer": model.feature_layer})
    with pytest.raises(ValueError, match=r"stability_kwargs must not set \['generator'\]"):
        attribution_robustness(model, cam, attack, (x, y), measures=("max_sensitivity",), pgd=None,
                               stability_kwargs={"generator": None})
    with pytest.raises(KeyError, match="no measure 'spearman'"):
        attribution_robustness(model, cam, attack, (x[:4], y[:4]), measures=("kendall",), pgd=None).measure("spearman")


def test_nan_model_is_an_error_not_a_zero_accuracy(setup):
    """argmax of NaN logits is class 0: without the check every example with label != 0 would count
    as misclassified and the report would show a clean accuracy, silently."""
    model, cam, x, y, _ = setup
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    keep = y != 0
    with pytest.raises(ValueError, match="the model's outputs contain NaN or inf"):
        attribution_robustness(model, cam, AAI(model, cam, n_iterations=1), (x[keep], y[keep]), pgd=None)
