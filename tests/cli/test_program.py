"""The command as a program (issue 18): one-line errors with exit 2 for bad input, Ctrl-C (exit 130,
nothing left behind), atomic outputs, --overwrite, the torchrun join timeout, NaN weights."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from captum_robust.cli._runtime import OutputFolder, UsageError, deferred_interrupt
from tests.cli._run import run_cli as _run

FACTORY = """
from torch import nn


def make():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 10, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
"""
REPO = Path(__file__).resolve().parents[2]
CERTIFY = ["certify", "--model", "prog_net:make", "--weights", "w.pt", "--image-size", "8", "--examples", "4",
           "--batch-size", "2", "--n-samples", "50", "--k", "0.25", "--no-progress"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder with the factory module and its weights, as the current directory."""
    (tmp_path / "prog_net.py").write_text(FACTORY)
    namespace = {}
    exec(FACTORY, namespace)
    torch.manual_seed(0)
    model = namespace["make"]()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _one_error_line(stderr, *phrases):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def _leftovers(parent):
    """Staging folders an interrupted run would have left."""
    return sorted(p.name for p in Path(parent).rglob("*.partial"))


# --------------------------------------------------------------------------- bad weights and data


def test_nan_weights_exit_two_naming_the_file(folder):
    state = torch.load("w.pt", weights_only=True)
    state["0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, "nan.pt")
    for command in (["certify"], ["evaluate", "--attribution", "saliency"]):
        argv = [*command, "--model", "prog_net:make", "--weights", "nan.pt", "--image-size", "8", "--examples", "4",
                "--no-progress", "--out", "never"]
        code, stdout, stderr = _run(argv)
        assert code == 2, (command, stderr)
        _one_error_line(stderr, "--weights 'nan.pt'", "NaN", "0.weight")
        assert "accuracy" not in stdout and not Path("never").exists()


def test_overflowing_logits_exit_two(folder):
    # finite weights whose logits overflow: argmax of inf/NaN rows would report class 0
    state = torch.load("w.pt", weights_only=True)
    state["2.weight"].fill_(3e38)
    torch.save(state, "huge.pt")
    code, _, stderr = _run([*CERTIFY[:4], "huge.pt", *CERTIFY[5:], "--out", "never"])
    assert code == 2
    _one_error_line(stderr, "--weights 'huge.pt'", "outputs on examples 0..1 contain NaN or inf")
    assert not Path("never").exists() and _leftovers(folder) == []


NAN_GRADIENT_FACTORY = FACTORY + """

class NanGradient(nn.Module):
    # finite outputs, NaN input gradients: d sqrt(u) / du is inf at u = 0, times d(x - x)/dx = 0
    def __init__(self):
        super().__init__()
        self.net = make()

    def forward(self, x):
        return self.net(x) + 0 * (x - x).sqrt().sum(dim=(1, 2, 3))[:, None]
"""


def test_library_errors_during_the_run_are_one_line(folder):
    (folder / "nan_net.py").write_text(NAN_GRADIENT_FACTORY)
    torch.save({f"net.{k}": v for k, v in torch.load("w.pt", weights_only=True).items()}, "wn.pt")
    code, _, stderr = _run(["certify", "--model", "nan_net:NanGradient", "--weights", "wn.pt", *CERTIFY[5:],
                            "--out", "out"])
    assert code == 2
    _one_error_line(stderr, "certifying examples 0..1 failed:", "NaN")
    assert not (folder / "out").exists() and _leftovers(folder) == []


def test_model_of_another_dtype_exits_two(folder):
    (folder / "double_net.py").write_text(FACTORY + "\n\ndef make64():\n    return make().double()\n")
    code, _, stderr = _run(["certify", "--model", "double_net:make64", *CERTIFY[3:], "--out", "out"])
    assert code == 2
    _one_error_line(stderr, "--model 'double_net:make64' has torch.float64 parameters",
                    "images of --data are torch.float32", "model.float()")


def test_uint64_labels_above_int64_exit_two(folder):
    x = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8), dtype=np.uint8)
    np.savez("u64.npz", x=x, y=np.array([1, 2**64 - 1, 3, 4], dtype=np.uint64))
    code, _, stderr = _run([*CERTIFY[:5], "--data", "npz:u64.npz", *CERTIFY[7:], "--target", "label", "--out", "o"])
    assert code == 2
    _one_error_line(stderr, "--data 'npz:u64.npz'", "fit int64", "18446744073709551615")


