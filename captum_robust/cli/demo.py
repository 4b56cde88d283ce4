"""``captum-robust demo``: train, explain, certify, attack, train robustly, report.

Each step is one function returning its results as a small dataclass; :mod:`._demo_report`
turns them into ``report.md`` section by section.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from captum_robust.cli import _demo_report as report
from captum_robust.cli import _types
from captum_robust.cli._defaults import (
    CERT_CONFIDENCE, CERT_K_FRACTION, CERT_RHO, IMAGE_SIZE, SMOOTHGRAD_SAMPLES, SMOOTHGRAD_SIGMA, SMOOTHGRAD_SPARSITY,
    TEST_FRACTION,
)
from captum_robust.cli._runtime import UsageError, add_out_options, run_settings, staged_output

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
MAX_FIGURE_ROWS = 32
#: the files ``demo`` writes into --out
DEMO_FILES = ("report.md", "figure_attributions.png", "figure_attacks.png", "attacked_inputs.pt", "model.pt",
              "model_int.pt")
#: The certified Sparsified SmoothGrad takes SMOOTHGRAD_SAMPLES noisy samples (fewer with --quick).
SMOOTHGRAD_QUICK_SAMPLES = 512
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


def add_parser(sub: Any) -> None:
    """Add the ``demo`` subcommand to the subparsers ``sub``."""
    demo = sub.add_parser(
        "demo", help="train a small CNN on the embedded digits and explain it with CAM, Grad-CAM, Grad-CAM++",
        description="""
        Train the Small CNN (Boopathy et al. 2020) on scikit-learn's digits upsampled to 28x28 (offline), report its
        test accuracy, explain test images with CAM, Grad-CAM and Grad-CAM++ for the true and the predicted
        class, check CAM completeness, compute a certified Sparsified SmoothGrad map of the prediction with its
        top-K certificate, attack the Integrated Gradients and CAM maps while keeping the predictions, train a
        second model with the Int regularizer (Boopathy et al. 2020) and compare how both resist PGD and AAI,
        and write report.md, figure_attributions.png, figure_attacks.png, attacked_inputs.pt, model.pt and
        model_int.pt into --out. Training stops after --epochs epochs or --seconds seconds, whichever comes
        first; for a reproducible model give --epochs and a large --seconds.
        """,
    )
    add_out_options(demo, DEFAULT_OUT)
    demo.add_argument("--epochs", type=_types.positive_int, default=None, metavar="N",
                      help=f"maximum number of training epochs (default: {DEFAULT_EPOCHS}, or {QUICK_EPOCHS} with "
                           "--quick)")
    demo.add_argument("--seconds", type=_types.seconds, default=None, metavar="S",
                      help=f"training time budget in seconds (default: {DEFAULT_SECONDS:g}, about one minute of "
                           "training; no budget with --quick)")
    demo.add_argument("--seed", type=_types.seed, default=0,
                      help="seed of the split, the model and the shuffling (default: 0)")
    demo.add_argument("--examples", type=_types.positive_int, default=8, metavar="K",
                      help="number of test images to explain (default: 8)")
    demo.add_argument("--threads", type=_types.positive_int, default=DEFAULT_THREADS, metavar="T",
                      help=f"torch intra-op threads during the run, restored afterwards (default: {DEFAULT_THREADS}; "
                           "the small model gains nothing from more)")
    demo.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    demo.add_argument("--quick", action="store_true",
                      help=f"a run of a few seconds ({QUICK_EPOCHS} epochs, smaller figure), for tests and smoke "
                           "checks")
    demo.set_defaults(handler=run)


@dataclass(frozen=True)
class DemoSettings:
    """The demo's options after defaults: ``--quick`` shortens training, sampling and attacks."""

    out: Path
    epochs: int
    seconds: Optional[float]
    seed: int
    examples: int
    show_progress: bool
    quick: bool

    @property
    def sg_samples(self) -> int:
        return SMOOTHGRAD_QUICK_SAMPLES if self.quick else SMOOTHGRAD_SAMPLES

    @property
    def ig_iterations(self) -> int:
        return ATTACK_IG_QUICK_ITERATIONS if self.quick else ATTACK_IG_ITERATIONS

    @property
    def cam_iterations(self) -> int:
        return ATTACK_CAM_QUICK_ITERATIONS if self.quick else ATTACK_CAM_ITERATIONS


