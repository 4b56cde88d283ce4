import importlib.metadata
import re

import pytest
import torch

from captum_robust.cli import main
from captum_robust.data import load_digits
from captum_robust.models import Small
from tests.cli._run import run_cli as _run


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    code, stdout, stderr = _run(["demo", "--quick", "--out", str(out_dir), "--no-progress"])
    rng_after = torch.get_rng_state()
    return {
        "code": code,
        "out": out_dir,
        "stdout": stdout,
        "stderr": stderr,
        "rng_unchanged": torch.equal(rng_before, rng_after),
        "threads_unchanged": torch.get_num_threads() == threads_before,
    }


def test_demo_quick_succeeds_and_writes_files(quick_demo):
    assert quick_demo["code"] == 0, quick_demo["stderr"]
    out = quick_demo["out"]
    for name in ("report.md", "figure_attributions.png", "figure_attacks.png", "attacked_inputs.pt", "model.pt", "model_int.pt"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "figure_attributions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / "report.md") in quick_demo["stdout"]
    report = (out / "report.md").read_text()
    assert "![" in report and "(figure_attributions.png)" in report  # relative link
    # main() runs inside fork_rng: the caller's global RNG is left as it was
    assert quick_demo["rng_unchanged"]
    assert quick_demo["threads_unchanged"]  # --threads is restored afterwards


def test_report_accuracy_matches_reloaded_model(quick_demo):
    report = (quick_demo["out"] / "report.md").read_text()
    m = re.search(r"Test accuracy: ([0-9.]+) \((\d+)/(\d+)\)", report)
    assert m, report
    accuracy, correct, total = float(m.group(1)), int(m.group(2)), int(m.group(3))

    model = Small()
    model.load_state_dict(torch.load(quick_demo["out"] / "model.pt", weights_only=True))
    model.eval()
    x, y = load_digits(size=28, seed=0).test.tensors
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    assert total == len(y) == 360
    assert correct == int((pred == y).sum())
    assert abs(accuracy - correct / total) < 5e-5
    assert accuracy > 0.5  # --quick trains to clearly above chance (0.1)
    assert f"{accuracy:.4f}" in quick_demo["stdout"]

    # the per-example table lists the first K test images with their labels and the model's predictions
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+)( \(wrong\))? \| \((\d), (\d)\) \| \((\d), (\d)\) \|$", report, re.M)
    assert len(rows) == 8
    for i, (idx, label, p, wrong, *_cells) in enumerate(rows):
        assert int(idx) == i
        assert int(label) == int(y[i])
        assert int(p) == int(pred[i])
        assert bool(wrong) == (int(y[i]) != int(pred[i]))


def test_report_cam_completeness_and_top_cell(quick_demo):
    report = (quick_demo["out"] / "report.md").read_text()
    m = re.search(r"\|sum of CAM \+ bias - logit\|: \*\*([0-9.e+-]+)\*\*", report)
    assert m, report
    assert float(m.group(1)) < 1e-4
    # the top CAM cell of example 0 (true class) agrees with CAM recomputed from the saved model
    from captum_robust.attr import CAM

    model = Small()
    model.load_state_dict(torch.load(quick_demo["out"] / "model.pt", weights_only=True))
    x, y = load_digits(size=28, seed=0).test.tensors
    cam = CAM(model.eval(), model.feature_layer, model.classifier).attribute(x[:1], target=y[:1])
    r, c = divmod(int(cam.flatten().argmax()), cam.shape[-1])
    row0 = re.search(r"^\| 0 \| \d+ \| \d+( \(wrong\))? \| \((\d), (\d)\) \|", report, re.M)
    assert (int(row0.group(2)), int(row0.group(3))) == (r, c)


