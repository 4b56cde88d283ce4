"""Cost per training step of the robust objectives, and IG-Norm at matched IG accuracy (issue 7).

All on ``captum_robust.models.Small`` (ReLU) on the embedded digits upsampled to 28 x 28,
batch 50, the papers' MNIST settings: eps = 0.3 (l-inf), inner PGD of 40 steps of 0.01 with a
random start; IG-Norm lambda = 1 and IG-Sum-Norm beta = 0.1 with Chen's quadrature (right
Riemann sums, 10 path points in the attack, 50 in the outer term); Int / Int2 gamma = None
(the paper's tuned strength) on CAM; TRADES beta = 6; saliency alignment lambda = 0.001 with a
frozen teacher. The model is first trained normally for a few seconds so the costs are those
of a realistic model.

1. **Cost per step** (forward, inner attack, backward and an Adam step), for Normal, PGD-AT,
   TRADES, IG-Norm, IG-Sum-Norm, Int, Int2, Int-Adv, Int2-Adv, saliency alignment and the
   matched-accuracy IG-Norm of section 2. Rounds alternate the methods in a random order;
   medians over ``--repeats`` rounds; one torch thread and the thread's CPU time as the clock.
   Targets: Int <= 1.5x PGD-AT (same PGD steps); IG-Norm / Int reported (the paper: >= 4x).
2. **IG accuracy on the attack's paths.** For test digits, x' = the IG-Norm attack's point (the
   paper configuration), the IG of the loss from x to x' by each rule and n_steps against a
   Gauss-Legendre reference with 512 points (relative L1 error over the batch). The cheapest
   rule reaching the error of Chen's right Riemann sum with 10 points is chosen for the attack,
   the cheapest reaching that of the 50-point sum for the outer term. Target: that
   configuration at least 3x faster per step than Chen's. Quadrature alone halves the attack's
   path points; a third configuration also halves its iterations (20 steps of 0.02, the same
   total travel) and the script measures what that costs in attack strength: the IG norm of
   the loss (Gauss-Legendre 128) at the x' each configuration's attack returns.
3. **The robustness each configuration reaches**: the normally trained model fine-tuned for
   ``--train-steps`` steps (Adam 1e-3, batch 50) with CE alone, with IG-Norm (Chen's
   quadrature), with IG-Norm (matched) and with the 20-step attack; then, on test digits: clean accuracy, the IG norm
   under the paper-configuration attack (what IG-Norm minimizes) and Ghorbani's top-k attack on
   IG (k = 200, top-100 intersection and Kendall's tau over examples whose prediction was kept).

Prints markdown tables, writes ``benchmarks/results/training_cost[_quick].json``.

Usage::

    python benchmarks/training_cost.py            # about 15-20 minutes on one thread
    python benchmarks/training_cost.py --quick    # about 2 minutes
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from captum_robust.attr import BatchedIntegratedGradients
from captum_robust.models import Small
from captum_robust.robust.attacks import TopKAttack, ghorbani_maps, softplus_surrogate
from captum_robust.robust.discrepancy import kendall_tau, topk_intersection
from captum_robust.robust.regularizers import (
    IGNorm,
    IGSumNorm,
    Int,
    Int2,
    Int2Adv,
    IntAdv,
    PGDAdversarialLoss,
    SaliencyAlignment,
    TRADESLoss,
)
from captum_robust.training import trained_digits_model

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import RESULTS, machine_info, markdown_table, medians, round_robin, write_json  # noqa: E402

BATCH = 50
PGD = {"eps": 0.3, "step_size": 0.01, "n_iterations": 40}
PAPER_IG = {"n_steps": 50, "method": "riemann_right", "attack_n_steps": 10, "attack_method": "riemann_right"}
SHORT_ATTACK = {"step_size": 0.02, "n_iterations": 20}
SHORT_NAME = "IG-Norm (matched, 20 attack steps)"
METHODS = ("riemann_right", "riemann_middle", "gausslegendre")
N_GRID = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 50)


def pretrain(epochs: int, softplus: Any = None, seed: int = 0) -> Tuple[Small, Any]:
    """``Small`` trained normally on the digits (28 x 28): the shared recipe of
    :func:`captum_robust.training.trained_digits_model` with Adam 3e-3 and batches of 50."""
    trained = trained_digits_model(epochs, size=28, seed=seed, lr=3e-3, batch_size=BATCH, softplus=softplus)
    return trained.model, trained


def objectives(model: Small, teacher: Small, matched: Dict[str, Any], seed: int) -> Dict[str, Callable[..., torch.Tensor]]:
    """Name -> loss(x, y) on ``model`` (the user's training loss with each method)."""
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    ce = lambda x, y: F.cross_entropy(model(x), y)  # noqa: E731
    ig_norm = IGNorm(model, eps=0.3, lam=1.0, step_size=0.01, n_iterations=40, generator=g(), **PAPER_IG)
    ig_fast = IGNorm(model, eps=0.3, lam=1.0, step_size=0.01, n_iterations=40, generator=g(), **matched)
    ig_short = IGNorm(model, eps=0.3, lam=1.0, generator=g(), **SHORT_ATTACK, **matched)
    ig_sum = IGSumNorm(model, eps=0.3, beta=0.1, step_size=0.01, n_iterations=40, generator=g(), **PAPER_IG)
    pgd_at = PGDAdversarialLoss(model, generator=g(), **PGD)
    trades = TRADESLoss(model, beta=6.0, generator=g(), **PGD)
    int1 = Int(model, generator=g(), **PGD)
    int2 = Int2(model, generator=g(), **PGD)
    int_adv = IntAdv(model, generator=g(), **PGD)
    int2_adv = Int2Adv(model, generator=g(), **PGD)
    align = SaliencyAlignment(model, teacher, lam=0.001)
    return {
        "Normal": ce,
        "PGD-AT": pgd_at,
        "TRADES": trades,
        "IG-Norm": lambda x, y: ce(x, y) + ig_norm(x, y),
        "IG-Sum-Norm": ig_sum,
        "Int": lambda x, y: ce(x, y) + int1(x, y),
        "Int2": lambda x, y: ce(x, y) + int2(x, y),
        "Int-Adv": int_adv,
        "Int2-Adv": int2_adv,
        "saliency alignment": lambda x, y: ce(x, y) + align(x, y),
        "IG-Norm (matched)": lambda x, y: ce(x, y) + ig_fast(x, y),
        SHORT_NAME: lambda x, y: ce(x, y) + ig_short(x, y),
    }


def cost_per_step(base: Small, batches: List[Tuple[torch.Tensor, torch.Tensor]], matched: Dict[str, Any],
                  repeats: int, names: List[str]) -> Dict[str, List[float]]:
    """Thread CPU seconds of one training step of each method: the methods take turns in a fresh
    random order every round (after one warm-up round); round ``r`` trains on batch ``r``."""
    teacher = copy.deepcopy(base).eval()
    steps = {}
    for n in names:
        model = copy.deepcopy(base).train()
        loss_fn = objectives(model, teacher, matched, seed=1)[n]
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(loss_fn=loss_fn, opt=opt, calls=itertools.count()):
            x, y = batches[next(calls) % len(batches)]
            loss = loss_fn(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[n] = step
    return round_robin(steps, repeats, time.thread_time, warmup=1, shuffle_seed=0)


def ig_errors(model: Small, x: torch.Tensor, y: torch.Tensor) -> Dict[str, Any]:
    """Relative L1 error of the loss IG from x to the attack's x', per rule and n_steps."""
    reg = IGNorm(model, eps=0.3, lam=1.0, step_size=0.01, n_iterations=40,
                 generator=torch.Generator().manual_seed(2), **PAPER_IG).eval()
    reg(x, y)
    x_adv = reg.last_adversarial
    loss_ig = BatchedIntegratedGradients(lambda r, t: F.cross_entropy(model(r), t, reduction="none"))

    def ig(n: int, method: str) -> torch.Tensor:
        return loss_ig.attribute(x_adv.double(), baselines=x.double(), additional_forward_args=(y,),
                                 n_steps=n, method=method).detach()

    model.double()
    try:
        ref = ig(512, "gausslegendre")
        errors = {m: {n: float((ig(n, m) - ref).abs().sum() / ref.abs().sum()) for n in N_GRID} for m in METHODS}
    finally:
        model.float()
    return {"errors": errors, "ig_norm_at_x_adv": float(ref.abs().flatten(1).sum(1).mean())}


def attack_strength(model: Small, x: torch.Tensor, y: torch.Tensor, matched: Dict[str, Any]) -> Dict[str, float]:
    """How strong each configuration's inner attack is: the IG norm of the loss at the x' it
    returns, integrated with Gauss-Legendre 128 (mean over the examples), on the same model."""
    configs = {
        "IG-Norm": dict(step_size=0.01, n_iterations=40, **PAPER_IG),
        "IG-Norm (matched)": dict(step_size=0.01, n_iterations=40, **matched),
        SHORT_NAME: dict(**SHORT_ATTACK, **matched),
    }
    reference = IGNorm(model, eps=0.3, lam=1.0, n_steps=128, method="gausslegendre").eval()
    out = {}
    for name, cfg in configs.items():
        reg = IGNorm(model, eps=0.3, lam=1.0, generator=torch.Generator().manual_seed(2), **cfg).eval()
        reg(x, y)
        with torch.no_grad():
            out[name] = float(reference.objective_at(x, y, reg.last_adversarial))
    return out


def cheapest(errors: Dict[str, Dict[int, float]], budget: float) -> Tuple[str, int]:
    best = None
    for m, row in errors.items():
        for n in N_GRID:
            if row[n] <= budget and (best is None or n < best[1]):
                best = (m, n)
                break
    assert best is not None
    return best


def fine_tune(base: Small, data: Any, loss_name: str, matched: Dict[str, Any], steps: int, seed: int) -> Tuple[Small, float]:
    model = copy.deepcopy(base).train()
    fn = objectives(model, copy.deepcopy(base).eval(), matched, seed)[loss_name]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data.train.tensors
    g = torch.Generator().manual_seed(seed)
    t0 = time.thread_time()
    done = 0
    while done < steps:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - BATCH + 1, BATCH):
            if done == steps:
                break
            idx = perm[i : i + BATCH]
            loss = fn(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
    return model.eval(), time.thread_time() - t0


def robustness(model: Small, x: torch.Tensor, y: torch.Tensor, topk_iterations: int) -> Dict[str, float]:
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    keep = model(x).argmax(1) == y
    xc, yc = x[keep], y[keep]
    reg = IGNorm(model, eps=0.3, lam=1.0, step_size=0.01, n_iterations=40,
                 generator=torch.Generator().manual_seed(3), **PAPER_IG).eval()
    ig_under_attack = float(reg(xc, yc))
    ig = BatchedIntegratedGradients(model)
    attack = TopKAttack(model, ig, k=200, measure_k=100, eps=0.3, step_size=0.01, n_iterations=topk_iterations,
                        surrogate=softplus_surrogate(model, beta=10.0),
                        attribution_kwargs={"n_steps": 16, "method": "riemann_middle"})
    x_adv, result = attack.perturb(xc, target=yc)
    clean = ghorbani_maps(attack.attribution_maps(xc, target=yc))
    adv = ghorbani_maps(attack.attribution_maps(x_adv, target=yc))
    return {
        "clean_accuracy": acc,
        "ig_norm_under_attack": ig_under_attack,
        "topk100": float(topk_intersection(clean, adv, 100).mean()),
        "kendall": float(kendall_tau(clean, adv).mean()),
        "n_examples": int(keep.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per method (median)")
    parser.add_argument("--train-steps", type=int, default=60, help="fine-tuning steps per configuration")
    parser.add_argument("--examples", type=int, default=32, help="test digits for sections 2 and 3")
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--softplus", type=float, default=None, metavar="BETA",
                        help="train and attack Small(softplus=BETA) instead of the ReLU network")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 6 fine-tuning steps, 8 examples")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.train_steps, args.examples, args.pretrain_epochs = 2, 6, 8, 10
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    t_start = time.perf_counter()
    base, data = pretrain(args.pretrain_epochs, args.softplus)
    xt, yt = data.test.tensors
    with torch.no_grad():
        right = base(xt).argmax(1) == yt
    xe, ye = xt[right][: args.examples], yt[right][: args.examples]
    print(f"pretrained: test accuracy {float(right.float().mean()):.3f}", file=sys.stderr)

    # 2. IG accuracy on the attack's paths -> the matched configuration
    acc = ig_errors(base, xe, ye)
    errors = acc["errors"]
    attack_budget = errors["riemann_right"][10]
    outer_budget = errors["riemann_right"][50]
    a_method, a_n = cheapest(errors, attack_budget)
    o_method, o_n = cheapest(errors, outer_budget)
    matched = {"n_steps": o_n, "method": o_method, "attack_n_steps": a_n, "attack_method": a_method}
    print(f"matched configuration: {matched}", file=sys.stderr)

    # 1. cost per step
    x, y = data.train.tensors
    g = torch.Generator().manual_seed(0)
    batches = [(x[idx], y[idx]) for idx in torch.randperm(len(x), generator=g)[: BATCH * 4].split(BATCH)]
    names = list(objectives(base, copy.deepcopy(base), matched, 0).keys())
    times = cost_per_step(base, batches, matched, args.repeats, names)
    med = medians(times)

    # 3. robustness reached
    trained = {}
    strength = attack_strength(base, xe, ye, matched)
    print(f"attack strength: {strength}", file=sys.stderr)
    for name in ("Normal", "IG-Norm", "IG-Norm (matched)", SHORT_NAME):
        model, seconds = fine_tune(base, data, name, matched, args.train_steps, seed=4)
        trained[name] = {"train_seconds": seconds, **robustness(model, xe, ye, topk_iterations=40 if not args.quick else 5)}
        print(f"  {name}: {trained[name]}", file=sys.stderr)

    out = {
        "machine": machine_info(),
        "settings": {"batch": BATCH, "pgd": PGD, "paper_ig": PAPER_IG, "matched_ig": matched, **vars(args)},
        "pretrained_test_accuracy": float(right.float().mean()),
        "cost_seconds": times,
        "cost_median": med,
        "ig_errors": errors,
        "budgets": {"attack": attack_budget, "outer": outer_budget},
        "attack_strength": strength,
        "robustness": trained,
        "wall_seconds": time.perf_counter() - t_start,
    }
    stem = "training_cost" + ("" if args.softplus is None else f"_softplus{args.softplus:g}")
    path = write_json(RESULTS / (stem + ("_quick.json" if args.quick else ".json")), out)

    print("### Cost per training step (batch 50, median over %d rounds, one thread)\n" % args.repeats)
    print(markdown_table(["method", "seconds / step", "x Normal", "x PGD-AT"],
                         [[n, f"{med[n]:.3f}", f"{med[n] / med['Normal']:.1f}", f"{med[n] / med['PGD-AT']:.2f}"]
                          for n in names]))
    print(f"\nInt / PGD-AT = **{med['Int'] / med['PGD-AT']:.2f}** (target <= 1.5); "
          f"IG-Norm / Int = **{med['IG-Norm'] / med['Int']:.1f}** (paper: >= 4); "
          f"IG-Norm (Chen's quadrature) / IG-Norm (matched) = **{med['IG-Norm'] / med['IG-Norm (matched)']:.2f}** "
          f"(target >= 3); IG-Norm / {SHORT_NAME} = **{med['IG-Norm'] / med[SHORT_NAME]:.2f}**\n")
    print("### Relative L1 error of the loss IG from x to the attack's x' (vs Gauss-Legendre 512)\n")
    print(markdown_table(["method"] + [f"n={n}" for n in N_GRID],
                         [[m] + [f"{100 * errors[m][n]:.2f}%" for n in N_GRID] for m in METHODS]))
    print(f"\nattack budget (right Riemann, 10): {100 * attack_budget:.2f}% -> {a_method} with {a_n}; "
          f"outer budget (right Riemann, 50): {100 * outer_budget:.2f}% -> {o_method} with {o_n}\n")
    print("### Strength of each configuration's inner attack (IG norm of the loss at its x', Gauss-Legendre 128)\n")
    print(markdown_table(["configuration", "IG norm at x'", "x paper"],
                         [[name, f"{v:.3f}", f"{v / strength['IG-Norm']:.3f}"] for name, v in strength.items()]))
    print()
    print(f"### Robustness after {args.train_steps} fine-tuning steps ({args.examples} test digits; "
          "the attacks use those each model classifies correctly)\n")
    print(markdown_table(
        ["training", "seconds", "clean acc", "IG norm under attack", "top-100 intersection", "Kendall"],
        [[name, f"{r['train_seconds']:.0f}", f"{r['clean_accuracy']:.3f}", f"{r['ig_norm_under_attack']:.3f}",
          f"{r['topk100']:.3f}", f"{r['kendall']:.3f}"] for name, r in trained.items()],
    ))
    print(f"\n(wrote {path}; {out['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
