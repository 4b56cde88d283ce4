"""What ``torch.compile`` costs and gains for a training step with ``Int`` (issue 15).

``captum_robust.models.Small`` (ReLU), random 1 x 28 x 28 inputs, batch 64, CPU, the default
(inductor) backend. One training step is ``CE(model(x), y) + Int(model)(x, y)``, backward and an
Adam step, with Int's defaults (eps 0.3, 40 PGD steps of 0.01 on the discrepancy, CAM). The
compiled model runs the user's forward and its backward compiled; Int's second-order passes
(the attack's and the term's CAM maps with ``create_graph=True``) run on ``model._orig_mod``
(:mod:`captum_robust._utils.compiled`). For reference, the same for a plain CE step (no
regularizer), where compile acts on the whole step.

Reported: the compile time (wall clock: first compiled step minus the median compiled step),
and the median step times (after one warm-up step each; the thread's CPU time, one torch thread
by default, so that other work on a shared machine does not count) compiled and uncompiled,
alternating the two in each round; ``--repeats`` rounds. Prints a markdown table, writes
``benchmarks/results/compile_int[_quick].json``.

Usage::

    python benchmarks/compile_int.py              # 10 rounds (about 5 minutes on one thread)
    python benchmarks/compile_int.py --quick      # 3 rounds, n_iterations 5
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import add_common_args, check_threads, fmt, machine_info, medians  # noqa: E402
from captum_robust._utils.compiled import CompiledModelWarning  # noqa: E402
from captum_robust.models import Small  # noqa: E402
from captum_robust.robust.regularizers import Int  # noqa: E402


def make_step(model: torch.nn.Module, forward: Any, with_int: bool,
              n_iterations: int) -> Callable[..., Tuple[float, float]]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    reg = Int(forward, n_iterations=n_iterations, generator=torch.Generator().manual_seed(0)) if with_int else None

    def step(x: torch.Tensor, y: torch.Tensor) -> Tuple[float, float]:
        w0, t0 = time.perf_counter(), time.thread_time()
        loss = F.cross_entropy(forward(x), y)
        if reg is not None:
            loss = loss + reg(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        return time.thread_time() - t0, time.perf_counter() - w0

    return step


def run(args: argparse.Namespace) -> Dict[str, Any]:
    torch.manual_seed(args.seed)
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    rows: Dict[str, Any] = {}
    for case, with_int in (("CE only", False), ("CE + Int", True)):
        base = Small().train()
        plain, comp = base, copy.deepcopy(base)
        torch._dynamo.reset()  # and no FX graph cache (below): each case pays a cold compile
        compiled = torch.compile(comp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompiledModelWarning)
            steps = {
                "uncompiled": make_step(plain, plain, with_int, args.n_iterations),
                "compiled": make_step(comp, compiled, with_int, args.n_iterations),
            }
            first = {name: step(x, y)[1] for name, step in steps.items()}  # warm-up (compiles), wall clock
            times: Dict[str, List[float]] = {name: [] for name in steps}
            walls: Dict[str, List[float]] = {name: [] for name in steps}
            for r in range(args.repeats):
                order = list(steps) if r % 2 == 0 else list(reversed(list(steps)))
                for name in order:
                    cpu, wall = steps[name](x, y)
                    times[name].append(cpu)
                    walls[name].append(wall)
        med, med_wall = medians(times), medians(walls)
        rows[case] = {
            "first_step_wall_s": first,
            "median_step_cpu_s": med,
            "median_step_wall_s": med_wall,
            "compile_wall_s": first["compiled"] - med_wall["compiled"],
            "speedup": med["uncompiled"] / med["compiled"],
            "times_cpu": times,
            "times_wall": walls,
        }
    return rows


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, quick="3 rounds and 5 inner steps (a smoke run)", threads=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-iterations", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(check_threads(parser, args))
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = False  # a cold compile, what a first run pays
    if args.quick:
        args.repeats, args.n_iterations = 3, 5
    rows = run(args)
    print(f"\nSmall 1x28x28, batch {args.batch}, Int n_iterations={args.n_iterations}, "
          f"{torch.get_num_threads()} threads, inductor, medians over {args.repeats} steps\n")
    print("| step | compile (s, wall) | uncompiled step (s, CPU) | compiled step (s, CPU) | uncompiled / compiled |")
    print("|---|---|---|---|---|")
    for case, r in rows.items():
        print(f"| {case} | {fmt(r['compile_wall_s'], 2)} | {fmt(r['median_step_cpu_s']['uncompiled'])} | "
              f"{fmt(r['median_step_cpu_s']['compiled'])} | {fmt(r['speedup'], 2)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"compile_int{'_quick' if args.quick else ''}.json"
    info = machine_info(batch=args.batch, n_iterations=args.n_iterations, repeats=args.repeats, backend="inductor")
    path.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