# --------------------------------------------------------------------------- certificates that say nothing


def test_vacuous_certificate_finishes_and_the_report_says_so(folder):
    # rho / sigma = 10: no n_samples certifies anything; a result with a warning, not a traceback (issue 18)
    code, stdout, stderr = _run([*CERTIFY, "--rho", "1", "--sigma", "0.1", "--out", "out"])
    assert code == 0, stderr
    assert stderr.strip() and all(line.startswith("warning: ") for line in stderr.strip().splitlines())
    assert "vacuous" in stderr and "Traceback" not in stderr
    results = json.loads((folder / "out" / "results.json").read_text())
    assert results["summary"]["vacuous"] is True
    assert results["per_example"]["overlap"] == [0] * 4 and results["per_example"]["radius"] == [0.0] * 4
    report = (folder / "out" / "report.md").read_text()
    assert "**The certificates are vacuous**" in report and "Warning: n_samples=50 makes every top-k" in report
    assert "examples have fewer than 8 of the top-16 certified at rho 1" in stdout


def test_zero_radii_are_explained_with_what_would_help(folder):
    code, stdout, stderr = _run([*CERTIFY, "--rho", "0.05", "--out", "out"])
    assert code == 0, stderr
    results = json.loads((folder / "out" / "results.json").read_text())
    summary, radius = results["summary"], results["per_example"]["radius"]
    assert summary["vacuous"] is False and radius == [0.0] * 4  # small margin room, not vacuous settings
    diagnosis = summary["diagnosis"]
    # two computations agree: the diagnosis' certified count and the certified radii reaching rho
    assert diagnosis["certified"] == sum(r >= 0.05 for r in radius) == 0 and diagnosis["min_overlap"] == 8
    report = (folder / "out" / "report.md").read_text()
    assert "**Every certified radius is 0**" in report and diagnosis["explanation"] in report
    needed, sigma = diagnosis["median_n_samples_needed"], diagnosis["median_sigma_needed"]
    assert needed == "inf" or f"n_samples >= {int(needed)}" in diagnosis["explanation"]
    assert sigma == "inf" or f"sigma >= {sigma:.4g}" in diagnosis["explanation"]
    assert "What certifies the median example" in diagnosis["explanation"] or "No n_samples or sigma" in report
    assert "examples have fewer than 8 of the top-16 certified at rho 0.05" in stdout


# --------------------------------------------------------------------------- --out and --overwrite


def test_existing_results_are_refused_without_overwrite(folder):
    assert _run([*CERTIFY, "--out", "out", "--rho", "0.01"])[0] == 0
    (folder / "out" / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in (folder / "out").iterdir()}
    code, _, stderr = _run([*CERTIFY, "--out", "out", "--rho", "0.02"])
    assert code == 2
    _one_error_line(stderr, "--out 'out' already holds results.json, report.md, figure_radius_cdf.png",
                    "--overwrite")
    assert {p.name: p.read_bytes() for p in (folder / "out").iterdir()} == before  # untouched
    code, stdout, stderr = _run([*CERTIFY, "--out", "out", "--rho", "0.02", "--overwrite"])
    assert code == 0, stderr
    assert json.loads((folder / "out" / "results.json").read_text())["settings"]["rho"] == 0.02
    assert (folder / "out" / "notes.txt").read_text() == "mine"  # other files are kept
    assert sorted(p.name for p in (folder / "out").iterdir()) == sorted(before)  # no staging folder left
    assert "wrote out/results.json" in stdout and ".partial" not in stdout


@pytest.mark.parametrize("command, existing", [
    (["demo", "--quick", "--no-progress"], "model.pt"),
    (["evaluate", "--model", "m:f", "--weights", "w.pt", "--no-progress"], "figure_maps.png"),
])
def test_demo_and_evaluate_refuse_earlier_results_before_any_work(tmp_path, command, existing):
    (tmp_path / existing).write_bytes(b"earlier run")
    t0 = time.perf_counter()
    code, _, stderr = _run([*command, "--out", str(tmp_path)])
    assert code == 2 and time.perf_counter() - t0 < 10  # before the model is imported or trained
    _one_error_line(stderr, f"already holds {existing}", "--overwrite")
    assert (tmp_path / existing).read_bytes() == b"earlier run"


