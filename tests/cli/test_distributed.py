"""`evaluate` and `certify` under torchrun with 2 CPU processes: the merged result equals the
single-process one (same examples, same per-example values, same summaries)."""

import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch

from captum_robust._utils.distributed import assign_batches, batch_seed, env_world
from captum_robust.cli import main

FACTORY = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 12, 3, padding=1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(self.conv2(self.act(self.conv1(x))).mean(dim=(2, 3)))
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(folder, argv):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH")])))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "captum_robust.cli", *argv]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def _single(folder, argv):
    before = os.getcwd()
    os.chdir(folder)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(before)
    assert code == 0, err.getvalue()


def _assert_same(a, b, path="", skip=("seconds", "wall_seconds", "world_size", "device")):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            if key not in skip:
                _assert_same(a[key], b[key], f"{path}.{key}", skip)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{path}[{i}]", skip)
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            assert a is b, path
        elif math.isnan(a):
            assert math.isnan(b), path
        else:
            assert abs(a - b) <= 1e-6, (path, a, b)
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    (d / "cr_dist_net.py").write_text(FACTORY)
    ns = {}
    exec(FACTORY, ns)
    torch.manual_seed(3)
    torch.save(ns["Net"]().state_dict(), d / "w.pt")
    return d


COMMON = ["--model", "cr_dist_net:Net", "--weights", "w.pt", "--image-size", "8", "--no-progress", "--seed", "5"]


def test_evaluate_two_processes_equal_one(folder):
    # 7 examples in batches of 2: 4 batches, rank 0 gets batches 0 and 2, rank 1 batches 1 and 3
    argv = ["evaluate", *COMMON, "--examples", "7", "--batch-size", "2", "--attack", "aai", "--attribution", "cam",
            "--iterations", "3", "--pgd-iterations", "3", "--measures", "kendall", "topk"]
    proc = _torchrun(folder, argv + ["--out", "two"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote two/results.json") == 1  # only rank 0 prints and writes
    _single(folder, argv + ["--out", "one"])
    two = json.loads((folder / "two" / "results.json").read_text())
    one = json.loads((folder / "one" / "results.json").read_text())
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    assert two["runs"][0]["per_example"]["index"] == list(range(7))
    _assert_same(one, two)
    assert one["runs"][0]["summary"]["n_attacked"] == sum(one["runs"][0]["per_example"]["attacked"])


def test_certify_two_processes_equal_one(folder):
    argv = ["certify", *COMMON, "--examples", "5", "--batch-size", "2", "--n-samples", "64", "--k", "8"]
    proc = _torchrun(folder, argv + ["--out", "ctwo"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    _single(folder, argv + ["--out", "cone"])
    two = json.loads((folder / "ctwo" / "results.json").read_text())
    one = json.loads((folder / "cone" / "results.json").read_text())
    assert two["settings"]["world_size"] == 2
    _assert_same(one, two)


def test_assign_batches_partitions_and_seeds_do_not_depend_on_rank():
    for n, bs in ((0, 3), (7, 2), (10, 10), (11, 4)):
        for world in (1, 2, 3):
            parts = [assign_batches(n, bs, r, world) for r in range(world)]
            flat = sorted((b, tuple(idx)) for p in parts for b, idx in p)
            assert flat == [(b, tuple(idx)) for b, idx in assign_batches(n, bs)]
            assert [i for _, idx in flat for i in idx] == list(range(n))
            assert all(b % world == r for r, p in enumerate(parts) for b, _ in p)
    seeds = {batch_seed(s, b) for s in range(3) for b in range(50)}
    assert len(seeds) == 150 and all(0 <= v < 2**63 for v in seeds)
    with pytest.raises(ValueError):
        assign_batches(5, 0)


def test_env_world(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="inconsistent"):
        env_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="not an integer"):
        env_world()
