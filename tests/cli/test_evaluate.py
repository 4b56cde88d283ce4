"""`captum-robust evaluate` on a tiny user model written into a temporary folder."""

import json
import math
import textwrap

import pytest
import torch

from tests.cli._run import run_cli as _run

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, 3, stride=2, padding=1)
            self.act = nn.ReLU()
            self.conv2 = nn.Conv2d(width, 16, 3, stride=2, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(self.conv2(self.act(self.conv1(x))).mean(dim=(2, 3)))


    def make(width=8):
        return Net(width)


    def mlp():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


    def not_a_module():
        return 3


    def broken():
        raise RuntimeError("factory exploded")
    """
)


def _train(model, size=8, epochs=12):
    from torch.utils.data import DataLoader

    from captum_robust.data import load_digits
    from captum_robust.training import train_classifier

    torch.manual_seed(0)
    for p in model.parameters():  # a fixed initialization
        torch.nn.init.normal_(p, std=0.3)
    data = load_digits(size=size)
    loader = DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    train_classifier(model, loader, epochs=epochs, lr=1e-2)
    return model.eval()


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A folder with the factory module ``cr_eval_net`` and trained weights; the module is imported
    by the CLI from the current directory."""
    import importlib.util

    folder = tmp_path_factory.mktemp("user")
    (folder / "cr_eval_net.py").write_text(FACTORY)
    spec = importlib.util.spec_from_file_location("cr_eval_net_local", folder / "cr_eval_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = _train(module.Net())
    torch.save(model.state_dict(), folder / "w.pt")
    torch.save(_train(module.mlp(), epochs=3).state_dict(), folder / "mlp.pt")
    return {"dir": folder, "module": module, "model": model}


@pytest.fixture
def in_user_dir(user, monkeypatch):
    monkeypatch.chdir(user["dir"])
    return user


BASE = ["--model", "cr_eval_net:make", "--weights", "w.pt", "--image-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def ig_run(user):
    import os

    before = os.getcwd()
    os.chdir(user["dir"])
    rng = torch.get_rng_state()
    try:
        argv = ["evaluate", *BASE, "--examples", "20", "--batch-size", "8", "--iterations", "5",
                "--pgd-iterations", "5", "--ig-steps", "8", "--out", "out_ig"]
        code, stdout, stderr = _run(argv)
    finally:
        os.chdir(before)
    return {"code": code, "stdout": stdout, "stderr": stderr, "out": user["dir"] / "out_ig",
            "rng_unchanged": torch.equal(rng, torch.get_rng_state())}


def test_evaluate_writes_results_report_and_figures(ig_run):
    assert ig_run["code"] == 0, ig_run["stderr"]
    out = ig_run["out"]
    for name in ("results.json", "report.md", "figure_maps.png", "figure_measures.png"):
        assert (out / name).stat().st_size > 0
        assert f"wrote {out.name}/{name}" in ig_run["stdout"]
    assert (out / "figure_maps.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| eps (linf) | measure |" in report and "(figure_maps.png)" in report
    assert "| 0.1 | top8 |" in ig_run["stdout"]  # the table is printed too (k = 64 / 8)
    assert ig_run["rng_unchanged"]


def _equal(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b


def test_evaluate_json_matches_a_direct_recomputation(ig_run, user):
    """Batch 1 (examples 8..15) recomputed with the library: the same attack and PGD with the
    generator seeded by batch_seed(seed, 1) give the JSON's measures and PGD predictions."""
    from captum_robust._utils.distributed import batch_seed
    from captum_robust.attr import BatchedIntegratedGradients
    from captum_robust.data import load_digits
    from captum_robust.robust.attacks import PGD, TopKAttack, ghorbani_maps, softplus_surrogate
    from captum_robust.robust.discrepancy import kendall_tau, topk_intersection

    results = json.loads((ig_run["out"] / "results.json").read_text())
    assert results["settings"]["k"] == 8 and results["settings"]["world_size"] == 1
    (run,) = results["runs"]
    cols, summary = run["per_example"], run["summary"]
    assert cols["index"] == list(range(20))

    model = user["model"]
    x, y = load_digits(size=8).test.tensors
    xb, yb = x[8:16], y[8:16]
    with torch.no_grad():
        correct = model(xb).argmax(1) == yb
    assert [bool(c) for c in correct] == cols["attacked"][8:16]
    kw = {"n_steps": 8, "method": "riemann_middle"}
    ig = BatchedIntegratedGradients(model)
    attack = TopKAttack(model, ig, k=8, eps=0.1, step_size=2.5 * 0.1 / 5, n_iterations=5, measure_k=8,
                        surrogate=softplus_surrogate(model, beta=10.0), attribution_kwargs=kw)
    gen = torch.Generator().manual_seed(batch_seed(0, 1))
    x_adv, _ = attack.perturb(xb[correct], target=yb[correct], generator=gen)
    x_pgd, _ = PGD(model, eps=0.1, step_size=2.5 * 0.1 / 5, n_iterations=5).perturb(xb, target=yb, generator=gen)
    before = ghorbani_maps(ig.attribute(xb[correct], target=yb[correct], **kw))
    after = ghorbani_maps(ig.attribute(x_adv, target=yb[correct], **kw))
    top, tau = topk_intersection(before, after, 8), kendall_tau(before, after)
    rows = [8 + int(i) for i in torch.nonzero(correct).flatten()]
    for j, row in enumerate(rows):
        assert abs(cols["top8"][row] - float(top[j])) < 1e-6
        assert abs(cols["kendall"][row] - float(tau[j])) < 1e-6
    with torch.no_grad():
        assert cols["pgd_prediction"][8:16] == model(x_pgd).argmax(1).tolist()
    # the summary over all 20 examples follows from the per-example columns
    kept = [i for i in range(20) if cols["attacked"][i] and cols["kept"][i]]
    assert summary["n_kept"] == len(kept) and summary["n_examples"] == 20
    assert abs(summary["measures"]["top8"]["mean"] - sum(cols["top8"][i] for i in kept) / len(kept)) < 1e-9
    pgd_acc = sum(p == l for p, l in zip(cols["pgd_prediction"], cols["label"])) / 20
    assert summary["adversarial_accuracy"] == pgd_acc <= summary["clean_accuracy"]
    assert summary["clean_accuracy"] == sum(cols["attacked"]) / 20 > 0.5
    assert min(cols["top8"][i] for i in kept) < 1.0  # the attack changed some maps


def test_merge_of_one_batch_equals_attribution_robustness(user):
    """The CLI's merge reproduces attribution_robustness's own summary when there is one batch,
    and the summary of two batches equals summarize() over the concatenated columns."""
    from captum_robust.attr import CAM
    from captum_robust.cli import _merge_robustness
    from captum_robust.data import load_digits
    from captum_robust.robust.attacks import AAI
    from captum_robust.robust.evaluation import attribution_robustness, summarize

    model = user["model"]
    x, y = load_digits(size=8).test.tensors
    cam = CAM(model, model.conv2, model.fc)
    attack = AAI(model, cam, eps=0.1, step_size=0.05, n_iterations=3, k=2)

    def report(lo, hi, seed):
        return attribution_robustness(model, cam, attack, (x[lo:hi], y[lo:hi]), k=2, pgd="auto",
                                      generator=torch.Generator().manual_seed(seed))

    whole = report(0, 12, 5)
    merged = _merge_robustness([(0, range(0, 12), whole)])
    for key, value in whole.summary.items():
        if key != "seconds":
            assert json.dumps(merged["summary"][key], sort_keys=True) == json.dumps(value, sort_keys=True), key
    a, b = report(0, 6, 1), report(6, 12, 2)
    merged = _merge_robustness([(1, range(6, 12), b), (0, range(0, 6), a)])
    cols = merged["per_example"]
    assert cols["index"] == list(range(12))
    assert cols["kendall"][:6] == a.per_example["kendall"] and cols["kendall"][6:] == b.per_example["kendall"]
    kept = [i for i in range(12) if cols["attacked"][i] and cols["kept"][i]]
    expected = summarize([cols["kendall"][i] for i in kept])
    assert merged["summary"]["measures"]["kendall"] == expected
    assert merged["summary"]["n_attacked"] == a.summary["n_attacked"] + b.summary["n_attacked"]


def test_cam_found_automatically_with_aai(in_user_dir):
    """No feature_layer/classifier attributes: the last convolution and the last linear layer are used,
    and the Kendall tau in the JSON recomputes from CAM + AAI."""
    from captum_robust._utils.distributed import batch_seed
    from captum_robust.attr import CAM
    from captum_robust.data import load_digits
    from captum_robust.robust.attacks import AAI
    from captum_robust.robust.discrepancy import kendall_tau

    code, stdout, stderr = _run(["evaluate", *BASE, "--attribution", "cam", "--attack", "aai", "--examples", "6",
                                 "--batch-size", "6", "--iterations", "4", "--pgd-iterations", "0",
                                 "--eps", "0.1", "0.2", "--out", "out_cam"])
    assert code == 0, stderr
    assert "CAM (layer conv2, classifier fc)" in stdout
    results = json.loads((in_user_dir["dir"] / "out_cam" / "results.json").read_text())
    assert [r["eps"] for r in results["runs"]] == [0.1, 0.2]
    model = in_user_dir["model"]
    x, y = load_digits(size=8).test.tensors
    x, y = x[:6], y[:6]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    cam = CAM(model, model.conv2, model.fc)
    k = results["settings"]["k"]
    assert k == 4  # min(8, 2x2 CAM cells)
    for run in results["runs"]:
        eps = run["eps"]
        attack = AAI(model, cam, eps=eps, step_size=2.5 * eps / 4, n_iterations=4, k=k)
        x_adv, _ = attack.perturb(x[correct], target=y[correct], generator=torch.Generator().manual_seed(batch_seed(0, 0)))
        tau = kendall_tau(cam.attribute(x[correct], target=y[correct]), cam.attribute(x_adv, target=y[correct]))
        got = [run["per_example"]["kendall"][i] for i in torch.nonzero(correct).flatten().tolist()]
        assert all(_equal(g, float(t)) for g, t in zip(got, tau))
        assert run["summary"]["adversarial_accuracy"] is None  # --pgd-iterations 0


@pytest.mark.parametrize("attribution, attack", [("saliency", "mass-center"), ("sparsified-smoothgrad", "l2-topk")])
def test_other_attributions_and_attacks_run(in_user_dir, attribution, attack):
    code, stdout, stderr = _run(["evaluate", *BASE, "--attribution", attribution, "--attack", attack,
                                 "--examples", "4", "--iterations", "2", "--pgd-iterations", "2",
                                 "--n-samples", "8", "--measures", "kendall", "l2", "--out", f"out_{attack}"])
    assert code == 0, stderr
    run = json.loads((in_user_dir["dir"] / f"out_{attack}" / "results.json").read_text())["runs"][0]
    assert set(run["summary"]["measures"]) == {"kendall", "l2"}
    assert run["summary"]["settings"]["attack"] == {"mass-center": "MassCenterAttack", "l2-topk": "L2TopKAttack"}[attack]
    norms = [v for v, a in zip(run["per_example"]["norm"], run["per_example"]["attacked"]) if a]
    assert max(norms) <= (1.0 if attack == "l2-topk" else 0.1) + 1e-5


@pytest.fixture
def bad_files(in_user_dir):
    import argparse

    d = in_user_dir["dir"]
    torch.save({"foo.weight": torch.zeros(2)}, d / "wrong_keys.pt")
    small = in_user_dir["module"].Net(width=4)
    torch.save(small.state_dict(), d / "wrong_shapes.pt")
    torch.save(torch.zeros(3), d / "tensor.pt")
    torch.save({"args": argparse.Namespace(a=1)}, d / "pickled.pt")
    (d / "garbage.pt").write_bytes(b"not a torch file")
    (d / "adir").mkdir(exist_ok=True)
    return d


ERRORS = [
    (["--model", "cr_eval_net"], "--model 'cr_eval_net' must have the form MODULE:FACTORY"),
    (["--model", "no_such_module_xyz:make"], "cannot import module 'no_such_module_xyz'"),
    (["--model", "cr_eval_net:Missing"], "has no attribute 'Missing'"),
    (["--model", "cr_eval_net:not_a_module"], "returned a int, not a torch.nn.Module"),
    (["--model", "cr_eval_net:broken"], "RuntimeError: factory exploded"),
    (["--model-kwargs", "{width: 3}"], "--model-kwargs is not valid JSON"),
    (["--model-kwargs", "[1]"], "must be a JSON object"),
    (["--model-kwargs", '{"depth": 3}'], "unexpected keyword argument 'depth'"),
    (["--weights", "nope.pt"], "--weights 'nope.pt' does not exist"),
    (["--weights", "adir"], "is a directory"),
    (["--weights", "wrong_keys.pt"], "missing keys: conv1.weight"),
    (["--weights", "wrong_shapes.pt"], "wrong shapes (file vs model): conv1.weight (4, 1, 3, 3) vs (8, 1, 3, 3)"),
    (["--weights", "tensor.pt"], "is not a state_dict"),
    (["--weights", "pickled.pt"], "pickled Python objects that torch.load(weights_only=True) refuses"),
    (["--weights", "garbage.pt"], "cannot be read by torch.load"),
    (["--data", "imagenet"], "unknown data set 'imagenet'"),
    (["--data", "mnist"], "mnist needs a location, e.g. --data mnist:DIR"),
    (["--data", "mnist:missing_dir"], "does not exist"),
    (["--data", "cifar10:adir"], "CIFAR-10: expected data_batch_1.bin"),
    (["--data", "npz:missing.npz"], "npz file"),
    (["--data", "digits:x"], "takes no path"),
    (["--data", "mnist:adir", "--image-size", "28"], "--image-size applies to --data digits and folder:DIR only, not to mnist"),
    (["--examples", "361"], "--examples 361 is larger than the test set (360 images)"),
    (["--attribution", "cam", "--k", "5"], "--k 5 cannot work with --attribution cam and --attack topk: the attacked map has only 4 elements"),
    (["--attribution", "cam", "--layer", "conv9"], "--layer 'conv9' is not a submodule"),
    (["--attribution", "cam", "--classifier", "act"], "--classifier 'act' is a ReLU, not the nn.Linear"),
    (["--attribution", "cam", "--layer", "conv1"], "pass --layer NAME --classifier NAME"),
    (["--model", "cr_eval_net:mlp", "--weights", "mlp.pt", "--attribution", "cam"], "no submodule returns a 4-D feature map"),
]


@pytest.mark.parametrize("extra, message", ERRORS)
def test_errors_exit_two_with_one_line(bad_files, extra, message):
    argv = ["evaluate", "--model", "cr_eval_net:make", "--weights", "w.pt", "--image-size", "8", "--no-progress",
            "--examples", "2", "--iterations", "1", "--pgd-iterations", "0", "--out", "never"]
    for i in range(0, len(extra), 2):  # later options override earlier ones
        if extra[i] == "--image-size" or extra[i] not in argv:
            argv += extra[i:i + 2]
        else:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
    if "mnist:" in " ".join(extra) or "cifar10:" in " ".join(extra) or "npz:" in " ".join(extra) or extra[:1] == ["--data"]:
        argv.remove("--image-size"), argv.remove("8")
        if "--image-size" in extra:
            argv += ["--image-size", "28"]
    code, stdout, stderr = _run(argv)
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("captum-robust evaluate: error: "), stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not (bad_files / "never").exists()  # nothing is written before the inputs are checked


def test_model_that_needs_other_images_names_image_size(in_user_dir):
    code, _, stderr = _run(["evaluate", "--model", "cr_eval_net:mlp", "--weights", "mlp.pt", "--no-progress",
                            "--out", "never"])
    assert code == 2 and "input of shape (1, 1, 28, 28)" in stderr and "--image-size 8" in stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_exits_two(in_user_dir):
    code, _, stderr = _run(["evaluate", *BASE, "--device", "cuda", "--out", "never"])
    assert code == 2 and "CUDA is not available" in stderr


@pytest.mark.parametrize(
    "extra",
    [["--eps", "0"], ["--eps", "-1"], ["--attack", "isa"], ["--attribution", "lime"], ["--examples", "0"],
     ["--measures", "jaccard"], ["--k", "0"], ["--seed", "-3"]],
)
def test_bad_values_exit_two(in_user_dir, extra):
    code, _, stderr = _run(["evaluate", *BASE, *extra, "--out", "never"])
    assert code == 2 and "error" in stderr
    assert not (in_user_dir["dir"] / "never").exists()


def test_missing_required_options_and_help():
    code, _, stderr = _run(["evaluate"])
    assert code == 2 and "--model" in stderr and "--weights" in stderr
    code, stdout, _ = _run(["evaluate", "--help"])
    assert code == 0
    for option in ("--model", "--weights", "--model-kwargs", "--data", "--image-size", "--attribution", "--attack",
                   "--eps", "--examples", "--out", "--seed", "--no-progress", "--device", "--layer", "--classifier",
                   "--k", "--batch-size", "npz:FILE", "torchrun"):
        assert option in stdout, option


def test_evaluate_reports_stability_metrics(in_user_dir):
    """--measures with stability metrics: rows next to the attack measures, one value per correctly
    classified example, counts in results.json and a note in the report (the values' equality with the
    library's metric is checked in tests/robust/evaluation/test_robustness.py)."""
    argv = ["evaluate", *BASE, "--examples", "8", "--batch-size", "8", "--iterations", "2", "--pgd-iterations", "0",
            "--attribution", "saliency", "--measures", "topk", "relative_representation_stability",
            "--stability-samples", "6", "--representation-layer", "conv2", "--out", "out_stab"]
    code, stdout, stderr = _run(argv)
    assert code == 0, stderr
    assert "| 0.1 | relative_representation_stability |" in stdout
    results = json.loads((in_user_dir["dir"] / "out_stab" / "results.json").read_text())
    summary = results["runs"][0]["summary"]
    assert summary["stability"]["relative_representation_stability"]["n_prediction_changed"] >= 0
    report = (in_user_dir["dir"] / "out_stab" / "report.md").read_text()
    assert "how much the clean map moves under 6 random perturbations" in report
    col = results["runs"][0]["per_example"]["relative_representation_stability"]
    attacked = results["runs"][0]["per_example"]["attacked"]
    assert any(attacked) and all((not math.isnan(v)) == a for v, a in zip(col, attacked))
    assert summary["measures"]["relative_representation_stability"]["n"] == sum(attacked)


def test_evaluate_stability_options_are_checked(in_user_dir):
    code, _, stderr = _run(["evaluate", *BASE, "--examples", "4", "--measures", "relative_representation_stability",
                            "--representation-layer", "nope", "--out", "out_bad"])
    assert code == 2 and "--representation-layer 'nope' is not a submodule" in stderr
    code, _, stderr = _run(["evaluate", *BASE, "--examples", "4", "--measures", "max_sensitivity",
                            "relative_input_stability", "--stability-radius", "0.1", "--out", "out_bad2"])
    assert code == 2 and "--stability-radius applies to one family" in stderr
