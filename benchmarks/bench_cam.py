"""Speed of CAM and all-class Grad-CAM / Grad-CAM++ against their references (issue: foundation).

Targets (batch 64, Small, 1 x 28 x 28, CPU):

* CAM of every class costs at most 1.3x one forward pass of the model (no_grad);
* all-class Grad-CAM costs at most 0.5x the time of C separate Captum ``LayerGradCam`` calls.

Every ratio is measured in this run: each timed call is repeated, and the median is used.
Prints a markdown table and writes ``benchmarks/results/cam.json``.

Usage::

    python benchmarks/bench_cam.py [--batch 64] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from captum.attr import LayerGradCam

from captum_robust.attr import CAM, GradCAM, GradCAMPlusPlus
from captum_robust.models import Small


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cam.json")
    args = parser.parse_args()

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

    def forward_backward():
        x_ = x.clone().requires_grad_()
        torch.autograd.grad(model(x_)[:, 0].sum(), x_)

    def captum_all():
        for c in range(n_classes):
            captum.attribute(x, target=c)

    t = {
        "forward": median_seconds(forward, args.repeats),
        "forward_backward": median_seconds(forward_backward, args.repeats),
        "cam_all": median_seconds(lambda: cam.attribute(x), args.repeats),
        "cam_all_create_graph": median_seconds(lambda: cam.attribute(x, create_graph=True), args.repeats),
        "gradcam_all": median_seconds(lambda: gradcam.attribute(x), args.repeats),
        "gradcampp_all": median_seconds(lambda: gradcampp.attribute(x), args.repeats),
        "captum_layergradcam_one": median_seconds(lambda: captum.attribute(x, target=0), args.repeats),
        "captum_layergradcam_all": median_seconds(captum_all, max(5, args.repeats // 3)),
    }
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
          f"median of {args.repeats} repeats, torch {torch.__version__}\n")
    print("| method | time (ms) | reference | reference (ms) | ratio | target |")
    print("|---|---:|---|---:|---:|---|")
    results = []
    for name, mine, ref_name, ref, target in rows:
        ratio = mine / ref
        verdict = "" if target is None else (f"<= {target} " + ("met" if ratio <= target else "MISSED"))
        print(f"| {name} | {mine * 1e3:.2f} | {ref_name} | {ref * 1e3:.2f} | {ratio:.2f} | {verdict} |")
        results.append({"method": name, "seconds": mine, "reference": ref_name, "reference_seconds": ref,
                        "ratio": ratio, "target": target})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.platform(), "processor": platform.processor()}
    args.out.write_text(json.dumps({"meta": meta, "timings": t, "results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
