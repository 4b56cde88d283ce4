"""``captum-robust evaluate``: attack the explanations of the user's model and report how much
they change (:func:`~captum_robust.robust.evaluation.attribution_robustness`), with the accuracy
under PGD; sharded over the processes of ``torchrun``."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from captum_robust._utils.reporting import fmt, markdown_table
from captum_robust.cli import _types
from captum_robust.cli._defaults import SMOOTHGRAD_SIGMA, SMOOTHGRAD_SPARSITY
from captum_robust.cli._inputs import UserRun, add_model_options, prepare_run
from captum_robust.cli._layers import cam_parts, feature_layer, gradcam_parts
from captum_robust.cli._runtime import (
    OutputFolder, UsageError, add_run_options, batch_generator, distributed_run, my_batches, print_outputs, progress,
    report_tail, run_line, write_report, write_results,
)
from captum_robust.robust.discrepancy import MEASURES
from captum_robust.robust.evaluation.robustness import STABILITY_MEASURES

#: Attribution methods and attacks by name.
ATTRIBUTIONS = ("ig", "saliency", "cam", "gradcam", "gradcam++", "sparsified-smoothgrad")
#: the attributions whose maps live on a layer's feature map (k defaults to 8 cells)
LAYER_MAPS = ("cam", "gradcam", "gradcam++")
ATTACKS = ("topk", "mass-center", "aai", "l2-topk")
EVALUATE_OUT = "./captum_robust_evaluate/"
#: the files ``evaluate`` writes into --out (figure_maps.png only when an example was attacked)
EVALUATE_FILES = ("results.json", "report.md", "figure_maps.png", "figure_measures.png")
EVALUATE_EXAMPLES = 100
EVALUATE_BATCH = 32
LINF_EPS = 0.1
L2_EPS = 1.0
ATTACK_ITERATIONS = 20
STABILITY_SAMPLES = 20  # perturbations per example of the stability metrics (Quantus: 200; kept small for a CPU run)
SURROGATE_BETA = 10.0
#: sparsified-smoothgrad is attacked through Relaxed Sparsified SmoothGrad with this clip (at most
#: half the sparsity) and this many noisy samples per gradient
SMOOTHGRAD_ATTACK_SAMPLES = 8
SMOOTHGRAD_CLIP = 0.01
#: attacked examples shown in figure_maps.png
FIGURE_EXAMPLES = 4


def add_parser(sub: Any) -> None:
    """Add the ``evaluate`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser(
        "evaluate",
        help="attack the explanations of your own model and report how much they change (with PGD accuracy)",
        description="""
        Load your model (a factory and a state_dict), explain the correctly classified test images with an attribution
        method, attack the explanations while keeping the predictions, and report how much the maps changed
        (top-k intersection, Kendall's tau, ...: mean, median, 95% intervals over the examples whose prediction
        the attack kept) together with the model's accuracy under PGD with the same budget. Runs
        captum_robust.robust.evaluation.attribution_robustness and writes results.json, report.md,
        figure_maps.png (maps before/after the attack) and figure_measures.png (histograms) into --out. Start it
        with torchrun --nproc_per_node=P -m captum_robust.cli evaluate ... to split the examples over P
        processes; rank 0 gathers the per-example results and writes the files.
        """,
    )
    add_model_options(p, EVALUATE_EXAMPLES)
    add_run_options(p, EVALUATE_OUT, EVALUATE_BATCH)
    a = p.add_argument_group("attribution and attack")
    _add_attack_options(a)
    _add_method_options(a)
    p.set_defaults(handler=run)


def _add_attack_options(a: Any) -> None:
    """The attribution, the attack, its budget and the measures (in the ``attribution and attack`` group)."""
    a.add_argument(
        "--attribution", choices=ATTRIBUTIONS, default="ig",
        help=(
            "the explanation: ig (Integrated Gradients, zero baseline), saliency (input gradient), cam (class "
            "activation map; needs global average pooling -> linear head), gradcam or gradcam++ (Grad-CAM / "
            "Grad-CAM++ of --layer, any CNN) or sparsified-smoothgrad (Levine et al.; attacked through its relaxed, "
            "differentiable version) (default: ig)"
        ),
    )
    a.add_argument(
        "--attack", choices=ATTACKS, default="topk",
        help=(
            "topk (Ghorbani's top-k attack), mass-center (Ghorbani's center attack), aai (Boopathy's attack against "
            "interpretability) -- l-inf sign steps -- or l2-topk (Levine's l2 attack, --eps is the l2 radius) "
            "(default: topk)"
        ),
    )
    a.add_argument("--eps", type=_types.positive_number, nargs="+", default=None, metavar="EPS",
                   help=f"attack radius, one or more values (each gives a row group) (default: {LINF_EPS} for the "
                        f"l-inf attacks, {L2_EPS} for l2-topk); PGD uses the same radius and norm")
    a.add_argument("--k", type=_types.positive_int, default=None, metavar="K",
                   help="size of the attacked top set and of the top-k intersection (default: 8 for the layer maps cam, "
                        "gradcam and gradcam++, else one "
                        "eighth of the attacked map's elements, e.g. 98 of 784 pixels)")
    a.add_argument("--iterations", type=_types.positive_int, default=ATTACK_ITERATIONS, metavar="N",
                   help=f"attack iterations (default: {ATTACK_ITERATIONS})")
    a.add_argument("--step-size", type=_types.positive_number, default=None, metavar="S",
                   help="l-inf attacks' step (default: 2.5 * eps / iterations)")
    a.add_argument("--restarts", type=_types.positive_int, default=1, metavar="R",
                   help="restarts of l2-topk (default: 1)")
    a.add_argument("--measures", nargs="+", choices=MEASURES + STABILITY_MEASURES, default=["topk", "kendall"],
                   metavar="M",
                   help=f"measures between the clean and attacked maps, among {', '.join(MEASURES)}; and stability "
                        f"metrics of the clean maps under random noise (average case, independent of the attack), "
                        f"among {', '.join(STABILITY_MEASURES)} (default: topk kendall)")
    a.add_argument("--stability-samples", type=_types.positive_int, default=STABILITY_SAMPLES, metavar="N",
                   help=f"stability metrics: random perturbations per example (default: {STABILITY_SAMPLES}; "
                        "Quantus uses 200)")
    a.add_argument("--stability-radius", type=_types.positive_number, default=None, metavar="R",
                   help="stability metrics: the noise radius, pixels in [0, 1] (default: each metric's, as in "
                        "Quantus 0.6: 0.2 for the sensitivities, std 0.1 for the Lipschitz estimate, U[0.02, 0.2] "
                        "shifts for the relative stabilities; a value R gives U[0.1 R, R] for those)")
    a.add_argument("--representation-layer", default=None, metavar="NAME",
                   help="relative_representation_stability: the submodule whose output is the representation (a "
                        "name from model.named_modules()); default: model.feature_layer if defined, else the feature "
                        "layer found by captum_robust.attr.find_cam_layers")
    a.add_argument("--pgd-iterations", type=_types.nonneg_int, default=40, metavar="N",
                   help="PGD iterations for the adversarial accuracy (step 2.5 * eps / N, random start); 0 skips "
                        "PGD (default: 40)")


def _add_method_options(a: Any) -> None:
    """Settings of the individual attribution methods (in the ``attribution and attack`` group)."""
    a.add_argument("--ig-steps", type=_types.positive_int, default=16, metavar="N",
                   help="Integrated Gradients steps (midpoint rule) (default: 16)")
    a.add_argument("--sparsity", type=_types.fraction, default=SMOOTHGRAD_SPARSITY, metavar="S",
                   help="sparsified-smoothgrad: fraction of pixels set to 1 per sample "
                        f"(default: {SMOOTHGRAD_SPARSITY})")
    a.add_argument("--sigma", type=_types.positive_number, default=SMOOTHGRAD_SIGMA, metavar="SIGMA",
                   help="sparsified-smoothgrad: noise standard deviation, pixels in [0, 1] "
                        f"(default: {SMOOTHGRAD_SIGMA})")
    a.add_argument("--n-samples", type=_types.positive_int, default=64, metavar="N",
                   help="sparsified-smoothgrad: noisy samples of the measured maps (default: 64)")
    a.add_argument(
        "--surrogate-beta", type=_types.nonneg_number, default=SURROGATE_BETA, metavar="BETA",
        help=(
            f"attack gradients of ig / saliency / sparsified-smoothgrad go through a copy of the model with every "
            f"nn.ReLU replaced by Softplus(BETA) (second derivatives through ReLU vanish); 0 uses the model itself "
            f"(default: {SURROGATE_BETA:g})"
        ),
    )
    a.add_argument("--layer", default=None, metavar="NAME",
                   help="cam, gradcam, gradcam++: the submodule whose output is the feature map, a dotted name from "
                        "model.named_modules() of your model, e.g. resnet.encoder.stages.3 or layer4; default: "
                        "model.feature_layer if defined, else found by captum_robust.attr.find_cam_layers (the "
                        "feature map before global average pooling -> linear; without such a head, for Grad-CAM, the "
                        "last module with a B x C x H x W output of more than one cell)")
    a.add_argument("--classifier", default=None, metavar="NAME",
                   help="cam: the final nn.Linear fed by global average pooling; default: model.classifier if "
                        "it is an nn.Linear, else found by captum_robust.attr.find_cam_layers")


def run(args: argparse.Namespace) -> int:
    """The ``evaluate`` handler (joins the torchrun process group when there is one)."""
    return distributed_run(args, lambda ctx, device, out: _evaluate(args, ctx, device, out), EVALUATE_FILES)


# --------------------------------------------------------------------------- the attribution and the attack


def _saliency(model: Any, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Input gradient of the target logit (differentiable when the inputs require grad)."""
    from captum_robust.attr import Saliency

    return Saliency(model).attribute(inputs, target=target, abs=False, create_graph=inputs.requires_grad)


def _stability_kwargs(args: argparse.Namespace, run: UserRun, device: torch.device) -> Optional[Dict[str, Any]]:
    """The stability metrics' settings from --stability-samples/--stability-radius/--representation-layer."""
    asked = [m for m in args.measures if m in STABILITY_MEASURES]
    if not asked:
        return None
    kwargs: Dict[str, Any] = {"n_samples": args.stability_samples}
    if args.stability_radius is not None:
        r = args.stability_radius
        relative = ("relative_input_stability", "relative_output_stability", "relative_representation_stability")
        if any(m in relative for m in asked) and any(m not in relative for m in asked):
            raise UsageError("--stability-radius applies to one family of stability metrics at a time (the "
                             "sensitivities/Lipschitz estimate take one radius, the relative stabilities a range); "
                             "run them separately or keep the defaults")
        kwargs["radius"] = (0.1 * r, r) if asked[0] in relative else r
    if "relative_representation_stability" in asked:
        kwargs["layer"] = feature_layer(run.user_model or run.model, run.model, args.representation_layer,
                                        "--representation-layer", run.x[:1].to(device))[0]
    return kwargs


@dataclass
class Parts:
    """The measured attribution, the one the attack differentiates, their keyword arguments, the
    surrogate model for the attack's gradients, and the description and notes for the report."""

    measured: Any
    attacked: Any
    description: str
    kwargs: Optional[Dict[str, Any]] = None
    gradient_kwargs: Optional[Dict[str, Any]] = None
    surrogate: Optional[torch.nn.Module] = None
    notes: List[str] = field(default_factory=list)


def _surrogate(args: argparse.Namespace, model: torch.nn.Module) -> Tuple[Optional[torch.nn.Module], List[str]]:
    """A softplus copy of the model for second derivatives (--surrogate-beta), and a note."""
    from captum_robust.robust.attacks import softplus_surrogate

    if args.surrogate_beta <= 0:
        return None, []
    if any(type(m) is torch.nn.ReLU for m in model.modules()):
        return softplus_surrogate(model, beta=args.surrogate_beta), [
            f"attack gradients through a copy of the model with Softplus(beta={args.surrogate_beta:g}) "
            "in place of every nn.ReLU"]
    return None, ["the model has no nn.ReLU module, so the attack differentiates the model itself "
                  "(functional relu calls would give zero second derivatives)"]


def _evaluation_parts(args: argparse.Namespace, run: UserRun, x1: torch.Tensor, y1: torch.Tensor) -> Parts:
    """The parts of --attribution (layer maps are checked on one image ``x1``, ``y1``)."""
    from captum_robust.attr import BatchedIntegratedGradients, RelaxedSparsifiedSmoothGrad, SparsifiedSmoothGrad

    model, user_model = run.model, run.user_model or run.model
    if args.attribution == "cam":
        cam, layer_name, classifier_name = cam_parts(user_model, model, args, x1, y1)
        return Parts(cam, cam, f"CAM (layer {layer_name}, classifier {classifier_name})")
    surrogate, notes = _surrogate(args, model)
    if args.attribution in ("gradcam", "gradcam++"):
        gradcam, layer_name, how = gradcam_parts(user_model, model, args, x1, y1)
        title = "Grad-CAM++" if args.attribution == "gradcam++" else "Grad-CAM"
        return Parts(gradcam, gradcam, f"{title} (layer {layer_name}, {how})", surrogate=surrogate, notes=notes)
    if args.attribution == "ig":
        ig = BatchedIntegratedGradients(model)
        return Parts(ig, ig, f"Integrated Gradients ({args.ig_steps} midpoint steps, zero baseline)",
                     kwargs={"n_steps": args.ig_steps, "method": "riemann_middle"}, surrogate=surrogate, notes=notes)
    if args.attribution == "saliency":
        return Parts(_saliency, _saliency, "saliency (input gradient of the label's logit)", surrogate=surrogate,
                     notes=notes)
    clip = min(SMOOTHGRAD_CLIP, args.sparsity / 2)
    return Parts(
        measured=SparsifiedSmoothGrad(model, sparsity=args.sparsity, sigma=args.sigma, n_samples=args.n_samples),
        attacked=RelaxedSparsifiedSmoothGrad(model, sparsity=args.sparsity, clip=clip, sigma=args.sigma,
                                             n_samples=args.n_samples),
        description=(f"Sparsified SmoothGrad (sparsity {args.sparsity:g}, sigma {args.sigma:g}, {args.n_samples} "
                     f"samples; attacked through Relaxed Sparsified SmoothGrad, clip {clip:g}, "
                     f"{SMOOTHGRAD_ATTACK_SAMPLES} samples per gradient)"),
        gradient_kwargs={"n_samples": SMOOTHGRAD_ATTACK_SAMPLES}, surrogate=surrogate, notes=notes,
    )


def _make_attack(args: argparse.Namespace, model: torch.nn.Module, parts: Parts, eps: float, k: int) -> Any:
    from captum_robust.robust.attacks import AAI, L2TopKAttack, MassCenterAttack, TopKAttack

    common = {
        "surrogate": parts.surrogate,
        "attribution_kwargs": parts.kwargs,
        "gradient_attribution_kwargs": parts.gradient_kwargs,
    }
    step = args.step_size if args.step_size is not None else 2.5 * eps / args.iterations
    attr = parts.attacked
    if args.attack == "topk":
        return TopKAttack(model, attr, k=k, eps=eps, step_size=step, n_iterations=args.iterations, measure_k=k, **common)
    if args.attack == "mass-center":
        return MassCenterAttack(model, attr, eps=eps, step_size=step, n_iterations=args.iterations, **common)
    if args.attack == "aai":
        return AAI(model, attr, eps=eps, step_size=step, n_iterations=args.iterations, k=k, **common)
    return L2TopKAttack(model, attr, k=k, rho=eps, n_iterations=args.iterations, n_restarts=args.restarts,
                        random_budget=20, **common)


def _check_combination(args: argparse.Namespace, model: torch.nn.Module, parts: Parts,
                       x1: torch.Tensor, y1: torch.Tensor, eps: float) -> int:
    """Resolve --k from the size of the attacked map (the attack's prepared map of one image);
    UsageError for a combination that cannot work."""
    probe = _make_attack(args, model, parts, eps, 1)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        prepared = probe.prepare_maps(probe.attribution_maps(x1.to(device), target=y1.to(device)))
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"--attribution {args.attribution} fails on this model: {str(exc).splitlines()[0]}") from None
    n_map = prepared[0].numel()
    shape = "x".join(str(s) for s in prepared.shape[1:])
    if args.attack == "mass-center" and (prepared.dim() < 3 or n_map < 2):
        raise UsageError(
            f"--attack mass-center cannot work with --attribution {args.attribution} here: it moves the centre of mass "
            f"of a 2-D map, and the map has shape {shape}; use --attack topk or aai"
        )
    if args.k is None:
        return min(8, n_map) if args.attribution in LAYER_MAPS else max(1, math.ceil(n_map / 8))
    if args.k > n_map:
        raise UsageError(
            f"--k {args.k} cannot work with --attribution {args.attribution} and --attack {args.attack}: the attacked "
            f"map has only {n_map} elements ({shape}); pass --k <= {n_map}"
        )
    return args.k


# --------------------------------------------------------------------------- the run


def _merge_robustness(batches: List[Tuple[int, range, Any]]) -> Dict[str, Any]:
    """Per-batch RobustnessReports ``(batch index, example indices, report)`` in any order ->
    one report dict over all examples (RobustnessReport.merge in batch order)."""
    from captum_robust.robust.evaluation import RobustnessReport

    batches = sorted(batches, key=lambda item: item[0])
    merged = RobustnessReport.merge([report for _, _, report in batches])
    merged.per_example["index"] = [i for _, idx, _ in batches for i in idx]
    return merged.as_dict()


def _print_settings(args: argparse.Namespace, ctx: Any, run: UserRun, parts: Parts, eps_list: List[float],
                    k: int) -> None:
    run.print_summary(args, ctx)
    print(f"attribution: {parts.description}; attack: {args.attack}, eps {', '.join(f'{e:g}' for e in eps_list)}, k {k}")
    for note in parts.notes:
        print(f"note: {note}")


def _attack_batches(args: argparse.Namespace, ctx: Any, device: torch.device, run: UserRun, parts: Parts,
                    eps_list: List[float], k: int, norm: str) -> Tuple[List[List[Tuple[int, range, Any]]], Any]:
    """Run attribution_robustness on this process's batches for every eps. Returns, per eps, the
    ``(batch index, example indices, report)`` triples, and the first attacked examples of batch 0
    at the first eps (on rank 0; None elsewhere or when none was attacked) for the figure."""
    from captum_robust.robust.attacks import PGD
    from captum_robust.robust.evaluation import attribution_robustness

    x, y = run.x, run.y
    batches = my_batches(args, ctx, len(y))
    # attribution=None measures the attack's own attribution with its kwargs (e.g. --ig-steps);
    # an explicit attribution would be called with its defaults
    measured = None if parts.measured is parts.attacked else parts.measured
    local: List[List[Tuple[int, range, Any]]] = []
    examples = None
    stability_kwargs = _stability_kwargs(args, run, device)
    try:
        with progress(ctx, len(batches) * len(eps_list), "evaluate", not args.no_progress) as bar:
            for e_index, eps in enumerate(eps_list):
                attack = _make_attack(args, run.model, parts, eps, k)
                pgd = None
                if args.pgd_iterations > 0:
                    pgd = PGD(run.model, eps=eps, step_size=2.5 * eps / args.pgd_iterations,
                              n_iterations=args.pgd_iterations, norm=norm)
                reports = []
                for b, idx in batches:
                    keep = FIGURE_EXAMPLES if (b == 0 and e_index == 0 and ctx.is_main) else 0
                    report = attribution_robustness(
                        run.model, measured, attack, (x[idx.start: idx.stop], y[idx.start: idx.stop]),
                        measures=tuple(args.measures), k=k, pgd=pgd, generator=batch_generator(args, b, device),
                        keep_examples=keep, stability_kwargs=stability_kwargs,
                    )
                    if keep:
                        examples, report.examples = report.examples, None  # not gathered from the other ranks
                    reports.append((b, idx, report))
                    bar.update(1)
                local.append(reports)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"--attribution {args.attribution} with --attack {args.attack} failed: {str(exc).splitlines()[0]}"
        ) from None
    return local, examples


def _evaluate(args: argparse.Namespace, ctx: Any, device: torch.device, folder: OutputFolder) -> int:
    from captum_robust._utils.distributed import gather_to_main

    t_start = time.perf_counter()
    run = prepare_run(args, device)
    eps_list = args.eps if args.eps is not None else [L2_EPS if args.attack == "l2-topk" else LINF_EPS]
    parts = _evaluation_parts(args, run, run.x[:1].to(device), run.y[:1].to(device))
    k = _check_combination(args, run.model, parts, run.x[:1], run.y[:1], eps_list[0])
    if ctx.is_main:
        _print_settings(args, ctx, run, parts, eps_list, k)
    norm = "l2" if args.attack == "l2-topk" else "linf"
    local, examples = _attack_batches(args, ctx, device, run, parts, eps_list, k, norm)
    gathered = gather_to_main(local, ctx)
    if not ctx.is_main:
        return 0
    measure_names = None
    runs = []
    for e_index, eps in enumerate(eps_list):
        batches = [item for rank_lists in gathered for item in rank_lists[e_index]]
        measure_names = list(batches[0][2].summary["measures"])
        runs.append({"eps": eps, **_merge_robustness(batches)})
    wall = time.perf_counter() - t_start
    settings = run.settings(
        args, ctx, device, attribution=args.attribution, attribution_description=parts.description,
        attack=args.attack, norm=norm, eps=eps_list, k=k, iterations=args.iterations, step_size=args.step_size,
        pgd_iterations=args.pgd_iterations, measures=measure_names,
    )
    results = {"command": "evaluate", "settings": settings, "runs": runs, "wall_seconds": wall}
    stage = folder.stage  # the staging folder: the files appear in --out at commit()
    json_path = write_results(stage, results)
    figures = _evaluate_figures(args, stage, runs, examples, run.model, device)
    table = _evaluate_table(runs, norm)
    report_path = write_report(stage, _evaluate_report(args, run, parts, settings, table, figures, wall))
    folder.commit()
    print_outputs(table, [folder.path(p.name) for p in (json_path, report_path, *figures.values())])
    return 0


# --------------------------------------------------------------------------- outputs


def _evaluate_table(runs: List[Dict[str, Any]], norm: str) -> str:
    rows = []
    for r in runs:
        s = r["summary"]
        for name, st in s["measures"].items():
            rows.append((
                f"{r['eps']:g}", name, st["n"], fmt(st["mean"], 3), fmt(st["median"], 3),
                f"[{fmt(st['ci_low'], 3)}, {fmt(st['ci_high'], 3)}]",
                f"[{fmt(st['q_low'], 3)}, {fmt(st['q_high'], 3)}]", fmt(s["kept_fraction"], 3),
                fmt(s["clean_accuracy"], 3), fmt(s["adversarial_accuracy"], 3),
                f"{s['seconds']['attack'] + s['seconds']['pgd'] + s['seconds'].get('stability', 0.0):.1f}",
            ))
    return markdown_table(
        (f"eps ({norm})", "measure", "n", "mean", "median", "95% CI of the mean", "95% of examples within",
         "fraction kept", "clean accuracy", "PGD accuracy", "time (s)"),
        rows, "rlrrrccrrrr",
    )


def _display_maps(maps: torch.Tensor) -> torch.Tensor:
    """Prepared maps -> one B x H x W map per example for plot_attributions."""
    m = maps.detach().float().cpu()
    if m.dim() == 4:
        m = m.abs().sum(dim=1) if m.shape[1] > 1 else m[:, 0]
    return m


def _maps_figure(args: argparse.Namespace, out: Path, examples: Any, model: torch.nn.Module,
                 device: torch.device) -> Path:
    """The first attacked images and their prepared maps before and after the attack."""
    from captum_robust.visualization import plot_attributions, save_figure

    shown = min(FIGURE_EXAMPLES, len(examples))
    xa, t = examples.inputs_adv[:shown], examples.target[:shown]
    with torch.no_grad():
        pred_adv = model(xa.to(device)).argmax(1).cpu()
    fig = plot_attributions(
        xa, {f"{args.attribution} (clean)": _display_maps(examples.maps[:shown]),
             f"{args.attribution} (attacked)": _display_maps(examples.maps_adv[:shown])},
        labels=t.tolist(), predictions=pred_adv.tolist(), max_examples=shown,
    )
    return save_figure(fig, out / "figure_maps.png", dpi=80)


def _measures_figure(out: Path, runs: List[Dict[str, Any]]) -> Path:
    """Histograms of every measure over the kept examples, one colour per eps."""
    from matplotlib.figure import Figure

    from captum_robust.visualization import save_figure

    names = list(runs[0]["summary"]["measures"])
    stability = runs[0]["summary"].get("stability", {})
    fig = Figure(figsize=(3.2 * len(names), 2.6), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        rows = "attacked" if name in stability else "kept"  # stability: every attacked example
        for r in runs:
            cols = r["per_example"]
            values = [v for v, use in zip(cols[name], cols[rows]) if use and not math.isnan(v)]
            if values:
                ax.hist(values, bins=20, alpha=0.6, label=f"eps {r['eps']:g}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("clean map under noise" if name in stability else "clean vs attacked map", fontsize=8)
        ax.set_ylabel("examples", fontsize=8)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    return save_figure(fig, out / "figure_measures.png", dpi=80)


def _evaluate_figures(args: argparse.Namespace, out: Path, runs: List[Dict[str, Any]], examples: Any,
                      model: torch.nn.Module, device: torch.device) -> Dict[str, Path]:
    figures: Dict[str, Path] = {}
    if examples is not None and len(examples):
        figures["maps"] = _maps_figure(args, out, examples, model, device)
    figures["measures"] = _measures_figure(out, runs)
    return figures


def _stability_note(args: argparse.Namespace) -> List[str]:
    """What the stability rows of the table are (nothing when none was asked for)."""
    asked = [m for m in args.measures if m in STABILITY_MEASURES]
    if not asked:
        return []
    return [
        "",
        f"The stability metrics ({', '.join(asked)}) are not about the attack: they measure how much the clean "
        f"map moves under {args.stability_samples} random perturbations per example (average case; the attack "
        "measures give the worst case found, `captum-robust certify` a guarantee), over every correctly "
        "classified example. The relative stabilities leave out the perturbations that changed the prediction "
        "(their counts are in results.json, `summary.stability`).",
    ]


def _evaluate_report(args: argparse.Namespace, run: UserRun, parts: Parts, settings: Dict[str, Any], table: str,
                     figures: Dict[str, Path], wall: float) -> str:
    lines = [
        *run.report_head("evaluate", args, settings, in_brackets=f", {run.n_classes} classes"),
        f"- attribution: {parts.description}",
        f"- attack: `{args.attack}` ({settings['norm']}, eps {', '.join(f'{e:g}' for e in settings['eps'])}, "
        f"{args.iterations} iterations, k = {settings['k']}); maps of the true label, compared after the attack's "
        "map preparation",
        f"- PGD: {args.pgd_iterations} iterations of 2.5 eps / {args.pgd_iterations}, random start"
        if args.pgd_iterations else "- PGD: skipped",
        run_line(args, settings),
        *[f"- note: {note}" for note in parts.notes],
        "",
        "## Results",
        "",
        "Statistics over the correctly classified examples whose prediction the attack kept "
        "(Boopathy et al.); the CI is Student's t interval of the mean, the other interval holds the "
        "central 95% of the examples. PGD accuracy is over all examples (misclassified ones count as "
        "errors). Time: attack + PGD (+ stability metrics), summed over batches and processes.",
        *_stability_note(args),
        "",
        table,
        "",
    ]
    if "maps" in figures:
        lines += [f"![maps before and after the attack]({figures['maps'].name})", "",
                  "The first attacked images of the first batch (the attacked input is shown), their maps before "
                  "and after the attack (each on its own colour scale).", ""]
    lines += [f"![distribution of the measures]({figures['measures'].name})", ""]
    lines += report_tail("settings, summaries and per-example values (one entry per eps)",
                         [f"- `{p.name}`" for p in figures.values()], wall)
    return "\n".join(lines)
