"""Speed, memory and accuracy of BatchedIntegratedGradients (issue 3).

Three studies (and, with ``--chunk-rule``, a fourth: the chunk-size sweep behind
``internal_batch_size="auto"`` on four models), all on ``captum_robust.models.Small`` with 1 x 28 x 28 inputs, on CPU:

1. **Plain mode** (batch 32, ``n_steps=50``, Gauss-Legendre, one class per example):
   Captum's ``IntegratedGradients`` at every ``internal_batch_size`` (its default call has
   none) against this engine at the same chunk sizes and ``"auto"``. Targets: this engine
   at most 1.0x Captum's best, and ``"auto"`` within 10% of this engine's best chunk size.
2. **create_graph mode** (batch 128, ``n_steps=50``, right Riemann sum as in Chen's code):
   the IG-Norm term ``|| IG^{l_y}(x, x') ||_1`` (IG of the per-example cross-entropy from
   ``x`` to ``x'``), backward to the parameters. Reference: a naive implementation that
   evaluates the whole path in one batch with ``create_graph=True``. Peak memory is the
   maximum resident set size of a fresh child process per configuration (``VmHWM``, see
   ``cg_child``), reported in total and above the child's footprint after setup. Targets:
   peak at most 35% of naive, time at most 1.3x naive.
3. **Accuracy**: relative L1 error of every ``method`` at ``n_steps`` 5, 10, 20, 50 against
   ``n_steps = 2000`` (Gauss-Legendre; every method's own 2000-step result is reported next
   to it) on a ReLU ``Small`` trained on the embedded digits and its softplus twin (the same
   architecture with ``softplus=1``, same initialisation, same training), 64 test images,
   true-class logit, zero baseline.

Timings alternate the configurations in the same loop (round-robin) and report medians, with
``torch.set_num_threads(1)`` unless ``--threads`` says otherwise. Prints markdown tables and
writes ``benchmarks/results/integrated_gradients.json`` and
``benchmarks/results/integrated_gradients_accuracy.png``.

Usage::

    python benchmarks/integrated_gradients.py [--repeats 15] [--cg-repeats 3] [--threads 1]
                                              [--skip-speed] [--skip-memory] [--skip-accuracy]
    python benchmarks/integrated_gradients.py --chunk-rule   # the sweep behind "auto" (4 models)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from captum_robust.attr import BatchedIntegratedGradients
from captum_robust.attr._core._quadrature import SUPPORTED_METHODS, quadrature_rule
from captum_robust.attr._core.saliency import input_gradient
from captum_robust.models import Small
from captum_robust.training import trained_digits_model

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import (  # noqa: E402
    RESULTS,
    check_threads,
    machine_info,
    markdown_table,
    medians,
    proc_status_mb,
    round_robin_clocks,
    write_json,
)


# --------------------------------------------------------------------------- helpers


def auto_pick(fn: Callable[[], Any]) -> Optional[int]:
    """Run ``fn`` once and return the chunk size ``internal_batch_size="auto"`` picked."""
    import captum_robust.attr._core._ig_chunking as ig_chunking

    picked: List[int] = []
    original = ig_chunking._auto_chunk

    def spy(*a: Any, **k: Any) -> int:
        picked.append(original(*a, **k))
        return picked[-1]

    ig_chunking._auto_chunk = spy
    try:
        fn()
    finally:
        ig_chunking._auto_chunk = original
    return picked[0] if picked else None


# --------------------------------------------------------------------------- 1. plain speed


def speed_plain(repeats: int) -> Dict[str, Any]:
    from captum.attr import IntegratedGradients

    warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
    torch.manual_seed(0)
    model = Small(in_channels=1).eval()
    batch, n_steps, method = 32, 50, "gausslegendre"
    x = torch.rand(batch, 1, 28, 28)
    target = torch.randint(0, 10, (batch,))
    captum = IntegratedGradients(model)
    ours = BatchedIntegratedGradients(model)
    sizes = [32, 64, 128, 256, 512, 800, None]
    configs: Dict[str, Callable[[], Any]] = {}
    for s in sizes:
        configs[f"captum:{s}"] = lambda s=s: captum.attribute(
            x, target=target, n_steps=n_steps, method=method, internal_batch_size=s
        )
        configs[f"ours:{s}"] = lambda s=s: ours.attribute(
            x, target=target, n_steps=n_steps, method=method, internal_batch_size=s
        )
    configs["ours:auto"] = lambda: ours.attribute(
        x, target=target, n_steps=n_steps, method=method, internal_batch_size="auto"
    )
    picked = auto_pick(configs["ours:auto"])
    # wall-clock and process CPU times, the configs alternating inside each round (on a shared
    # machine the CPU time of a one-thread run is the steadier of the two)
    times = round_robin_clocks(configs, repeats, ("wall", "cpu"))
    wall, cpu = times["wall"], times["cpu"]
    result: Dict[str, Any] = {
        "batch": batch, "n_steps": n_steps, "method": method, "repeats": repeats, "auto_chunk_rows": picked,
    }
    for clock, times in (("wall", wall), ("cpu", cpu)):
        med = medians(times)
        captum_fixed = {k: v for k, v in med.items() if k.startswith("captum:")}
        ours_fixed = {k: v for k, v in med.items() if k.startswith("ours:") and k != "ours:auto"}
        captum_best = min(captum_fixed, key=captum_fixed.get)
        ours_best = min(ours_fixed, key=ours_fixed.get)
        result[clock] = {
            "median_seconds": med,
            "captum_best": captum_best,
            "ours_best": ours_best,
            "ratio_ours_auto_vs_captum_best": med["ours:auto"] / med[captum_best],
            "ratio_ours_best_vs_captum_best": med[ours_best] / med[captum_best],
            "ratio_auto_vs_ours_best": med["ours:auto"] / med[ours_best],
            "speedup_auto_vs_captum_default": med["captum:None"] / med["ours:auto"],
        }
    return result


def print_plain(r: Dict[str, Any]) -> None:
    wall, cpu = r["wall"]["median_seconds"], r["cpu"]["median_seconds"]
    rows = []
    for s in ["32", "64", "128", "256", "512", "800", "None"]:
        label = s if s != "None" else "None (all 1600 rows)"
        rows.append([label] + [f"{t[k + s] * 1e3:.1f}" for t in (wall, cpu) for k in ("captum:", "ours:")])
    rows.append([f"auto (picked {r['auto_chunk_rows']} rows)", "-", f"{wall['ours:auto'] * 1e3:.1f}", "-",
                 f"{cpu['ours:auto'] * 1e3:.1f}"])
    print(f"\n### Plain mode: batch {r['batch']}, n_steps {r['n_steps']}, {r['method']} "
          f"(median ms of {r['repeats']}, round-robin)\n")
    print(markdown_table(["internal_batch_size", "Captum IG wall", "ours wall", "Captum IG CPU", "ours CPU"], rows))
    for clock in ("wall", "cpu"):
        q = r[clock]
        print(
            f"\n{clock} clock: ours (auto) / Captum best ({q['captum_best']}): "
            f"**{q['ratio_ours_auto_vs_captum_best']:.3f}x** (target <= 1.0); "
            f"ours best ({q['ours_best']}) / Captum best: {q['ratio_ours_best_vs_captum_best']:.3f}x; "
            f"auto / ours best: **{q['ratio_auto_vs_ours_best']:.3f}x** (target <= 1.10); "
            f"speed-up of auto over Captum's default call: **{q['speedup_auto_vs_captum_default']:.2f}x**"
        )


# --------------------------------------------------------------------------- 2. create_graph


CG_BATCH, CG_STEPS, CG_METHOD = 128, 50, "riemann_right"
CG_CONFIGS = ["naive", "ours:None", "ours:256", "ours:640", "ours:1280", "ours:auto"]


def cg_setup():
    torch.manual_seed(0)
    model = Small(in_channels=1).eval()
    x = torch.rand(CG_BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (CG_BATCH,))
    x_adv = (x + 0.3 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    return model, x, y, x_adv


def cg_step(config: str, model, x, y, x_adv) -> None:
    """One IG-Norm regularizer step: ||IG^{l_y}(x, x')||_1 and its gradient to the parameters."""
    if config == "naive":
        t, w = quadrature_rule(CG_METHOD, CG_STEPS)
        t = torch.as_tensor(t, dtype=x.dtype).view(-1, 1, 1, 1, 1)
        w = torch.as_tensor(w, dtype=x.dtype).view(-1, 1, 1, 1, 1)
        r = (x.unsqueeze(0) + t * (x_adv - x).unsqueeze(0)).reshape(-1, *x.shape[1:]).requires_grad_()
        loss = F.cross_entropy(model(r), y.repeat(CG_STEPS), reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), r, create_graph=True)
        attr = (x_adv - x) * (w * g.view(CG_STEPS, *x.shape)).sum(0)
    else:
        ibs: Any = config.split(":")[1]
        ibs = None if ibs == "None" else ibs if ibs == "auto" else int(ibs)
        ig = BatchedIntegratedGradients(lambda r, t: F.cross_entropy(model(r), t, reduction="none"))
        attr = ig.attribute(
            x_adv, baselines=x, additional_forward_args=(y,), n_steps=CG_STEPS, method=CG_METHOD,
            internal_batch_size=ibs, create_graph=True,
        )
    model.zero_grad(set_to_none=True)
    attr.abs().sum().backward()


