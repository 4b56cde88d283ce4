"""Stability metrics: captum_robust.robust.stability against Quantus 0.6 and a Python loop over perturbations.

One run on the CPU: ``Small`` (random weights, seed 0) on 28 x 28 digits (the embedded scikit-learn
digits, upsampled), a batch of 64, 50 perturbations per example, Captum's ``Saliency``. For each of
the six metrics three candidates compute the same numbers from the same perturbations:

* ``ours``: the library's function, ``internal_batch_size`` rows per call (default 640);
* ``loop``: a Python loop over the 50 perturbations, one ``Saliency`` call (and model call) of the
  64 examples each, the score in torch (the shape of Quantus' own loop, without NumPy);
* ``quantus``: Quantus 0.6's metric class, its ``explain_func`` a Captum ``Saliency`` on the same
  model, the same perturbations handed over through ``perturb_func``;
* and, as the floor every candidate shares, the ``Saliency`` passes alone (64 + 3,200 examples in
  the same chunks, nothing else).

Times are medians over repeats taken round-robin (``_common.round_robin_clocks``), on one torch
thread; the ratios are measured in the same run. The largest absolute and relative differences of
``ours`` to ``quantus`` and to ``loop`` are recorded. Peak memory: the resident set size a call adds
(Linux ``/proc/self/status`` VmHWM after ``clear_refs``), measured in a fresh process per
configuration, chunked against unchunked (all 3,200 perturbed examples in one call).

    python benchmarks/stability.py            # the full run (minutes on 2 cores)
    python benchmarks/stability.py --quick    # smoke run: batch 8, 5 perturbations, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
from captum.attr import Saliency

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import (  # noqa: E402
    RESULTS,
    add_common_args,
    check_threads,
    fmt,
    machine_info,
    markdown_table,
    medians,
    round_robin_clocks,
    torch_threads,
    write_json,
)

from captum_robust.data import load_digits  # noqa: E402
from captum_robust.models import Small  # noqa: E402
from captum_robust.robust import stability  # noqa: E402

METRICS = {
    # name: (Quantus class, noise of the perturbations, library options, Quantus options)
    "max_sensitivity": ("MaxSensitivity", "uniform", {}, {}),
    "avg_sensitivity": ("AvgSensitivity", "uniform", {}, {}),
    "local_lipschitz_estimate": ("LocalLipschitzEstimate", "gaussian", {"normalise": False}, {"normalise": False}),
    "relative_input_stability": ("RelativeInputStability", "shift", {}, {}),
    "relative_output_stability": ("RelativeOutputStability", "shift", {}, {}),
    "relative_representation_stability": (
        "RelativeRepresentationStability", "shift", {}, {"layer_names": ["features.conv3"]},
    ),
}


def build(batch: int, n: int, seed: int) -> Tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    model = Small(1, 10).eval()
    x = _digits(batch, seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    g = torch.Generator().manual_seed(seed)
    shape = (n,) + tuple(x.shape)
    P = {  # Quantus' default noise of each family, drawn once and shared by every candidate
        "uniform": x + (torch.rand(shape, generator=g) * 2 - 1) * 0.2,
        "gaussian": x + torch.randn(shape, generator=g) * 0.1,
        "shift": x + torch.rand(shape, generator=g) * 0.18 + 0.02,
    }
    return model, x, y, P


def _digits(batch: int, seed: int) -> torch.Tensor:
    data = load_digits(size=28, seed=seed)
    x = data.test[0] if isinstance(data.test, tuple) else data.test.tensors[0]
    return x[:batch].reshape(batch, 1, 28, 28).float().contiguous()


def ours(metric: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, P: torch.Tensor,
         chunk: Any) -> torch.Tensor:
    opts = dict(METRICS[metric][2])
    if metric == "relative_representation_stability":
        opts["layer"] = model.features.conv3
    return getattr(stability, metric)(Saliency(model), x, y, n_samples=P.shape[0], internal_batch_size=chunk,
                                      perturb_func=lambda i, n, g: P, **opts).values


def loop(metric: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """One Saliency call per perturbation (all examples at once), the formulas written out in torch."""
    eps = 1e-6
    sal = Saliency(model)
    feats: Dict[str, torch.Tensor] = {}
    hook = model.features.conv3.register_forward_hook(lambda m, a, o: feats.__setitem__("L", o.flatten(1)))

    def explain(inp: torch.Tensor) -> torch.Tensor:
        return sal.attribute(inp.clone().requires_grad_(), target=y).flatten(1)

    def rel(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return ((ref - a) / (ref + (ref == 0).float() * eps)).norm(dim=1)

    try:
        e = explain(x)
        with torch.no_grad():
            h, L = model(x), feats.get("L")
        scores = []
        for s in range(P.shape[0]):
            es = explain(P[s])
            with torch.no_grad():
                hs, Ls = model(P[s]), feats.get("L")
            if metric in ("max_sensitivity", "avg_sensitivity"):
                sc = (e - es).norm(dim=1) / e.norm(dim=1)
            elif metric == "local_lipschitz_estimate":
                sc = (e - es).norm(dim=1) / (x - P[s]).flatten(1).norm(dim=1)
            else:
                if metric == "relative_input_stability":
                    den = rel(P[s].flatten(1), x.flatten(1))
                elif metric == "relative_output_stability":
                    den = (h - hs).norm(dim=1)
                else:
                    den = rel(Ls, L)
                sc = rel(es, e) / (den + (den == 0).float() * eps)
                sc = sc.masked_fill(hs.argmax(1) != h.argmax(1), float("-inf"))
            scores.append(sc)
    finally:
        hook.remove()
    stacked = torch.stack(scores)
    return stacked.mean(0) if metric == "avg_sensitivity" else stacked.amax(0)


def quantus_call(metric: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, P: torch.Tensor) -> np.ndarray:
    import quantus

    name, _, _, options = METRICS[metric]
    steps = iter(range(P.shape[0]))

    def perturb(arr: np.ndarray, indices: Any = None, **kwargs: Any) -> np.ndarray:
        return P[next(steps)].reshape(arr.shape[0], -1).numpy()

    def explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: Any) -> np.ndarray:
        t = torch.as_tensor(inputs).requires_grad_()
        return Saliency(model).attribute(t, target=torch.as_tensor(targets).long()).detach().numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = getattr(quantus, name)(nr_samples=P.shape[0], perturb_func=perturb, disable_warnings=True, **options)
        return np.asarray(m(model=model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain,
                            channel_first=True, batch_size=x.shape[0]), dtype=np.float64)


# --------------------------------------------------------------------------- memory (fresh process per config)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    model, x, y, P = build(args.batch, args.n_samples, args.seed)
    metric, chunk = args.child.split(":")
    p = P[METRICS[metric][1]]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_mb("VmRSS")
    ours(metric, model, x, y, p, None if chunk == "none" else int(chunk))
    print(json.dumps({"added_mb": _status_mb("VmHWM") - base}))


def peak_memory(args: argparse.Namespace, metric: str, chunk: Any) -> float:
    cmd = [sys.executable, __file__, "--child", f"{metric}:{chunk or 'none'}", "--batch", str(args.batch),
           "--n-samples", str(args.n_samples), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])["added_mb"]


# --------------------------------------------------------------------------- main


def _diff(a: np.ndarray, b: np.ndarray) -> Tuple[float, float]:
    ok = np.isfinite(a) & np.isfinite(b)
    d = np.abs(a[ok] - b[ok])
    return float(d.max()), float((d / np.abs(b[ok])).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, quick="batch 8, 5 perturbations, 1 repeat", out=RESULTS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=640, help="internal_batch_size of 'ours' (default 640)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    threads = check_threads(parser, args)
    if args.quick:
        args.batch, args.n_samples, args.repeats, args.chunk = 8, 5, 1, 16
    rows, result = [], {"metrics": {}}
    with torch_threads(threads):
        model, x, y, P = build(args.batch, args.n_samples, args.seed)
        configs: Dict[str, Callable[[], Any]] = {}
        for metric, (_, noise, _, _) in METRICS.items():
            p = P[noise]
            configs[f"{metric}/ours"] = lambda m=metric, p=p: ours(m, model, x, y, p, args.chunk)
            configs[f"{metric}/loop"] = lambda m=metric, p=p: loop(m, model, x, y, p)
            configs[f"{metric}/quantus"] = lambda m=metric, p=p: quantus_call(m, model, x, y, p)
        sal = Saliency(model)

        def floor(p: torch.Tensor = P["uniform"]) -> None:  # the Saliency passes alone, in the same chunks
            flat = torch.cat([x, p.reshape((-1,) + tuple(x.shape[1:]))])
            target = y.repeat(args.n_samples + 1)
            for r in range(0, flat.shape[0], args.chunk):
                sal.attribute(flat[r:r + args.chunk].clone().requires_grad_(), target=target[r:r + args.chunk])

        configs["saliency passes"] = floor
        times = medians(round_robin_clocks(configs, args.repeats, ("wall",), shuffle_seed=args.seed)["wall"])
        for metric, (_, noise, _, _) in METRICS.items():
            p = P[noise]
            v = ours(metric, model, x, y, p, args.chunk).double().numpy()
            dq = _diff(v, quantus_call(metric, model, x, y, p))
            dl = _diff(v, loop(metric, model, x, y, p).double().numpy())
            t = {k: times[f"{metric}/{k}"] for k in ("ours", "loop", "quantus")}
            result["metrics"][metric] = {
                "seconds": t, "quantus_over_ours": t["quantus"] / t["ours"], "loop_over_ours": t["loop"] / t["ours"],
                "max_abs_diff_quantus": dq[0], "max_rel_diff_quantus": dq[1],
                "max_abs_diff_loop": dl[0], "max_rel_diff_loop": dl[1],
            }
            rows.append([metric, fmt(t["ours"]), fmt(t["loop"]), fmt(t["quantus"]),
                         f"{t['quantus'] / t['ours']:.1f}x", f"{t['loop'] / t['ours']:.2f}x", f"{dq[1]:.1e}"])
    result["saliency_passes_seconds"] = times["saliency passes"]
    rows.append(["(the Saliency passes alone)", fmt(times["saliency passes"]), "", "", "", "", ""])
    print(f"\nbatch {args.batch}, {args.n_samples} perturbations, Small 28x28, Saliency; "
          f"median wall seconds of {args.repeats} round-robin repeats, {threads} thread(s)\n")
    print(markdown_table(["metric", "ours (s)", "loop (s)", "Quantus 0.6 (s)", "Quantus / ours", "loop / ours",
                          "max rel. diff to Quantus"], rows))
    mem_rows = []
    for metric in ("max_sensitivity", "relative_representation_stability"):
        mem = {str(c): peak_memory(args, metric, c) for c in (args.chunk, None)}
        result["metrics"][metric]["peak_added_mb"] = mem
        mem_rows.append([metric, fmt(mem[str(args.chunk)], 1), fmt(mem["None"], 1),
                         f"{mem['None'] / max(mem[str(args.chunk)], 1e-9):.1f}x"])
    print(f"\npeak resident memory added by the call (MiB), internal_batch_size={args.chunk} against all "
          f"{args.batch * args.n_samples} perturbed examples at once\n")
    print(markdown_table(["metric", f"chunked ({args.chunk})", "unchunked", "ratio"], mem_rows))
    result.update(machine=machine_info(quantus="0.6.0", timing_threads=threads), batch=args.batch, n_samples=args.n_samples,
                  chunk=args.chunk, repeats=args.repeats, memory="VmHWM after clear_refs, fresh process")
    out = Path(args.out) / ("stability_quick.json" if args.quick else "stability.json")
    write_json(out, result)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