def run(args: argparse.Namespace) -> int:
    """The ``demo`` handler: resolve the defaults and run the demo under ``--threads`` and ``--seed``;
    the files are written to a staging folder and appear in ``--out`` when the demo has finished."""
    with staged_output(args, DEMO_FILES) as folder:
        settings = DemoSettings(
            out=folder.stage,
            epochs=args.epochs if args.epochs is not None else (QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS),
            seconds=args.seconds if args.seconds is not None else (None if args.quick else DEFAULT_SECONDS),
            seed=args.seed, examples=args.examples, show_progress=not args.no_progress, quick=args.quick,
        )
        with run_settings(args.threads, args.seed):
            _demo(settings)
        folder.commit()
    for name in DEMO_FILES:
        print(f"wrote {folder.path(name)}")
    return 0


def _budget(seconds: Optional[float]) -> str:
    return "no time budget" if seconds is None else f"time budget {seconds:g} s"


# --------------------------------------------------------------------------- steps


@dataclass
class DigitsData:
    """The digits split and its loaders (the same as ``data.digits_loaders(batch_size, size, seed)``:
    the training loader shuffles with its own generator seeded by ``seed``)."""

    data: Any
    train_loader: Any
    test_loader: Any


def _load_data(s: DemoSettings) -> DigitsData:
    from torch.utils.data import DataLoader

    from captum_robust.data import load_digits

    data = load_digits(size=IMAGE_SIZE, test_fraction=TEST_FRACTION, seed=s.seed)
    n_train, n_test = len(data.train), len(data.test)
    if s.examples > n_test:
        raise UsageError(f"--examples {s.examples} is larger than the test set ({n_test} images)")
    train_loader = DataLoader(
        data.train, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(s.seed)
    )
    test_loader = DataLoader(data.test, batch_size=256, shuffle=False)
    print(
        f"data: scikit-learn digits upsampled to {IMAGE_SIZE}x{IMAGE_SIZE}, "
        f"{n_train} train / {n_test} test images (split seed {s.seed})"
    )
    return DigitsData(data, train_loader, test_loader)


@dataclass
class Training:
    """A trained model, the statistics of :func:`~captum_robust.training.train_classifier` and
    its test accuracy."""

    model: torch.nn.Module
    stats: Dict[str, Any]
    accuracy: float
    n_correct: int
    n_test: int

    @property
    def stop(self) -> str:
        return "time budget reached" if self.stats["stopped_by_time"] else "epoch limit reached"


def _train(s: DemoSettings, digits: DigitsData) -> Training:
    from captum_robust.models import Small
    from captum_robust.training import evaluate_accuracy, train_classifier

    torch.manual_seed(s.seed)
    model = Small(in_channels=1, num_classes=10)
    print(f"training Small (at most {s.epochs} epochs, {_budget(s.seconds)}) ...", flush=True)
    stats = train_classifier(
        model, digits.train_loader, epochs=s.epochs, lr=LEARNING_RATE, max_seconds=s.seconds,
        generator=torch.Generator().manual_seed(s.seed), show_progress=s.show_progress,
    )
    model.eval()
    accuracy = evaluate_accuracy(model, digits.test_loader)
    n_test = len(digits.data.test)
    trained = Training(model, stats, accuracy, round(accuracy * n_test), n_test)
    print(
        f"trained {stats['epochs_completed']} epochs ({stats['steps']} steps) in {stats['seconds']:.1f} s "
        f"({trained.stop}); test accuracy {accuracy:.4f} ({trained.n_correct}/{n_test})"
    )
    return trained


@dataclass
class Explained:
    """The explained test images, their maps by column title, and the CAM checks."""

    x: torch.Tensor
    y: torch.Tensor
    pred: torch.Tensor
    maps: Dict[str, torch.Tensor]
    cam: Any  # the CAM attribution of the model
    map_side: int
    completeness: float  # max |sum(CAM) + bias - logit| over the test set and all classes
    logit_scale: float  # largest |logit|
    gradcam_vs_cam: float  # max |Grad-CAM without ReLU - CAM| over the explained images


