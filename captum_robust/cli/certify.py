"""``captum-robust certify``: certified top-K overlap and certified l2 radius of Sparsified
SmoothGrad maps of the user's model (:class:`~captum_robust.attr.CertifiedTopK`, Levine et al.);
sharded over the processes of ``torchrun``."""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from captum_robust._utils.reporting import fmt, markdown_table
from captum_robust.cli import _types
from captum_robust.cli._defaults import (
    CERT_CONFIDENCE, CERT_K_FRACTION, CERT_RHO, SMOOTHGRAD_SAMPLES, SMOOTHGRAD_SIGMA, SMOOTHGRAD_SPARSITY,
)
from captum_robust.cli._inputs import UserRun, add_model_options, check_logits, prepare_run
from captum_robust.cli._runtime import (
    OutputFolder, UsageError, add_run_options, batch_generator, distributed_run, my_batches, print_outputs, progress,
    report_tail, run_line, write_report, write_results,
)

CERTIFY_OUT = "./captum_robust_certify/"
CERTIFY_EXAMPLES = 100
CERTIFY_BATCH = 8
#: certificates are reported at rho and at these multiples of it
CERT_RADIUS_MULTIPLES = (0.0, 0.5, 1.0, 2.0, 4.0)
CERT_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
#: the files ``certify`` writes into --out
CERTIFY_FILES = ("results.json", "report.md", "figure_radius_cdf.png")


def add_parser(sub: Any) -> None:
    """Add the ``certify`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser(
        "certify", help="certified top-K robustness of Sparsified SmoothGrad maps of your own model",
        description="""
        Load your model (a factory and a state_dict), compute Sparsified SmoothGrad maps (Levine et al., eq. 2.4) of its
        prediction on the test images and their top-K certificates (CertifiedTopK, Levine Thm. 2): per example
        the certified overlap R of the top-K at l2 radius --rho, and the certified radius, the largest l2 radius
        at which at least --min-overlap of the top-K stays certified. Writes results.json, report.md (quantiles,
        fraction certified at several radii) and figure_radius_cdf.png (CDF of the certified radius) into --out.
        Start it with torchrun --nproc_per_node=P -m captum_robust.cli certify ... to split the examples over P
        processes.
        """,
    )
    add_model_options(p, CERTIFY_EXAMPLES)
    add_run_options(p, CERTIFY_OUT, CERTIFY_BATCH)
    c = p.add_argument_group("certificate")
    c.add_argument("--k", type=_types.count_or_fraction, default=CERT_K_FRACTION, metavar="K",
                   help=f"K of the top-K: a count, or a fraction of the pixels (default: {CERT_K_FRACTION})")
    c.add_argument("--sparsity", type=_types.fraction, default=SMOOTHGRAD_SPARSITY, metavar="S",
                   help=f"fraction of pixels set to 1 in each noisy sample (default: {SMOOTHGRAD_SPARSITY})")
    c.add_argument("--sigma", type=_types.positive_number, default=SMOOTHGRAD_SIGMA, metavar="SIGMA",
                   help=f"smoothing noise standard deviation, pixels in [0, 1] (default: {SMOOTHGRAD_SIGMA})")
    c.add_argument("--n-samples", type=_types.positive_int, default=SMOOTHGRAD_SAMPLES, metavar="N",
                   help=f"noisy samples per image (default: {SMOOTHGRAD_SAMPLES}; Levine used 8192)")
    c.add_argument("--confidence", type=_types.probability, default=CERT_CONFIDENCE, metavar="P",
                   help="probability that all certificates hold (Hoeffding + union bound) "
                        f"(default: {CERT_CONFIDENCE})")
    c.add_argument("--rho", type=_types.nonneg_number, default=CERT_RHO, metavar="RHO",
                   help=f"l2 radius of the per-example certified overlap (default: {CERT_RHO})")
    c.add_argument("--min-overlap", type=_types.fraction, default=0.5, metavar="F",
                   help="the certified radius is the largest radius at which at least ceil(F * K) of the top-K are "
                        "certified (default: 0.5)")
    c.add_argument("--target", choices=("prediction", "label"), default="prediction",
                   help="explain the model's prediction or the true label (default: prediction)")
    c.add_argument("--internal-batch-size", type=_types.positive_int, default=None, metavar="ROWS",
                   help="noisy samples per forward/backward pass (default: chosen automatically)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The ``certify`` handler (joins the torchrun process group when there is one)."""
    return distributed_run(args, lambda ctx, device, out: _certify(args, ctx, device, out), CERTIFY_FILES)


