"""The ``captum-robust`` command.

Subcommands:

``demo``
    Train the ``Small`` CNN of Boopathy et al. (2020) on the embedded scikit-learn digits
    (upsampled to 28 x 28), explain test images with CAM, Grad-CAM and Grad-CAM++ for the
    true and the predicted class, check CAM completeness, compute a certified Sparsified
    SmoothGrad map of the prediction with its top-K certificate (Levine et al.), attack the
    Integrated Gradients and CAM maps while keeping the predictions (Ghorbani et al.'s top-k
    attack, Boopathy et al.'s AAI), and write ``report.md``, ``figure_attributions.png``,
    ``figure_attacks.png``, ``attacked_inputs.pt`` and ``model.pt`` into ``--out``. Needs no
    network.

``evaluate``
    Attack the explanations of the user's own model (``--model module:factory --weights
    state_dict.pt``) on a test set (embedded digits, MNIST / Fashion-MNIST / CIFAR-10 files or an
    ``.npz`` archive) with :func:`captum_robust.robust.evaluation.attribution_robustness` and PGD;
    writes ``results.json``, ``report.md``, ``figure_maps.png`` and ``figure_measures.png``.

``certify``
    Certified top-K overlap and certified l2 radius of Sparsified SmoothGrad maps of the user's
    model (:class:`~captum_robust.attr.CertifiedTopK`); writes ``results.json``, ``report.md`` and
    ``figure_radius_cdf.png``.

Both shard their examples over the processes of ``torchrun --nproc_per_node=P -m
captum_robust.cli ...`` in fixed global batches seeded by ``(seed, batch index)``, so the
merged result equals the single-process one; only rank 0 prints and writes.

Usage::

    captum-robust demo --out ./captum_robust_demo/
    captum-robust demo --quick --no-progress      # a few seconds
    captum-robust demo --help

From Python, :func:`main` takes the argument list and returns the exit status (0 on
success, 2 for bad arguments or an unusable output folder) instead of exiting::

    >>> from captum_robust.cli import main
    >>> main(["demo", "--quick", "--out", "demo_out"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from captum_robust import __version__

__all__ = ["main", "build_parser"]

PROG = "captum-robust"

#: Defaults of ``demo``. ``DEFAULT_SECONDS`` makes training take about one minute; one epoch
#: (1,437 images, batch 32) takes about 0.1-0.15 s on one CPU thread, so the budget, not the
#: epoch cap, ends the default run. ``--quick`` trains for a fixed number of epochs with no budget.
#: ``DEFAULT_THREADS``: the model is too small to profit from intra-op threads (measured: one
#: thread is as fast as two on an idle 2-core machine, and 10-30x faster when the cores are
#: shared, where OpenMP threads spin-wait for each other).
DEFAULT_THREADS = 1
DEFAULT_OUT = "./captum_robust_demo/"
DEFAULT_SECONDS = 60.0
DEFAULT_EPOCHS = 1000
QUICK_EPOCHS = 8
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
IMAGE_SIZE = 28
TEST_FRACTION = 0.2
MAX_FIGURE_ROWS = 32
#: Certified Sparsified SmoothGrad of the demo (Levine et al.): sparsity tau, noise sigma (pixels
#: in [0, 1]), noisy samples (8 images x 2048 samples take about 2-4 s on one thread), top-K with
#: K = 20% of the pixels, l2 radius rho and confidence p, as in the paper's ImageNet setting.
SMOOTHGRAD_SPARSITY = 0.1
SMOOTHGRAD_SIGMA = 0.2
SMOOTHGRAD_SAMPLES = 2048
SMOOTHGRAD_QUICK_SAMPLES = 512
CERT_K_FRACTION = 0.2
CERT_RHO = 0.03
CERT_CONFIDENCE = 0.95
#: Attacks on the maps of the demo, keeping every prediction: Ghorbani's top-k attack on Integrated
#: Gradients (16 midpoint steps, gradients through a softplus copy with beta 10; top-100 of the 784
#: pixels as in Chen's MNIST setting) and Boopathy's AAI on the 7x7 CAM (top-8 cells, with the hinge).
#: Sign steps of 0.01; 8 images take about 1-2 s on one thread.
ATTACK_STEP = 0.01
ATTACK_IG_STEPS = 16
ATTACK_IG_K = 100
ATTACK_IG_EPS = 0.1
ATTACK_IG_ITERATIONS = 20
ATTACK_IG_QUICK_ITERATIONS = 10
ATTACK_CAM_K = 8
ATTACK_CAM_EPS = 0.2
ATTACK_CAM_ITERATIONS = 50
ATTACK_CAM_QUICK_ITERATIONS = 25

#: Robust training next to the normal model: Int (Boopathy et al. 2020, eq. 8-9) on the CAM, with
#: the paper's tuned strength (gamma=None), an inner PGD of INT_ITERATIONS steps and epsilon
#: warmed up over the first epochs (EpsilonSchedule), then PGD accuracy and AAI on both models.
INT_EPS = 0.2
INT_STEP = 0.05
INT_ITERATIONS = 10
INT_QUICK_ITERATIONS = 3
INT_SECONDS = 45.0
INT_QUICK_EPOCHS = 2
INT_WARMUP_EPOCHS = 2
INT_RAMP_EPOCHS = 8
INT_QUICK_WARMUP_EPOCHS = 0
INT_QUICK_RAMP_EPOCHS = 1
ROBUST_EVAL_IMAGES = 128
PGD_EVAL_ITERATIONS = 40


class UsageError(Exception):
    """An expected user error: reported as one line on stderr with exit status 2."""


# --------------------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32 - 1], got {text!r}") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32 - 1], got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """Return the ``captum-robust`` argument parser (one subparser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Robustness of model explanations: attributions, attacks on them, certified maps.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="train a small CNN on the embedded digits and explain it with CAM, Grad-CAM, Grad-CAM++",
        description=(
            "Train the Small CNN (Boopathy et al. 2020) on scikit-learn's digits upsampled to 28x28 "
            "(offline), report its test accuracy, explain test images with CAM, Grad-CAM and "
            "Grad-CAM++ for the true and the predicted class, check CAM completeness, compute a certified "
            "Sparsified SmoothGrad map of the prediction with its top-K certificate, attack the Integrated "
            "Gradients and CAM maps while keeping the predictions, train a second model with the Int regularizer "
            "(Boopathy et al. 2020) and compare how both resist PGD and AAI, and write report.md, "
            "figure_attributions.png, figure_attacks.png, attacked_inputs.pt, model.pt and model_int.pt into --out. "
            "Training stops after "
            "--epochs epochs or --seconds seconds, whichever comes first; for a reproducible model "
            "give --epochs and a large --seconds."
        ),
    )
    demo.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR",
        help=f"output folder, created if missing (default: {DEFAULT_OUT})",
    )
    demo.add_argument(
        "--epochs", type=_positive_int, default=None, metavar="N",
        help=f"maximum number of training epochs (default: {DEFAULT_EPOCHS}, or {QUICK_EPOCHS} with --quick)",
    )
    demo.add_argument(
        "--seconds", type=_positive_float, default=None, metavar="S",
        help=(
            f"training time budget in seconds (default: {DEFAULT_SECONDS:g}, about one minute of "
            "training; no budget with --quick)"
        ),
    )
    demo.add_argument("--seed", type=_seed, default=0, help="seed of the split, the model and the shuffling (default: 0)")
    demo.add_argument(
        "--examples", type=_positive_int, default=8, metavar="K",
        help="number of test images to explain (default: 8)",
    )
    demo.add_argument(
        "--threads", type=_positive_int, default=DEFAULT_THREADS, metavar="T",
        help=(
            f"torch intra-op threads during the run, restored afterwards (default: {DEFAULT_THREADS}; "
            "the small model gains nothing from more)"
        ),
    )
    demo.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    demo.add_argument(
        "--quick", action="store_true",
        help=f"a run of a few seconds ({QUICK_EPOCHS} epochs, smaller figure), for tests and smoke checks",
    )
    demo.set_defaults(handler=_run_demo)
    _add_evaluate_parser(sub)
    _add_certify_parser(sub)
    return parser


# --------------------------------------------------------------------------- demo