def test_report_attacks_keep_predictions_and_measures_recompute(quick_demo):
    from captum_robust.attr import CAM, BatchedIntegratedGradients
    from captum_robust.cli import ATTACK_CAM_EPS, ATTACK_IG_EPS, ATTACK_IG_K, ATTACK_IG_STEPS
    from captum_robust.robust.attacks import ghorbani_maps
    from captum_robust.robust.discrepancy import kendall_tau, topk_intersection

    out = quick_demo["out"]
    assert (out / "figure_attacks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([0-9.]+) \| ([0-9.-]+) \| ([0-9.]+) \| ([0-9.-]+) \| ([0-9.]+) \| ([0-9.]+) \|$",
                      report, re.M)
    assert len(rows) == 8
    model = Small()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    model.eval()
    x = load_digits(size=28, seed=0).test.tensors[0][:8]
    attacked = torch.load(out / "attacked_inputs.pt", weights_only=True)
    x_ig, x_cam = attacked["topk_ig"], attacked["aai_cam"]
    with torch.no_grad():
        pred = model(x).argmax(1)
        assert torch.equal(model(x_ig).argmax(1), pred) and torch.equal(model(x_cam).argmax(1), pred)
    assert float((x_ig - x).abs().max()) <= ATTACK_IG_EPS + 1e-6 and float((x_cam - x).abs().max()) <= ATTACK_CAM_EPS + 1e-6
    assert float(x_ig.min()) >= 0 and float(x_cam.max()) <= 1
    ig = BatchedIntegratedGradients(model)
    kw = {"target": pred, "n_steps": ATTACK_IG_STEPS, "method": "riemann_middle"}
    ig_top = topk_intersection(ghorbani_maps(ig.attribute(x, **kw)), ghorbani_maps(ig.attribute(x_ig, **kw)), ATTACK_IG_K)
    cam = CAM(model, model.feature_layer, model.classifier)
    cam_tau = kendall_tau(cam.attribute(x, target=pred), cam.attribute(x_cam, target=pred))
    for i, row in enumerate(rows):
        assert int(row[0]) == i and int(row[1]) == int(pred[i])
        assert abs(float(row[2]) - float(ig_top[i])) < 1e-3
        assert abs(float(row[5]) - float(cam_tau[i])) < 1e-3
    # the attacks change the maps: the CAM's ranking drops far below 1 on average
    assert float(cam_tau.mean()) < 0.8 and float(ig_top.mean()) < 1.0


def test_demo_is_deterministic_for_a_seed(tmp_path):
    args = ["demo", "--epochs", "1", "--examples", "1", "--seed", "3", "--no-progress", "--quick"]
    assert _run(args + ["--out", str(tmp_path / "a")])[0] == 0
    assert _run(args + ["--out", str(tmp_path / "b")])[0] == 0
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["--version"]])
def test_help_exits_zero(argv):
    code, stdout, _ = _run(argv)
    assert code == 0
    if "--help" in argv:
        assert "usage: captum-robust" in stdout
    if argv == ["--help"]:
        assert "demo" in stdout
    if argv == ["demo", "--help"]:
        for option in ("--out", "--epochs", "--seconds", "--seed", "--examples", "--no-progress", "--quick"):
            assert option in stdout


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["demo", "--epochs", "zero"],
        ["demo", "--epochs", "0"],
        ["demo", "--seconds", "-1"],
        ["demo", "--examples", "0"],
        ["demo", "--seed", "-1"],
        ["demo", "--unknown-option"],
    ],
)
def test_bad_arguments_exit_two(argv, tmp_path):
    code, stdout, stderr = _run(argv + ["--out", str(tmp_path / "never")] if argv[:1] == ["demo"] else argv)
    assert code == 2
    assert "error" in stderr
    assert not (tmp_path / "never").exists()


def test_out_is_an_existing_file_exits_two(tmp_path):
    blocker = tmp_path / "report.txt"
    blocker.write_text("keep me")
    code, stdout, stderr = _run(["demo", "--quick", "--no-progress", "--out", str(blocker)])
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "not a directory" in lines[0]
    assert "Traceback" not in stderr
    assert blocker.read_text() == "keep me"


