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
from typing import Any, Dict, List, Optional, Sequence

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
