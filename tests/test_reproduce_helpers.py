"""Unit tests of the pure helpers of benchmarks/reproduce.py (tables, trend checks, recipes,
the best-of-runs selection and the claim verdicts) and of the shared benchmarks/_common.py
(tables, JSON, timing, threads, options). The scripts themselves are benchmarks, not run here."""

import importlib.util
import itertools
import math
import random
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
_spec = importlib.util.spec_from_file_location("reproduce_bench", _PATH)
rp = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("reproduce_bench", rp)  # dataclasses look the module up
_spec.loader.exec_module(rp)
import _common as cm  # noqa: E402  (benchmarks/_common.py: loading reproduce.py put its folder on sys.path)


def test_markdown_table_exact_text_and_errors():
    text = rp.markdown_table(["a", "b", "c"], [[1, "x", 2.5], ["y", 3, "-"]])
    assert text.splitlines() == ["| a | b | c |", "|---|---:|---:|", "| 1 | x | 2.5 |", "| y | 3 | - |"]
    assert rp.markdown_table(["a", "b"], [], "rl").splitlines()[1] == "|---:|---|"
    with pytest.raises(ValueError, match="3 cells"):
        rp.markdown_table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="align"):
        rp.markdown_table(["a", "b"], [], "l")


def test_formatting_and_paper_lookup():
    assert rp.fmt(0.12345) == "0.123" and rp.fmt(float("nan")) == "-" and rp.fmt(None) == "-"
    assert rp.with_paper(0.85, 0.79) == "0.850 (0.790)" and rp.with_paper(0.85, None) == "0.850"
    # Boopathy Table 1: Int at eps 0.3 is 0.790; eps 0.25 is not in the table
    assert rp.paper_value(rp.PAPER_PGD, rp.PAPER_PGD_EPS, "Int", 0.3) == 0.790
    assert rp.paper_value(rp.PAPER_PGD, rp.PAPER_PGD_EPS, "Int", 0.25) is None
    assert rp.paper_value(rp.PAPER_PGD, rp.PAPER_PGD_EPS, "unknown", 0.3) is None
    # every paper row has one value per grid point
    for table, grid in ((rp.PAPER_PGD, rp.PAPER_PGD_EPS), (rp.PAPER_AAI, rp.PAPER_AAI_EPS),
                        (rp.PAPER_PGD_STEPS, rp.PAPER_STEPS)):
        assert set(table) == set(rp.METHODS)
        assert all(len(v) == len(grid) for v in table.values())


def test_trend_checks_hand_values():
    assert rp.non_increasing([0.9, 0.5, 0.5, 0.1]) == (True, None)
    assert rp.non_increasing([0.9, 0.5, 0.52, 0.1]) == (False, 2)
    assert rp.non_increasing([0.9, 0.5, 0.504, 0.1], tol=0.005) == (True, None)
    assert rp.falls([0.9, 0.9]) is False and rp.falls([0.9, 0.1]) is True and rp.falls([0.5]) is False
    assert rp.falls([0.5, 0.497], tol=0.005) is False
    c = rp.monotonicity([0, 0.1, 0.2], [0.9, 0.3, 0.4], tol=0.005)
    assert c == {"non_increasing": False, "falls": True, "holds": False, "violation": "0.1: 0.300 -> 0.2: 0.400"}
    flat = rp.monotonicity([1, 10, 100], [0.8, 0.8, 0.8], tol=0.005)
    assert flat["non_increasing"] and not flat["falls"] and not flat["holds"]
    # the paper's own Table 1 rows pass with a tolerance of two examples out of 200 (Int-Adv rises 0.01)
    for m, row in rp.PAPER_PGD.items():
        assert rp.monotonicity(rp.PAPER_PGD_EPS, row, tol=0.01)["holds"], m
    assert not rp.monotonicity(rp.PAPER_PGD_EPS, rp.PAPER_PGD["Int-Adv"], tol=0.005)["non_increasing"]