def test_output_folder_commit_and_discard(tmp_path):
    # a new folder (and its missing parents) appears only at commit; discard removes what the run created
    target = tmp_path / "a" / "b" / "out"
    out = OutputFolder(str(target), ("results.json", "report.md"))
    stage = out.open()
    (stage / "results.json").write_text("{}")
    assert not target.exists() and stage.parent == target.parent
    out.discard()
    assert not (tmp_path / "a").exists()
    out = OutputFolder(str(target), ("results.json", "report.md"))
    (out.open() / "results.json").write_text("{}")
    assert out.commit() == [target / "results.json"] and os.listdir(target) == ["results.json"]
    # an existing folder: files replaced one by one, a stale file of the command removed, others kept
    (target / "report.md").write_text("old")
    (target / "keep.txt").write_text("keep")
    with pytest.raises(UsageError, match="already holds results.json, report.md"):
        OutputFolder(str(target), ("results.json", "report.md"))
    out = OutputFolder(str(target), ("results.json", "report.md"), overwrite=True)
    stage = out.open()
    assert stage.parent == target
    (stage / "results.json").write_text('{"new": 1}')
    out.commit()
    assert sorted(os.listdir(target)) == ["keep.txt", "results.json"]
    assert (target / "results.json").read_text() == '{"new": 1}'
    with pytest.raises(UsageError, match="exists and is not a directory"):
        OutputFolder(str(target / "keep.txt"), ("x",))
    with pytest.raises(UsageError, match="is a file, not a directory"):
        OutputFolder(str(target / "keep.txt" / "sub"), ("x",))


def test_ctrl_c_is_held_back_while_files_move():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done = True  # reached: the interrupt waits for the end of the block
    assert done


# --------------------------------------------------------------------------- Ctrl-C in a real process


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in extra:
            env.pop(name, None)
    return env


def _interrupt_when(proc, marker, stream="stdout", deadline=60.0):
    """Read ``stream`` until a line contains ``marker``, then send SIGINT; returns (rc, stderr)."""
    t0 = time.perf_counter()
    for line in getattr(proc, stream):
        if marker in line:
            break
        assert time.perf_counter() - t0 < deadline, "the marker never came"
    else:
        pytest.fail(f"exited before {marker!r}: {proc.stderr.read()}")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    # importing captum_robust.cli imports no torch (checked below); main() imports it. -X importtime reports each
    # import on stderr when it ends, so the first line naming torch comes from inside main(), during start-up.
    code = ("import sys; from captum_robust.cli import main; assert 'torch' not in sys.modules; "
            f"sys.exit(main(['demo', '--quick', '--no-progress', '--out', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-c", code], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, stderr = _interrupt_when(proc, "torch", stream="stderr")
    stderr = "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))
    assert rc == 130, stderr
    assert _one_error_line(stderr) == "captum-robust: interrupted"
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_ctrl_c_during_the_run_leaves_nothing(folder, existing):
    if existing:  # an existing --out keeps exactly what it held
        (folder / "out").mkdir()
        (folder / "out" / "notes.txt").write_text("mine")
    argv = [*CERTIFY, "--examples", "64", "--n-samples", "20000", "--out", "out"]
    proc = subprocess.Popen([sys.executable, "-m", "captum_robust.cli", *argv], cwd=folder, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # this line is printed after the staging folder exists, just before the first batch is certified
    rc, stderr = _interrupt_when(proc, "Sparsified SmoothGrad (")
    assert rc == 130
    assert _one_error_line(stderr) == "captum-robust: interrupted"
    assert _leftovers(folder) == []
    if existing:
        assert os.listdir(folder / "out") == ["notes.txt"]
    else:
        assert not (folder / "out").exists()


# --------------------------------------------------------------------------- torchrun environment


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_missing_peer_times_out_with_one_line(folder, rank):
    env = _env(WORLD_SIZE="2", RANK=rank, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "captum_robust.cli", *CERTIFY, "--out", "out", "--join-timeout", "2"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=90)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, f"WORLD_SIZE=2, RANK={rank}", "within 2 s", "--join-timeout")
    assert elapsed < 45  # 2 s of waiting plus the start-up, not forever
    assert not (folder / "out").exists() and _leftovers(folder) == []


def test_world_size_without_master_address_exits_two(folder, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, _, stderr = _run([*CERTIFY, "--out", "out"])
    assert code == 2
    _one_error_line(stderr, "WORLD_SIZE=2, RANK=0", "MASTER_ADDR and MASTER_PORT are not set", "torchrun")
    assert not (folder / "out").exists()
