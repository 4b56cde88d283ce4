"""Speed and measured effect sizes of the attacks on attributions (issue 6).

All on ``captum_robust.models.Small`` trained on the embedded digits upsampled to 28 x 28
(the training takes a few seconds and is seeded), on CPU.

Speed (batch 64, Integrated Gradients with ``n_steps=16``, ``riemann_middle``):

1. **Batched vs example by example**: one ``perturb`` on the batch of 64 against 64 calls on
   single examples (same settings, 5 iterations), for ``TopKAttack`` on IG and ``AAI`` on CAM.
   Target: batched >= 8x faster.
2. **Cost of one iteration**: ``(t(T2) - t(T1)) / (T2 - T1)`` for ``TopKAttack`` runs of
   ``T1`` and ``T2`` iterations, against the reference "one differentiable IG evaluation
   (``create_graph=True``) plus its input gradient" on the same batch. Target: at most 1.2x
   (without a surrogate, the attack reuses the differentiable map as the reported one);
   with a softplus surrogate the reported map costs one more, non-differentiable, IG pass.

Timings alternate the configurations in every round (round-robin), report medians over the
repeats and use ``torch.set_num_threads(1)`` and the thread's CPU time as the clock unless
``--threads``/``--wall`` say otherwise.

Effect sizes (correctly classified test images, the first ``--examples``):

3. **TopKAttack on IG** (Ghorbani / Chen: k = 200, top-k intersection measured at k = 100,
   Kendall's tau on the same |IG| maps, sign steps of eps / 10 (0.01 at eps = 0.1 ... 0.03 at
   0.3), ``--iterations`` steps, softplus surrogate beta = 10) against a random-sign
   perturbation of the same l-inf size; measures over the examples whose prediction was kept.
4. **AAI (top-k, K = 8) on raw CAM**: Kendall's tau vs eps, 200 steps of 0.01 (Boopathy),
   with the hinge (lambda = 1, the library default) and without it (the authors' code), and
   a random-sign baseline.
5. **L2TopKAttack vs l2 sign steps** (Levine App. C) on the plain gradient map (through a
   softplus surrogate, beta = 10), top-78 (10% of the pixels) overlap, for several rho, with
   the same budget of gradient steps (Algorithm 1 with P = 10, T = 2 against 20 sign steps
   of rho/500 -- Levine's setting -- rho/100 and rho/50).

Prints markdown tables, writes ``benchmarks/results/attacks[_quick].json`` and
``benchmarks/results/attacks[_quick].png``.

Usage::

    python benchmarks/attacks.py            # about 5-8 minutes on one thread
    python benchmarks/attacks.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import torch

from captum_robust.attr import CAM, BatchedIntegratedGradients, Saliency
from captum_robust.models import Small
from captum_robust.robust.attacks import AAI, L2TopKAttack, TopKAttack, ghorbani_maps, softplus_surrogate
from captum_robust.robust.discrepancy import kendall_tau, topk_intersection, topk_mask
from captum_robust.training import trained_digits_model

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import RESULTS, cpu_name, markdown_table, round_robin, write_json  # noqa: E402

#: the signed input gradient of the target logit, differentiable (``create_graph``), as an attribution
SIGNED_GRADIENT = {"abs": False}


# --------------------------------------------------------------------------- helpers


def random_sign(x: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + eps * (torch.randint(0, 2, x.shape, generator=g).to(x.dtype) * 2 - 1)).clamp(0, 1)


def mean(t: torch.Tensor) -> float:
    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else float("nan")


# --------------------------------------------------------------------------- speed


def speed(model: Small, x: torch.Tensor, repeats: int, clock: Callable[[], float]) -> Dict[str, Any]:
    ig = BatchedIntegratedGradients(model)
    kw = {"n_steps": 16, "method": "riemann_middle"}
    surrogate = softplus_surrogate(model, beta=10.0)
    with torch.no_grad():
        target = model(x).argmax(1)

    def attack(n_iterations: int, sur: Any = None) -> TopKAttack:
        return TopKAttack(model, ig, k=200, measure_k=100, eps=0.1, step_size=0.01, n_iterations=n_iterations,
                          surrogate=sur, attribution_kwargs=kw)

    def reference(xb: torch.Tensor = x, tb: torch.Tensor = target) -> None:
        xg = xb.detach().requires_grad_(True)
        maps = ig.attribute(xg, target=tb, create_graph=True, **kw)
        s = ghorbani_maps(maps)
        obj = (s * topk_mask(s.detach(), 200)).flatten(1).sum(1)
        torch.autograd.grad(obj.sum(), xg)

    five = attack(5)
    aai = AAI(model, CAM(model, model.feature_layer, model.classifier), eps=0.1, step_size=0.01, n_iterations=5)
    gens = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    one_by_one = round_robin(
        {
            "batched": lambda: five.perturb(x, target=target),
            "per-example": lambda: [five.perturb(x[i : i + 1], target=target[i : i + 1]) for i in range(x.shape[0])],
            "ig batched": lambda: reference(),
            "ig per-example": lambda: [reference(x[i : i + 1], target[i : i + 1]) for i in range(x.shape[0])],
            "aai batched": lambda: aai.perturb(x, target=target, generator=gens()),
            "aai per-example": lambda: [
                aai.perturb(x[i : i + 1], target=target[i : i + 1], generator=gens()) for i in range(x.shape[0])
            ],
        },
        max(1, repeats // 3),
        clock,
    )
    t1, t2 = 2, 12
    a1, a2, s1, s2 = attack(t1), attack(t2), attack(t1, surrogate), attack(t2, surrogate)

    per_iter = round_robin(
        {
            "reference": lambda: reference(),
            f"T={t1}": lambda: a1.perturb(x, target=target),
            f"T={t2}": lambda: a2.perturb(x, target=target),
            f"surrogate T={t1}": lambda: s1.perturb(x, target=target),
            f"surrogate T={t2}": lambda: s2.perturb(x, target=target),
        },
        repeats,
        clock,
    )
    med = {k: statistics.median(v) for k, v in {**one_by_one, **per_iter}.items()}
    iteration = (med[f"T={t2}"] - med[f"T={t1}"]) / (t2 - t1)
    iteration_sur = (med[f"surrogate T={t2}"] - med[f"surrogate T={t1}"]) / (t2 - t1)
    # paired per-round estimates, to show the spread
    paired = [(b - a) / (t2 - t1) / r for a, b, r in zip(per_iter[f"T={t1}"], per_iter[f"T={t2}"], per_iter["reference"])]
    return {
        "batch": int(x.shape[0]),
        "ig": kw,
        "median_seconds": med,
        "batched_speedup": med["per-example"] / med["batched"],
        "aai_batched_speedup": med["aai per-example"] / med["aai batched"],
        "ig_batched_speedup": med["ig per-example"] / med["ig batched"],
        "iteration_seconds": iteration,
        "iteration_ratio": iteration / med["reference"],
        "iteration_ratio_paired_median": statistics.median(paired),
        "iteration_ratio_paired_range": [min(paired), max(paired)],
        "iteration_seconds_surrogate": iteration_sur,
        "iteration_ratio_surrogate": iteration_sur / med["reference"],
        "repeats": repeats,
    }


# --------------------------------------------------------------------------- effects


def topk_effect(model: Small, x: torch.Tensor, y: torch.Tensor, eps_list: Sequence[float], iterations: int) -> List[Dict[str, Any]]:
    ig = BatchedIntegratedGradients(model)
    surrogate = softplus_surrogate(model, beta=10.0)
    rows = []
    for eps in eps_list:
        t0 = time.perf_counter()
        attack = TopKAttack(model, ig, k=200, measure_k=100, eps=eps, step_size=eps / 10, n_iterations=iterations,
                            surrogate=surrogate, attribution_kwargs={"n_steps": 16, "method": "riemann_middle"})
        x_adv, result = attack.perturb(x, target=y)
        seconds = time.perf_counter() - t0
        clean = ghorbani_maps(attack.attribution_maps(x, target=y))
        adv = ghorbani_maps(attack.attribution_maps(x_adv, target=y))
        x_rand = random_sign(x, eps)
        rnd = ghorbani_maps(attack.attribution_maps(x_rand, target=y))
        with torch.no_grad():
            kept_rand = model(x_rand).argmax(1) == y
        rows.append({
            "eps": eps,
            "attack_topk100": mean(topk_intersection(clean, adv, 100)),
            "attack_kendall": mean(kendall_tau(clean, adv)),
            "attack_accepted": float(result.accepted.float().mean()),
            "random_topk100": mean(topk_intersection(clean, rnd, 100)[kept_rand]),
            "random_kendall": mean(kendall_tau(clean, rnd)[kept_rand]),
            "random_kept": float(kept_rand.float().mean()),
            "seconds": seconds,
        })
        print(f"  top-k attack eps={eps}: {rows[-1]['attack_topk100']:.3f} vs random {rows[-1]['random_topk100']:.3f} "
              f"({seconds:.1f} s)", file=sys.stderr)
    return rows


def aai_effect(model: Small, x: torch.Tensor, y: torch.Tensor, eps_list: Sequence[float], iterations: int) -> List[Dict[str, Any]]:
    cam = CAM(model, model.feature_layer, model.classifier)
    rows = []
    for eps in eps_list:
        row: Dict[str, Any] = {"eps": eps}
        for name, lam in (("hinge", 1.0), ("no_hinge", 0.0)):
            attack = AAI(model, cam, eps=eps, step_size=0.01, n_iterations=iterations, hinge_weight=lam)
            t0 = time.perf_counter()
            _, result = attack.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
            row[f"{name}_kendall"] = mean(result.similarity)
            row[f"{name}_accepted"] = float(result.accepted.float().mean())
            row[f"{name}_seconds"] = time.perf_counter() - t0
        x_rand = random_sign(x, eps)
        with torch.no_grad():
            kept = model(x_rand).argmax(1) == y
        row["random_kendall"] = mean(attack.similarity(x, x_rand, target=y)[kept])
        row["random_kept"] = float(kept.float().mean())
        rows.append(row)
        print(f"  AAI eps={eps}: {row['hinge_kendall']:.3f} (no hinge {row['no_hinge_kendall']:.3f}, random "
              f"{row['random_kendall']:.3f})", file=sys.stderr)
    return rows


def l2_effect(model: Small, x: torch.Tensor, y: torch.Tensor, rhos: Sequence[float]) -> List[Dict[str, Any]]:
    surrogate = softplus_surrogate(model, beta=10.0)
    rows = []
    for rho in rhos:
        row: Dict[str, Any] = {"rho": rho}
        levine = L2TopKAttack(model, Saliency(model), k=78, rho=rho, n_iterations=10, n_restarts=2, surrogate=surrogate,
                              attribution_kwargs=SIGNED_GRADIENT)
        t0 = time.perf_counter()
        _, r = levine.perturb(x, target=y, generator=torch.Generator().manual_seed(0))
        row["algorithm1"] = mean(r.similarity)
        row["algorithm1_accepted"] = float(r.accepted.float().mean())
        row["algorithm1_seconds"] = time.perf_counter() - t0
        for label, step in (("sign_rho/500", rho / 500), ("sign_rho/100", rho / 100), ("sign_rho/50", rho / 50)):
            attack = TopKAttack(model, Saliency(model), k=78, eps=rho, step_size=step, n_iterations=20, norm="l2",
                                surrogate=surrogate, map_preparation="abs", attribution_kwargs=SIGNED_GRADIENT)
            row[label] = mean(attack.perturb(x, target=y)[1].similarity)
        x_rand = random_sign(x, rho / 28)  # l2 norm <= rho
        row["random"] = mean(levine.similarity(x, x_rand, target=y))
        rows.append(row)
        print(f"  L2 rho={rho}: Alg. 1 {row['algorithm1']:.3f}, sign {row['sign_rho/500']:.3f} / "
              f"{row['sign_rho/100']:.3f} / {row['sign_rho/50']:.3f}", file=sys.stderr)
    return rows


def plot(results: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    t = results["topk_attack"]
    eps = [r["eps"] for r in t]
    axes[0].plot(eps, [r["attack_topk100"] for r in t], "o-", label="TopKAttack: top-100")
    axes[0].plot(eps, [r["random_topk100"] for r in t], "o--", label="random sign: top-100")
    axes[0].plot(eps, [r["attack_kendall"] for r in t], "s-", label="TopKAttack: Kendall")
    axes[0].plot(eps, [r["random_kendall"] for r in t], "s--", label="random sign: Kendall")
    axes[0].set(xlabel="eps (l-inf)", ylabel="similarity to the clean |IG| map", title="Ghorbani top-k attack on IG")
    a = results["aai"]
    eps = [r["eps"] for r in a]
    axes[1].plot(eps, [r["hinge_kendall"] for r in a], "o-", label="AAI top-k, hinge (default)")
    axes[1].plot(eps, [r["no_hinge_kendall"] for r in a], "o--", label="AAI top-k, no hinge")
    axes[1].plot(eps, [r["random_kendall"] for r in a], "s:", label="random sign")
    axes[1].set(xlabel="eps (l-inf)", ylabel="Kendall tau of raw CAM", title="AAI (Boopathy) on CAM")
    l2 = results["l2_topk"]
    rho = [r["rho"] for r in l2]
    axes[2].plot(rho, [r["algorithm1"] for r in l2], "o-", label="L2TopKAttack (P=10, T=2)")
    for label, style in (("sign_rho/500", "s--"), ("sign_rho/100", "s-."), ("sign_rho/50", "s:")):
        axes[2].plot(rho, [r[label] for r in l2], style, label=f"l2 sign steps, {label[5:]}")
    axes[2].plot(rho, [r["random"] for r in l2], "x:", label="random")
    axes[2].set(xlabel="rho (l2)", ylabel="top-78 overlap", title="Levine L2 attack, gradient map")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] = ()) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples, iterations and repeats (about a minute)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--examples", type=int, default=None)
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of the thread CPU time")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-effects", action="store_true")
    args = parser.parse_args(list(argv))
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    clock = time.perf_counter if (args.wall or args.threads != 1) else time.thread_time
    repeats = args.repeats or (3 if args.quick else 9)
    n_examples = args.examples or (16 if args.quick else 64)
    topk_iterations = 20 if args.quick else 100
    aai_iterations = 50 if args.quick else 200

    t_start = time.perf_counter()
    model, _, test, accuracy = trained_digits_model(epochs=10)
    xt, yt = test.tensors
    print(f"Small trained on digits28: test accuracy {accuracy:.4f}", file=sys.stderr)
    results: Dict[str, Any] = {
        "machine": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
                    "clock": "wall" if clock is time.perf_counter else "thread CPU time"},
        "settings": {"quick": args.quick, "repeats": repeats, "examples": n_examples,
                     "topk_iterations": topk_iterations, "aai_iterations": aai_iterations},
        "model": {"test_accuracy": accuracy, "epochs": 10},
    }
    if not args.skip_speed:
        g = torch.Generator().manual_seed(1)
        x64 = xt[torch.randperm(len(xt), generator=g)[:64]]
        results["speed"] = speed(model, x64, repeats, clock)
    if not args.skip_effects:
        with torch.no_grad():
            ok = torch.nonzero(model(xt).argmax(1) == yt).squeeze(1)[:n_examples]
        x, y = xt[ok], yt[ok]
        results["settings"]["effect_examples"] = int(x.shape[0])
        eps_list = (0.05, 0.1, 0.2, 0.3)
        results["topk_attack"] = topk_effect(model, x, y, eps_list, topk_iterations)
        results["aai"] = aai_effect(model, x, y, eps_list, aai_iterations)
        results["l2_topk"] = l2_effect(model, x, y, (0.5, 1.0, 2.0, 3.0))
    results["seconds_total"] = time.perf_counter() - t_start

    suffix = "_quick" if args.quick else ""
    write_json(RESULTS / f"attacks{suffix}.json", results)
    if not args.skip_effects:
        plot(results, RESULTS / f"attacks{suffix}.png")
    print(report(results))
    return results


def report(results: Dict[str, Any]) -> str:
    out = [f"Machine: {results['machine']['cpu']}, {results['machine']['threads']} thread(s), torch "
           f"{results['machine']['torch']}, clock: {results['machine']['clock']}; Small on digits28, test accuracy "
           f"{results['model']['test_accuracy']:.3f}."]
    if "speed" in results:
        s = results["speed"]
        m = s["median_seconds"]
        out += ["", f"Speed (batch {s['batch']}, IG n_steps=16, medians of {s['repeats']} rounds):", ""]
        out.append(markdown_table(
            ["measurement", "time (ms)", "reference", "reference (ms)", "ratio", "target"],
            [
                ["TopKAttack (IG), 5 iterations, 64 single-example calls", f"{1000 * m['per-example']:.0f}",
                 "one batched call", f"{1000 * m['batched']:.0f}", f"{s['batched_speedup']:.1f}x faster batched", ">= 8x"],
                ["(bound for IG attacks) differentiable IG + input gradient, 64 single-example calls",
                 f"{1000 * m['ig per-example']:.0f}", "one batched call", f"{1000 * m['ig batched']:.0f}",
                 f"{s['ig_batched_speedup']:.1f}x faster batched", ""],
                ["AAI (CAM), 5 iterations, 64 single-example calls", f"{1000 * m['aai per-example']:.0f}",
                 "one batched call", f"{1000 * m['aai batched']:.0f}", f"{s['aai_batched_speedup']:.1f}x faster batched", ">= 8x"],
                ["one TopKAttack iteration (no surrogate)", f"{1000 * s['iteration_seconds']:.1f}",
                 "differentiable IG + input gradient", f"{1000 * m['reference']:.1f}", f"{s['iteration_ratio']:.2f}", "<= 1.2"],
                ["one TopKAttack iteration (softplus surrogate)", f"{1000 * s['iteration_seconds_surrogate']:.1f}",
                 "differentiable IG + input gradient", f"{1000 * m['reference']:.1f}", f"{s['iteration_ratio_surrogate']:.2f}", ""],
            ],
        ))
        lo, hi = s["iteration_ratio_paired_range"]
        out.append(f"\nPer-round iteration ratio (no surrogate): median {s['iteration_ratio_paired_median']:.2f}, "
                   f"range [{lo:.2f}, {hi:.2f}].")
    if "topk_attack" in results:
        st = results["settings"]
        out += ["", f"TopKAttack on IG (k=200, measured at top-100; {st['topk_iterations']} steps of eps/10; "
                f"{st['effect_examples']} correctly classified test images) vs a random-sign perturbation of the same size:", ""]
        out.append(markdown_table(
            ["eps", "top-100 attack", "top-100 random", "Kendall attack", "Kendall random", "accepted", "random kept"],
            [[r["eps"], f"{r['attack_topk100']:.3f}", f"{r['random_topk100']:.3f}", f"{r['attack_kendall']:.3f}",
              f"{r['random_kendall']:.3f}", f"{r['attack_accepted']:.2f}", f"{r['random_kept']:.2f}"] for r in results["topk_attack"]],
        ))
        out += ["", f"AAI top-k (K=8) on raw CAM, Kendall's tau ({st['aai_iterations']} steps of 0.01):", ""]
        out.append(markdown_table(
            ["eps", "AAI, hinge (default)", "accepted", "AAI, no hinge (authors' code)", "accepted", "random sign", "random kept"],
            [[r["eps"], f"{r['hinge_kendall']:.3f}", f"{r['hinge_accepted']:.2f}", f"{r['no_hinge_kendall']:.3f}",
              f"{r['no_hinge_accepted']:.2f}", f"{r['random_kendall']:.3f}", f"{r['random_kept']:.2f}"] for r in results["aai"]],
        ))
        out += ["", "L2 attacks on the gradient map (top-78 overlap; 20 gradient steps each):", ""]
        out.append(markdown_table(
            ["rho", "L2TopKAttack (P=10, T=2)", "sign, rho/500 (Levine)", "sign, rho/100", "sign, rho/50", "random"],
            [[r["rho"], f"{r['algorithm1']:.3f}", f"{r['sign_rho/500']:.3f}", f"{r['sign_rho/100']:.3f}",
              f"{r['sign_rho/50']:.3f}", f"{r['random']:.3f}"] for r in results["l2_topk"]],
        ))
    out.append(f"\nTotal {results['seconds_total']:.0f} s.")
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1:])
