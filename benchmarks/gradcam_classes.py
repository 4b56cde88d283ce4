"""Grad-CAM of every class of a ResNet-50-sized model against Captum's per-class loop (issue 15).

The model is a Hugging Face ``ResNetForImageClassification`` with ResNet-50's configuration
(bottleneck blocks, depths 3/4/6/3, widths 256/512/1024/2048, 1000 classes), random weights,
eval mode, wrapped to return the logits; the layer is the last stage's output
(``model.resnet.encoder.stages[-1]``, 2048 x 7 x 7 at 224 px). Inputs are 224 x 224 images.

Compared, in the same run (round-robin, median of ``--repeats``):

* ``captum_robust.attr.GradCAM(model, layer).attribute(x, target=None, class_batch_size=...)``:
  every class's map from one forward pass and batched backward passes through the head;
* Captum's ``LayerGradCam`` called once per class. On a small CPU 1000 calls of a ResNet-50 take
  minutes, so only ``--captum-classes`` classes are timed and the time is scaled to all classes
  (linear: every call is one forward and one backward pass of the same cost);
* one forward pass of the model (no_grad), the floor of any method;
* ``captum_robust.attr.find_cam_layers(model, x)`` when the package has it (its cost against one
  forward pass, and which modules it finds);
* a benchmark-local sketch (:func:`per_chunk_sketch`, not the library) that reduces each chunk of
  classes to its maps at once, to show what ``class_batch_size`` could bound.

Target: all-class Grad-CAM at least 5x faster than Captum's per-class loop. The maps of the
timed classes are also compared with Captum's (largest absolute difference, relative to the
largest map value).

Peak memory is measured in a fresh child process per configuration (Linux): ``VmHWM`` of
``/proc/self/status`` (the resident set's high-water mark) for the whole process, and the
part the call adds (``VmHWM`` after the call minus ``VmRSS`` after setup, the high-water mark
having been reset through ``/proc/self/clear_refs`` once the model and the inputs exist).

pytorch-grad-cam (``pip install grad-cam``) is not measured: it requires ``torchvision`` (a
hard install requirement, and ``pytorch_grad_cam.utils.model_targets`` imports it), and the
registry's torchvision wheels do not import next to the CPU-only torch of this project.

Usage::

    python benchmarks/gradcam_classes.py                  # ResNet-50, 224 px, batches 1 and 4
    python benchmarks/gradcam_classes.py --quick          # a small ResNet at 64 px (smoke run)

Writes ``benchmarks/results/gradcam_classes.json`` (``gradcam_classes_quick.json`` with
``--quick``) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _common import (  # noqa: E402
    RESULTS,
    add_common_args,
    check_threads,
    machine_info,
    markdown_table,
    proc_status_mb,
    round_robin_clocks,
    torch_threads,
    write_json,
)


class Logits(nn.Module):
    """A Hugging Face image classifier returning its logits tensor (B x C)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def build(quick: bool, seed: int) -> Tuple[nn.Module, nn.Module, Dict[str, Any]]:
    """The wrapped model (eval mode), its last stage, and a description of the configuration."""
    from transformers import ResNetConfig, ResNetForImageClassification

    if quick:
        cfg = dict(layer_type="bottleneck", depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 128, 256],
                   embedding_size=16, num_labels=100)
        size = 64
    else:
        cfg = dict(layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                   num_labels=1000)
        size = 224
    torch.manual_seed(seed)
    hf = ResNetForImageClassification(ResNetConfig(**cfg)).eval()
    model = Logits(hf).eval()
    layer = hf.resnet.encoder.stages[-1]
    n_params = sum(p.numel() for p in model.parameters())
    return model, layer, {"config": cfg, "image_size": size, "n_classes": cfg["num_labels"], "parameters": n_params}


