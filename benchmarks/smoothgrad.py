"""Speed and memory of Sparsified SmoothGrad and its certificate (issue 4).

Targets (Small on 1 x 28 x 28, batch 8, n_samples 8192, CPU, one thread):

* ``SparsifiedSmoothGrad`` costs at most 1.15x the *bare chunked gradient computation over
  the same noisy samples* (same noise stream, same chunks: forward, backward, sum of the
  gradients -- so the sparsification itself costs at most 15%);
* it is at least as fast as Captum's ``NoiseTunnel(Saliency)`` smoothgrad with the same
  n_samples at Captum's best ``nt_samples_batch_size`` (swept);
* the certificate (``topk_certificate`` on the smoothed maps) costs at most 5% of the
  smoothing; ``CertifiedTopK.attribute`` as a whole at most 1.05x the smoothing;
* peak memory is flat in n_samples: one child process per configuration; the peak resident
  set size added by the call is reported (Linux ``VmHWM`` after resetting it with
  ``/proc/self/clear_refs`` once the model exists; on CUDA ``torch.cuda.max_memory_allocated``).

Ratios are medians over repeats of calls interleaved in one loop (reference, candidate,
reference, ...), so drifts in machine load hit both. On the CPU they are ratios of the
process's CPU time (one thread: the work done), which a busy shared machine disturbs far
less than wall time; wall-clock ratios are printed and saved too. Prints markdown tables and writes
``benchmarks/results/smoothgrad.json`` (``smoothgrad_<device>.json`` off the CPU).

Usage::

    python benchmarks/smoothgrad.py              # the issue's configuration (a few minutes)
    python benchmarks/smoothgrad.py --quick      # n_samples 1024, fewer repeats (about a minute)
    python benchmarks/smoothgrad.py --device cuda --image-size 224 --channels 3 --model wrn
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch
from captum.attr import NoiseTunnel, Saliency

from captum_robust.attr import CertifiedTopK, SparsifiedSmoothGrad
from captum_robust.attr import certify
from captum_robust.attr._core._smoothing import _NoiseStream
from captum_robust.attr._core.saliency import input_gradient
from captum_robust.models import Small, WideResNet

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import (  # noqa: E402
    RESULTS,
    add_common_args,
    check_threads,
    machine_info,
    markdown_table,
    medians,
    proc_status_mb,
    round_robin_clocks,
    write_json,
)


def build(args: argparse.Namespace):
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.model == "small":
        model = Small(in_channels=args.channels)
    else:  # a randomly initialised ResNet-like model, for timing at ImageNet size
        model = WideResNet(depth=16, widen_factor=2, in_channels=args.channels, num_classes=1000)
    model = model.to(device).eval()
    x = torch.rand(args.batch, args.channels, args.image_size, args.image_size, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def bare_chunked_gradients(model, x, y, sigma, n_samples, internal_batch_size, generator):
    """The reference: the same noisy points in the same chunks, forward + backward + sum of gradients."""
    batch = x.shape[0]
    per_chunk = max(1, internal_batch_size // batch)
    stream = _NoiseStream((x,), generator)
    acc = torch.zeros(batch, x[0].numel(), dtype=torch.float64, device=x.device)
    done = 0
    while done < n_samples:
        s = min(per_chunk, n_samples - done)
        (noise,) = stream.take(s)
        points = (x.unsqueeze(0) + sigma * noise).reshape((s * batch,) + tuple(x.shape[1:]))
        (g,) = input_gradient(model, (points,), y.repeat(s))
        acc += g.reshape(s, batch, -1).sum(0)
        done += s
    return acc / n_samples


# ---------------------------------------------------------------------------- memory children


def child(args: argparse.Namespace) -> None:
    """Run one configuration once and print its memory as JSON (called in a fresh process).

    On Linux the peak resident set size is reset (``/proc/self/clear_refs``) after the model
    and inputs exist, so ``added_mb`` is the peak added by the call itself; ``maxrss_mb`` is
    the whole process's peak (dominated by imports).
    """
    torch.set_num_threads(1)
    model, x, y = build(args)
    device = x.device
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = proc_status_mb("VmRSS")
    except OSError:
        base = None
    if args.child in ("sparsified", "unchunked"):
        rows = args.internal_batch_size if args.child == "sparsified" else args.child_n_samples * x.shape[0]
        SparsifiedSmoothGrad(model, args.sparsity, args.sigma, args.child_n_samples).attribute(
            x, target=y, internal_batch_size=rows, generator=torch.Generator(device).manual_seed(0)
        )
    elif args.child == "captum":
        NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=args.child_n_samples, nt_samples_batch_size=args.nt_batch,
            stdevs=args.sigma, target=y, abs=True,
        )
    elif args.child == "idle":
        model(x)
    peak = {"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if base is not None:
        peak["added_mb"] = proc_status_mb("VmHWM") - base
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak["cuda_added_mb"] = (torch.cuda.max_memory_allocated() - cuda_base) / 2**20
    print(json.dumps(peak))


def peak_memory(args: argparse.Namespace, which: str, n_samples: int, nt_batch: int) -> Dict[str, float]:
    cmd = [
        sys.executable, __file__, "--child", which, "--child-n-samples", str(n_samples), "--nt-batch", str(nt_batch),
        "--device", args.device, "--model", args.model, "--channels", str(args.channels),
        "--image-size", str(args.image_size), "--batch", str(args.batch), "--sigma", str(args.sigma),
        "--sparsity", str(args.sparsity), "--internal-batch-size", str(args.internal_batch_size),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """The options (``--quick`` shrinks the sizes); threads checked >= 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, quick="n_samples 1024 and fewer repeats", out=None, seed=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["small", "wrn"], default="small")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n-samples", type=int, default=8192)
    parser.add_argument("--sigma", type=float, default=0.2)
    parser.add_argument("--sparsity", type=float, default=0.1)
    parser.add_argument("--internal-batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nt-batches", default="16,32,64,128,256", help="Captum nt_samples_batch_size sweep")
    parser.add_argument("--memory-n-samples", default="512,4096,16384")
    parser.add_argument("--unchunked-n-samples", default="512,2048",
                        help="also measure all samples in one pass (shows that the measurement sees growth)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-n-samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--nt-batch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    check_threads(parser, args)
    if args.quick and not args.child:
        args.n_samples, args.repeats = 1024, 3
        args.memory_n_samples = "256,1024,4096"
        args.unchunked_n_samples = "256,1024"
        args.nt_batches = "64,512"
    return args


def memory_study(args: argparse.Namespace, device: torch.device, best_nt: int) -> Dict[str, Any]:
    """Peak memory against n_samples, a fresh process per configuration; prints the table."""
    ibs = args.internal_batch_size
    memory = []
    for m in [int(v) for v in args.memory_n_samples.split(",")]:
        for which in ("sparsified", "captum"):
            peak = peak_memory(args, which, m, best_nt)
            memory.append({"method": which, "n_samples": m, **peak})
    for m in [int(v) for v in args.unchunked_n_samples.split(",") if v]:
        peak = peak_memory(args, "unchunked", m, best_nt)
        memory.append({"method": "unchunked", "n_samples": m, **peak})
    idle = peak_memory(args, "idle", 1, best_nt)
    key = "cuda_added_mb" if device.type == "cuda" else ("added_mb" if "added_mb" in idle else "maxrss_mb")
    print(f"\nPeak memory added by one call ({key}, fresh process per row; one plain forward pass of the "
          f"batch adds {idle[key]:.1f} MB)\n")
    labels = {"sparsified": f"SparsifiedSmoothGrad, internal_batch_size={ibs}",
              "captum": f"Captum NoiseTunnel(Saliency), nt_samples_batch_size={best_nt}",
              "unchunked": "SparsifiedSmoothGrad, every sample in one pass (for contrast)"}
    print(markdown_table(
        ["method", "n_samples", "peak MB added by the call", "process max RSS MB"],
        [(labels[r["method"]], r["n_samples"], f"{r[key]:.1f}", f"{r['maxrss_mb']:.0f}") for r in memory],
        align="llll",
    ))
    spars = [r for r in memory if r["method"] == "sparsified"]
    growth = max(r[key] for r in spars) - min(r[key] for r in spars)
    flat = growth < 0.1 * max(r[key] for r in spars) + 5
    print(f"\nsparsified: peak memory grows by {growth:.1f} MB from n_samples {spars[0]['n_samples']} to "
          f"{spars[-1]['n_samples']} ({'flat' if flat else 'NOT flat'})")
    return {"memory": memory, "memory_idle": idle, "memory_key": key, "memory_growth_sparsified_mb": growth,
            "memory_flat": flat}


def speed_study(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """Captum's best nt_samples_batch_size, then the interleaved timings of the bare gradients,
    Sparsified SmoothGrad, CertifiedTopK and Captum at its best, and the certificate alone."""
    model, x, y = build(args)
    n = x[0].numel()
    q, ibs, sigma = args.n_samples, args.internal_batch_size, args.sigma
    ssg = SparsifiedSmoothGrad(model, args.sparsity, sigma, q)
    k = max(1, round(0.2 * n))
    wrapper = CertifiedTopK(ssg, k=k, rho=0.03)

    def gen():
        return torch.Generator(device).manual_seed(0)

    def bare():
        return bare_chunked_gradients(model, x, y, sigma, q, ibs, gen())

    def sparsified():
        return ssg.attribute(x, target=y, internal_batch_size=ibs, generator=gen())

    def certified():
        return wrapper.attribute(x, target=y, internal_batch_size=ibs, generator=gen())

    def captum(nt_batch):
        return lambda: NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=q, nt_samples_batch_size=nt_batch, stdevs=sigma, target=y, abs=True
        )

    print(f"# SmoothGrad benchmark: {args.model} {args.channels}x{args.image_size}x{args.image_size}, batch "
          f"{args.batch}, n_samples {q}, internal_batch_size {ibs} rows, device {device}, threads {args.threads}\n")

    # On the CPU the process's CPU time (user + system, time.process_time) is the primary measure:
    # with one thread it counts the work done and is much less disturbed than wall time by other
    # processes on a shared machine. On CUDA only wall time (with synchronisation) is meaningful.
    clock = "CPU" if device.type == "cpu" else "wall"
    clocks = {"primary": time.process_time if device.type == "cpu" else time.perf_counter, "wall": time.perf_counter}

    # 1. Captum's best nt_samples_batch_size (one call each)
    sweep = {}
    captum(int(args.nt_batches.split(",")[0]))()  # warm-up
    for b in [int(v) for v in args.nt_batches.split(",")]:
        sweep[b] = min(round_robin_clocks({b: captum(b)}, 2, clocks, warmup=0, device=device)["primary"][b])
        print(f"captum NoiseTunnel(Saliency) nt_samples_batch_size={b}: {sweep[b]:.2f} s ({clock}, best of 2)")
    best_nt = min(sweep, key=sweep.get)

    # 2. interleaved repeats: bare gradients, sparsified, certified, Captum at its best
    timed = round_robin_clocks(
        {"bare": bare, "sparsified": sparsified, "certified": certified, "captum_best": captum(best_nt)},
        args.repeats, clocks, device=device,
    )
    times, wall = timed["primary"], timed["wall"]
    med = medians(times)
    ratio_bare = statistics.median([s / b for s, b in zip(times["sparsified"], times["bare"])])
    ratio_captum = statistics.median([s / c for s, c in zip(times["sparsified"], times["captum_best"])])
    ratio_wrapper = statistics.median([c / s for c, s in zip(times["certified"], times["sparsified"])])

    # 3. the certificate alone, on the smoothed maps
    maps = sparsified()
    margin = certify.hoeffding_margin(n, q, 0.95)
    cert_fn = lambda: certify.topk_certificate(maps, k, 0.03, sigma, margin)  # noqa: E731
    cert_times = round_robin_clocks({"cert": cert_fn}, 50, clocks, device=device)["primary"]["cert"]
    cert_time = statistics.median(cert_times)
    cert_share = cert_time / med["sparsified"]

    wall_med = medians(wall)
    wall_bare = statistics.median([s_ / b_ for s_, b_ in zip(wall["sparsified"], wall["bare"])])
    wall_captum = statistics.median([s_ / c_ for s_, c_ in zip(wall["sparsified"], wall["captum_best"])])
    return {
        "captum_sweep_seconds": sweep,
        "captum_best_nt_samples_batch_size": best_nt,
        "clock": clock,
        "times_seconds": times,
        "medians_seconds": med,
        "wall_times_seconds": wall,
        "wall_medians_seconds": wall_med,
        "wall_ratio_sparsified_over_bare": wall_bare,
        "wall_ratio_sparsified_over_captum_best": wall_captum,
        "ratio_sparsified_over_bare": ratio_bare,
        "ratio_sparsified_over_captum_best": ratio_captum,
        "certificate_seconds": cert_time,
        "certificate_share_of_smoothing": cert_share,
        "ratio_certified_over_sparsified": ratio_wrapper,
    }


def print_speed(args: argparse.Namespace, r: Dict[str, Any]) -> None:
    """The ratios against their targets and the median times."""
    clock, med, wall_med = r["clock"], r["medians_seconds"], r["wall_medians_seconds"]
    best_nt = r["captum_best_nt_samples_batch_size"]
    rows = [
        ("sparsified / bare chunked gradients", r["ratio_sparsified_over_bare"], "<= 1.15"),
        (f"sparsified / Captum NoiseTunnel(Saliency), nt_samples_batch_size={best_nt}",
         r["ratio_sparsified_over_captum_best"], "<= 1.00"),
        ("certificate (topk_certificate) / sparsified smoothing", r["certificate_share_of_smoothing"], "<= 0.05"),
        ("CertifiedTopK.attribute / sparsified smoothing", r["ratio_certified_over_sparsified"], "<= 1.05"),
    ]
    print()
    print(markdown_table(
        ["quantity", f"ratio ({clock} time, median of {args.repeats} interleaved repeats)", "target", "met"],
        [(name, f"{value:.3f}", target, "yes" if value <= float(target.split()[-1]) else "NO")
         for name, value, target in rows],
        align="llll",
    ))
    print(f"\nwall-clock ratios for reference: sparsified / bare {r['wall_ratio_sparsified_over_bare']:.3f}, "
          f"sparsified / Captum {r['wall_ratio_sparsified_over_captum_best']:.3f}")
    print()
    print(markdown_table(
        ["call", f"median {clock} seconds", "median wall seconds"],
        [(name, f"{value:.3f}", f"{wall_med[name]:.3f}") for name, value in med.items()]
        + [("certificate only", f"{r['certificate_seconds'] * 1e3:.3f} ms", "")],
        align="lll",
    ))


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    speed = speed_study(args, device)
    print_speed(args, speed)
    memory = memory_study(args, device, speed["captum_best_nt_samples_batch_size"])

    result = {
        "config": {k_: (str(v) if isinstance(v, Path) else v) for k_, v in vars(args).items()},
        "machine": machine_info(cuda_device=torch.cuda.get_device_name() if device.type == "cuda" else None),
        **speed,
        **memory,
    }
    out = args.out or RESULTS / ("smoothgrad.json" if device.type == "cpu" else f"smoothgrad_{device.type}.json")
    if args.quick and args.out is None:
        out = out.with_name(out.stem + "_quick.json")
    write_json(out, result)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
