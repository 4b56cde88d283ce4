"""Reproduce Levine et al.'s headline: certified top-K robustness versus the sparsity parameter.

For each test image, the certified top-K overlap ``R_cert / K`` (Thm. 2, tight index) of four
smoothed maps -- scaled, quadratic, sparsified and relaxed sparsified SmoothGrad -- with
``K = 0.2 n``, ``rho = 0.03``, confidence 0.95 and 8192 noisy samples (Levine's ImageNet
setting; pixel values in [0, 1], sigma absolute). The reported value is the 60th percentile
over images, computed as in the authors' code (ascending sort, index ``ceil(0.6 (N - 1))``).
The paper's claim: scaled and quadratic SmoothGrad give vacuous certificates, sparsified
SmoothGrad does not (Levine Fig. 1c, 2, 12).

Two models, trained here for a few epochs (nothing is downloaded):

* ``digits28``: ``Small(in_channels=1)`` on scikit-learn's digits upsampled to 1 x 28 x 28
  (n = 784);
* ``rgb32``: ``Small(in_channels=3)`` on the same digits upsampled to 32 x 32 and replicated
  to three channels, a stand-in for a 3 x 32 x 32 (CIFAR-sized) model (n = 3072).

All methods and sparsities of one (model, sigma) pair are computed from the *same* noisy
samples with one gradient pass (:func:`captum_robust.attr.attribute_with_shared_noise`).
The target is each image's predicted class. Prints a markdown table, writes
``benchmarks/results/certificates.json`` and ``certificates.png``.

Usage::

    python benchmarks/certificates.py            # 64 images, 8192 samples, sigma 0.2 (several minutes)
    python benchmarks/certificates.py --quick    # 16 images, 1024 samples (about a minute)
    python benchmarks/certificates.py --sigmas 0.1,0.2,0.5
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

from captum_robust.attr import (
    QuadraticSmoothGrad,
    RelaxedSparsifiedSmoothGrad,
    ScaledSmoothGrad,
    SparsifiedSmoothGrad,
    attribute_with_shared_noise,
)
from captum_robust.attr import certify
from captum_robust.data import load_digits
from captum_robust.models import Small
from captum_robust.training import trained_digits_model

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import RESULTS, add_common_args, check_threads, machine_info, markdown_table, write_json  # noqa: E402


def percentile(values: torch.Tensor, fraction: float) -> float:
    """The authors' percentile: ascending sort, element ``ceil((N - 1) * fraction)``."""
    v = torch.sort(values.flatten()).values
    return float(v[int(math.ceil((v.numel() - 1) * fraction))])


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    """The recipe of :func:`captum_robust.training.trained_digits_model` (Adam, lr 3e-3, batch 32),
    for the three-channel stand-in, which that helper does not build."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def build_models(epochs: int) -> Dict[str, dict]:
    out = {}
    for name, size, channels in (("digits28", 28, 1), ("rgb32", 32, 3)):
        start = time.perf_counter()
        if channels == 1:
            model, _, test, acc = trained_digits_model(epochs, size=size, seed=0, lr=3e-3, batch_size=32)
            xt = test.tensors[0]
        else:
            torch.manual_seed(0)
            data = load_digits(size=size, seed=0)
            x, y = data.train.tensors
            xt, yt = data.test.tensors
            x, xt = x.expand(-1, 3, -1, -1).contiguous(), xt.expand(-1, 3, -1, -1).contiguous()
            model = Small(in_channels=channels)
            train(model, x, y, epochs, seed=0)
            with torch.no_grad():
                acc = float((model(xt).argmax(1) == yt).float().mean())
        out[name] = {"model": model, "test": xt, "accuracy": acc, "train_seconds": time.perf_counter() - start,
                     "shape": tuple(xt.shape[1:])}
        print(f"{name}: {channels}x{size}x{size}, test accuracy {acc:.3f} after {epochs} epochs "
              f"({out[name]['train_seconds']:.0f} s)")
    return out


def method_list(model, sigma: float, q: int, sparsities: List[float], relaxed_sparsities: List[float], clip: float):
    methods = [("scaled", None, ScaledSmoothGrad(model, sigma, q)), ("quadratic", None, QuadraticSmoothGrad(model, sigma, q))]
    methods += [("sparsified", t, SparsifiedSmoothGrad(model, t, sigma, q)) for t in sparsities]
    methods += [("relaxed", t, RelaxedSparsifiedSmoothGrad(model, t, clip, sigma, q)) for t in relaxed_sparsities]
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, quick="16 images, 1024 samples, 3 epochs", out=None, seed=None, threads=2)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=8192)
    parser.add_argument("--sigmas", default="0.2")
    parser.add_argument("--rho", type=float, default=0.03)
    parser.add_argument("--k-fraction", type=float, default=0.2)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--sparsities", default="0.02,0.05,0.1,0.2,0.5")
    parser.add_argument("--relaxed-sparsities", default="0.02,0.05,0.1,0.2,0.5,1.0")
    parser.add_argument("--clip", type=float, default=0.01)
    parser.add_argument("--percentile", type=float, default=0.6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="images per call")
    parser.add_argument("--internal-batch-size", type=int, default=256)
    parser.add_argument("--models", default="digits28,rgb32")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write (the PNG goes beside it)")
    args = parser.parse_args()
    if args.quick:
        args.n_images, args.n_samples, args.epochs = 16, 1024, 3
    torch.set_num_threads(check_threads(parser, args))
    sigmas = [float(s) for s in args.sigmas.split(",")]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    relaxed_sparsities = [float(s) for s in args.relaxed_sparsities.split(",")]
    started = time.perf_counter()
    models = build_models(args.epochs)
    rows = []
    for name in args.models.split(","):
        entry = models[name]
        model, x = entry["model"], entry["test"][: args.n_images]
        n = x[0].numel()
        k = certify.resolve_k(args.k_fraction, n)
        margin = certify.hoeffding_margin(n, args.n_samples, args.confidence)
        with torch.no_grad():
            target = model(x).argmax(1)
        for sigma in sigmas:
            methods = method_list(model, sigma, args.n_samples, sparsities, relaxed_sparsities, args.clip)
            maps: List[List[torch.Tensor]] = [[] for _ in methods]
            start = time.perf_counter()
            for b in range(0, len(x), args.batch):
                out = attribute_with_shared_noise(
                    [m for _, _, m in methods], x[b : b + args.batch], target=target[b : b + args.batch],
                    n_samples=args.n_samples, internal_batch_size=args.internal_batch_size,
                    generator=torch.Generator().manual_seed(1000 + b),
                )
                for i, m in enumerate(out):
                    maps[i].append(m)
            seconds = time.perf_counter() - start
            print(f"{name} sigma={sigma}: {len(x)} images x {args.n_samples} samples, {len(methods)} maps each, "
                  f"{seconds:.0f} s")
            for (method, tau, _), parts in zip(methods, maps):
                m = torch.cat(parts)
                cert = certify.topk_certificate(m, k, args.rho, sigma, margin)
                frac = cert.double() / k
                rows.append({
                    "model": name, "n": n, "k": k, "sigma": sigma, "method": method, "sparsity": tau,
                    "clip": args.clip if method == "relaxed" else None,
                    "percentile_fraction": percentile(frac, args.percentile),
                    "mean_fraction": float(frac.mean()), "max_fraction": float(frac.max()),
                    "per_image": frac.tolist(),
                })
    # ------------------------------------------------------------------ table
    print(f"\nCertified top-K overlap R_cert / K, {int(args.percentile * 100)}th percentile over "
          f"{args.n_images} test images (K = {args.k_fraction} n, rho = {args.rho}, p = {args.confidence}, "
          f"{args.n_samples} samples)\n")
    taus = sorted(set(relaxed_sparsities) | set(sparsities))
    table = []
    for name in args.models.split(","):
        for sigma in sigmas:
            for method in ("scaled", "quadratic", "sparsified", "relaxed"):
                sel = [r for r in rows if r["model"] == name and r["sigma"] == sigma and r["method"] == method]
                if method in ("scaled", "quadratic"):
                    cells = [f"{sel[0]['percentile_fraction']:.3f} (any)"] + [""] * (len(taus) - 1)
                else:
                    by_tau = {r["sparsity"]: r["percentile_fraction"] for r in sel}
                    cells = [f"{by_tau[t]:.3f}" if t in by_tau else "-" for t in taus]
                label = method if method != "relaxed" else f"relaxed (clip {args.clip})"
                table.append([name, f"{sigma:g}", label] + cells)
    print(markdown_table(["model", "sigma", "method"] + [f"tau={t:g}" for t in taus], table, align="l" * (3 + len(taus))))
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")
    # ------------------------------------------------------------------ outputs
    out = args.out or RESULTS / ("certificates_quick.json" if args.quick else "certificates.json")
    write_json(out, {
        "config": vars(args),
        "models": {k_: {"accuracy": v["accuracy"], "shape": v["shape"], "train_seconds": v["train_seconds"]}
                   for k_, v in models.items()},
        "machine": machine_info(),
        "total_seconds": total,
        "rows": rows,
    })
    plot(rows, args, sigmas, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(rows, args, sigmas, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = args.models.split(",")
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    colors = {"sparsified": "C0", "relaxed": "C1", "scaled": "C2", "quadratic": "C3"}
    dashes = ["-", "--", ":", "-."]
    for ax, name in zip(axes[0], names):
        for si, sigma in enumerate(sigmas):
            style = dashes[si % len(dashes)]
            sel = [r for r in rows if r["model"] == name and r["sigma"] == sigma]
            for method, marker in (("sparsified", "o"), ("relaxed", "s")):
                pts = sorted((r["sparsity"], r["percentile_fraction"]) for r in sel if r["method"] == method)
                label = method if method == "sparsified" else f"relaxed (clip {args.clip})"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, color=colors[method],
                        label=f"{label}, sigma={sigma:g}")
            for method in ("scaled", "quadratic"):
                value = [r["percentile_fraction"] for r in sel if r["method"] == method][0]
                ax.axhline(value, linestyle=style, color=colors[method], alpha=0.8,
                           label=f"{method} (no tau), sigma={sigma:g}")
        ax.set_xscale("log")
        ax.set_xlabel("sparsification parameter tau")
        ax.set_ylabel(f"certified top-K overlap / K ({int(args.percentile * 100)}th pct)")
        ax.set_title(f"{name} (K = {args.k_fraction} n, rho = {args.rho}, q = {args.n_samples})")
        ax.set_ylim(-0.05, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