def inputs(batch: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.rand(batch, 3, size, size, generator=g)


def find_cam_layers_fn() -> Optional[Callable[[nn.Module], Any]]:
    """``captum_robust.attr.find_cam_layers`` when the package has it, else None."""
    import captum_robust.attr as attr

    return getattr(attr, "find_cam_layers", None)


# --------------------------------------------------------------------------- the calls


def per_chunk_sketch(model: nn.Module, layer: nn.Module, x: torch.Tensor, class_batch_size: int) -> torch.Tensor:
    """All-class Grad-CAM that reduces each chunk of classes to its maps before the next one.

    Not the library: a benchmark-local sketch of what ``class_batch_size`` could bound. The
    library's ``GradCAM`` keeps the gradients of every class (C x B x K x H' x W') and reduces
    them at the end; here each chunk's gradients (c' x B x K x H' x W') become channel weights
    (their spatial mean, c' x B x K) and maps (B x c' x H' x W') at once, so the peak is
    ``class_batch_size`` gradients. Same formula (Selvaraju et al. 2017), unrectified maps.
    """
    from captum_robust._utils.layers import forward_with_layer

    with torch.enable_grad():
        out, act = forward_with_layer(model, layer, (x,), (), require_grad=True)
    n, c = out.shape
    eye = torch.eye(c, dtype=out.dtype)
    maps = []
    for start in range(0, c, class_batch_size):
        rows = eye[start:start + class_batch_size]
        (g,) = torch.autograd.grad(out, act, grad_outputs=rows[:, None, :].expand(rows.shape[0], n, c),
                                   is_grads_batched=True, retain_graph=start + class_batch_size < c)
        weights = g.mean(dim=tuple(range(3, g.dim())))
        del g
        maps.append(torch.einsum("cbk,bk...->bc...", weights, act.detach()))
    return torch.cat(maps, dim=1)


def make_calls(model: nn.Module, layer: nn.Module, x: torch.Tensor, n_classes: int, captum_classes: int,
               class_batch_sizes: List[Optional[int]]) -> Dict[str, Callable[[], Any]]:
    from captum.attr import LayerGradCam

    from captum_robust.attr import GradCAM

    gradcam = GradCAM(model, layer)
    captum = LayerGradCam(model, layer)
    classes = list(range(captum_classes))

    def forward():
        with torch.no_grad():
            model(x)

    def captum_subset():
        for c in classes:
            captum.attribute(x, target=c)

    calls: Dict[str, Callable[[], Any]] = {"forward": forward, "captum_subset": captum_subset}
    for cb in class_batch_sizes:
        calls[f"ours_cb{cb}"] = (lambda cb=cb: gradcam.attribute(x, target=None, class_batch_size=cb))
        if cb is not None:
            calls[f"sketch_cb{cb}"] = (lambda cb=cb: per_chunk_sketch(model, layer, x, cb))
    find = find_cam_layers_fn()
    if find is not None:
        calls["find_cam_layers"] = lambda: find(model, x)
    return calls


def agreement(model: nn.Module, layer: nn.Module, x: torch.Tensor, captum_classes: int,
              class_batch_size: Optional[int]) -> Dict[str, float]:
    """Largest |ours - Captum| over the timed classes, absolute and relative to the largest |map|."""
    from captum.attr import LayerGradCam

    from captum_robust.attr import GradCAM

    ours = GradCAM(model, layer).attribute(x, target=None, class_batch_size=class_batch_size)
    captum = LayerGradCam(model, layer)
    ref = torch.cat([captum.attribute(x, target=c) for c in range(captum_classes)], dim=1)
    diff = (ours[:, :captum_classes] - ref).abs().max().item()
    scale = ref.abs().max().item()
    result = {"max_abs_diff": diff, "max_abs_ref": scale, "relative": diff / scale if scale > 0 else float("nan"),
              "classes_compared": captum_classes}
    if class_batch_size is not None:
        sketch = per_chunk_sketch(model, layer, x, class_batch_size)
        result["sketch_vs_ours_max_abs_diff_all_classes"] = (sketch - ours).abs().max().item()
    return result


# --------------------------------------------------------------------------- memory (child process)


def child(args: argparse.Namespace) -> None:
    """Run one configuration once and print its memory as JSON (the last line of stdout)."""
    torch.set_num_threads(args.threads)
    model, layer, info = build(args.quick, args.seed)
    x = inputs(args.batch[0], info["image_size"], args.seed)
    what = args.child
    if what.startswith("ours_cb"):
        cb_text = what[len("ours_cb"):]
        cb = None if cb_text == "None" else int(cb_text)
        from captum_robust.attr import GradCAM

        gradcam = GradCAM(model, layer)
        fn: Callable[[], Any] = lambda: gradcam.attribute(x, target=None, class_batch_size=cb)  # noqa: E731
    elif what.startswith("sketch_cb"):
        cb_sketch = int(what[len("sketch_cb"):])
        fn = lambda: per_chunk_sketch(model, layer, x, cb_sketch)  # noqa: E731
    elif what == "captum_one":
        from captum.attr import LayerGradCam

        captum = LayerGradCam(model, layer)
        fn = lambda: captum.attribute(x, target=0)  # noqa: E731
    elif what == "forward":
        def fn() -> None:
            with torch.no_grad():
                model(x)
    else:
        raise ValueError(f"--child must be forward, captum_one, ours_cb<N|None> or sketch_cb<N>, got {what!r}")
    Path("/proc/self/clear_refs").write_text("5")
    base = proc_status_mb("VmRSS")
    out = fn()
    peak = proc_status_mb("VmHWM")
    out_mb = out.numel() * out.element_size() / 2**20 if isinstance(out, torch.Tensor) else 0.0
    print(json.dumps({"setup_rss_mb": base, "peak_mb": peak, "added_mb": peak - base, "output_mb": out_mb}))


def peak_memory(args: argparse.Namespace, what: str, batch: int) -> Dict[str, float]:
    cmd = [sys.executable, __file__, "--child", what, "--batch", str(batch), "--seed", str(args.seed),
           "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, quick="a small bottleneck ResNet (widths 32-256, 100 classes) at 64 px, 1 repeat",
                    out=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--captum-classes", type=int, default=10,
                        help="classes for which Captum's LayerGradCam is timed (scaled to all classes)")
    parser.add_argument("--class-batch-size", type=int, nargs="+", default=[100],
                        help="class_batch_size values of GradCAM to time (default 100, 10 with --quick); 'all' is always added")
    parser.add_argument("--no-memory", action="store_true", help="skip the child processes measuring peak memory")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON file (default benchmarks/results/gradcam_classes[_quick].json)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick and args.repeats == 3:
        args.repeats = 1
    if args.quick and args.class_batch_size == [100]:
        args.class_batch_size = [10]
    if args.child:
        return child(args)
    if args.out is None:
        args.out = RESULTS / ("gradcam_classes_quick.json" if args.quick else "gradcam_classes.json")
    with torch_threads(check_threads(parser, args)):
        run(args)


def run(args: argparse.Namespace) -> None:
    model, layer, info = build(args.quick, args.seed)
    n_classes, size = info["n_classes"], info["image_size"]
    cbs: List[Optional[int]] = [None] + [cb for cb in args.class_batch_size if cb < n_classes]
    clocks = ("wall", "thread") if args.threads == 1 else ("wall", "cpu")
    cpu_clock = clocks[1]
    has_find = find_cam_layers_fn() is not None
    print(f"model: HF ResNetForImageClassification {info['config']}, {info['parameters'] / 1e6:.1f} M parameters, "
          f"{size} px; layer resnet.encoder.stages[-1]; {torch.get_num_threads()} thread(s); "
          f"Captum timed on {args.captum_classes} classes, scaled to {n_classes}; median of {args.repeats}")
    if not has_find:
        print("captum_robust.attr.find_cam_layers does not exist (yet): not timed")
    results: Dict[str, Any] = {}
    speed_rows, mem_rows = [], []
    for batch in args.batch:
        x = inputs(batch, size, args.seed)
        agree = agreement(model, layer, x, args.captum_classes, cbs[-1])
        calls = make_calls(model, layer, x, n_classes, args.captum_classes, cbs)
        start = time.perf_counter()
        times = round_robin_clocks(calls, args.repeats, clocks, warmup=1, shuffle_seed=args.seed)
        elapsed = time.perf_counter() - start
        med = {c: {k: statistics.median(v) for k, v in t.items()} for c, t in times.items()}
        scale = n_classes / args.captum_classes
        captum_all = {c: med[c]["captum_subset"] * scale for c in clocks}
        entry: Dict[str, Any] = {"times": times, "medians": med, "captum_all_scaled": captum_all,
                                 "agreement": agree, "timing_seconds": elapsed}
        keys = [(f"ours_cb{cb}", "GradCAM (library)", cb) for cb in cbs]
        keys += [(f"sketch_cb{cb}", "per-chunk sketch", cb) for cb in cbs if cb is not None]
        for key, label, cb in keys:
            ratio = {c: captum_all[c] / med[c][key] for c in clocks}
            over_fwd = {c: med[c][key] / med[c]["forward"] for c in clocks}
            entry[key] = {"speedup_vs_captum": ratio, "cost_in_forward_passes": over_fwd}
            speed_rows.append((
                batch, label, "all" if cb is None else str(cb),
                f"{med[cpu_clock][key]:.3f}", f"{med['wall'][key]:.3f}",
                f"{captum_all[cpu_clock]:.1f}", f"{captum_all['wall']:.1f}",
                f"{ratio[cpu_clock]:.0f}x", f"{ratio['wall']:.0f}x",
                f"{over_fwd[cpu_clock]:.2f}", "met" if ratio[cpu_clock] >= 5 else "MISSED",
            ))
        if has_find:
            found = find_cam_layers_fn()(model, x)
            names = {id(m): n for n, m in model.named_modules()}
            entry["find_cam_layers_found"] = {"layer": names.get(id(found.layer)),
                                              "classifier": names.get(id(found.classifier)),
                                              "is_the_benchmarked_layer": found.layer is layer}
            entry["find_cam_layers_in_forward_passes"] = {
                c: med[c]["find_cam_layers"] / med[c]["forward"] for c in clocks}
        entry["forward_seconds"] = {c: med[c]["forward"] for c in clocks}
        entry["captum_one_class_seconds"] = {c: med[c]["captum_subset"] / args.captum_classes for c in clocks}
        if not args.no_memory:
            mem: Dict[str, Dict[str, float]] = {}
            whats = ["forward", "captum_one"] + [f"ours_cb{cb}" for cb in cbs]
            whats += [f"sketch_cb{cb}" for cb in cbs if cb is not None]
            for what in whats:
                mem[what] = m = peak_memory(args, what, batch)
                mem_rows.append((batch, what, f"{m['peak_mb']:.0f}", f"{m['added_mb']:.0f}", f"{m['output_mb']:.1f}"))
            entry["memory_mb"] = mem
        results[f"batch{batch}"] = entry
        print(f"batch {batch}: maps of the first {args.captum_classes} classes vs Captum: max |diff| "
              f"{agree['max_abs_diff']:.2e} (relative {agree['relative']:.2e}); per-chunk sketch vs GradCAM, all classes: "
              f"max |diff| {agree.get('sketch_vs_ours_max_abs_diff_all_classes', float('nan')):.2e}; forward "
              f"{med[cpu_clock]['forward']:.3f} s, one Captum call {entry['captum_one_class_seconds'][cpu_clock]:.3f} s"
              + (f", find_cam_layers {entry['find_cam_layers_in_forward_passes'][cpu_clock]:.2f} forward passes "
                 f"(found {entry['find_cam_layers_found']['layer']} / {entry['find_cam_layers_found']['classifier']})"
                 if has_find else ""))

    cpu_label = "thread CPU" if cpu_clock == "thread" else "CPU"
    print()
    print(markdown_table(
        ["batch", "method", "class_batch_size", f"time ({cpu_label}, s)", "time (wall, s)",
         f"Captum x{n_classes} ({cpu_label}, s)", f"Captum x{n_classes} (wall, s)",
         f"speed-up ({cpu_label})", "speed-up (wall)", "time / forward", ">= 5x"],
        speed_rows, align="llrrrrrrrrl"))
    if mem_rows:
        print()
        print(markdown_table(["batch", "call", "peak RSS (MiB)", "added by the call (MiB)", "output (MiB)"],
                             mem_rows, align="llrrr"))
    meta = machine_info(model=info, layer="resnet.encoder.stages[-1]", repeats=args.repeats,
                        captum_classes=args.captum_classes, clocks=list(clocks),
                        scaled=f"Captum timed on {args.captum_classes} classes, times x {n_classes / args.captum_classes:g}",
                        find_cam_layers_available=has_find,
                        pytorch_grad_cam="not measured: requires torchvision, which does not import beside CPU torch",
                        memory="VmHWM of a fresh child process; added = VmHWM after the call - VmRSS after setup "
                               "(high-water mark reset by /proc/self/clear_refs)")
    write_json(args.out, {"meta": meta, "results": results})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