def _prepare_out(out: str) -> Path:
    """Create the output folder (or accept an existing one); UsageError if unusable."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out '{out}' cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out '{out}' is not writable")
    return path


def _cell(index: int, width: int) -> str:
    return f"({index // width}, {index % width})"


def _mean(values: torch.Tensor) -> float:
    """Mean over the finite values (Kendall's tau is NaN for a constant map)."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def _run_demo(args: argparse.Namespace) -> int:
    out = _prepare_out(args.out)
    epochs = args.epochs if args.epochs is not None else (QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS)
    seconds = args.seconds if args.seconds is not None else (None if args.quick else DEFAULT_SECONDS)
    show_progress = not args.no_progress
    # Everything random happens inside fork_rng, and the thread count is restored, so calling
    # main() from Python leaves the caller's global RNG and torch settings as they were.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(args.threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return _demo(out, epochs, seconds, args.seed, args.examples, show_progress, args.quick)
    finally:
        torch.set_num_threads(threads)


def _demo(
    out: Path, epochs: int, seconds: Optional[float], seed: int, examples: int, show_progress: bool, quick: bool
) -> int:
    # Heavy imports here, so that `captum-robust --help` stays fast.
    from captum_robust.attr import CAM, CertifiedTopK, GradCAM, GradCAMPlusPlus, SparsifiedSmoothGrad
    from torch.utils.data import DataLoader

    from captum_robust.data import load_digits
    from captum_robust.models import Small
    from captum_robust.training import evaluate_accuracy, train_classifier
    from captum_robust.visualization import plot_attributions, save_figure

    t_start = time.perf_counter()
    data = load_digits(size=IMAGE_SIZE, test_fraction=TEST_FRACTION, seed=seed)
    n_train, n_test = len(data.train), len(data.test)
    if examples > n_test:
        raise UsageError(f"--examples {examples} is larger than the test set ({n_test} images)")
    # The same loaders as data.digits_loaders(batch_size, size, seed): the training loader
    # shuffles with its own generator seeded by `seed`.
    train_loader = DataLoader(
        data.train, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    test_loader = DataLoader(data.test, batch_size=256, shuffle=False)
    print(
        f"data: scikit-learn digits upsampled to {IMAGE_SIZE}x{IMAGE_SIZE}, "
        f"{n_train} train / {n_test} test images (split seed {seed})"
    )

    torch.manual_seed(seed)
    model = Small(in_channels=1, num_classes=10)
    budget = "no time budget" if seconds is None else f"time budget {seconds:g} s"
    print(f"training Small (at most {epochs} epochs, {budget}) ...", flush=True)
    stats = train_classifier(
        model,
        train_loader,
        epochs=epochs,
        lr=LEARNING_RATE,
        max_seconds=seconds,
        generator=torch.Generator().manual_seed(seed),
        show_progress=show_progress,
    )
    model.eval()
    accuracy = evaluate_accuracy(model, test_loader)
    n_correct = round(accuracy * n_test)
    stop = "time budget reached" if stats["stopped_by_time"] else "epoch limit reached"
    print(
        f"trained {stats['epochs_completed']} epochs ({stats['steps']} steps) in {stats['seconds']:.1f} s ({stop}); "
        f"test accuracy {accuracy:.4f} ({n_correct}/{n_test})"
    )

    # --- attributions
    x_all, y_all = data.test.tensors
    cam = CAM(model, model.feature_layer, model.classifier)
    gradcam = GradCAM(model, model.feature_layer)
    gradcampp = GradCAMPlusPlus(model, model.feature_layer)
    with torch.no_grad():
        logits_all = model(x_all)
    cam_all = cam.attribute(x_all)  # n_test x 10 x 7 x 7, eq. 1
    completeness = float(
        (cam_all.sum(dim=(2, 3)) + model.classifier.bias.detach() - logits_all).abs().max()
    )
    logit_scale = float(logits_all.abs().max())

    x, y = x_all[:examples], y_all[:examples]
    pred = logits_all[:examples].argmax(dim=1)
    gc_plain = gradcam.attribute(x)  # all classes, no ReLU: equals CAM on a GAP -> linear head
    gradcam_vs_cam = float((gc_plain - cam_all[:examples]).abs().max())
    rows = torch.arange(examples)
    maps: Dict[str, torch.Tensor] = {}
    for tag, target in (("label", y), ("pred", pred)):
        maps[f"CAM ({tag})"] = cam_all[:examples][rows, target].unsqueeze(1)
        maps[f"Grad-CAM ({tag})"] = gradcam.attribute(x, target=target, relu_attributions=True)
        maps[f"Grad-CAM++ ({tag})"] = gradcampp.attribute(x, target=target)
    print(
        f"CAM completeness: max |sum(CAM) + bias - logit| = {completeness:.2e} "
        f"over {n_test} test images x 10 classes (largest |logit| {logit_scale:.1f})"
    )

    # --- certified Sparsified SmoothGrad of the prediction (Levine et al., eq. 2.4 and Thm. 2)
    sg_samples = SMOOTHGRAD_QUICK_SAMPLES if quick else SMOOTHGRAD_SAMPLES
    t_sg = time.perf_counter()
    ssg = SparsifiedSmoothGrad(model, sparsity=SMOOTHGRAD_SPARSITY, sigma=SMOOTHGRAD_SIGMA, n_samples=sg_samples)
    certifier = CertifiedTopK(ssg, k=CERT_K_FRACTION, rho=CERT_RHO, confidence=CERT_CONFIDENCE)
    sg_maps, cert = certifier.attribute(
        x, target=pred, generator=torch.Generator().manual_seed(seed), show_progress=show_progress
    )
    sg_seconds = time.perf_counter() - t_sg
    maps["Certified SG (pred)"] = sg_maps
    fractions = cert.fraction
    print(
        f"certified Sparsified SmoothGrad: top-{cert.k} overlap certified within l2 radius {CERT_RHO} "
        f"(p = {CERT_CONFIDENCE}): median {float(fractions.median()):.2f} of K, min {float(fractions.min()):.2f} "
        f"({sg_samples} samples, {sg_seconds:.1f} s)"
    )

    # --- attacks on the IG and CAM maps that keep the predictions
    from captum_robust.attr import BatchedIntegratedGradients
    from captum_robust.robust.attacks import AAI, TopKAttack, ghorbani_maps, softplus_surrogate
    from captum_robust.robust.discrepancy import kendall_tau, topk_intersection

    t_attack = time.perf_counter()
    ig_iterations = ATTACK_IG_QUICK_ITERATIONS if quick else ATTACK_IG_ITERATIONS
    cam_iterations = ATTACK_CAM_QUICK_ITERATIONS if quick else ATTACK_CAM_ITERATIONS
    topk_attack = TopKAttack(
        model, BatchedIntegratedGradients(model), k=ATTACK_IG_K, eps=ATTACK_IG_EPS, step_size=ATTACK_STEP,
        n_iterations=ig_iterations, surrogate=softplus_surrogate(model, beta=10.0),
        attribution_kwargs={"n_steps": ATTACK_IG_STEPS, "method": "riemann_middle"},
    )
    x_ig, result_ig = topk_attack.perturb(x, target=pred, show_progress=show_progress)
    ig_before = ghorbani_maps(topk_attack.attribution_maps(x, target=pred))
    ig_after = ghorbani_maps(topk_attack.attribution_maps(x_ig, target=pred))
    ig_top = topk_intersection(ig_before, ig_after, ATTACK_IG_K)
    ig_tau = kendall_tau(ig_before, ig_after)
    aai = AAI(model, cam, eps=ATTACK_CAM_EPS, step_size=ATTACK_STEP, n_iterations=cam_iterations, k=ATTACK_CAM_K)
    x_cam, result_cam = aai.perturb(
        x, target=pred, generator=torch.Generator().manual_seed(seed), show_progress=show_progress
    )
    cam_before, cam_after = cam.attribute(x, target=pred), cam.attribute(x_cam, target=pred)
    cam_tau = kendall_tau(cam_before, cam_after)
    cam_top = topk_intersection(cam_before, cam_after, ATTACK_CAM_K)
    with torch.no_grad():
        kept = int(((model(x_ig).argmax(1) == pred) & (model(x_cam).argmax(1) == pred)).sum())
    attack_seconds = time.perf_counter() - t_attack
    print(
        f"attacks on the maps (predictions kept: {kept}/{examples}): IG top-{ATTACK_IG_K} intersection "
        f"{_mean(ig_top):.3f}, Kendall {_mean(ig_tau):.3f}; CAM Kendall {_mean(cam_tau):.3f} ({attack_seconds:.1f} s)"
    )

    # --- robust training: an Int model next to the normal one, and how both resist attacks
    robust = _robust_training(
        model, accuracy, data, train_loader, test_loader, epochs, seed, quick, show_progress, cam_iterations
    )

    # --- outputs
    shown = min(examples, MAX_FIGURE_ROWS)
    fig = plot_attributions(x, maps, labels=y, predictions=pred, max_examples=shown)
    figure_path = save_figure(fig, out / "figure_attributions.png", dpi=60 if quick else 100)
    model_path = out / "model.pt"
    torch.save(model.state_dict(), model_path)
    robust["model_path"] = out / "model_int.pt"
    torch.save(robust.pop("model").state_dict(), robust["model_path"])
    attack_maps = {
        "|IG| (pred)": ig_before, "|IG| after top-k attack": ig_after,
        "CAM (pred)": cam_before, "CAM after AAI": cam_after,
    }
    fig = plot_attributions(x, attack_maps, labels=y, predictions=pred, max_examples=shown)
    attack_figure = save_figure(fig, out / "figure_attacks.png", dpi=60 if quick else 100)
    attacked_path = out / "attacked_inputs.pt"
    torch.save({"topk_ig": x_ig.detach().clone(), "aai_cam": x_cam.detach().clone()}, attacked_path)

    width = cam_all.shape[-1]
    cam_label = maps["CAM (label)"].flatten(1)
    cam_pred = maps["CAM (pred)"].flatten(1)
    table: List[str] = [
        "| test index | label | prediction | top CAM cell (label) | top CAM cell (prediction) |",
        "|---:|---:|---:|:---:|:---:|",
    ]
    for i in range(examples):
        mark = "" if int(y[i]) == int(pred[i]) else " (wrong)"
        table.append(
            f"| {i} | {int(y[i])} | {int(pred[i])}{mark} | "
            f"{_cell(int(cam_label[i].argmax()), width)} | {_cell(int(cam_pred[i].argmax()), width)} |"
        )
    cert_table: List[str] = [
        "| test index | prediction | certified overlap R (of K) | R / K |",
        "|---:|---:|---:|---:|",
    ]
    for i in range(examples):
        cert_table.append(f"| {i} | {int(pred[i])} | {int(cert.overlap[i])} | {float(fractions[i]):.3f} |")
    attack_table: List[str] = [
        f"| test index | prediction | IG top-{ATTACK_IG_K} | IG Kendall | l-inf (top-k attack) | CAM Kendall | "
        f"CAM top-{ATTACK_CAM_K} | l-inf (AAI) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in range(examples):
        attack_table.append(
            f"| {i} | {int(pred[i])} | {float(ig_top[i]):.3f} | {float(ig_tau[i]):.3f} | {float(result_ig.norm[i]):.3f} | "
            f"{float(cam_tau[i]):.3f} | {float(cam_top[i]):.3f} | {float(result_cam.norm[i]):.3f} |"
        )
    history = stats["history"]
    final_train_acc = history[-1]["train_accuracy"] if history else float("nan")
    report = _REPORT.format(
        version=__version__,
        size=IMAGE_SIZE,
        n_train=n_train,
        n_test=n_test,
        test_fraction=TEST_FRACTION,
        seed=seed,
        n_params=sum(p.numel() for p in model.parameters()),
        lr=LEARNING_RATE,
        batch=BATCH_SIZE,
        max_epochs=epochs,
        budget="none" if seconds is None else f"{seconds:g} s",
        epochs_done=stats["epochs_completed"],
        steps=stats["steps"],
        train_seconds=stats["seconds"],
        stop=stop,
        final_loss=stats["final_loss"],
        train_acc=final_train_acc,
        accuracy=accuracy,
        n_correct=n_correct,
        n_examples=examples,
        map_side=width,
        table="\n".join(table),
        completeness=completeness,
        logit_scale=logit_scale,
        gradcam_vs_cam=gradcam_vs_cam,
        sg_sparsity=SMOOTHGRAD_SPARSITY,
        sg_ones=math.ceil(SMOOTHGRAD_SPARSITY * cert.n_features),
        sg_sigma=SMOOTHGRAD_SIGMA,
        sg_samples=sg_samples,
        sg_seconds=sg_seconds,
        n_pixels=cert.n_features,
        cert_k=cert.k,
        cert_rho=CERT_RHO,
        cert_p=CERT_CONFIDENCE,
        cert_margin=cert.margin,
        cert_table="\n".join(cert_table),
        cert_median=float(fractions.median()),
        cert_min=float(fractions.min()),
        attack_step=ATTACK_STEP,
        ig_steps=ATTACK_IG_STEPS,
        ig_k=ATTACK_IG_K,
        ig_eps=ATTACK_IG_EPS,
        ig_iterations=ig_iterations,
        cam_k=ATTACK_CAM_K,
        cam_eps=ATTACK_CAM_EPS,
        cam_iterations=cam_iterations,
        attack_table="\n".join(attack_table),
        ig_top_mean=_mean(ig_top),
        ig_tau_mean=_mean(ig_tau),
        cam_tau_mean=_mean(cam_tau),
        cam_top_mean=_mean(cam_top),
        kept=kept,
        attack_seconds=attack_seconds,
        attack_figure=attack_figure.name,
        attacked_file=attacked_path.name,
        shown=shown,
        figure=figure_path.name,
        model_file=model_path.name,
        int_model_file=robust["model_path"].name,
        robust_section=robust["section"],
        total_seconds=time.perf_counter() - t_start,
    )
    report_path = out / "report.md"
    report_path.write_text(report, encoding="utf-8")

    print(f"wrote {report_path}")
    print(f"wrote {figure_path}")
    print(f"wrote {attack_figure}")
    print(f"wrote {attacked_path}")
    print(f"wrote {model_path}")
    print(f"wrote {robust['model_path']}")
    return 0


def _robust_training(
    model: torch.nn.Module,
    accuracy: float,
    data: Any,
    train_loader: Any,
    test_loader: Any,
    epochs: int,
    seed: int,
    quick: bool,
    show_progress: bool,
    cam_iterations: int,
) -> Dict[str, Any]:
    """Train Small with Int (Boopathy et al. 2020) next to the normal model; compare PGD accuracy and
    AAI Kendall's tau of both on the first test images. Returns the report section and the model."""
    from captum_robust.attr import CAM
    from captum_robust.models import Small
    from captum_robust.robust.attacks import AAI, PGD
    from captum_robust.robust.discrepancy import kendall_tau
    from captum_robust.robust.regularizers import EpsilonSchedule, Int
    from captum_robust.training import evaluate_accuracy, train_classifier

    steps_per_epoch = len(train_loader)
    warmup = (INT_QUICK_WARMUP_EPOCHS if quick else INT_WARMUP_EPOCHS) * steps_per_epoch
    ramp = (INT_QUICK_RAMP_EPOCHS if quick else INT_RAMP_EPOCHS) * steps_per_epoch
    iterations = INT_QUICK_ITERATIONS if quick else INT_ITERATIONS
    int_epochs = INT_QUICK_EPOCHS if quick else epochs
    seconds = None if quick else INT_SECONDS
    torch.manual_seed(seed)
    int_model = Small(in_channels=1, num_classes=10)
    schedule = EpsilonSchedule(INT_EPS, warmup_steps=warmup, ramp_steps=ramp)
    reg = Int(int_model, eps=schedule, step_size=INT_STEP, n_iterations=iterations,
              generator=torch.Generator().manual_seed(seed))
    budget = "no time budget" if seconds is None else f"time budget {seconds:g} s"
    print(f"training Small with Int (at most {int_epochs} epochs, {budget}) ...", flush=True)
    stats = train_classifier(
        int_model, train_loader, epochs=int_epochs, lr=LEARNING_RATE, max_seconds=seconds,
        generator=torch.Generator().manual_seed(seed), show_progress=show_progress, regularizer=reg,
    )
    int_model.eval()
    int_accuracy = evaluate_accuracy(int_model, test_loader)

    x_all, y_all = data.test.tensors
    x, y = x_all[:ROBUST_EVAL_IMAGES], y_all[:ROBUST_EVAL_IMAGES]
    rows = []
    for name, net, acc in (("normal", model, accuracy), ("Int", int_model, int_accuracy)):
        with torch.no_grad():
            correct = net(x).argmax(1) == y
        xc, yc = x[correct], y[correct]
        pgd = PGD(net, eps=INT_EPS, step_size=ATTACK_STEP, n_iterations=PGD_EVAL_ITERATIONS)
        _, pgd_result = pgd.perturb(xc, target=yc, generator=torch.Generator().manual_seed(seed))
        cam = CAM(net, net.feature_layer, net.classifier)
        aai = AAI(net, cam, eps=INT_EPS, step_size=ATTACK_STEP, n_iterations=cam_iterations, k=ATTACK_CAM_K)
        x_adv, aai_result = aai.perturb(xc, target=yc, generator=torch.Generator().manual_seed(seed))
        tau = kendall_tau(cam.attribute(xc, target=yc, raw=True), cam.attribute(x_adv, target=yc, raw=True))
        kept = aai_result.predictions == yc
        rows.append({
            "name": name, "accuracy": acc, "n": int(correct.sum()),
            "pgd_accuracy": float(1 - pgd_result.success.float().mean()),
            "kendall": _mean(tau[kept]), "kept": int(kept.sum()),
        })
    normal_row, int_row = rows
    print(
        f"Int model: test accuracy {int_accuracy:.4f}, {stats['steps']} steps in {stats['seconds']:.1f} s; "
        f"PGD accuracy (eps {INT_EPS}) normal {normal_row['pgd_accuracy']:.3f} / Int {int_row['pgd_accuracy']:.3f}; "
        f"AAI CAM Kendall normal {normal_row['kendall']:.3f} / Int {int_row['kendall']:.3f}"
    )
    table = [
        f"| model | test accuracy | PGD accuracy (eps {INT_EPS}) | AAI Kendall's tau of the CAM (eps {INT_EPS}) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['name']} | {r['accuracy']:.4f} | {r['pgd_accuracy']:.3f} (of {r['n']}) | "
            f"{r['kendall']:.3f} (prediction kept on {r['kept']}) |"
        )
    final_eps = schedule(max(stats["steps"] - 1, 0))
    section = _ROBUST_SECTION.format(
        eps=INT_EPS, step=INT_STEP, iterations=iterations, warmup=warmup, ramp=ramp, steps=stats["steps"],
        seconds=stats["seconds"], final_eps=final_eps, gamma=reg.resolved_gamma(49), n_eval=ROBUST_EVAL_IMAGES,
        pgd_iterations=PGD_EVAL_ITERATIONS, attack_step=ATTACK_STEP, cam_k=ATTACK_CAM_K,
        cam_iterations=cam_iterations, table="\n".join(table),
    )
    return {"section": section, "model": int_model, "rows": rows}


_ROBUST_SECTION = """\
## Robust training (Int)

A second `Small`, trained on the same batches with the cross-entropy **plus Boopathy et al.'s Int
term** (`captum_robust.robust.regularizers.Int`, eq. 8-9): gamma times the largest target-free
discrepancy of the class activation maps within an l-inf ball, found at every step by {iterations}
PGD steps of {step}. gamma = {gamma:.3g} is the paper's tuned strength converted to eq. 1 maps
(`gamma=None`). Epsilon follows an `EpsilonSchedule`: 0 for {warmup} steps, then a linear ramp to
{eps} over {ramp} steps; this run took {steps} steps in {seconds:.1f} s and ended at epsilon
{final_eps:.3f}.

Both models on the first {n_eval} test images (those each classifies correctly): accuracy under
PGD ({pgd_iterations} steps of {attack_step}, random start), and AAI (top-{cam_k} variant,
{cam_iterations} steps of {attack_step}) against the true-class CAM, Kendall's tau between the
clean and the attacked raw map over the images whose prediction the attack kept (1 = ranking
unchanged).

{table}

A short run: the paper trains for thousands of steps (epsilon reaches its final value at step
10000 on MNIST), so expect the gap to grow with longer training.
"""


_REPORT = """\
# captum-robust demo report

Generated by `captum-robust demo` (captum_robust {version}).

## Data

scikit-learn's handwritten digits (1,797 real 8x8 images shipped with scikit-learn), scaled to
[0, 1] and upsampled (bilinear) to {size}x{size}; stratified split with seed {seed}:
{n_train} training and {n_test} test images (test fraction {test_fraction}).

## Model and training

`captum_robust.models.Small` (conv 16/32/100, global average pooling, linear; {n_params:,} parameters).
Adam, learning rate {lr:g}, batch size {batch}, cross-entropy; at most {max_epochs} epochs,
time budget {budget}.

- epochs completed: {epochs_done} ({steps} optimizer steps, {stop})
- training time: {train_seconds:.1f} s
- last-epoch training loss: {final_loss:.3g}, training accuracy (on the fly): {train_acc:.4f}

## Test accuracy

**Test accuracy: {accuracy:.4f} ({n_correct}/{n_test})**

## Attributions

CAM (Boopathy et al. 2020, eq. 1, with the 1/u factor), Grad-CAM (ReLU applied, for display)
and Grad-CAM++ on the last convolution (`model.feature_layer`, a {map_side}x{map_side} map),
for the true label and for the predicted class, on the first {n_examples} test images.
Cells are (row, column) in the {map_side}x{map_side} map.

{table}

## Checks

- CAM completeness, max over the {n_test} test images and all 10 classes of
  |sum of CAM + bias - logit|: **{completeness:.2e}** (largest |logit|: {logit_scale:.1f}).
- Grad-CAM without ReLU vs CAM (they are equal on a GAP -> linear head), max |difference| over the
  explained images and all classes: {gradcam_vs_cam:.2e}.

## Certified Sparsified SmoothGrad

Sparsified SmoothGrad (Levine et al., eq. 2.4) of the predicted class: for each of {sg_samples}
noisy copies x + e of an image (e ~ N(0, sigma^2 I), sigma = {sg_sigma}), the {sg_ones} pixels with the
largest |gradient| (sparsity {sg_sparsity}) are set to 1 and all others to 0; the map is the average,
the fraction of noisy copies in which each pixel is among the most important ones. Its top-K
certificate (Levine Thm. 2) with K = {cert_k} (20% of the {n_pixels} pixels) and l2 radius rho = {cert_rho}:

{cert_table}

Median certified fraction R / K: **{cert_median:.3f}**, smallest: {cert_min:.3f}.

What the certificate means: with probability at least {cert_p} over the smoothing noise, for
**every** perturbation d of the image with l2 norm at most {cert_rho} (pixel values in [0, 1]), at
least R of the K most important pixels of this map are also among the K most important pixels of
the Sparsified SmoothGrad map of x + d (the expectation over the noise, which such a map
estimates). It holds whether or not the perturbation changes the prediction, and says nothing about
larger perturbations. The {sg_samples}-sample estimate is trusted up to a Hoeffding margin of
{cert_margin:.3f} on every pixel at once (union bound over {n_pixels} pixels); more samples give a
smaller margin and a larger certificate. Computed in {sg_seconds:.1f} s.

## Attacks on the maps

Perturbations that keep every prediction but change the explanation, on the same {n_examples}
images (maps of the predicted class; iterates that change a prediction are rejected):

- **Integrated Gradients** ({ig_steps} midpoint steps, zero baseline) under Ghorbani et al.'s
  top-k attack (`TopKAttack`): {ig_iterations} sign steps of {attack_step} within an l-inf ball of
  radius {ig_eps}, moving attribution mass off the {ig_k} most important pixels, with gradients
  taken through a softplus copy of the model (beta 10). Compared on |IG| summed over channels:
  top-{ig_k} intersection and Kendall's tau with the clean map (1 = unchanged).
- **CAM** under Boopathy et al.'s attack against interpretability (`AAI`, top-{cam_k} variant
  with the hinge): {cam_iterations} sign steps of {attack_step} within an l-inf ball of radius
  {cam_eps}. Compared on the raw 7x7 CAM: Kendall's tau and top-{cam_k} intersection.

{attack_table}

Means: IG top-{ig_k} intersection **{ig_top_mean:.3f}**, IG Kendall {ig_tau_mean:.3f}; CAM Kendall
**{cam_tau_mean:.3f}**, CAM top-{cam_k} intersection {cam_top_mean:.3f}. Predictions kept by both attacks:
{kept}/{n_examples}. Computed in {attack_seconds:.1f} s.

![maps before and after the attacks]({attack_figure})

The maps after the attacks are drawn over the clean images (each pixel moved by at most the
radius); `{attacked_file}` holds the attacked inputs (`topk_ig`, `aai_cam`).

{robust_section}
## Figure

First {shown} explained images; each map is upsampled to the image size and coloured on its
own scale (jet: blue low, red high).

![CAM, Grad-CAM, Grad-CAM++ and certified Sparsified SmoothGrad maps]({figure})

## Files

- `{figure}`: the figure above
- `{attack_figure}`: the maps before and after the attacks
- `{attacked_file}`: the attacked inputs (a dict of tensors; `torch.load(..., weights_only=True)`)
- `{model_file}`: the trained weights (`state_dict`); load with
  `Small().load_state_dict(torch.load("{model_file}", weights_only=True))`
- `{int_model_file}`: the weights of the Int-trained model (same architecture)
- `report.md`: this report

Total run time after start-up: {total_seconds:.1f} s.
"""


# --------------------------------------------------------------------------- evaluate / certify: shared

#: ``evaluate`` and ``certify`` run the user's own model. Attribution methods and attacks by name.
ATTRIBUTIONS = ("ig", "saliency", "cam", "sparsified-smoothgrad")
ATTACKS = ("topk", "mass-center", "aai", "l2-topk")
DATA_KINDS = ("digits", "mnist", "fashion-mnist", "cifar10", "npz")
MEASURES = ("topk", "kendall", "spearman", "center_dislocation", "l1", "l2")
EVALUATE_OUT = "./captum_robust_evaluate/"
CERTIFY_OUT = "./captum_robust_certify/"
EVALUATE_EXAMPLES = 100
EVALUATE_BATCH = 32
CERTIFY_EXAMPLES = 100
CERTIFY_BATCH = 8
LINF_EPS = 0.1
L2_EPS = 1.0
ATTACK_ITERATIONS = 20
SURROGATE_BETA = 10.0
SMOOTHGRAD_ATTACK_SAMPLES = 8
SMOOTHGRAD_CLIP = 0.01
FIGURE_EXAMPLES = 4
#: certificates are reported at rho and at these multiples of it
CERT_RADIUS_MULTIPLES = (0.0, 0.5, 1.0, 2.0, 4.0)
CERT_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _nonneg_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _count_or_fraction(text: str) -> Any:
    """``"100"`` -> 100 (a count), ``"0.2"`` -> 0.2 (a fraction of the map size)."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a count >= 1 or a fraction in (0, 1), got {text!r}"
            ) from None
        if not 0 < value < 1:
            raise argparse.ArgumentTypeError(f"expected a count >= 1 or a fraction in (0, 1), got {text!r}")
        return value
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1 or a fraction in (0, 1), got {text!r}")
    return value


def _add_model_options(p: argparse.ArgumentParser, out: str, examples: int, batch: int) -> None:
    """Options shared by ``evaluate`` and ``certify``: the model, the data and the run."""
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model", required=True, metavar="MODULE:FACTORY",
        help=(
            "the model factory, e.g. mypackage.nets:make_model or mymodule:Net: MODULE is imported (the current "
            "directory is searched too) and FACTORY is called with no arguments (or --model-kwargs); it must return "
            "a torch.nn.Module that maps images in [0, 1] (N x C x H x W) to class logits (put any input "
            "normalization inside the model)"
        ),
    )
    g.add_argument(
        "--weights", required=True, metavar="FILE",
        help="the model's state_dict saved with torch.save(model.state_dict(), FILE); loaded with "
             "torch.load(FILE, weights_only=True), so pickled Python objects are refused",
    )
    g.add_argument(
        "--model-kwargs", default=None, metavar="JSON",
        help="keyword arguments for the factory as a JSON object, e.g. '{\"num_classes\": 10}'",
    )
    g.add_argument(
        "--data", default="digits", metavar="SPEC",
        help=(
            "the test images: digits (scikit-learn's digits, the demo's test split: 360 images), mnist:DIR, "
            "fashion-mnist:DIR (IDX files t10k-*), cifar10:DIR (binary test_batch.bin) or npz:FILE (arrays 'x' "
            "N x C x H x W or N x H x W, float in [0, 1] or uint8, and 'y' int labels; see "
            "captum_robust.data.load_npz) (default: digits)"
        ),
    )
    g.add_argument(
        "--image-size", type=_positive_int, default=None, metavar="PX",
        help="side of the digits images: 28 (default, upsampled like MNIST) or 8 (the original pixels); "
             "only with --data digits",
    )
    g.add_argument(
        "--examples", type=_positive_int, default=examples, metavar="N",
        help=f"evaluate the first N test images (default: {examples})",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--batch-size", type=_positive_int, default=batch, metavar="B",
        help=(
            f"examples per batch (default: {batch}); the batches and their random seeds do not depend on the number "
            "of processes, so a torchrun run gives the single-process results"
        ),
    )
    r.add_argument(
        "--seed", type=_seed, default=0,
        help="seed of every random choice; batch b draws from a generator seeded with (seed, b) (default: 0)",
    )
    r.add_argument("--out", default=out, metavar="DIR", help=f"output folder, created if missing (default: {out})")
    r.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="where the model runs (default: cpu); under torchrun, cuda means cuda:LOCAL_RANK",
    )
    r.add_argument(
        "--threads", type=_positive_int, default=None, metavar="T",
        help="torch intra-op threads during the run, restored afterwards (default: leave as is)",
    )
    r.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="attack the explanations of your own model and report how much they change (with PGD accuracy)",
        description=(
            "Load your model (a factory and a state_dict), explain the correctly classified test images with an "
            "attribution method, attack the explanations while keeping the predictions, and report how much the "
            "maps changed (top-k intersection, Kendall's tau, ...: mean, median, 95% intervals over the examples "
            "whose prediction the attack kept) together with the model's accuracy under PGD with the same budget. "
            "Runs captum_robust.robust.evaluation.attribution_robustness and writes results.json, report.md, "
            "figure_maps.png (maps before/after the attack) and figure_measures.png (histograms) into --out. "
            "Start it with torchrun --nproc_per_node=P -m captum_robust.cli evaluate ... to split the examples "
            "over P processes; rank 0 gathers the per-example results and writes the files."
        ),
    )
    _add_model_options(p, EVALUATE_OUT, EVALUATE_EXAMPLES, EVALUATE_BATCH)
    a = p.add_argument_group("attribution and attack")
    a.add_argument(
        "--attribution", choices=ATTRIBUTIONS, default="ig",
        help=(
            "the explanation: ig (Integrated Gradients, zero baseline), saliency (input gradient), cam (class "
            "activation map; needs global average pooling -> linear head) or sparsified-smoothgrad (Levine et al.; "
            "attacked through its relaxed, differentiable version) (default: ig)"
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
    a.add_argument(
        "--eps", type=_positive_number, nargs="+", default=None, metavar="EPS",
        help=f"attack radius, one or more values (each gives a row group) (default: {LINF_EPS} for the l-inf "
             f"attacks, {L2_EPS} for l2-topk); PGD uses the same radius and norm",
    )
    a.add_argument(
        "--k", type=_positive_int, default=None, metavar="K",
        help="size of the attacked top set and of the top-k intersection (default: 8 for cam, else one eighth of the "
             "attacked map's elements, e.g. 98 of 784 pixels)",
    )
    a.add_argument(
        "--iterations", type=_positive_int, default=ATTACK_ITERATIONS, metavar="N",
        help=f"attack iterations (default: {ATTACK_ITERATIONS})",
    )
    a.add_argument(
        "--step-size", type=_positive_number, default=None, metavar="S",
        help="l-inf attacks' step (default: 2.5 * eps / iterations)",
    )
    a.add_argument(
        "--restarts", type=_positive_int, default=1, metavar="R", help="restarts of l2-topk (default: 1)",
    )
    a.add_argument(
        "--measures", nargs="+", choices=MEASURES, default=["topk", "kendall"], metavar="M",
        help=f"measures between the clean and attacked maps, among {', '.join(MEASURES)} (default: topk kendall)",
    )
    a.add_argument(
        "--pgd-iterations", type=_nonneg_int, default=40, metavar="N",
        help="PGD iterations for the adversarial accuracy (step 2.5 * eps / N, random start); 0 skips PGD (default: 40)",
    )
    a.add_argument(
        "--ig-steps", type=_positive_int, default=16, metavar="N",
        help="Integrated Gradients steps (midpoint rule) (default: 16)",
    )
    a.add_argument(
        "--sparsity", type=_fraction, default=SMOOTHGRAD_SPARSITY, metavar="S",
        help=f"sparsified-smoothgrad: fraction of pixels set to 1 per sample (default: {SMOOTHGRAD_SPARSITY})",
    )
    a.add_argument(
        "--sigma", type=_positive_number, default=SMOOTHGRAD_SIGMA, metavar="SIGMA",
        help=f"sparsified-smoothgrad: noise standard deviation, pixels in [0, 1] (default: {SMOOTHGRAD_SIGMA})",
    )
    a.add_argument(
        "--n-samples", type=_positive_int, default=64, metavar="N",
        help="sparsified-smoothgrad: noisy samples of the measured maps (default: 64)",
    )
    a.add_argument(
        "--surrogate-beta", type=_nonneg_number, default=SURROGATE_BETA, metavar="BETA",
        help=(
            f"attack gradients of ig / saliency / sparsified-smoothgrad go through a copy of the model with every "
            f"nn.ReLU replaced by Softplus(BETA) (second derivatives through ReLU vanish); 0 uses the model itself "
            f"(default: {SURROGATE_BETA:g})"
        ),
    )
    a.add_argument(
        "--layer", default=None, metavar="NAME",
        help="cam: the submodule whose output is the last feature map (a name from model.named_modules()); "
             "default: model.feature_layer if defined, else found automatically",
    )
    a.add_argument(
        "--classifier", default=None, metavar="NAME",
        help="cam: the final nn.Linear fed by global average pooling; default: model.classifier if defined, else "
             "the last nn.Linear",
    )
    p.set_defaults(handler=_run_evaluate)


def _add_certify_parser(sub: Any) -> None:
    p = sub.add_parser(
        "certify",
        help="certified top-K robustness of Sparsified SmoothGrad maps of your own model",
        description=(
            "Load your model (a factory and a state_dict), compute Sparsified SmoothGrad maps (Levine et al., eq. "
            "2.4) of its prediction on the test images and their top-K certificates (CertifiedTopK, Levine Thm. 2): "
            "per example the certified overlap R of the top-K at l2 radius --rho, and the certified radius, the "
            "largest l2 radius at which at least --min-overlap of the top-K stays certified. Writes results.json, "
            "report.md (quantiles, fraction certified at several radii) and figure_radius_cdf.png (CDF of the "
            "certified radius) into --out. Start it with torchrun --nproc_per_node=P -m captum_robust.cli certify "
            "... to split the examples over P processes."
        ),
    )
    _add_model_options(p, CERTIFY_OUT, CERTIFY_EXAMPLES, CERTIFY_BATCH)
    c = p.add_argument_group("certificate")
    c.add_argument(
        "--k", type=_count_or_fraction, default=CERT_K_FRACTION, metavar="K",
        help=f"K of the top-K: a count, or a fraction of the pixels (default: {CERT_K_FRACTION})",
    )
    c.add_argument(
        "--sparsity", type=_fraction, default=SMOOTHGRAD_SPARSITY, metavar="S",
        help=f"fraction of pixels set to 1 in each noisy sample (default: {SMOOTHGRAD_SPARSITY})",
    )
    c.add_argument(
        "--sigma", type=_positive_number, default=SMOOTHGRAD_SIGMA, metavar="SIGMA",
        help=f"smoothing noise standard deviation, pixels in [0, 1] (default: {SMOOTHGRAD_SIGMA})",
    )
    c.add_argument(
        "--n-samples", type=_positive_int, default=SMOOTHGRAD_SAMPLES, metavar="N",
        help=f"noisy samples per image (default: {SMOOTHGRAD_SAMPLES}; Levine used 8192)",
    )
    c.add_argument(
        "--confidence", type=_probability, default=CERT_CONFIDENCE, metavar="P",
        help=f"probability that all certificates hold (Hoeffding + union bound) (default: {CERT_CONFIDENCE})",
    )
    c.add_argument(
        "--rho", type=_nonneg_number, default=CERT_RHO, metavar="RHO",
        help=f"l2 radius of the per-example certified overlap (default: {CERT_RHO})",
    )
    c.add_argument(
        "--min-overlap", type=_fraction, default=0.5, metavar="F",
        help="the certified radius is the largest radius at which at least ceil(F * K) of the top-K are certified "
             "(default: 0.5)",
    )
    c.add_argument(
        "--target", choices=("prediction", "label"), default="prediction",
        help="explain the model's prediction or the true label (default: prediction)",
    )
    c.add_argument(
        "--internal-batch-size", type=_positive_int, default=None, metavar="ROWS",
        help="noisy samples per forward/backward pass (default: chosen automatically)",
    )
    p.set_defaults(handler=_run_certify)


def _with_run_settings(args: argparse.Namespace, run: Any) -> int:
    """Set --threads, fork the global RNG (main() leaves the caller's as it was), then run."""
    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return run()
    finally:
        torch.set_num_threads(threads)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda, but CUDA is not available on this machine; use --device cpu")
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        index = local_rank if world > 1 else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local_rank} has no CUDA device (only {torch.cuda.device_count()} visible)")
        return torch.device("cuda", index)
    return torch.device("cpu")


def _build_model(spec: str, kwargs_json: Optional[str]) -> torch.nn.Module:
    """Import ``module:factory`` (the current directory on sys.path while importing) and call it."""
    import importlib
    import json

    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise UsageError(f"--model {spec!r} must have the form MODULE:FACTORY, e.g. mypackage.nets:make_model")
    kwargs: Dict[str, Any] = {}
    if kwargs_json is not None:
        try:
            kwargs = json.loads(kwargs_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--model-kwargs is not valid JSON ({exc.msg} at position {exc.pos}): {kwargs_json!r}") from None
        if not isinstance(kwargs, dict):
            raise UsageError(f"--model-kwargs must be a JSON object like '{{\"num_classes\": 10}}', got {kwargs_json!r}")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, SyntaxError, or anything the module raises
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise UsageError(
            f"--model {spec!r}: cannot import module {module_name!r} ({type(exc).__name__}: {detail}); "
            "run from the folder that holds it or put it on PYTHONPATH"
        ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    factory: Any = module
    for part in attr_path.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"--model {spec!r}: module {module_name!r} has no attribute {attr_path!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(f"--model {spec!r}: {attr_path!r} is a {type(factory).__name__}, not a callable factory")
    try:
        model = factory(**kwargs)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        hint = "" if kwargs else " (pass arguments with --model-kwargs JSON)"
        raise UsageError(f"--model {spec!r}: calling {attr_path}(**{kwargs!r}) failed: {type(exc).__name__}: {detail}{hint}") from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(
            f"--model {spec!r}: {attr_path}() returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _load_weights(model: torch.nn.Module, path_text: str) -> None:
    """``torch.load(weights_only=True)`` into the model, with one-line errors for every failure."""
    import pickle

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UsageError(f"--weights '{path_text}' {'is a directory' if path.is_dir() else 'does not exist'}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = str(exc)
        # weights_only refuses a global (a class or function) of the file: pickled Python objects
        if "GLOBAL" in text or "Unsupported global" in text or "safe_globals" in text:
            raise UsageError(
                f"--weights '{path_text}' holds pickled Python objects that torch.load(weights_only=True) refuses "
                "(save the state_dict: torch.save(model.state_dict(), FILE))"
            ) from None
        raise UsageError(f"--weights '{path_text}' cannot be read by torch.load: {first}") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--weights '{path_text}' cannot be read by torch.load: {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a checkpoint dict {"state_dict": ..., ...}
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UsageError(
            f"--weights '{path_text}' is not a state_dict (a dict of parameter names to tensors) but a "
            f"{type(state).__name__}; save one with torch.save(model.state_dict(), FILE)"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]

    def short(items: List[str]) -> str:
        return ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")

    problems = []
    if missing:
        problems.append(f"missing keys: {short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {short(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes (file vs model): {short(shapes)}")
    if problems:
        raise UsageError(f"--weights '{path_text}' does not fit the model: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # pragma: no cover - caught above in practice
        raise UsageError(f"--weights '{path_text}' does not load into the model: {str(exc).splitlines()[0]}") from None


def _load_test_data(spec: str, image_size: Optional[int]) -> Tuple[Any, str]:
    """``--data`` -> (TensorDataset of the test split, description)."""
    from captum_robust import data as cdata

    kind, sep, location = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in DATA_KINDS:
        raise UsageError(f"--data {spec!r}: unknown data set {kind!r}; expected one of "
                         "digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, npz:FILE")
    if kind != "digits" and image_size is not None:
        raise UsageError(f"--image-size applies to --data digits only, not to {kind}")
    if kind == "digits":
        if sep:
            raise UsageError(f"--data {spec!r}: digits is embedded and takes no path; use --data digits")
        size = IMAGE_SIZE if image_size is None else image_size
        return cdata.load_digits(size=size, test_fraction=TEST_FRACTION, seed=0).test, (
            f"scikit-learn digits, {size}x{size}, test split (seed 0, {TEST_FRACTION:g} of 1,797 images)"
        )
    if not sep or not location:
        what = "FILE" if kind == "npz" else "DIR"
        raise UsageError(f"--data {spec!r}: {kind} needs a location, e.g. --data {kind}:{what}")
    try:
        if kind == "npz":
            return cdata.load_npz(location), f"'{location}' (npz)"
        loader = {"mnist": cdata.load_mnist, "fashion-mnist": cdata.load_fashion_mnist, "cifar10": cdata.load_cifar10}[kind]
        return loader(location, train=False), f"{kind} test set in '{location}'"
    except (OSError, ValueError) as exc:  # FileNotFoundError, NotADirectoryError, DataFormatError
        raise UsageError(f"--data {spec!r}: {exc}") from None


def _prepare_run(args: argparse.Namespace, ctx: Any, device: torch.device) -> Dict[str, Any]:
    """Model (eval, on device), the first --examples test images and labels, checked against each other."""
    model = _build_model(args.model, args.model_kwargs)
    _load_weights(model, args.weights)
    model = model.to(device).eval()
    dataset, data_desc = _load_test_data(args.data, args.image_size)
    x_all, y_all = dataset.tensors[0], dataset.tensors[1]
    if args.examples > len(y_all):
        raise UsageError(f"--examples {args.examples} is larger than the test set ({len(y_all)} images)")
    x, y = x_all[: args.examples], y_all[: args.examples]
    try:
        with torch.no_grad():
            logits = model(x[:1].to(device))
    except Exception as exc:
        hint = " (for a model of 8x8 digits pass --image-size 8)" if args.data.strip().lower() == "digits" else ""
        raise UsageError(
            f"the model fails on an input of shape {tuple(x[:1].shape)} from --data {args.data!r}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{hint}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UsageError(f"the model must return class logits of shape N x classes, got {shape} for one image")
    n_classes = logits.shape[1]
    if int(y.max()) >= n_classes:
        raise UsageError(f"the data has label {int(y.max())} but the model returns only {n_classes} class scores")
    n_params = sum(p.numel() for p in model.parameters())
    return {"model": model, "x": x, "y": y, "data": data_desc, "n_classes": n_classes, "n_params": n_params}


def _progress(ctx: Any, total: int, desc: str, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not (show and ctx.is_main), file=sys.stderr, leave=False)


def _json_dump(obj: Any, path: Path) -> None:
    import json

    path.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n", encoding="utf-8")


def _distributed_run(args: argparse.Namespace, body: Any) -> int:
    """Resolve the device, join the torchrun process group (if any) and run ``body(ctx, device)``."""
    from captum_robust._utils.distributed import distributed_session, env_world

    try:
        _, _, local_rank = env_world()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    device = _resolve_device(args.device, local_rank)
    with distributed_session(device) as ctx:
        return _with_run_settings(args, lambda: body(ctx, device))


# --------------------------------------------------------------------------- evaluate


def _saliency(model: Any, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Input gradient of the target logit (differentiable when the inputs require grad)."""
    create_graph = inputs.requires_grad
    x = inputs if inputs.requires_grad else inputs.requires_grad_()
    score = model(x).gather(1, target.reshape(-1, 1)).sum()
    return torch.autograd.grad(score, x, create_graph=create_graph)[0]


def _named_submodule(model: torch.nn.Module, name: str, option: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        names = [n for n in modules if n][:12]
        raise UsageError(f"{option} {name!r} is not a submodule of the model; submodules include: {', '.join(names)}")
    return modules[name]


def _find_cam_modules(model: torch.nn.Module, args: argparse.Namespace, x1: torch.Tensor, y1: torch.Tensor) -> Any:
    """The CAM of the model: --layer/--classifier, model.feature_layer/classifier, or the last conv / linear."""
    from captum_robust.attr import CAM

    names = {id(m): n for n, m in model.named_modules()}
    if args.layer is not None:
        layer = _named_submodule(model, args.layer, "--layer")
    elif isinstance(getattr(model, "feature_layer", None), torch.nn.Module):
        layer = model.feature_layer
    else:
        convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d))]
        if not convs:
            raise UsageError("--attribution cam: the model has no convolution to take the feature map from; "
                             "pass --layer NAME (the module whose output is the last feature map)")
        layer = convs[-1]
    if args.classifier is not None:
        classifier = _named_submodule(model, args.classifier, "--classifier")
        if not isinstance(classifier, torch.nn.Linear):
            raise UsageError(f"--classifier {args.classifier!r} is a {type(classifier).__name__}, not the nn.Linear "
                             "fed by global average pooling that CAM needs")
    elif isinstance(getattr(model, "classifier", None), torch.nn.Linear):
        classifier = model.classifier
    else:
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise UsageError("--attribution cam needs a global average pooling -> nn.Linear head, and the model has "
                             "no nn.Linear; use --attribution ig, saliency or sparsified-smoothgrad")
        classifier = linears[-1]
    try:
        cam = CAM(model, layer, classifier)
        cam.attribute(x1, target=y1)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"--attribution cam does not apply with layer {names.get(id(layer), '?')!r} and classifier "
            f"{names.get(id(classifier), '?')!r} ({str(exc).splitlines()[0]}); pass --layer NAME --classifier NAME "
            "(names from model.named_modules()) for a feature map followed by global average pooling and a linear "
            "layer, or use another --attribution"
        ) from None
    return cam, names.get(id(layer), "?"), names.get(id(classifier), "?")


def _evaluation_parts(args: argparse.Namespace, model: torch.nn.Module, x1: torch.Tensor, y1: torch.Tensor) -> Dict[str, Any]:
    """The measured attribution, the one the attack differentiates, its kwargs and the surrogate."""
    from captum_robust.attr import BatchedIntegratedGradients, RelaxedSparsifiedSmoothGrad, SparsifiedSmoothGrad
    from captum_robust.robust.attacks import softplus_surrogate

    parts: Dict[str, Any] = {"kwargs": None, "gradient_kwargs": None, "surrogate": None, "notes": []}
    if args.attribution == "cam":
        cam, layer_name, classifier_name = _find_cam_modules(model, args, x1, y1)
        parts.update(measured=cam, attacked=cam, description=f"CAM (layer {layer_name}, classifier {classifier_name})")
        return parts
    if args.surrogate_beta > 0:
        if any(type(m) is torch.nn.ReLU for m in model.modules()):
            parts["surrogate"] = softplus_surrogate(model, beta=args.surrogate_beta)
            parts["notes"].append(f"attack gradients through a copy of the model with Softplus(beta={args.surrogate_beta:g}) "
                                  "in place of every nn.ReLU")
        else:
            parts["notes"].append("the model has no nn.ReLU module, so the attack differentiates the model itself "
                                  "(functional relu calls would give zero second derivatives)")
    if args.attribution == "ig":
        ig = BatchedIntegratedGradients(model)
        parts.update(measured=ig, attacked=ig, kwargs={"n_steps": args.ig_steps, "method": "riemann_middle"},
                     description=f"Integrated Gradients ({args.ig_steps} midpoint steps, zero baseline)")
    elif args.attribution == "saliency":
        parts.update(measured=_saliency, attacked=_saliency, description="saliency (input gradient of the label's logit)")
    else:
        clip = min(SMOOTHGRAD_CLIP, args.sparsity / 2)
        parts.update(
            measured=SparsifiedSmoothGrad(model, sparsity=args.sparsity, sigma=args.sigma, n_samples=args.n_samples),
            attacked=RelaxedSparsifiedSmoothGrad(model, sparsity=args.sparsity, clip=clip, sigma=args.sigma,
                                                 n_samples=args.n_samples),
            gradient_kwargs={"n_samples": SMOOTHGRAD_ATTACK_SAMPLES},
            description=(f"Sparsified SmoothGrad (sparsity {args.sparsity:g}, sigma {args.sigma:g}, {args.n_samples} samples; "
                         f"attacked through Relaxed Sparsified SmoothGrad, clip {clip:g}, {SMOOTHGRAD_ATTACK_SAMPLES} "
                         "samples per gradient)"),
        )
    return parts


def _make_attack(args: argparse.Namespace, model: torch.nn.Module, parts: Dict[str, Any], eps: float, k: int) -> Any:
    from captum_robust.robust.attacks import AAI, L2TopKAttack, MassCenterAttack, TopKAttack

    common = {
        "surrogate": parts["surrogate"],
        "attribution_kwargs": parts["kwargs"],
        "gradient_attribution_kwargs": parts["gradient_kwargs"],
    }
    step = args.step_size if args.step_size is not None else 2.5 * eps / args.iterations
    attr = parts["attacked"]
    if args.attack == "topk":
        return TopKAttack(model, attr, k=k, eps=eps, step_size=step, n_iterations=args.iterations, measure_k=k, **common)
    if args.attack == "mass-center":
        return MassCenterAttack(model, attr, eps=eps, step_size=step, n_iterations=args.iterations, **common)
    if args.attack == "aai":
        return AAI(model, attr, eps=eps, step_size=step, n_iterations=args.iterations, k=k, **common)
    return L2TopKAttack(model, attr, k=k, rho=eps, n_iterations=args.iterations, n_restarts=args.restarts,
                        random_budget=20, **common)


def _prepared_maps(attack: Any, measured: Any, model: Any, x: torch.Tensor, target: torch.Tensor,
                   kwargs: Optional[Dict[str, Any]]) -> torch.Tensor:
    """The maps attribution_robustness compares: the measured attribution, prepared as the attack prepares."""
    from captum_robust.robust.attacks.base import AttributionAdapter, apply_preparation, attack_mode

    adapter = AttributionAdapter(model, measured, attribution_kwargs=kwargs)
    with attack_mode(model):
        maps = adapter.maps((x,), False, target, (), create_graph=False)
    with torch.no_grad():
        return apply_preparation(attack._prepare, maps)


def _check_combination(args: argparse.Namespace, model: torch.nn.Module, parts: Dict[str, Any],
                       x1: torch.Tensor, y1: torch.Tensor, eps: float) -> int:
    """Resolve --k from the attacked map's size; UsageError for a combination that cannot work."""
    probe = _make_attack(args, model, parts, eps, 1)
    try:
        prepared = _prepared_maps(probe, parts["measured"], model, x1.to(_device_of(model)), y1.to(_device_of(model)),
                                  parts["kwargs"])
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
        return min(8, n_map) if args.attribution == "cam" else max(1, math.ceil(n_map / 8))
    if args.k > n_map:
        raise UsageError(
            f"--k {args.k} cannot work with --attribution {args.attribution} and --attack {args.attack}: the attacked "
            f"map has only {n_map} elements ({shape}); pass --k <= {n_map}"
        )
    return args.k


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _merge_robustness(batches: List[Tuple[int, range, Any]]) -> Dict[str, Any]:
    """Per-batch RobustnessReports ``(batch index, example indices, report)`` in any order ->
    one report dict over all examples (RobustnessReport.merge in batch order)."""
    from captum_robust.robust.evaluation import RobustnessReport

    batches = sorted(batches, key=lambda item: item[0])
    merged = RobustnessReport.merge([report for _, _, report in batches])
    merged.per_example["index"] = [i for _, idx, _ in batches for i in idx]
    return merged.as_dict()


def _display_maps(maps: torch.Tensor) -> torch.Tensor:
    """Prepared maps -> one B x H x W map per example for plot_attributions."""
    m = maps.detach().float().cpu()
    if m.dim() == 4:
        m = m.abs().sum(dim=1) if m.shape[1] > 1 else m[:, 0]
    return m


def _run_evaluate(args: argparse.Namespace) -> int:
    return _distributed_run(args, lambda ctx, device: _evaluate(args, ctx, device))


def _evaluate(args: argparse.Namespace, ctx: Any, device: torch.device) -> int:
    from captum_robust._utils.distributed import assign_batches, batch_seed, gather_to_main
    from captum_robust.robust.attacks import PGD
    from captum_robust.robust.evaluation import attribution_robustness

    t_start = time.perf_counter()
    run = _prepare_run(args, ctx, device)
    model, x, y = run["model"], run["x"], run["y"]
    eps_list = args.eps if args.eps is not None else [L2_EPS if args.attack == "l2-topk" else LINF_EPS]
    parts = _evaluation_parts(args, model, x[:1].to(device), y[:1].to(device))
    k = _check_combination(args, model, parts, x[:1], y[:1], eps_list[0])
    out = _prepare_out(args.out)  # on every rank, so that an unusable folder stops all of them
    if ctx.is_main:
        print(f"model: {args.model} with weights {args.weights} ({run['n_params']:,} parameters, {run['n_classes']} classes)")
        print(f"data: {run['data']}; {len(y)} examples" + (f" over {ctx.world_size} processes" if ctx.distributed else ""))
        print(f"attribution: {parts['description']}; attack: {args.attack}, eps {', '.join(f'{e:g}' for e in eps_list)}, k {k}")
        for note in parts["notes"]:
            print(f"note: {note}")
    norm = "l2" if args.attack == "l2-topk" else "linf"
    my_batches = assign_batches(len(y), args.batch_size, ctx.rank, ctx.world_size)
    local: List[List[Tuple[int, range, Any]]] = []
    figure_data: Dict[str, Any] = {}
    bar = _progress(ctx, len(my_batches) * len(eps_list), "evaluate", not args.no_progress)
    try:
        for e_index, eps in enumerate(eps_list):
            attack = _make_attack(args, model, parts, eps, k)
            pgd = None
            if args.pgd_iterations > 0:
                pgd = PGD(model, eps=eps, step_size=2.5 * eps / args.pgd_iterations, n_iterations=args.pgd_iterations,
                          norm=norm)
            reports = []
            for b, idx in my_batches:
                generator = torch.Generator(device=device).manual_seed(batch_seed(args.seed, b))
                record = b == 0 and e_index == 0 and ctx.is_main
                if record:  # keep the attacked inputs of the first batch for the figure
                    original = attack.perturb

                    def recording(inputs: Any, *a: Any, _orig: Any = original, **kw: Any) -> Any:
                        result = _orig(inputs, *a, **kw)
                        figure_data.update(x=inputs.detach().cpu(), x_adv=result[0].detach().cpu(),
                                           target=kw.get("target").detach().cpu())
                        return result

                    attack.perturb = recording  # an instance attribute: attribution_robustness sees the same attack
                try:
                    # attribution=None measures the attack's own attribution with its kwargs (e.g. --ig-steps);
                    # an explicit attribution would be called with its defaults
                    measured = None if parts["measured"] is parts["attacked"] else parts["measured"]
                    report = attribution_robustness(
                        model, measured, attack, (x[idx.start: idx.stop], y[idx.start: idx.stop]),
                        measures=tuple(args.measures), k=k, pgd=pgd, generator=generator,
                    )
                finally:
                    if record:
                        del attack.perturb
                reports.append((b, idx, report))
                bar.update(1)
            local.append(reports)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"--attribution {args.attribution} with --attack {args.attack} failed: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        bar.close()
    gathered = gather_to_main(local, ctx)
    if not ctx.is_main:
        return 0
    measure_names = None
    runs = []
    for e_index, eps in enumerate(eps_list):
        batches = [item for rank_lists in gathered for item in rank_lists[e_index]]
        measure_names = list(batches[0][2].summary["measures"])
        merged = _merge_robustness(batches)
        runs.append({"eps": eps, **merged})
    wall = time.perf_counter() - t_start
    settings = {
        "model": args.model, "model_kwargs": args.model_kwargs, "weights": args.weights, "data": args.data,
        "data_description": run["data"], "examples": len(y), "attribution": args.attribution,
        "attribution_description": parts["description"], "attack": args.attack, "norm": norm, "eps": eps_list, "k": k,
        "iterations": args.iterations, "step_size": args.step_size, "pgd_iterations": args.pgd_iterations,
        "measures": measure_names, "batch_size": args.batch_size, "seed": args.seed, "device": str(device),
        "world_size": ctx.world_size, "version": __version__,
    }
    results = {"command": "evaluate", "settings": settings, "runs": runs, "wall_seconds": wall}
    json_path = out / "results.json"
    _json_dump(results, json_path)
    figures = _evaluate_figures(args, out, runs, figure_data, parts, model, device)
    table = _evaluate_table(runs, norm)
    report_path = out / "report.md"
    report_path.write_text(_evaluate_report(args, run, parts, settings, runs, table, figures, wall), encoding="utf-8")
    print()
    print(table)
    print()
    for path in [json_path, report_path, *figures.values()]:
        print(f"wrote {path}")
    return 0


def _fmt_number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def _evaluate_table(runs: List[Dict[str, Any]], norm: str) -> str:
    lines = [
        f"| eps ({norm}) | measure | n | mean | median | 95% CI of the mean | 95% of examples within | fraction kept | "
        "clean accuracy | PGD accuracy | time (s) |",
        "|---:|---|---:|---:|---:|:---:|:---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        s = r["summary"]
        for name, st in s["measures"].items():
            lines.append(
                f"| {r['eps']:g} | {name} | {st['n']} | {_fmt_number(st['mean'])} | {_fmt_number(st['median'])} | "
                f"[{_fmt_number(st['ci_low'])}, {_fmt_number(st['ci_high'])}] | "
                f"[{_fmt_number(st['q_low'])}, {_fmt_number(st['q_high'])}] | {_fmt_number(s['kept_fraction'])} | "
                f"{_fmt_number(s['clean_accuracy'])} | {_fmt_number(s['adversarial_accuracy'])} | "
                f"{s['seconds']['attack'] + s['seconds']['pgd']:.1f} |"
            )
    return "\n".join(lines)


def _evaluate_figures(args: argparse.Namespace, out: Path, runs: List[Dict[str, Any]], figure_data: Dict[str, Any],
                      parts: Dict[str, Any], model: torch.nn.Module, device: torch.device) -> Dict[str, Path]:
    from matplotlib.figure import Figure

    from captum_robust.visualization import plot_attributions, save_figure

    figures: Dict[str, Path] = {}
    if figure_data.get("x") is not None and len(figure_data["x"]):
        shown = min(FIGURE_EXAMPLES, len(figure_data["x"]))
        xs, xa, t = figure_data["x"][:shown], figure_data["x_adv"][:shown], figure_data["target"][:shown]
        attack = _make_attack(args, model, parts, runs[0]["eps"], runs[0]["summary"]["settings"]["k"])
        before = _prepared_maps(attack, parts["measured"], model, xs.to(device), t.to(device), parts["kwargs"])
        after = _prepared_maps(attack, parts["measured"], model, xa.to(device), t.to(device), parts["kwargs"])
        with torch.no_grad():
            pred_adv = model(xa.to(device)).argmax(1).cpu()
        fig = plot_attributions(
            xa, {f"{args.attribution} (clean)": _display_maps(before), f"{args.attribution} (attacked)": _display_maps(after)},
            labels=t.tolist(), predictions=pred_adv.tolist(), max_examples=shown,
        )
        figures["maps"] = save_figure(fig, out / "figure_maps.png", dpi=80)
    names = list(runs[0]["summary"]["measures"])
    fig = Figure(figsize=(3.2 * len(names), 2.6), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for r in runs:
            cols = r["per_example"]
            values = [v for v, kept in zip(cols[name], cols["kept"]) if kept and not math.isnan(v)]
            if values:
                ax.hist(values, bins=20, alpha=0.6, label=f"eps {r['eps']:g}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("clean vs attacked map", fontsize=8)
        ax.set_ylabel("examples", fontsize=8)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    figures["measures"] = save_figure(fig, out / "figure_measures.png", dpi=80)
    return figures


def _evaluate_report(args: argparse.Namespace, run: Dict[str, Any], parts: Dict[str, Any], settings: Dict[str, Any],
                     runs: List[Dict[str, Any]], table: str, figures: Dict[str, Path], wall: float) -> str:
    lines = [
        "# captum-robust evaluate report",
        "",
        f"Generated by `captum-robust evaluate` (captum_robust {__version__}).",
        "",
        f"- model: `{args.model}`" + (f" with `{args.model_kwargs}`" if args.model_kwargs else "")
        + f", weights `{args.weights}` ({run['n_params']:,} parameters, {run['n_classes']} classes)",
        f"- data: {run['data']}; the first {settings['examples']} images",
        f"- attribution: {parts['description']}",
        f"- attack: `{args.attack}` ({settings['norm']}, eps {', '.join(f'{e:g}' for e in settings['eps'])}, "
        f"{args.iterations} iterations, k = {settings['k']}); maps of the true label, compared after the attack's "
        "map preparation",
        f"- PGD: {args.pgd_iterations} iterations of 2.5 eps / {args.pgd_iterations}, random start"
        if args.pgd_iterations else "- PGD: skipped",
        f"- seed {args.seed}, batches of {args.batch_size}, {settings['world_size']} process(es), device {settings['device']}",
        *[f"- note: {note}" for note in parts["notes"]],
        "",
        "## Results",
        "",
        "Statistics over the correctly classified examples whose prediction the attack kept "
        "(Boopathy et al.); the CI is Student's t interval of the mean, the other interval holds the "
        "central 95% of the examples. PGD accuracy is over all examples (misclassified ones count as "
        "errors). Time: attack + PGD, summed over batches and processes.",
        "",
        table,
        "",
    ]
    if "maps" in figures:
        lines += [f"![maps before and after the attack]({figures['maps'].name})", "",
                  "The first attacked images of the first batch (the attacked input is shown), their maps before "
                  "and after the attack (each on its own colour scale).", ""]
    lines += [f"![distribution of the measures]({figures['measures'].name})", "",
              "## Files", "", "- `results.json`: settings, summaries and per-example values (one entry per eps)",
              "- `report.md`: this report"]
    lines += [f"- `{p.name}`" for p in figures.values()]
    lines += ["", f"Wall time: {wall:.1f} s.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- certify


def _run_certify(args: argparse.Namespace) -> int:
    return _distributed_run(args, lambda ctx, device: _certify(args, ctx, device))


def _certify(args: argparse.Namespace, ctx: Any, device: torch.device) -> int:
    import warnings

    from captum_robust._utils.distributed import assign_batches, batch_seed, gather_to_main
    from captum_robust.attr import CertifiedTopK, SparsifiedSmoothGrad
    from captum_robust.attr.certify import certified_radius, hoeffding_margin, resolve_k, topk_certificate

    t_start = time.perf_counter()
    run = _prepare_run(args, ctx, device)
    model, x, y = run["model"], run["x"], run["y"]
    n_features = x[0].numel()
    try:
        k = resolve_k(args.k, n_features)
    except ValueError as exc:
        raise UsageError(f"--k {args.k}: {exc}") from None
    m = max(1, math.ceil(args.min_overlap * k - 1e-9))
    out = _prepare_out(args.out)  # on every rank, so that an unusable folder stops all of them
    radii = sorted({args.rho * f for f in CERT_RADIUS_MULTIPLES})
    ssg = SparsifiedSmoothGrad(model, sparsity=args.sparsity, sigma=args.sigma, n_samples=args.n_samples)
    certifier = CertifiedTopK(ssg, k=k, rho=args.rho, confidence=args.confidence)
    margin = hoeffding_margin(n_features, args.n_samples, args.confidence)
    if ctx.is_main:
        print(f"model: {args.model} with weights {args.weights} ({run['n_params']:,} parameters, {run['n_classes']} classes)")
        print(f"data: {run['data']}; {len(y)} examples" + (f" over {ctx.world_size} processes" if ctx.distributed else ""))
        print(f"Sparsified SmoothGrad (sparsity {args.sparsity:g}, sigma {args.sigma:g}, {args.n_samples} samples); "
              f"top-{k} of {n_features} certified at l2 radius {args.rho:g} with confidence {args.confidence:g} "
              f"(Hoeffding margin {margin:.4f})")
    my_batches = assign_batches(len(y), args.batch_size, ctx.rank, ctx.world_size)
    local = []
    notes: List[str] = []
    bar = _progress(ctx, len(my_batches), "certify", not args.no_progress)
    try:
        for b, idx in my_batches:
            xb, yb = x[idx.start: idx.stop].to(device), y[idx.start: idx.stop].to(device)
            generator = torch.Generator(device=device).manual_seed(batch_seed(args.seed, b))
            with torch.no_grad():
                pred = model(xb).argmax(dim=1)
            target = pred if args.target == "prediction" else yb
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                maps, cert = certifier.attribute(xb, target=target, generator=generator,
                                                 internal_batch_size=args.internal_batch_size)
            notes += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
            radius = certified_radius(maps, cert.k, m, cert.sigma, cert.margin).cpu()
            at = [topk_certificate(maps, cert.k, r, cert.sigma, cert.margin).cpu().tolist() for r in radii]
            local.append((b, idx, {
                "index": list(idx), "label": yb.cpu().tolist(), "prediction": pred.cpu().tolist(),
                "target": target.cpu().tolist(), "overlap": cert.overlap.cpu().tolist(),
                "fraction": cert.fraction.cpu().tolist(), "radius": radius.tolist(),
                "overlap_at_radii": [list(v) for v in zip(*at)],
            }))
            bar.update(1)
    finally:
        bar.close()
    gathered = gather_to_main((local, notes), ctx)
    if not ctx.is_main:
        return 0
    batches = sorted((item for rank_local, _ in gathered for item in rank_local), key=lambda item: item[0])
    cols: Dict[str, List[Any]] = {}
    for _, _, part in batches:
        for name, values in part.items():
            cols.setdefault(name, []).extend(values)
    all_notes = sorted({note for _, rank_notes in gathered for note in rank_notes})
    summary = _certify_summary(cols, k, m, radii)
    wall = time.perf_counter() - t_start
    settings = {
        "model": args.model, "model_kwargs": args.model_kwargs, "weights": args.weights, "data": args.data,
        "data_description": run["data"], "examples": len(y), "method": "SparsifiedSmoothGrad", "k": k,
        "n_features": n_features, "sparsity": args.sparsity, "sigma": args.sigma, "n_samples": args.n_samples,
        "confidence": args.confidence, "rho": args.rho, "margin": margin, "min_overlap": args.min_overlap,
        "min_overlap_count": m, "radii": radii, "target": args.target, "batch_size": args.batch_size,
        "seed": args.seed, "device": str(device), "world_size": ctx.world_size, "version": __version__,
    }
    results = {"command": "certify", "settings": settings, "summary": summary, "per_example": cols,
               "notes": all_notes, "wall_seconds": wall}
    json_path = out / "results.json"
    _json_dump(results, json_path)
    figure = _certify_figure(out, cols["radius"], args.rho, k, m)
    table = _certify_table(summary, settings)
    report_path = out / "report.md"
    report_path.write_text(_certify_report(args, run, settings, summary, table, figure, all_notes, wall), encoding="utf-8")
    for note in all_notes:
        print(f"warning: {note}", file=sys.stderr)
    print()
    print(table)
    print()
    for path in (json_path, report_path, figure):
        print(f"wrote {path}")
    return 0


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
    k, m = settings["k"], settings["min_overlap_count"]
    lines = [
        "| quantile over the examples | certified radius (l2) | certified fraction R / K at rho |",
        "|---|---:|---:|",
    ]
    for name, q in summary["quantiles"].items():
        label = {"q0": "min", "q100": "max", "q50": "median"}.get(name, f"{name[1:]}%")
        lines.append(f"| {label} | {_fmt_number(q['radius'], 4)} | {_fmt_number(q['fraction'])} |")
    lines += [
        "",
        f"| l2 radius | examples with at least {m} of the top-{k} certified | mean certified R / K |",
        "|---:|---:|---:|",
    ]
    for row in summary["at_radii"]:
        lines.append(f"| {row['radius']:g} | {row['certified_fraction']:.3f} | {row['mean_overlap_fraction']:.3f} |")
    return "\n".join(lines)


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


def _certify_report(args: argparse.Namespace, run: Dict[str, Any], settings: Dict[str, Any], summary: Dict[str, Any],
                    table: str, figure: Path, notes: List[str], wall: float) -> str:
    k, m = settings["k"], settings["min_overlap_count"]
    lines = [
        "# captum-robust certify report",
        "",
        f"Generated by `captum-robust certify` (captum_robust {__version__}).",
        "",
        f"- model: `{args.model}`" + (f" with `{args.model_kwargs}`" if args.model_kwargs else "")
        + f", weights `{args.weights}` ({run['n_params']:,} parameters); accuracy on these images "
        f"{summary['accuracy']:.3f}",
        f"- data: {run['data']}; the first {settings['examples']} images",
        f"- Sparsified SmoothGrad (Levine et al., eq. 2.4) of the {args.target}: sparsity {args.sparsity:g}, "
        f"sigma {args.sigma:g}, {args.n_samples} noisy samples; top-K with K = {k} of {settings['n_features']} pixels",
        f"- confidence {args.confidence:g}: Hoeffding margin {settings['margin']:.4f} on every pixel (union bound)",
        f"- seed {args.seed}, batches of {args.batch_size}, {settings['world_size']} process(es), device {settings['device']}",
        "",
        "## Certificates",
        "",
        f"Per example, `overlap` is the certified top-{k} overlap R at l2 radius rho = {args.rho:g} "
        f"(`CertifiedTopK`, Levine Thm. 2) and `radius` the largest l2 radius at which at least {m} "
        f"(--min-overlap {args.min_overlap:g}) of the top-{k} stay certified. With probability at least "
        f"{args.confidence:g} over the noise, for every perturbation of at most that l2 norm, the population "
        "smoothed map keeps that many of the observed top-K elements in its top-K. Mean R / K at rho: "
        f"**{summary['mean_fraction']:.3f}**; median certified radius: **{_fmt_number(summary['median_radius'], 4)}**.",
        "",
        table,
        "",
        f"![CDF of the certified radius]({figure.name})",
        "",
        *[f"Warning: {note}" for note in notes],
        "## Files",
        "",
        "- `results.json`: settings, summary and per-example values (`overlap`, `fraction`, `radius`, "
        "`overlap_at_radii` at the radii of the second table)",
        "- `report.md`: this report",
        f"- `{figure.name}`: the CDF above",
        "",
        f"Wall time: {wall:.1f} s.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``captum-robust`` command and return its exit status.

    Args:
        argv (sequence of str, optional): the arguments without the program name; default
            ``sys.argv[1:]``.

    Returns:
        int: 0 on success (also for ``--help`` / ``--version``), 2 for bad arguments or an
        unusable output path (a one-line message on stderr, no traceback), 130 if interrupted.

    Example:
        >>> from captum_robust.cli import main
        >>> main(["demo", "--quick", "--no-progress", "--out", "demo_out"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, or an argparse error (status 2)
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 2
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
