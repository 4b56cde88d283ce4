"""`captum-robust certify` on a tiny user model written into a temporary folder."""

import json
import math
import os

import numpy as np
import pytest
import torch

from captum_robust.attr.certify import certified_radius
from tests.cli._run import run_cli as _run

FACTORY = """
from torch import nn


def make():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 10, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
"""


@pytest.fixture(scope="module")
def cert_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cert")
    (folder / "cr_cert_net.py").write_text(FACTORY)
    namespace = {}
    exec(FACTORY, namespace)
    torch.manual_seed(1)
    model = namespace["make"]().eval()
    torch.save(model.state_dict(), folder / "w.pt")
    before = os.getcwd()
    os.chdir(folder)
    try:
        code, stdout, stderr = _run(["certify", "--model", "cr_cert_net:make", "--weights", "w.pt", "--image-size", "8",
                                     "--examples", "10", "--batch-size", "4", "--n-samples", "200", "--k", "0.25",
                                     "--rho", "0.02", "--no-progress", "--out", "out"])
    finally:
        os.chdir(before)
    return {"code": code, "stdout": stdout, "stderr": stderr, "dir": folder, "model": model}


def test_certify_writes_files(cert_run):
    assert cert_run["code"] == 0, cert_run["stderr"]
    out = cert_run["dir"] / "out"
    for name in ("results.json", "report.md", "figure_radius_cdf.png"):
        assert (out / name).stat().st_size > 0 and f"wrote out/{name}" in cert_run["stdout"]
    assert "(figure_radius_cdf.png)" in (out / "report.md").read_text()
    assert "| median |" in cert_run["stdout"]


def test_certificates_recompute_with_certified_topk(cert_run):
    """Batch 1 (examples 4..7) recomputed with CertifiedTopK and the batch's seed; the radius is the
    boundary where topk_certificate drops below ceil(0.5 K); the summary follows from the columns."""
    from captum_robust._utils.distributed import batch_seed
    from captum_robust.attr import CertifiedTopK, SparsifiedSmoothGrad
    from captum_robust.attr.certify import topk_certificate
    from captum_robust.data import load_digits

    res = json.loads((cert_run["dir"] / "out" / "results.json").read_text())
    cols, s, settings = res["per_example"], res["summary"], res["settings"]
    assert settings["k"] == 16 and settings["min_overlap_count"] == 8 and cols["index"] == list(range(10))
    model = cert_run["model"]
    x, y = load_digits(size=8).test.tensors
    xb = x[4:8]
    with torch.no_grad():
        pred = model(xb).argmax(1)
    assert cols["prediction"][4:8] == pred.tolist() and cols["label"] == y[:10].tolist()
    ssg = SparsifiedSmoothGrad(model, sparsity=0.1, sigma=0.2, n_samples=200)
    maps, cert = CertifiedTopK(ssg, k=16, rho=0.02).attribute(xb, target=pred, generator=torch.Generator().manual_seed(batch_seed(0, 1)))
    assert cols["overlap"][4:8] == cert.overlap.tolist()
    radii = settings["radii"]
    assert radii == [0.0, 0.01, 0.02, 0.04, 0.08]
    for i in range(4):
        r = cols["radius"][4 + i]
        assert cols["overlap_at_radii"][4 + i][2] == cols["overlap"][4 + i]  # radius rho
        if 0 < r < math.inf:
            inside = topk_certificate(maps[i:i + 1], 16, r * (1 - 1e-6), cert.sigma[i:i + 1], cert.margin)
            outside = topk_certificate(maps[i:i + 1], 16, r * (1 + 1e-6), cert.sigma[i:i + 1], cert.margin)
            assert int(inside) >= 8 > int(outside)
    assert any(r > 0 for r in cols["radius"])
    at = np.array(cols["overlap_at_radii"])
    for j, row in enumerate(s["at_radii"]):
        assert row["certified_fraction"] == pytest.approx(np.mean(at[:, j] >= 8))
        assert row["mean_overlap_fraction"] == pytest.approx(at[:, j].mean() / 16)
    assert s["quantiles"]["q50"]["radius"] == pytest.approx(np.quantile(cols["radius"], 0.5, method="lower"))
    assert s["quantiles"]["q100"]["radius"] == pytest.approx(max(cols["radius"]))
    assert (at[:, :-1] >= at[:, 1:]).all()  # certificates shrink as the radius grows


def test_certified_radius_closed_form_against_a_grid():
    """On random maps the closed form agrees with a fine grid of topk_certificate values."""
    from captum_robust.attr.certify import topk_certificate

    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 40, generator=g) ** 3
    sigma = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.5, 1.0], dtype=torch.float64)
    for k, m in ((5, 1), (5, 3), (10, 10), (25, 10)):
        r = certified_radius(maps, k, m, sigma, margin=0.01)
        grid = torch.linspace(0, 0.6, 241, dtype=torch.float64)
        for b in range(6):
            ok = [int(topk_certificate(maps[b:b + 1], k, float(rho), sigma[b:b + 1], 0.01)) >= m for rho in grid]
            if math.isinf(float(r[b])):
                assert 2 * k - m + 1 > 40 and all(ok)
            else:
                brute = max((float(rho) for rho, good in zip(grid, ok) if good), default=None)
                if brute is None:
                    assert float(r[b]) < 1e-3  # not certified even at 0 (up to the grid)
                elif brute >= 0.6:  # certified over the whole grid
                    assert float(r[b]) >= 0.6
                else:
                    assert brute <= float(r[b]) <= brute + 2.5e-3 + 1e-12


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "100"], "--k 100"),
        (["--k", "0"], "expected a count >= 1"),
        (["--confidence", "1"], "expected a number in (0, 1)"),
        (["--sparsity", "0"], "expected a number in (0, 1]"),
        (["--sigma", "0"], "expected a positive number"),
        (["--weights", "missing.pt"], "--weights 'missing.pt' does not exist"),
        (["--data", "npz:missing.npz"], "does not exist"),
    ],
)
def test_certify_errors_exit_two(cert_run, monkeypatch, extra, message):
    monkeypatch.chdir(cert_run["dir"])
    argv = ["certify", "--model", "cr_cert_net:make", "--weights", "w.pt", "--image-size", "8", "--examples", "2",
            "--n-samples", "16", "--no-progress", "--out", "never"]
    if extra[0] in ("--weights",):
        argv[argv.index(extra[0]) + 1] = extra[1]
    elif extra[0] == "--data":
        argv.remove("--image-size"), argv.remove("8")
        argv += extra
    else:
        argv += extra
    code, _, stderr = _run(argv)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in stderr
    assert not (cert_run["dir"] / "never").exists()


def test_certify_help_lists_options():
    code, stdout, _ = _run(["certify", "--help"])
    assert code == 0
    for option in ("--model", "--weights", "--data", "--k", "--sparsity", "--sigma", "--n-samples", "--confidence",
                   "--rho", "--min-overlap", "--examples", "--out", "--no-progress", "torchrun"):
        assert option in stdout, option