def _explain(model: torch.nn.Module, data: Any, examples: int) -> Explained:
    from captum_robust.attr import CAM, GradCAM, GradCAMPlusPlus

    x_all, y_all = data.test.tensors
    cam = CAM(model, model.feature_layer, model.classifier)
    gradcam = GradCAM(model, model.feature_layer)
    gradcampp = GradCAMPlusPlus(model, model.feature_layer)
    with torch.no_grad():
        logits_all = model(x_all)
    cam_all = cam.attribute(x_all)  # n_test x 10 x 7 x 7, eq. 1
    completeness = float((cam_all.sum(dim=(2, 3)) + model.classifier.bias.detach() - logits_all).abs().max())
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
        f"over {len(y_all)} test images x 10 classes (largest |logit| {logit_scale:.1f})"
    )
    return Explained(x, y, pred, maps, cam, cam_all.shape[-1], completeness, logit_scale, gradcam_vs_cam)


def _certify(s: DemoSettings, model: torch.nn.Module, ex: Explained) -> Tuple[Any, float]:
    """Certified Sparsified SmoothGrad of the prediction (Levine et al., eq. 2.4 and Thm. 2); adds
    its maps to ``ex.maps`` and returns the certificate and the seconds it took."""
    from captum_robust.attr import CertifiedTopK, SparsifiedSmoothGrad

    t_sg = time.perf_counter()
    ssg = SparsifiedSmoothGrad(model, sparsity=SMOOTHGRAD_SPARSITY, sigma=SMOOTHGRAD_SIGMA, n_samples=s.sg_samples)
    certifier = CertifiedTopK(ssg, k=CERT_K_FRACTION, rho=CERT_RHO, confidence=CERT_CONFIDENCE)
    sg_maps, cert = certifier.attribute(
        ex.x, target=ex.pred, generator=torch.Generator().manual_seed(s.seed), show_progress=s.show_progress
    )
    sg_seconds = time.perf_counter() - t_sg
    ex.maps["Certified SG (pred)"] = sg_maps
    fractions = cert.fraction
    print(
        f"certified Sparsified SmoothGrad: top-{cert.k} overlap certified within l2 radius {CERT_RHO} "
        f"(p = {CERT_CONFIDENCE}): median {float(fractions.median()):.2f} of K, min {float(fractions.min()):.2f} "
        f"({s.sg_samples} samples, {sg_seconds:.1f} s)"
    )
    return cert, sg_seconds


@dataclass
class Attacked:
    """The two attacks on the maps: the attacked inputs, the maps before and after, the measures."""

    x_ig: torch.Tensor
    ig_norm: torch.Tensor  # l-inf size of each top-k perturbation
    ig_before: torch.Tensor
    ig_after: torch.Tensor
    ig_top: torch.Tensor
    ig_tau: torch.Tensor
    x_cam: torch.Tensor
    cam_norm: torch.Tensor
    cam_before: torch.Tensor
    cam_after: torch.Tensor
    cam_tau: torch.Tensor
    cam_top: torch.Tensor
    kept: int  # examples whose prediction both attacks kept
    seconds: float


