"""Speed of CAM and all-class Grad-CAM / Grad-CAM++ against their references (issue: foundation).

Targets (batch 64, Small, 1 x 28 x 28, CPU):

* CAM of every class costs at most 1.3x one forward pass of the model (no_grad);
* all-class Grad-CAM costs at most 0.5x the time of C separate Captum ``LayerGradCam`` calls.

Every ratio is measured in this run: the calls are timed in a random order within each of
``--repeats`` rounds, and the medians are compared. With ``--threads 1`` (the default) the
clock is the thread's CPU time, robust to other processes on a shared machine.
Prints a markdown table and writes ``benchmarks/results/cam.json``.

Usage::

    python benchmarks/bench_cam.py [--batch 64] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from captum.attr import LayerGradCam

from captum_robust.attr import CAM, GradCAM, GradCAMPlusPlus
from captum_robust.models import Small

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
    round_robin,
    torch_threads,
    write_json,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "cam.json", help="the JSON file to write")
    add_common_args(parser, out=None, seed=None)
    args = parser.parse_args()
    with torch_threads(check_threads(parser, args)):
        run(args)


def run(args: argparse.Namespace) -> None:
    # With one torch thread all the work runs on this thread, so its CPU time is the cost of
    # the call and time spent descheduled by other processes is not counted; with more
    # threads only wall time is meaningful.
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    clock_name = "thread CPU time" if args.threads == 1 else "wall time"
    torch.manual_seed(0)
    model = Small(in_channels=1).eval()
    x = torch.rand(args.batch, 1, 28, 28)
    n_classes = 10
    cam = CAM(model, model.feature_layer, model.classifier)
    gradcam = GradCAM(model, model.feature_layer)
    gradcampp = GradCAMPlusPlus(model, model.feature_layer)
    captum = LayerGradCam(model, model.feature_layer)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():  # the bare cost of one input gradient, the reference for Grad-CAM
        x_ = x.clone().requires_grad_()
        torch.autograd.grad(model(x_)[:, 0].sum(), x_)

    def captum_all():
        for c in range(n_classes):
            captum.attribute(x, target=c)

    t = medians(round_robin(
        {
            "forward": forward,
            "forward_backward": forward_backward,
            "cam_all": lambda: cam.attribute(x),
            "cam_all_create_graph": lambda: cam.attribute(x, create_graph=True),
            "gradcam_all": lambda: gradcam.attribute(x),
            "gradcampp_all": lambda: gradcampp.attribute(x),
            "captum_layergradcam_one": lambda: captum.attribute(x, target=0),
            "captum_layergradcam_all": captum_all,
        },
        args.repeats,
        clock,
        warmup=3,
        shuffle_seed=0,
    ))
    rows = [
        ("CAM, all classes", t["cam_all"], "one forward pass", t["forward"], 1.3),
        ("CAM, all classes, create_graph", t["cam_all_create_graph"], "one forward pass", t["forward"], None),
        ("Grad-CAM, all classes", t["gradcam_all"], f"{n_classes} Captum LayerGradCam calls",
         t["captum_layergradcam_all"], 0.5),
        ("Grad-CAM++, all classes", t["gradcampp_all"], f"{n_classes} Captum LayerGradCam calls",
         t["captum_layergradcam_all"], None),
        ("Grad-CAM, all classes", t["gradcam_all"], "one forward+backward pass", t["forward_backward"], None),
    ]
    print(f"\nbatch {args.batch}, Small, 1x28x28, {torch.get_num_threads()} threads, "
          f"{clock_name}, median of {args.repeats} repeats, torch {torch.__version__}\n")
    results, table = [], []
    for name, mine, ref_name, ref, target in rows:
        ratio = mine / ref
        verdict = "" if target is None else (f"<= {target} " + ("met" if ratio <= target else "MISSED"))
        table.append((name, f"{mine * 1e3:.2f}", ref_name, f"{ref * 1e3:.2f}", f"{ratio:.2f}", verdict))
        results.append({"method": name, "seconds": mine, "reference": ref_name, "reference_seconds": ref,
                        "ratio": ratio, "target": target})
    print(markdown_table(["method", "time (ms)", "reference", "reference (ms)", "ratio", "target"], table,
                         align="lrlrrl"))
    meta = machine_info(clock=clock_name, batch=args.batch, repeats=args.repeats)
    write_json(args.out, {"meta": meta, "timings": t, "results": results})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