def test_best_of_runs_against_brute_force():
    nan = float("nan")
    k, t = rp.best_of_runs([[0.5, 0.2, nan], [0.3, 0.4, nan]], [[0.6, 0.1, nan], [0.7, 0.9, nan]],
                           [[True, True, False], [True, False, False]])
    assert k[:2] == [0.3, 0.2] and t[:2] == [0.7, 0.1] and math.isnan(k[2]) and math.isnan(t[2])
    rng = random.Random(0)
    runs, n = 3, 40
    kd = [[rng.uniform(-1, 1) for _ in range(n)] for _ in range(runs)]
    tk = [[rng.random() for _ in range(n)] for _ in range(runs)]
    kept = [[rng.random() < 0.7 for _ in range(n)] for _ in range(runs)]
    bk, bt = rp.best_of_runs(kd, tk, kept)
    for i in range(n):
        ok = [r for r in range(runs) if kept[r][i]]
        if not ok:
            assert math.isnan(bk[i])
            continue
        r = min(ok, key=lambda r: kd[r][i])
        assert (bk[i], bt[i]) == (kd[r][i], tk[r][i])
    assert rp.nanmean([1.0, nan, 3.0]) == 2.0 and math.isnan(rp.nanmean([nan]))
    with pytest.raises(ValueError):
        rp.best_of_runs([[0.1]], [], [[True]])


def test_recipes_scale_and_papers_settings():
    spe = 29  # the digits: ceil(1437 / 50)
    d, q = rp.make_recipe("digits"), rp.make_recipe("digits", quick=True)
    assert (d.eps, d.paper_eps, d.paper_iterations, d.batch, d.warmup_steps) == (0.1, 0.3, 40, 50, 2000)
    # MNIST: exactly the papers' settings and grid; the digits (eps 0.1): everything scaled by 1/3
    mn = rp.make_recipe("mnist")
    assert mn.eps == 0.3 and mn.paper_step_size == pytest.approx(0.01) and mn.eval_step_size == pytest.approx(0.01)
    assert mn.eps_grid == pytest.approx((0, 0.05, 0.1, 0.2, 0.3, 0.4)) and mn.aai_eps_grid == pytest.approx((0.05, 0.1, 0.2, 0.3, 0.4))
    assert d.eps_grid == pytest.approx(tuple(e / 3 for e in mn.eps_grid))
    assert (d.paper_step_size, d.eval_step_size, d.topk_step_size) == pytest.approx((0.01 / 3, 0.01 / 3, 0.01 / 3))
    assert [d.paper_eps_of(e) for e in d.eps_grid] == pytest.approx(list(mn.eps_grid))
    assert d.eps_header(0.1) == "eps 0.1 [paper 0.3]" and mn.eps_header(0.3) == "eps 0.3"
    assert rp.make_recipe("digits", eps=0.3).eps_grid == pytest.approx(mn.eps_grid)
    longer = rp.make_recipe("digits", train_scale=2.0)
    assert (longer.ramp_steps, longer.hold_steps, longer.ig_hold_steps) == (2 * d.ramp_steps, 2 * d.hold_steps, 2 * d.ig_hold_steps)
    with pytest.raises(ValueError, match="eps"):
        rp.make_recipe("digits", eps=0.0)
    # training attack: fewer steps, the same travel as the papers' 40 x 0.01
    assert d.train_iterations * d.train_step_size == pytest.approx(d.paper_iterations * d.paper_step_size)
    assert q.train_iterations * q.train_step_size == pytest.approx(d.paper_iterations * d.paper_step_size)
    for name in ("warmup_steps", "normal_steps", "ramp_steps", "hold_steps", "ig_ramp_steps", "ig_hold_steps",
                 "eval_iterations", "aai_iterations", "topk_iterations", "n_pgd", "n_aai", "n_topk", "train_iterations"):
        assert getattr(q, name) < getattr(d, name), name
    assert d.normal_steps - d.warmup_steps == d.ramp_steps + d.hold_steps  # Normal sees as many steps
    assert d.ig_quadrature == {"n_steps": 20, "method": "riemann_middle", "attack_n_steps": 5, "attack_method": "riemann_middle"}
    c = rp.make_recipe("cifar10")
    assert c.eps == pytest.approx(8 / 255) and c.paper_iterations == 10 and c.paper_step_size == pytest.approx(2 / 255)
    assert c.in_channels == 3 and c.fmt_eps(8 / 255) == "8/255" and d.fmt_eps(0.3) == "0.3"
    assert rp.make_recipe("fashion-mnist").eps == 0.1
    with pytest.raises(ValueError, match="dataset"):
        rp.make_recipe("svhn")
    text = "\n".join(rp.recipe_changes(d, spe))
    assert "2000 steps = 69.0 epochs" in text and "290 steps = 10.0 epochs" in text and "20 PGD steps of 0.00667" in text
    assert "training epsilon 0.1 instead of the papers' 0.3" in text and "training epsilon" not in "\n".join(rp.recipe_changes(mn, 1200))
    assert "QUICK" in rp.recipe_changes(q, spe)[0]