def _attack(s: DemoSettings, model: torch.nn.Module, ex: Explained) -> Attacked:
    """Ghorbani's top-k attack on IG and Boopathy's AAI on the CAM, keeping the predictions."""
    from captum_robust.attr import BatchedIntegratedGradients
    from captum_robust.robust.attacks import AAI, TopKAttack, ghorbani_maps, softplus_surrogate
    from captum_robust.robust.discrepancy import kendall_tau, topk_intersection

    t_attack = time.perf_counter()
    x, pred = ex.x, ex.pred
    topk_attack = TopKAttack(
        model, BatchedIntegratedGradients(model), k=ATTACK_IG_K, eps=ATTACK_IG_EPS, step_size=ATTACK_STEP,
        n_iterations=s.ig_iterations, surrogate=softplus_surrogate(model, beta=10.0),
        attribution_kwargs={"n_steps": ATTACK_IG_STEPS, "method": "riemann_middle"},
    )
    x_ig, result_ig = topk_attack.perturb(x, target=pred, show_progress=s.show_progress)
    ig_before = ghorbani_maps(topk_attack.attribution_maps(x, target=pred))
    ig_after = ghorbani_maps(topk_attack.attribution_maps(x_ig, target=pred))
    aai = AAI(model, ex.cam, eps=ATTACK_CAM_EPS, step_size=ATTACK_STEP, n_iterations=s.cam_iterations,
              k=ATTACK_CAM_K)
    x_cam, result_cam = aai.perturb(
        x, target=pred, generator=torch.Generator().manual_seed(s.seed), show_progress=s.show_progress
    )
    cam_before, cam_after = ex.cam.attribute(x, target=pred), ex.cam.attribute(x_cam, target=pred)
    with torch.no_grad():
        kept = int(((model(x_ig).argmax(1) == pred) & (model(x_cam).argmax(1) == pred)).sum())
    attacked = Attacked(
        x_ig=x_ig, ig_norm=result_ig.norm, ig_before=ig_before, ig_after=ig_after,
        ig_top=topk_intersection(ig_before, ig_after, ATTACK_IG_K), ig_tau=kendall_tau(ig_before, ig_after),
        x_cam=x_cam, cam_norm=result_cam.norm, cam_before=cam_before, cam_after=cam_after,
        cam_tau=kendall_tau(cam_before, cam_after), cam_top=topk_intersection(cam_before, cam_after, ATTACK_CAM_K),
        kept=kept, seconds=time.perf_counter() - t_attack,
    )
    print(
        f"attacks on the maps (predictions kept: {kept}/{len(x)}): IG top-{ATTACK_IG_K} intersection "
        f"{report.finite_mean(attacked.ig_top):.3f}, Kendall {report.finite_mean(attacked.ig_tau):.3f}; CAM Kendall "
        f"{report.finite_mean(attacked.cam_tau):.3f} ({attacked.seconds:.1f} s)"
    )
    return attacked


@dataclass
class RobustTraining:
    """The Int-trained model and how both models resist PGD and AAI (:func:`report.robust_section`)."""

    model: torch.nn.Module
    rows: List[report.RobustRow]
    iterations: int
    warmup: int
    ramp: int
    steps: int
    seconds: float
    final_eps: float
    gamma: float


def _train_int(s: DemoSettings, digits: DigitsData) -> RobustTraining:
    """Train Small with Int (Boopathy et al. 2020) on the same batches as the normal model."""
    from captum_robust.models import Small
    from captum_robust.robust.regularizers import EpsilonSchedule, Int
    from captum_robust.training import train_classifier

    steps_per_epoch = len(digits.train_loader)
    warmup = (INT_QUICK_WARMUP_EPOCHS if s.quick else INT_WARMUP_EPOCHS) * steps_per_epoch
    ramp = (INT_QUICK_RAMP_EPOCHS if s.quick else INT_RAMP_EPOCHS) * steps_per_epoch
    iterations = INT_QUICK_ITERATIONS if s.quick else INT_ITERATIONS
    int_epochs = INT_QUICK_EPOCHS if s.quick else s.epochs
    seconds = None if s.quick else INT_SECONDS
    torch.manual_seed(s.seed)
    int_model = Small(in_channels=1, num_classes=10)
    schedule = EpsilonSchedule(INT_EPS, warmup_steps=warmup, ramp_steps=ramp)
    reg = Int(int_model, eps=schedule, step_size=INT_STEP, n_iterations=iterations,
              generator=torch.Generator().manual_seed(s.seed))
    print(f"training Small with Int (at most {int_epochs} epochs, {_budget(seconds)}) ...", flush=True)
    stats = train_classifier(
        int_model, digits.train_loader, epochs=int_epochs, lr=LEARNING_RATE, max_seconds=seconds,
        generator=torch.Generator().manual_seed(s.seed), show_progress=s.show_progress, regularizer=reg,
    )
    int_model.eval()
    return RobustTraining(
        model=int_model, rows=[], iterations=iterations, warmup=warmup, ramp=ramp, steps=stats["steps"],
        seconds=stats["seconds"], final_eps=schedule(max(stats["steps"] - 1, 0)), gamma=reg.resolved_gamma(49),
    )