def _certify_batches(args: argparse.Namespace, ctx: Any, device: torch.device, run: UserRun, certifier: Any,
                          m: int, radii: List[float]) -> Tuple[List[Tuple[int, range, Dict[str, Any]]], List[Tuple[int, Any]],
                                                          List[str]]:
    """Certify this process's batches: per batch ``(batch index, example indices, columns)``, per
    batch ``(batch index, CertificateDiagnosis)`` of the overlap ``m`` at rho, and the messages of the
    warnings raised (e.g. a vacuous certificate)."""
    from captum_robust.attr.certify import certified_radius, topk_certificate

    model, x, y = run.model, run.x, run.y
    batches = my_batches(args, ctx, len(y))
    local = []
    diagnoses: List[Tuple[int, Any]] = []
    notes: List[str] = []
    with progress(ctx, len(batches), "certify", not args.no_progress) as bar:
        for b, idx in batches:
            xb, yb = x[idx.start: idx.stop].to(device), y[idx.start: idx.stop].to(device)
            generator = batch_generator(args, b, device)
            with torch.no_grad():
                logits = model(xb)
            check_logits(logits, args, idx.start)  # argmax of NaN is class 0
            pred = logits.argmax(dim=1)
            target = pred if args.target == "prediction" else yb
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    maps, cert = certifier.attribute(xb, target=target, generator=generator,
                                                     internal_batch_size=args.internal_batch_size)
                except (ValueError, TypeError) as exc:  # the library's one-line errors (e.g. NaN gradients)
                    raise UsageError(f"certifying examples {idx.start}..{idx.stop - 1} failed: "
                                     f"{str(exc).strip().splitlines()[0]}") from None
            notes += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
            diagnoses.append((b, cert.diagnose(maps, min_overlap=m)))  # why a radius is 0, what would help
            radius = certified_radius(maps, cert.k, m, cert.sigma, cert.margin).cpu()
            at = [topk_certificate(maps, cert.k, r, cert.sigma, cert.margin).cpu().tolist() for r in radii]
            local.append((b, idx, {
                "index": list(idx), "label": yb.cpu().tolist(), "prediction": pred.cpu().tolist(),
                "target": target.cpu().tolist(), "overlap": cert.overlap.cpu().tolist(),
                "fraction": cert.fraction.cpu().tolist(), "radius": radius.tolist(),
                "overlap_at_radii": [list(v) for v in zip(*at)],
            }))
            bar.update(1)
    return local, diagnoses, notes


