"""ROAR (remove and retrain) on the embedded digits: how faithful are the attributions of a
normally trained and of an adversarially (PGD-l2) trained ``Small``? (issue 8)

Protocol (Hooker et al. 2019, sec. 3, as used by Zeng et al., supplementary Table 1 / Fig. 1):

1. Two explained models, both ``captum_robust.models.Small`` on the 8 x 8 digits (1,437 train /
   360 test images, ``load_digits(size=8)``): **normal** (Adam on the cross-entropy) and
   **robust** (Madry's PGD-l2 adversarial training, ``PGDAdversarialLoss(norm="l2")``, as Zeng
   et al. use a PGD-l2 model; eps ``--eps``).
2. Attributions of each, for the label, ranked by ``|map|``: **saliency** (vanilla gradient,
   Captum's ``Saliency``; Zeng et al.'s method), **IG** (``BatchedIntegratedGradients``, zero
   baseline, 32 Gauss-Legendre steps), **SmoothGrad** (``ScaledSmoothGrad``: mean |gradient|
   over 32 noisy copies, sigma 0.15), **SmoothGrad²** (``QuadraticSmoothGrad``, squared gradients:
   Hooker et al.'s SG-SQ, one of the two estimators that beat random there), **CAM** (``CAM``, the 2 x 2 map upsampled bilinearly to
   8 x 8) -- and the **random** ranking (independent of the model).
3. ``captum_robust.robust.evaluation.roar``: for each fraction (Hooker's 10..90%) the top
   pixels of every training and test image are replaced by the training set's mean pixel; a
   fresh ``Small`` is trained (Adam, ``--retrain-epochs``) on the modified training set and
   tested on the modified test set, ``--repeats`` times with the same seeds for every row
   (common random numbers), so the reference (fraction 0) is the same models in every row.

Lower accuracy after removal = the attribution found the features the task needs. The table
gives mean (std over repeats) per fraction and the normalized area under the curve
(average accuracy over 0..0.9; lower is more faithful).

Prints a markdown table, writes ``benchmarks/results/roar[_quick].json`` and
``benchmarks/results/roar[_quick].png`` (accuracy vs fraction removed, one panel per model).

Usage::

    python benchmarks/roar.py            # about 5 minutes on one thread
    python benchmarks/roar.py --quick    # well under a minute
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

import torch
from torch.utils.data import DataLoader

from captum_robust.attr import CAM, BatchedIntegratedGradients, QuadraticSmoothGrad, ScaledSmoothGrad
from captum_robust.data import load_digits
from captum_robust.models import Small
from captum_robust.robust.attacks import PGD
from captum_robust.robust.evaluation import roar
from captum_robust.robust.regularizers import PGDAdversarialLoss
from captum_robust.training import evaluate_accuracy, train_classifier

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import RESULTS, cpu_name, machine_info, markdown_table, write_json  # noqa: E402


def train_robust(model: torch.nn.Module, loader: DataLoader, epochs: int, lr: float, eps: float, steps: int,
                 seed: int, device: torch.device) -> float:
    """Madry's objective with PGD-l2 (eps, ``steps`` steps of 2.5 eps / steps): a plain loop."""
    objective = PGDAdversarialLoss(model, eps=eps, step_size=2.5 * eps / steps, n_iterations=steps, norm="l2",
                                   generator=torch.Generator(device=device).manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = objective(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return time.perf_counter() - t0


def pgd_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> float:
    pgd = PGD(model, eps=eps, step_size=eps / 8, n_iterations=20, norm="l2")
    x_adv, _ = pgd.perturb(x, target=y, generator=torch.Generator(device=x.device).manual_seed(seed))
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def attributions(model: torch.nn.Module, n_samples: int, n_steps: int) -> Dict[str, Any]:
    from captum.attr import Saliency

    return {
        "saliency": (Saliency(model), {"abs": True}),
        "IG": (BatchedIntegratedGradients(model), {"n_steps": n_steps}),
        "SmoothGrad": (ScaledSmoothGrad(model, sigma=0.15, n_samples=n_samples), {}),
        "SmoothGrad²": (QuadraticSmoothGrad(model, sigma=0.15, n_samples=n_samples), {}),
        "CAM": (CAM(model, model.feature_layer, model.classifier), {"upsample": True}),
    }


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in ("normal", "robust") if any(r["model"] == m for r in rows)]
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4), sharey=True, squeeze=False)
    colors = {"random": "k", "saliency": "C0", "IG": "C1", "SmoothGrad": "C2", "SmoothGrad²": "C4", "CAM": "C3"}
    for ax, m in zip(axes[0], models):
        for r in rows:
            if r["model"] in (m, "-"):
                std = [0.0 if s != s else s for s in r["std"]]
                ax.errorbar([100 * f for f in r["fractions"]], r["mean"], yerr=std, marker="o", ms=3, capsize=2,
                            color=colors.get(r["attribution"]), ls="--" if r["attribution"] == "random" else "-",
                            label=r["attribution"])
        ax.set_title(f"attributions of the {m} Small")
        ax.set_xlabel("% of pixels removed (top by |map|) and retrained")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy of the retrained Small")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("ROAR on the 8x8 digits (lower = more faithful)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: List[str] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 fractions, 1 repeat, short training (< 1 minute)")
    p.add_argument("--fractions", type=float, nargs="+", default=None, help="default 0.1 0.3 0.5 0.7 0.9")
    p.add_argument("--repeats", type=int, default=None, help="retrained models per point (default 3; quick 1)")
    p.add_argument("--retrain-epochs", type=int, default=None, help="default 20 (quick 4)")
    p.add_argument("--epochs", type=int, default=None, help="training of the explained models (default 30; quick 8)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eps", type=float, default=1.0, help="PGD-l2 radius of the robust model (pixels in [0, 1])")
    p.add_argument("--pgd-steps", type=int, default=None, help="PGD steps in robust training (default 10; quick 5)")
    p.add_argument("--no-robust", action="store_true", help="only the normally trained model")
    p.add_argument("--replacement", default="mean",
                   help="'mean' (Hooker: per-channel training mean, default), 'zero' or a number; not 'mean' adds "
                        "a suffix to the output names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    q = args.quick
    fractions = tuple(args.fractions or ((0.1, 0.5, 0.9) if q else (0.1, 0.3, 0.5, 0.7, 0.9)))
    repeats = args.repeats or (1 if q else 3)
    retrain_epochs = args.retrain_epochs or (4 if q else 20)
    epochs = args.epochs or (8 if q else 30)
    pgd_steps = args.pgd_steps or (5 if q else 10)
    n_samples, n_steps = (8, 8) if q else (32, 32)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    device = torch.device(args.device)
    t_start = time.perf_counter()

    data = load_digits(size=8, seed=args.seed)
    x_test, y_test = (t.to(device) for t in data.test.tensors)
    train_loader = DataLoader(data.train, batch_size=64, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(data.test, batch_size=512)

    explained: Dict[str, Dict[str, Any]] = {}
    torch.manual_seed(args.seed)
    normal = Small().to(device)
    t0 = time.perf_counter()
    train_classifier(normal, train_loader, epochs=epochs, lr=args.lr, generator=torch.Generator().manual_seed(args.seed))
    normal.eval()
    explained["normal"] = {"model": normal, "train_seconds": time.perf_counter() - t0}
    if not args.no_robust:
        torch.manual_seed(args.seed)
        robust = Small().to(device)
        secs = train_robust(robust, train_loader, epochs, args.lr, args.eps, pgd_steps, args.seed, device)
        explained["robust"] = {"model": robust, "train_seconds": secs}
    for name, e in explained.items():
        e["test_accuracy"] = evaluate_accuracy(e["model"], test_loader)
        e["pgd_l2_accuracy"] = pgd_accuracy(e["model"], x_test, y_test, args.eps, args.seed)
        print(f"explained model {name}: test accuracy {e['test_accuracy']:.3f}, PGD-l2 (eps {args.eps}) accuracy "
              f"{e['pgd_l2_accuracy']:.3f}, trained in {e['train_seconds']:.1f} s", file=sys.stderr)

    replacement = args.replacement if args.replacement in ("mean", "zero") else float(args.replacement)
    common = dict(fractions=fractions, replacement=replacement, epochs=retrain_epochs, lr=args.lr, batch_size=64,
                  repeats=repeats, include_reference=True)
    runs = [("-", "random", "random", {})]
    for name, e in explained.items():
        for aname, (attr, kwargs) in attributions(e["model"], n_samples, n_steps).items():
            runs.append((name, aname, attr, kwargs))
    rows = []
    for model_name, aname, attr, kwargs in runs:
        t0 = time.perf_counter()
        res = roar(lambda: Small().to(device), attr, data.train, data.test, attribution_kwargs=kwargs or None,
                   generator=torch.Generator().manual_seed(args.seed), **common)
        row = {"model": model_name, "attribution": aname, **res.as_dict()}
        rows.append(row)
        print(f"{model_name:>6} {aname:>10}: " + " ".join(f"{m:.3f}" for m in res.mean)
              + f"  nAUC {res.normalized_auc:.3f}  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    refs = {tuple(r["accuracies"][0]) for r in rows}
    assert len(refs) == 1, "the fraction-0 models differ between rows although the seeds are the same"

    def cell(r, i):
        m, s = r["mean"][i], r["std"][i]
        return f"{m:.3f}" if s != s else f"{m:.3f} ± {s:.3f}"

    curve = rows[0]["fractions"]
    headers = ["model", "attribution"] + [f"{100 * f:g}%" for f in curve] + ["nAUC"]
    cells = [[r["model"], r["attribution"]] + [cell(r, i) for i in range(len(curve))] + [f"{r['normalized_auc']:.3f}"]
             for r in rows]
    table = markdown_table(headers, cells, align="ll" + "r" * (len(curve) + 1))
    total = time.perf_counter() - t_start
    machine = f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}, device {device}"
    print(table)
    print()
    print("Explained models: " + "; ".join(
        f"{n}: test accuracy {e['test_accuracy']:.3f}, PGD-l2 (eps {args.eps}) accuracy {e['pgd_l2_accuracy']:.3f}"
        for n, e in explained.items()))
    print(f"Mean ± std of the test accuracy over {repeats} retrained Small(s) per point ({retrain_epochs} epochs); "
          f"nAUC = trapezoid area / {curve[-1]:g} (lower = more faithful); removed pixels -> {replacement}. Total {total:.0f} s on {machine}.")

    out = {
        "settings": {"fractions": list(fractions), "repeats": repeats, "retrain_epochs": retrain_epochs,
                     "explained_epochs": epochs, "lr": args.lr, "eps": args.eps, "pgd_steps": pgd_steps,
                     "smoothgrad_samples": n_samples, "ig_steps": n_steps, "seed": args.seed, "quick": q,
                     "image_size": 8, "replacement": replacement, "ranking": "|map| per pixel, label as target"},
        "machine": machine_info(device=str(device)),
        "explained_models": {n: {k: v for k, v in e.items() if k != "model"} for n, e in explained.items()},
        "rows": rows,
        "table": table,
        "seconds": total,
    }
    stem = ("roar_quick" if q else "roar") + ("" if replacement == "mean" else f"_{args.replacement}")
    write_json(RESULTS / f"{stem}.json", out)
    plot(rows, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / (stem + '.json')} and {RESULTS / (stem + '.png')}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