def _resistance(s: DemoSettings, name: str, net: torch.nn.Module, accuracy: float, data: Any) -> report.RobustRow:
    """PGD accuracy and AAI Kendall's tau of the raw true-class CAM on the first test images that
    ``net`` classifies correctly."""
    from captum_robust.attr import CAM
    from captum_robust.robust.attacks import AAI, PGD
    from captum_robust.robust.discrepancy import kendall_tau

    x_all, y_all = data.test.tensors
    x, y = x_all[:ROBUST_EVAL_IMAGES], y_all[:ROBUST_EVAL_IMAGES]
    with torch.no_grad():
        correct = net(x).argmax(1) == y
    xc, yc = x[correct], y[correct]
    pgd = PGD(net, eps=INT_EPS, step_size=ATTACK_STEP, n_iterations=PGD_EVAL_ITERATIONS)
    _, pgd_result = pgd.perturb(xc, target=yc, generator=torch.Generator().manual_seed(s.seed))
    cam = CAM(net, net.feature_layer, net.classifier)
    aai = AAI(net, cam, eps=INT_EPS, step_size=ATTACK_STEP, n_iterations=s.cam_iterations, k=ATTACK_CAM_K)
    x_adv, aai_result = aai.perturb(xc, target=yc, generator=torch.Generator().manual_seed(s.seed))
    tau = kendall_tau(cam.attribute(xc, target=yc, raw=True), cam.attribute(x_adv, target=yc, raw=True))
    kept = aai_result.predictions == yc
    return report.RobustRow(
        name=name, accuracy=accuracy, n=int(correct.sum()), pgd_accuracy=float(1 - pgd_result.success.float().mean()),
        kendall=report.finite_mean(tau[kept]), kept=int(kept.sum()),
    )


def _robust_training(s: DemoSettings, digits: DigitsData, trained: Training) -> RobustTraining:
    """An Int model next to the normal one, and how both resist PGD and AAI."""
    from captum_robust.training import evaluate_accuracy

    robust = _train_int(s, digits)
    int_accuracy = evaluate_accuracy(robust.model, digits.test_loader)
    robust.rows = [
        _resistance(s, "normal", trained.model, trained.accuracy, digits.data),
        _resistance(s, "Int", robust.model, int_accuracy, digits.data),
    ]
    normal_row, int_row = robust.rows
    print(
        f"Int model: test accuracy {int_accuracy:.4f}, {robust.steps} steps in {robust.seconds:.1f} s; "
        f"PGD accuracy (eps {INT_EPS}) normal {normal_row.pgd_accuracy:.3f} / Int {int_row.pgd_accuracy:.3f}; "
        f"AAI CAM Kendall normal {normal_row.kendall:.3f} / Int {int_row.kendall:.3f}"
    )
    return robust


# --------------------------------------------------------------------------- outputs


def _write_files(s: DemoSettings, trained: Training, ex: Explained, attacked: Attacked,
                 robust: RobustTraining) -> report.DemoFiles:
    """The two figures, the attacked inputs and both models' weights."""
    from captum_robust.visualization import plot_attributions, save_figure

    out, dpi = s.out, 60 if s.quick else 100
    shown = min(s.examples, MAX_FIGURE_ROWS)
    fig = plot_attributions(ex.x, ex.maps, labels=ex.y, predictions=ex.pred, max_examples=shown)
    figure = save_figure(fig, out / "figure_attributions.png", dpi=dpi)
    model_path = out / "model.pt"
    torch.save(trained.model.state_dict(), model_path)
    int_model_path = out / "model_int.pt"
    torch.save(robust.model.state_dict(), int_model_path)
    attack_maps = {
        "|IG| (pred)": attacked.ig_before, "|IG| after top-k attack": attacked.ig_after,
        "CAM (pred)": attacked.cam_before, "CAM after AAI": attacked.cam_after,
    }
    fig = plot_attributions(ex.x, attack_maps, labels=ex.y, predictions=ex.pred, max_examples=shown)
    attack_figure = save_figure(fig, out / "figure_attacks.png", dpi=dpi)
    attacked_path = out / "attacked_inputs.pt"
    torch.save({"topk_ig": attacked.x_ig.detach().clone(), "aai_cam": attacked.x_cam.detach().clone()}, attacked_path)
    return report.DemoFiles(
        figure=figure, attack_figure=attack_figure, attacked=attacked_path, model=model_path, int_model=int_model_path,
        shown=shown,
    )