def _paper_results(tol=0.01):
    """Per-method results built from the papers' own tables."""
    res = {}
    for m in rp.METHODS:
        chen = rp.PAPER_CHEN.get(m, (0.9, 0.5, 0.6, 0.25))
        res[m] = {
            "clean": rp.PAPER_PGD[m][0],
            "pgd": dict(zip(rp.PAPER_PGD_EPS, rp.PAPER_PGD[m])),
            "eps_check": rp.monotonicity(rp.PAPER_PGD_EPS, rp.PAPER_PGD[m], tol),
            "steps_check": rp.monotonicity(rp.PAPER_STEPS, rp.PAPER_PGD_STEPS[m], tol),
            "aai": dict(zip(rp.PAPER_AAI_EPS, rp.PAPER_AAI[m])),
            "topk": {"topk": chen[2], "kendall": chen[3]},
            "cost": 5.0 if m in rp.IG_METHODS else 1.0,
            "paper_cost": {"Int": 1.0} if m == "Int" else (
                {f"{m} (Chen's quadrature)": 9.0, f"{m} (matched quadrature)": 4.5} if m in rp.IG_METHODS else {}),
        }
    return res


def test_the_papers_own_numbers_agree_with_every_claim():
    claims = rp.compare_with_papers(_paper_results(), eps=0.3, eps_large=0.4)
    assert len(claims) >= 15
    assert [c["claim"] for c in claims if c["verdict"] != "agrees"] == []


def test_claims_flip_and_skip():
    res = _paper_results()
    res["Int"]["pgd"] = dict(res["Normal"]["pgd"])  # Int no better than Normal under PGD
    res["IG-Norm"]["topk"] = {"topk": 0.40, "kendall": 0.30}  # top-k worse than Normal's 0.466
    res["Int"]["cost"] = 2.0  # IG-Norm only 2.5x Int
    verdicts = {c["claim"]: c["verdict"] for c in rp.compare_with_papers(res, 0.3, 0.4)}
    assert verdicts["Int and Int2 resist PGD far better than Normal at eps 0.3 (by >= 0.25)"] == "differs"
    assert verdicts["IG-Norm improves the top-k intersection and Kendall of IG under the top-k attack over Normal"] == "differs"
    assert verdicts["IG-Norm costs >= 4x more per epoch than Int, as trained here (matched quadrature)"] == "differs"
    assert verdicts["Int-one-class is much worse than Int under PGD at eps 0.3 (2-class discrepancy matters)"] == "differs"
    # a subset of methods: the claims that need the others are "not measured", none crash
    sub = {m: res[m] for m in ("Normal", "Int")}
    out = rp.compare_with_papers(sub, 0.3, 0.4)
    assert any(c["verdict"] == "not measured" for c in out)
    assert all(c["verdict"] in ("agrees", "differs", "not measured") for c in out)
    for subset in itertools.combinations(rp.METHODS, 2):
        rp.compare_with_papers({m: res[m] for m in subset}, 0.3, 0.4)