def _certify(args: argparse.Namespace, ctx: Any, device: torch.device, folder: OutputFolder) -> int:
    from captum_robust._utils.distributed import gather_to_main
    from captum_robust.attr import CertifiedTopK, SparsifiedSmoothGrad
    from captum_robust.attr.certify import CertificateDiagnosis, hoeffding_margin, resolve_k

    t_start = time.perf_counter()
    run = prepare_run(args, device)
    n_features = run.x[0].numel()
    try:
        k = resolve_k(args.k, n_features)
    except ValueError as exc:
        raise UsageError(f"--k {args.k}: {exc}") from None
    m = max(1, math.ceil(args.min_overlap * k - 1e-9))
    radii = sorted({args.rho * f for f in CERT_RADIUS_MULTIPLES})
    ssg = SparsifiedSmoothGrad(run.model, sparsity=args.sparsity, sigma=args.sigma, n_samples=args.n_samples)
    certifier = CertifiedTopK(ssg, k=k, rho=args.rho, confidence=args.confidence)
    margin = hoeffding_margin(n_features, args.n_samples, args.confidence)
    if ctx.is_main:
        run.print_summary(args, ctx)
        print(f"Sparsified SmoothGrad (sparsity {args.sparsity:g}, sigma {args.sigma:g}, {args.n_samples} samples); "
              f"top-{k} of {n_features} certified at l2 radius {args.rho:g} with confidence {args.confidence:g} "
              f"(Hoeffding margin {margin:.4f})")
    gathered = gather_to_main(_certify_batches(args, ctx, device, run, certifier, m, radii), ctx)
    if not ctx.is_main:
        return 0
    batches = sorted((item for rank_local, _, _ in gathered for item in rank_local), key=lambda item: item[0])
    cols: Dict[str, List[Any]] = {}
    for _, _, part in batches:
        for name, values in part.items():
            cols.setdefault(name, []).extend(values)
    all_notes = sorted({note for _, _, rank_notes in gathered for note in rank_notes})
    diagnosis = CertificateDiagnosis.cat(
        [d for _, d in sorted((item for _, rank_diag, _ in gathered for item in rank_diag), key=lambda item: item[0])]
    )
    summary = _certify_summary(cols, k, m, radii)
    summary["vacuous"] = _vacuous_settings(n_features, args)
    summary["diagnosis"] = {key: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                            for key, v in diagnosis.summary().items()}
    if summary["diagnosis"]["certified"] < summary["n_examples"]:
        summary["diagnosis"]["explanation"] = diagnosis.explanation()
    wall = time.perf_counter() - t_start
    settings = run.settings(
        args, ctx, device, method="SparsifiedSmoothGrad", k=k, n_features=n_features, sparsity=args.sparsity,
        sigma=args.sigma, n_samples=args.n_samples, confidence=args.confidence, rho=args.rho, margin=margin,
        min_overlap=args.min_overlap, min_overlap_count=m, radii=radii, target=args.target,
    )
    results = {"command": "certify", "settings": settings, "summary": summary, "per_example": cols,
               "notes": all_notes, "wall_seconds": wall}
    stage = folder.stage  # the staging folder: the files appear in --out at commit()
    write_results(stage, results)
    figure = _certify_figure(stage, cols["radius"], args.rho, k, m)
    table = _certify_table(summary, settings)
    write_report(stage, _certify_report(args, run, settings, summary, table, figure, all_notes, wall))
    folder.commit()
    for note in all_notes:
        print(f"warning: {note}", file=sys.stderr)
    print_outputs(table, [folder.path(name) for name in CERTIFY_FILES])
    if "explanation" in summary["diagnosis"]:
        print(f"{summary['n_examples'] - summary['diagnosis']['certified']} of {summary['n_examples']} examples have "
              f"fewer than {m} of the top-{k} certified at rho {args.rho:g}: why, and what would help, in "
              f"{folder.path('report.md')} (\"Why the certificates are small\")")
    return 0


def _vacuous_settings(n_features: int, args: argparse.Namespace) -> bool:
    """True when --n-samples is too small for any certificate at --rho and --sigma (even a map of
    exact 1s and 0s certifies nothing): the certificates are vacuous whatever the model."""
    from captum_robust.attr.certify import min_n_samples

    try:
        return args.n_samples < min_n_samples(n_features, args.rho, args.sigma, args.confidence)
    except ValueError:  # no practical n_samples helps at this rho / sigma
        return True


def _diagnosis_lines(summary: Dict[str, Any], k: int, m: int) -> List[str]:
    """The report's paragraph when some example is not certified at rho: why, and what would help."""
    diagnosis = summary["diagnosis"]
    if "explanation" not in diagnosis:
        return []
    if summary["vacuous"]:
        head = ("**The certificates are vacuous**: with these --n-samples, --rho and --sigma no map, however "
                f"clear, has any of its top-{k} certified (see the warning below); every overlap and radius is 0.")
    elif summary["quantiles"]["q100"]["radius"] == 0:
        head = (f"**Every certified radius is 0**: no example keeps {m} of its top-{k} certified at any radius, so "
                "the CDF above is a flat line.")
    else:
        head = f"Not every example keeps {m} of its top-{k} certified at rho."
    return ["## Why the certificates are small", "", f"{head} {diagnosis['explanation']}", ""]


def _certify_summary(cols: Dict[str, List[Any]], k: int, m: int, radii: List[float]) -> Dict[str, Any]:
    import numpy as np

    radius = np.asarray(cols["radius"], dtype=np.float64)
    fraction = np.asarray(cols["fraction"], dtype=np.float64)
    at = np.asarray(cols["overlap_at_radii"], dtype=np.int64).reshape(len(radius), len(radii))
    # "lower" quantiles are observed values, so infinite radii never meet inf - inf
    quantiles = {
        f"q{int(round(100 * q))}": {
            "radius": float(np.quantile(radius, q, method="lower")),
            "fraction": float(np.quantile(fraction, q, method="lower")),
        }
        for q in CERT_QUANTILES
    }
    return {
        "n_examples": int(len(radius)),
        "accuracy": float(np.mean(np.asarray(cols["prediction"]) == np.asarray(cols["label"]))),
        "mean_fraction": float(fraction.mean()),
        "median_radius": float(np.quantile(radius, 0.5, method="lower")),
        "quantiles": quantiles,
        "at_radii": [
            {"radius": r, "certified_fraction": float(np.mean(at[:, i] >= m)), "mean_overlap_fraction": float(at[:, i].mean() / k)}
            for i, r in enumerate(radii)
        ],
    }


