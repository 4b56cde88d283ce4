"""Speed of the batched rank measures against scipy / NumPy loops over the maps (issue 5).

Targets: ``kendall_tau`` at least as fast as a loop of ``scipy.stats.kendalltau`` over the maps,
both for 64 maps of n = 50176 (224 x 224) and for 256 maps of n = 784 (28 x 28); likewise
``spearman`` against ``scipy.stats.spearmanr`` and ``topk_intersection`` against a NumPy loop
(``argpartition`` + ``intersect1d``, the usual implementation). For context, a batched
pairwise O(n^2) Kendall tau in torch is timed at n = 784.

Two kinds of maps: continuous (``b = a + noise``) and tied like real attribution maps (40 %
exact zeros, values rounded to one decimal). Every ratio is measured in this run: each repeat
runs all candidates once in a fresh random order, and the medians are compared. With
``--threads 1`` (the default) on the CPU the clock is the thread's CPU time, robust to other
processes on a shared machine; on a GPU it is the wall clock with synchronization (the maps
stay on the GPU, scipy gets host copies made before timing). Every result is checked against
scipy (the largest absolute difference is reported; for top-k on tied maps no difference is
reported because the NumPy loop breaks ties at the k-th value arbitrarily, while
``topk_intersection`` keeps the lowest indices).

Prints a markdown table and writes ``benchmarks/results/discrepancy.json``.

Usage::

    python benchmarks/discrepancy.py [--repeats 9] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import torch
from scipy import stats

from captum_robust.robust.discrepancy import kendall_tau, spearman, topk_intersection

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import RESULTS, machine_info, markdown_table, medians, round_robin, write_json  # noqa: E402


def scipy_loop(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([fn(a[i], b[i]).statistic for i in range(a.shape[0])])


def numpy_topk_loop(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        ta = np.argpartition(-a[i], k - 1)[:k]
        tb = np.argpartition(-b[i], k - 1)[:k]
        out[i] = len(np.intersect1d(ta, tb, assume_unique=True)) / k
    return out


def pairwise_kendall(a: torch.Tensor, b: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """tau-b from all n^2 pairs, ``chunk`` maps at a time (the naive batched method)."""
    out = []
    for i in range(0, a.shape[0], chunk):
        sa = torch.sign(a[i : i + chunk, :, None] - a[i : i + chunk, None, :])
        sb = torch.sign(b[i : i + chunk, :, None] - b[i : i + chunk, None, :])
        s = (sa * sb).sum(dim=(1, 2)) / 2
        na = (sa != 0).sum(dim=(1, 2)) / 2
        nb = (sb != 0).sum(dim=(1, 2)) / 2
        out.append(s / torch.sqrt(na * nb))
    return torch.cat(out)


def make_maps(batch: int, n: int, tied: bool, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, generator=g)
    b = a + torch.randn(batch, n, generator=g)
    if tied:
        a = torch.where(torch.rand(batch, n, generator=g) < 0.4, 0.0, a).round(decimals=1)
        b = torch.where(torch.rand(batch, n, generator=g) < 0.4, 0.0, b).round(decimals=1)
    return a, b


def measure_case(batch: int, n: int, k: int, tied: bool, repeats: int, clock: Callable[[], float],
                 device: torch.device) -> List[Dict[str, Any]]:
    """Time ours against the references on one map size, continuous or tied; one row per measure."""
    rows = []
    a, b = make_maps(batch, n, tied, seed=n + tied)
    an, bn = a.double().numpy(), b.double().numpy()
    da, db = a.to(device), b.to(device)
    ref_tau = scipy_loop(stats.kendalltau, an, bn)
    ref_rho = scipy_loop(stats.spearmanr, an, bn)
    ours_tau = kendall_tau(da, db).cpu().double().numpy()
    ours_rho = spearman(da, db).cpu().double().numpy()
    candidates = {
        "scipy kendalltau loop": lambda: scipy_loop(stats.kendalltau, an, bn),
        "kendall_tau": lambda: kendall_tau(da, db),
        "scipy spearmanr loop": lambda: scipy_loop(stats.spearmanr, an, bn),
        "spearman": lambda: spearman(da, db),
        "numpy top-k loop": lambda: numpy_topk_loop(an, bn, k),
        "topk_intersection": lambda: topk_intersection(da, db, k),
    }
    # top-k is usually taken on prepared, non-negative maps (|attribution|)
    pa, pb = da.abs(), db.abs()
    pan, pbn = an.__abs__(), bn.__abs__()
    candidates["numpy top-k loop, abs maps"] = lambda: numpy_topk_loop(pan, pbn, k)
    candidates["topk_intersection, abs maps"] = lambda: topk_intersection(pa, pb, k)
    if n <= 1024:
        candidates["pairwise O(n^2) kendall (torch)"] = lambda: pairwise_kendall(da, db)
        naive = pairwise_kendall(da, db).cpu().double().numpy()
    # every round in a fresh random order
    times = round_robin(candidates, repeats, clock, shuffle_seed=n, device=device)
    med = medians(times)
    checks = {
        "kendall_tau": float(np.nanmax(np.abs(ours_tau - ref_tau))),
        "spearman": float(np.nanmax(np.abs(ours_rho - ref_rho))),
    }
    if n <= 1024:
        checks["pairwise O(n^2) kendall (torch)"] = float(np.nanmax(np.abs(naive - ref_tau)))
    top_ours = topk_intersection(da, db, k).cpu().double().numpy()
    top_ref = numpy_topk_loop(an, bn, k)
    checks["topk_intersection"] = float(np.max(np.abs(top_ours - top_ref))) if not tied else None
    top_ours = topk_intersection(pa, pb, k).cpu().double().numpy()
    top_ref = numpy_topk_loop(pan, pbn, k)
    checks["topk_intersection, abs maps"] = float(np.max(np.abs(top_ours - top_ref))) if not tied else None
    pairs = [
        ("kendall_tau", "scipy kendalltau loop", "kendall_tau"),
        ("spearman", "scipy spearmanr loop", "spearman"),
        ("topk_intersection", "numpy top-k loop", "topk_intersection"),
        ("topk_intersection, abs maps", "numpy top-k loop, abs maps", "topk_intersection, abs maps"),
    ]
    if n <= 1024:
        pairs.append(("pairwise kendall (context)", "scipy kendalltau loop", "pairwise O(n^2) kendall (torch)"))
    for label, ref, cand in pairs:
        per_round = [r / c for r, c in zip(times[ref], times[cand])]
        rows.append(
            {
                "measure": label,
                "maps": f"{batch} x {n}",
                "data": "tied" if tied else "continuous",
                "k": k if "topk" in label else None,
                "reference": ref,
                "reference_s": med[ref],
                "candidate": cand,
                "candidate_s": med[cand],
                "speedup": med[ref] / med[cand],
                "speedup_round_min": min(per_round),
                "speedup_round_max": max(per_round),
                "max_abs_diff_vs_reference": checks.get(cand),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "discrepancy.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        clock, clock_name = time.perf_counter, "wall clock, cuda synchronized"
    elif args.threads == 1:
        clock, clock_name = time.thread_time, "thread CPU time"
    else:
        clock, clock_name = time.perf_counter, "wall clock"

    rows = []
    for batch, n, k in [(64, 50176, 1000), (256, 784, 100)]:
        for tied in (False, True):
            rows += measure_case(batch, n, k, tied, args.repeats, clock, device)
            print(f"done {batch} x {n} {'tied' if tied else 'continuous'}", flush=True)

    machine = machine_info(
        numpy=np.__version__,
        scipy=__import__("scipy").__version__,
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        clock=clock_name,
        repeats=args.repeats,
    )
    print()
    print(f"Machine: {machine['platform']}, {machine['device']}, torch {machine['torch']}, "
          f"{args.threads} thread(s), {clock_name}, median of {args.repeats} interleaved rounds")
    print()
    headers = ["measure", "maps", "data", "reference", "ref. time", "ours", "speed-up (min-max over rounds)",
               "max abs diff"]
    cells = [
        [f"{r['measure']}{' (k=%d)' % r['k'] if r['k'] else ''}", r["maps"], r["data"], r["reference"],
         f"{r['reference_s'] * 1e3:.1f} ms", f"{r['candidate_s'] * 1e3:.1f} ms",
         f"**{r['speedup']:.2f}x** ({r['speedup_round_min']:.2f}-{r['speedup_round_max']:.2f})",
         "-" if r["max_abs_diff_vs_reference"] is None else f"{r['max_abs_diff_vs_reference']:.1e}"]
        for r in rows
    ]
    print(markdown_table(headers, cells, align="l" * len(headers)))
    write_json(args.out, {"machine": machine, "results": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