def _report(s: DemoSettings, digits: DigitsData, trained: Training, ex: Explained, cert: Any, sg_seconds: float,
            attacked: Attacked, robust: RobustTraining, files: report.DemoFiles, t_start: float) -> str:
    """Assemble ``report.md`` from the sections of :mod:`._demo_report`."""
    stats, n = trained.stats, s.examples
    history = stats["history"]
    cam_label, cam_pred = ex.maps["CAM (label)"].flatten(1), ex.maps["CAM (pred)"].flatten(1)
    label_cells = [int(cam_label[i].argmax()) for i in range(n)]
    pred_cells = [int(cam_pred[i].argmax()) for i in range(n)]
    labels, preds = [int(v) for v in ex.y], [int(v) for v in ex.pred]
    sections = [
        report.header_section(),
        report.data_section(IMAGE_SIZE, s.seed, len(digits.data.train), trained.n_test, TEST_FRACTION),
        report.training_section(
            n_params=sum(p.numel() for p in trained.model.parameters()), lr=LEARNING_RATE, batch=BATCH_SIZE,
            max_epochs=s.epochs, seconds=s.seconds, stats=stats, stop=trained.stop,
            train_accuracy=history[-1]["train_accuracy"] if history else float("nan"),
        ),
        report.accuracy_section(trained.accuracy, trained.n_correct, trained.n_test),
        report.attributions_section(ex.map_side, labels, preds, label_cells, pred_cells),
        report.checks_section(trained.n_test, ex.completeness, ex.logit_scale, ex.gradcam_vs_cam),
        report.certificate_section(
            cert, preds, sparsity=SMOOTHGRAD_SPARSITY, sigma=SMOOTHGRAD_SIGMA, n_samples=s.sg_samples, rho=CERT_RHO,
            confidence=CERT_CONFIDENCE, seconds=sg_seconds,
        ),
        report.attacks_section(
            preds, attacked, report.AttackSettings(
                step=ATTACK_STEP, ig_steps=ATTACK_IG_STEPS, ig_k=ATTACK_IG_K, ig_eps=ATTACK_IG_EPS,
                ig_iterations=s.ig_iterations, cam_k=ATTACK_CAM_K, cam_eps=ATTACK_CAM_EPS,
                cam_iterations=s.cam_iterations,
            ), files,
        ),
        report.robust_section(
            robust, eps=INT_EPS, step=INT_STEP, n_eval=ROBUST_EVAL_IMAGES, pgd_iterations=PGD_EVAL_ITERATIONS,
            attack_step=ATTACK_STEP, cam_k=ATTACK_CAM_K, cam_iterations=s.cam_iterations,
        ),
        report.figure_section(files),
        report.files_section(files, time.perf_counter() - t_start),
    ]
    return "\n".join(sections)


def _demo(s: DemoSettings) -> None:
    """Every step, then the files into ``s.out`` (the staging folder)."""
    t_start = time.perf_counter()
    digits = _load_data(s)
    trained = _train(s, digits)
    ex = _explain(trained.model, digits.data, s.examples)
    cert, sg_seconds = _certify(s, trained.model, ex)
    attacked = _attack(s, trained.model, ex)
    robust = _robust_training(s, digits, trained)
    files = _write_files(s, trained, ex, attacked, robust)
    text = _report(s, digits, trained, ex, cert, sg_seconds, attacked, robust, files, t_start)
    (s.out / "report.md").write_text(text, encoding="utf-8")