def _certify_table(summary: Dict[str, Any], settings: Dict[str, Any]) -> str:
    """The quantiles of the certified radius and fraction, and the fraction certified at each radius."""
    k, m = settings["k"], settings["min_overlap_count"]
    names = {"q0": "min", "q100": "max", "q50": "median"}
    quantiles = markdown_table(
        ("quantile over the examples", "certified radius (l2)", "certified fraction R / K at rho"),
        [(names.get(name, f"{name[1:]}%"), fmt(q["radius"], 4), fmt(q["fraction"], 3))
         for name, q in summary["quantiles"].items()],
    )
    at_radii = markdown_table(
        ("l2 radius", f"examples with at least {m} of the top-{k} certified", "mean certified R / K"),
        [(f"{row['radius']:g}", f"{row['certified_fraction']:.3f}", f"{row['mean_overlap_fraction']:.3f}")
         for row in summary["at_radii"]],
        "rrr",
    )
    return quantiles + "\n\n" + at_radii


def _certify_figure(out: Path, radius: List[float], rho: float, k: int, m: int) -> Path:
    import numpy as np
    from matplotlib.figure import Figure

    from captum_robust.visualization import save_figure

    r = np.sort(np.asarray(radius, dtype=np.float64))
    finite = r[np.isfinite(r)]
    fig = Figure(figsize=(4.5, 3.0), layout="constrained")
    ax = fig.subplots()
    top = float(finite.max()) * 1.1 if finite.size and finite.max() > 0 else max(rho * 2, 1e-3)
    # step up by 1/n at each finite radius; infinite radii never count as <= r
    xs = np.concatenate([[0.0], finite, [top]])
    ys = np.concatenate([[0.0], np.arange(1, finite.size + 1) / len(r), [finite.size / len(r)]])
    ax.step(xs, ys, where="post", color="C0")
    ax.axvline(rho, color="C3", linestyle="--", linewidth=1, label=f"rho = {rho:g}")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("certified l2 radius", fontsize=9)
    ax.set_ylabel("fraction of examples with radius <= r", fontsize=8)
    ax.set_title(f"CDF of the radius certifying {m} of the top-{k}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, out / "figure_radius_cdf.png", dpi=80)


def _certify_report(args: argparse.Namespace, run: UserRun, settings: Dict[str, Any], summary: Dict[str, Any],
                    table: str, figure: Path, notes: List[str], wall: float) -> str:
    k, m = settings["k"], settings["min_overlap_count"]
    lines = [
        *run.report_head("certify", args, settings, after=f"; accuracy on these images {summary['accuracy']:.3f}"),
        f"- Sparsified SmoothGrad (Levine et al., eq. 2.4) of the {args.target}: sparsity {args.sparsity:g}, "
        f"sigma {args.sigma:g}, {args.n_samples} noisy samples; top-K with K = {k} of {settings['n_features']} pixels",
        f"- confidence {args.confidence:g}: Hoeffding margin {settings['margin']:.4f} on every pixel (union bound)",
        run_line(args, settings),
        "",
        "## Certificates",
        "",
        f"Per example, `overlap` is the certified top-{k} overlap R at l2 radius rho = {args.rho:g} "
        f"(`CertifiedTopK`, Levine Thm. 2) and `radius` the largest l2 radius at which at least {m} "
        f"(--min-overlap {args.min_overlap:g}) of the top-{k} stay certified. With probability at least "
        f"{args.confidence:g} over the noise, for every perturbation of at most that l2 norm, the population "
        "smoothed map keeps that many of the observed top-K elements in its top-K. Mean R / K at rho: "
        f"**{summary['mean_fraction']:.3f}**; median certified radius: **{fmt(summary['median_radius'], 4)}**.",
        "",
        table,
        "",
        f"![CDF of the certified radius]({figure.name})",
        "",
        *_diagnosis_lines(summary, k, m),
        *[f"Warning: {note}" for note in notes],
        *([""] if notes else []),
        *report_tail("settings, summary and per-example values (`overlap`, `fraction`, `radius`, `overlap_at_radii` "
                     "at the radii of the second table)", [f"- `{figure.name}`: the CDF above"], wall),
    ]
    return "\n".join(lines)