def cg_child(config: str) -> None:
    """Run in a fresh process: peak RSS of one regularizer step.

    ``ru_maxrss`` survives ``exec`` on Linux (a child started from a big parent inherits its
    peak), so the peak is read from ``VmHWM`` (the high-water mark of this process's own
    memory), reset to the current RSS after the setup through ``/proc/self/clear_refs``
    where allowed; the increment is the peak minus the RSS after setup.
    """
    torch.set_num_threads(int(os.environ.get("IG_BENCH_THREADS", "1")))
    setup = cg_setup()
    reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        reset = False
    before = proc_status_mb("VmRSS")
    start = time.perf_counter()
    cg_step(config, *setup)
    seconds = time.perf_counter() - start
    peak = proc_status_mb("VmHWM")
    print(json.dumps({
        "config": config, "rss_after_setup_mib": before, "peak_rss_mib": peak, "seconds": seconds,
        "hwm_reset_after_setup": reset, "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def create_graph_study(repeats: int, threads: int, skip_memory: bool) -> Dict[str, Any]:
    memory: Dict[str, Any] = {}
    if not skip_memory:
        env = dict(os.environ, IG_BENCH_THREADS=str(threads))
        for config in CG_CONFIGS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", config], capture_output=True, text=True, env=env, check=True
            )
            memory[config] = json.loads(out.stdout.strip().splitlines()[-1])
    setup = cg_setup()
    picked = auto_pick(lambda: cg_step("ours:auto", *setup))
    times = round_robin_clocks({c: (lambda c=c: cg_step(c, *setup)) for c in CG_CONFIGS}, repeats, ("wall", "cpu"))
    wall, cpu = times["wall"], times["cpu"]
    med, med_cpu = medians(wall), medians(cpu)
    result: Dict[str, Any] = {
        "batch": CG_BATCH, "n_steps": CG_STEPS, "method": CG_METHOD, "repeats": repeats, "auto_chunk_rows": picked,
        "median_seconds": med, "median_cpu_seconds": med_cpu, "memory": memory,
        "time_ratio_vs_naive": {c: med[c] / med["naive"] for c in CG_CONFIGS},
        "cpu_time_ratio_vs_naive": {c: med_cpu[c] / med_cpu["naive"] for c in CG_CONFIGS},
    }
    if memory:
        naive = memory["naive"]
        result["peak_ratio_vs_naive"] = {c: memory[c]["peak_rss_mib"] / naive["peak_rss_mib"] for c in CG_CONFIGS}
        result["increment_ratio_vs_naive"] = {
            c: (memory[c]["peak_rss_mib"] - memory[c]["rss_after_setup_mib"])
            / (naive["peak_rss_mib"] - naive["rss_after_setup_mib"])
            for c in CG_CONFIGS
        }
    return result


def print_cg(r: Dict[str, Any]) -> None:
    print(
        f"\n### create_graph: ||IG^l_y(x, x')||_1 backward to the parameters, batch {r['batch']}, "
        f"n_steps {r['n_steps']}, {r['method']} (time: median of {r['repeats']}, round-robin; memory: "
        "a fresh child process per configuration, max RSS)\n"
    )
    rows = []
    for c in CG_CONFIGS:
        label = f"ours:auto (picked {r['auto_chunk_rows']} rows)" if c == "ours:auto" else c
        row = [
            label, f"{r['median_seconds'][c]:.2f}", f"{r['time_ratio_vs_naive'][c]:.2f}x",
            f"{r['median_cpu_seconds'][c]:.2f}", f"{r['cpu_time_ratio_vs_naive'][c]:.2f}x",
        ]
        if r["memory"]:
            m = r["memory"][c]
            row += [
                f"{m['peak_rss_mib']:.0f}",
                f"{m['peak_rss_mib'] - m['rss_after_setup_mib']:.0f}",
                f"{r['peak_ratio_vs_naive'][c]:.0%}",
                f"{r['increment_ratio_vs_naive'][c]:.0%}",
            ]
        rows.append(row)
    header = ["config", "wall (s)", "wall / naive", "CPU (s)", "CPU / naive"]
    if r["memory"]:
        header += ["peak RSS (MiB)", "peak above setup (MiB)", "peak / naive", "above-setup / naive"]
    print(markdown_table(header, rows))


# --------------------------------------------------------------------------- 3. accuracy


def accuracy_study(n_images: int = 64) -> Dict[str, Any]:
    # Adam (lr 3e-3, batch 64, 60 epochs) on the embedded digits; the same initialisation for both twins
    relu = trained_digits_model(epochs=60, lr=3e-3)
    twin = trained_digits_model(epochs=60, lr=3e-3, softplus=1.0)
    x, y = relu.test.tensors[0][:n_images], relu.test.tensors[1][:n_images]
    out: Dict[str, Any] = {"n_images": n_images, "models": {}}
    for name, (model, _, _, acc) in (("relu", relu), ("softplus1", twin)):
        ig = BatchedIntegratedGradients(model)

        def attr(method: str, n: int) -> torch.Tensor:
            return ig.attribute(x, target=y, n_steps=n, method=method, internal_batch_size="auto")

        ref = attr("gausslegendre", 2000)

        def err(a: torch.Tensor, r: torch.Tensor) -> float:
            return float((a - r).abs().sum() / r.abs().sum())

        table = {}
        own_2000 = {}
        for method in SUPPORTED_METHODS:
            own = attr(method, 2000) if method != "gausslegendre" else ref
            own_2000[method] = err(own, ref)
            table[method] = {}
            for n in (5, 10, 20, 50):
                a = attr(method, n)
                table[method][n] = {"vs_gl2000": err(a, ref), "vs_own2000": err(a, own)}
        out["models"][name] = {"test_accuracy": acc, "errors": table, "own_2000_vs_reference": own_2000}
    return out


def pct(v: float) -> str:
    return f"{v:.2%}" if v >= 1e-4 else f"{v * 100:.0e}%"


def print_accuracy(r: Dict[str, Any]) -> None:
    for name, m in r["models"].items():
        print(
            f"\n### Accuracy, {name} model (test accuracy {m['test_accuracy']:.3f}): relative L1 error of IG "
            f"against n_steps=2000 (Gauss-Legendre), {r['n_images']} test images\n"
        )
        rows = []
        for method, errs in m["errors"].items():
            own = "(the reference)" if method == "gausslegendre" else pct(m["own_2000_vs_reference"][method])
            rows.append([method] + [pct(errs[n]["vs_gl2000"]) for n in (5, 10, 20, 50)] + [own])
        print(markdown_table(["method", "n=5", "n=10", "n=20", "n=50", "its own n=2000 vs reference"], rows))
        reach = []
        for method, errs in m["errors"].items():
            ok = [n for n in (5, 10, 20, 50) if errs[n]["vs_gl2000"] <= 0.01]
            reach.append(f"{method}: {'n=' + str(ok[0]) if ok else 'not within n<=50'}")
        print("\n1% error reached by: " + "; ".join(reach))


def plot_accuracy(r: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(r["models"]), figsize=(10, 4), sharey=True)
    for ax, (name, m) in zip(axes, r["models"].items()):
        for method, errs in m["errors"].items():
            ns = sorted(errs, key=int)
            ax.loglog([int(n) for n in ns], [errs[n]["vs_gl2000"] for n in ns], marker="o", label=method)
        ax.axhline(0.01, color="grey", ls=":", lw=1)
        ax.set_xticks([5, 10, 20, 50])
        ax.set_xticklabels(["5", "10", "20", "50"])
        ax.minorticks_off()
        ax.set_title(f"Small ({name}), test accuracy {m['test_accuracy']:.2f}")
        ax.set_xlabel("n_steps")
    axes[0].set_ylabel("relative L1 error vs n_steps=2000")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- 4. the auto rule


def chunk_rule_sweep(repeats: int) -> Dict[str, Any]:
    """Time per call against the chunk's saved bytes for four models (the data behind the
    CPU rule of ``captum_robust._utils.chunking``): batch 32, n_steps 50, plain mode."""
    from torch import nn

    from captum_robust._utils.chunking import SavedBytesMeter
    from captum_robust.models import MadryMNIST, Pool

    torch.manual_seed(0)
    models = {
        "Small": Small(in_channels=1),
        "Pool": Pool(in_channels=1),
        "MadryMNIST": MadryMNIST(in_channels=1),
        "MLP 784-256-10": nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),
    }
    sizes = [32, 64, 128, 256, 512, 800, 1600]
    x = torch.rand(32, 1, 28, 28)
    target = torch.randint(0, 10, (32,))
    out: Dict[str, Any] = {"batch": 32, "n_steps": 50, "repeats": repeats, "models": {}}
    for name, model in models.items():
        model.eval()
        meter = SavedBytesMeter(32, exclude=list(model.parameters()))
        with meter:
            input_gradient(model, (x,), target)
        ig = BatchedIntegratedGradients(model)
        configs = {
            str(c): (lambda c=c: ig.attribute(x, target=target, n_steps=50, internal_batch_size=c)) for c in sizes
        }
        configs["auto"] = lambda: ig.attribute(x, target=target, n_steps=50, internal_batch_size="auto")
        picked = auto_pick(configs["auto"])
        times = round_robin_clocks(configs, repeats, ("wall", "cpu"))
        med = medians(times["cpu"])
        best = min(med[str(c)] for c in sizes)
        out["models"][name] = {
            "saved_bytes_per_row": meter.per_row,
            "auto_chunk_rows": picked,
            "median_cpu_seconds": med,
            "median_wall_seconds": medians(times["wall"]),
            "relative_to_best": {k: v / best for k, v in med.items()},
            "chunk_mib": {str(c): c * meter.per_row / 2**20 for c in sizes},
        }
    return out


def print_rule(r: Dict[str, Any]) -> None:
    print(f"\n### Chunk size vs time (CPU time relative to the best fixed chunk; batch {r['batch']}, "
          f"n_steps {r['n_steps']}, median of {r['repeats']}); in brackets the chunk's saved MiB\n")
    sizes = ["32", "64", "128", "256", "512", "800", "1600"]
    rows = []
    for name, m in r["models"].items():
        rows.append(
            [f"{name} ({m['saved_bytes_per_row'] / 1024:.1f} KiB/row)"]
            + [f"{m['relative_to_best'][c]:.2f} ({m['chunk_mib'][c]:.0f})" for c in sizes]
            + [f"{m['relative_to_best']['auto']:.2f} ({m['auto_chunk_rows']} rows)"]
        )
    print(markdown_table(["model"] + sizes + ["auto"], rows))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="round-robin repeats, plain mode")
    parser.add_argument("--cg-repeats", type=int, default=3, help="round-robin repeats, create_graph mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument(
        "--chunk-rule", action="store_true",
        help="only the chunk-size sweep behind the auto rule (writes integrated_gradients_chunk_rule.json)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "integrated_gradients.json")
    args = parser.parse_args()
    if args.child:
        cg_child(args.child)
        return
    torch.set_num_threads(check_threads(parser, args))
    report: Dict[str, Any] = {"machine": machine_info()}
    print(f"Machine: {report['machine']['cpu']}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    if args.chunk_rule:
        rule = chunk_rule_sweep(max(3, args.repeats // 3))
        rule["machine"] = report["machine"]
        print_rule(rule)
        path = write_json(RESULTS / "integrated_gradients_chunk_rule.json", rule)
        print(f"\nwrote {path}")
        return
    if not args.skip_speed:
        # the create_graph study starts its memory children before this process grows
        report["create_graph"] = create_graph_study(args.cg_repeats, args.threads, args.skip_memory)
        report["plain"] = speed_plain(args.repeats)
        print_plain(report["plain"])
        print_cg(report["create_graph"])
    if not args.skip_accuracy:
        report["accuracy"] = accuracy_study()
        print_accuracy(report["accuracy"])
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot_accuracy(report["accuracy"], RESULTS / "integrated_gradients_accuracy.png")
    write_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