def test_jsonable_replaces_nan_and_float_keys():
    assert cm.jsonable({0.3: [1.0, float("nan")], "a": (2,)}) == {"0.3": [1.0, None], "a": [2]}


def test_jsonable_converts_arrays_tensors_and_paths():
    import numpy as np
    import torch

    out = cm.jsonable({"a": np.array([1.5, np.nan]), "t": torch.tensor([2, 3]), "p": Path("/x/y.json"), "f": np.float64(0.25)})
    assert out == {"a": [1.5, None], "t": [2, 3], "p": "/x/y.json", "f": 0.25}


def test_reproduce_uses_the_shared_helpers():
    assert rp.markdown_table is cm.markdown_table and rp.fmt is cm.fmt
    assert cm.__file__ == str(_PATH.with_name("_common.py"))


def test_write_json_writes_jsonable_text_with_newline(tmp_path):
    path = cm.write_json(tmp_path / "sub" / "r.json", {"x": float("nan"), 1: (1, 2)}, indent=None)
    assert path.read_text() == '{"x": null, "1": [1, 2]}\n'


def test_round_robin_interleaves_warms_up_and_shuffles():
    calls = []
    configs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = cm.round_robin(configs, repeats=4, warmup=2)
    assert calls[:6] == list("abcabc") and calls[6:] == list("abc") * 4
    assert set(times) == set("abc") and all(len(t) == 4 and min(t) >= 0 for t in times.values())
    calls.clear()
    cm.round_robin(configs, repeats=30, warmup=0, shuffle_seed=0)
    rounds = [calls[i:i + 3] for i in range(0, 90, 3)]
    assert all(sorted(r) == list("abc") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    calls.clear()
    cm.round_robin(configs, repeats=30, warmup=0, shuffle_seed=0)
    assert [calls[i:i + 3] for i in range(0, 90, 3)] == rounds  # same seed, same orders


def test_round_robin_clocks_and_medians():
    ticks = iter(range(1000))
    both = cm.round_robin_clocks({"f": lambda: None}, 3, {"fake": lambda: float(next(ticks))}, warmup=0)
    assert both == {"fake": {"f": [1.0, 1.0, 1.0]}}
    named = cm.round_robin_clocks({"f": lambda: None, "g": lambda: None}, 2, ("wall", "cpu", "thread"))
    assert set(named) == {"wall", "cpu", "thread"} and all(len(v["g"]) == 2 for v in named.values())
    with pytest.raises(ValueError, match="clocks"):
        cm.round_robin_clocks({"f": lambda: None}, 1, ("sundial",))
    assert cm.medians({"a": [3.0, 1.0, 2.0], "b": [1.0, 4.0]}) == {"a": 2.0, "b": 2.5}


def test_torch_threads_restores_and_checks():
    import torch

    before = torch.get_num_threads()
    with cm.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with cm.torch_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with cm.torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        with cm.torch_threads(0):
            pass


def test_common_options_and_machine_info():
    import argparse

    parser = cm.add_common_args(argparse.ArgumentParser(), quick="small budgets")
    args = parser.parse_args([])
    assert (args.quick, args.seed, args.out, args.threads) == (False, 0, cm.RESULTS, 1)
    assert cm.check_threads(parser, parser.parse_args(["--threads", "2"])) == 2
    with pytest.raises(SystemExit):
        cm.check_threads(parser, parser.parse_args(["--threads", "0"]))
    bare = cm.add_common_args(argparse.ArgumentParser(), out=None, seed=None)
    assert vars(bare.parse_args([])) == {"threads": 1}
    info = cm.machine_info(note="x")
    assert info["note"] == "x" and isinstance(info["cpu"], str) and info["cpu"]
    assert cm.load_benchmark("reproduce").METHODS == rp.METHODS