def test_out_below_a_file_exits_two(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, stderr = _run(["demo", "--quick", "--no-progress", "--out", str(blocker / "sub")])
    assert code == 2
    assert "--out" in stderr and "Traceback" not in stderr


def test_too_many_examples_exits_two(tmp_path):
    code, _, stderr = _run(["demo", "--quick", "--no-progress", "--examples", "361", "--out", str(tmp_path)])
    assert code == 2
    assert "--examples 361" in stderr and "360" in stderr
    assert not (tmp_path / "model.pt").exists()


def test_console_script_is_declared():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    matches = [ep for ep in scripts if ep.name == "captum-robust"]
    assert len(matches) == 1
    assert matches[0].value == "captum_robust.cli:main"
    assert matches[0].load() is main


def test_report_certified_sparsified_smoothgrad_section(quick_demo):
    from captum_robust import cli
    from captum_robust.attr import CertifiedTopK, SparsifiedSmoothGrad
    from captum_robust.attr.certify import hoeffding_margin

    report = (quick_demo["out"] / "report.md").read_text()
    assert "## Certified Sparsified SmoothGrad" in report
    assert "certified Sparsified SmoothGrad maps" in report  # the figure's caption names the new column
    k = 157  # K = ceil(0.2 * 784)
    assert f"K = {k} (20% of the 784 pixels)" in report
    assert f"rho = {cli.CERT_RHO}" in report and "for\n**every** perturbation" in report
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| ([0-9.]+) \|$", report, re.M)
    assert len(rows) == 8
    margin = float(re.search(r"Hoeffding margin of\n([0-9.]+)", report).group(1))
    assert abs(margin - hoeffding_margin(784, cli.SMOOTHGRAD_QUICK_SAMPLES, cli.CERT_CONFIDENCE)) < 5e-4

    # recompute the maps and certificates from the saved model: same seed, same numbers
    model = Small()
    model.load_state_dict(torch.load(quick_demo["out"] / "model.pt", weights_only=True))
    model.eval()
    x = load_digits(size=28, seed=0).test.tensors[0][:8]
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    ssg = SparsifiedSmoothGrad(model, cli.SMOOTHGRAD_SPARSITY, cli.SMOOTHGRAD_SIGMA, cli.SMOOTHGRAD_QUICK_SAMPLES)
    threads = torch.get_num_threads()
    torch.set_num_threads(cli.DEFAULT_THREADS)
    try:
        _, cert = CertifiedTopK(ssg, cli.CERT_K_FRACTION, cli.CERT_RHO, cli.CERT_CONFIDENCE).attribute(
            x, target=pred, generator=torch.Generator().manual_seed(0)
        )
    finally:
        torch.set_num_threads(threads)
    for i, (idx, p, overlap, fraction) in enumerate(rows):
        assert int(idx) == i and int(p) == int(pred[i])
        assert 0 <= int(overlap) <= k
        assert abs(float(fraction) - int(overlap) / k) < 5e-4
        assert int(overlap) == int(cert.overlap[i])
    assert max(int(r[2]) for r in rows) > 0  # the demo's certificates are not all vacuous
    median = float(re.search(r"Median certified fraction R / K: \*\*([0-9.]+)\*\*", report).group(1))
    assert abs(median - float(cert.fraction.median())) < 5e-4


def test_report_robust_training_section(quick_demo):
    """The Int model's row recomputes: its accuracy from the saved weights, and a PGD accuracy and
    AAI Kendall that come from the same attacks on the same images."""
    from captum_robust import cli
    from captum_robust.attr import CAM
    from captum_robust.robust.attacks import AAI, PGD
    from captum_robust.robust.discrepancy import kendall_tau

    out = quick_demo["out"]
    report = (out / "report.md").read_text()
    assert "## Robust training (Int)" in report and "EpsilonSchedule" in report
    rows = {
        m[0]: m[1:]
        for m in re.findall(
            r"^\| (normal|Int) \| ([0-9.]+) \| ([0-9.]+) \(of (\d+)\) \| ([0-9.-]+|nan) \(prediction kept on (\d+)\) \|$",
            report, re.M,
        )
    }
    assert set(rows) == {"normal", "Int"}, report
    data = load_digits(size=28, seed=0)
    xt, yt = data.test.tensors
    model = Small()
    model.load_state_dict(torch.load(out / "model_int.pt", weights_only=True))
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    accuracy, pgd_acc, n, tau, kept = rows["Int"]
    assert abs(float(accuracy) - acc) < 1e-4
    x, y = xt[: cli.ROBUST_EVAL_IMAGES], yt[: cli.ROBUST_EVAL_IMAGES]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert int(n) == int(correct.sum())
    xc, yc = x[correct], y[correct]
    _, res = PGD(model, eps=cli.INT_EPS, step_size=cli.ATTACK_STEP, n_iterations=cli.PGD_EVAL_ITERATIONS).perturb(
        xc, target=yc, generator=torch.Generator().manual_seed(0)
    )
    assert abs(float(pgd_acc) - float(1 - res.success.float().mean())) < 1e-3
    cam = CAM(model, model.feature_layer, model.classifier)
    aai = AAI(model, cam, eps=cli.INT_EPS, step_size=cli.ATTACK_STEP, n_iterations=cli.ATTACK_CAM_QUICK_ITERATIONS,
              k=cli.ATTACK_CAM_K)
    x_adv, result = aai.perturb(xc, target=yc, generator=torch.Generator().manual_seed(0))
    keep = result.predictions == yc
    taus = kendall_tau(cam.attribute(xc, target=yc, raw=True), cam.attribute(x_adv, target=yc, raw=True))[keep]
    assert int(kept) == int(keep.sum())
    assert abs(float(tau) - float(taus[torch.isfinite(taus)].mean())) < 1e-3
    # the Int model is a different model from the normal one
    normal = torch.load(out / "model.pt", weights_only=True)
    assert any(not torch.equal(normal[k], v) for k, v in model.state_dict().items())
