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
    state_dict.pt``; a Hugging Face-style output with ``.logits`` is fine) on a test set (embedded
    digits, MNIST / Fashion-MNIST / CIFAR-10 files, an ``.npz`` archive or a folder of PNG/JPEG
    images in class sub-folders, ``--normalize MEAN:STD`` for normalised models, attacks staying in
    pixel space) with :func:`captum_robust.robust.evaluation.attribution_robustness` and PGD
    (IG, saliency, CAM, Grad-CAM, Grad-CAM++ of ``--layer`` or a found layer, Sparsified SmoothGrad);
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

Every subcommand writes its files to a staging folder and moves them into ``--out`` when the
run has finished: Ctrl-C (exit status 130, one line) or an error leaves nothing behind, and an
``--out`` holding an earlier run's files is refused unless ``--overwrite``.

From Python, :func:`main` takes the argument list and returns the exit status (0 on
success, 2 for bad input, 130 if interrupted) instead of exiting::

    >>> from captum_robust.cli import main
    >>> main(["demo", "--quick", "--out", "demo_out"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import argparse

# Importing this package is cheap (no torch): the subcommands and torch are imported inside
# main(), where Ctrl-C during start-up is one line and exit status 130 instead of a traceback.
# The constants and helpers below lived in the single module ``captum_robust/cli.py``; they are
# importable from here as before, resolved on first access from the subcommand module that
# defines them (or _defaults.py when several subcommands share them).
_LAZY = {
    "captum_robust.cli._defaults": (
        "CERT_CONFIDENCE", "CERT_K_FRACTION", "CERT_RHO", "IMAGE_SIZE", "SMOOTHGRAD_SAMPLES", "SMOOTHGRAD_SIGMA",
        "SMOOTHGRAD_SPARSITY", "TEST_FRACTION",
    ),
    "captum_robust.cli._inputs": ("DATA_KINDS",),
    "captum_robust.cli.certify": (
        "CERT_QUANTILES", "CERT_RADIUS_MULTIPLES", "CERTIFY_BATCH", "CERTIFY_EXAMPLES", "CERTIFY_OUT", "CERTIFY_FILES",
    ),
    "captum_robust.cli.demo": (
        "ATTACK_CAM_EPS", "ATTACK_CAM_ITERATIONS", "ATTACK_CAM_K", "ATTACK_CAM_QUICK_ITERATIONS", "ATTACK_IG_EPS",
        "ATTACK_IG_ITERATIONS", "ATTACK_IG_K", "ATTACK_IG_QUICK_ITERATIONS", "ATTACK_IG_STEPS", "ATTACK_STEP",
        "BATCH_SIZE", "DEFAULT_EPOCHS", "DEFAULT_OUT", "DEFAULT_SECONDS", "DEFAULT_THREADS", "INT_EPS",
        "INT_ITERATIONS", "INT_QUICK_EPOCHS", "INT_QUICK_ITERATIONS", "INT_QUICK_RAMP_EPOCHS",
        "INT_QUICK_WARMUP_EPOCHS", "INT_RAMP_EPOCHS", "INT_SECONDS", "INT_STEP", "INT_WARMUP_EPOCHS", "LEARNING_RATE",
        "MAX_FIGURE_ROWS", "PGD_EVAL_ITERATIONS", "QUICK_EPOCHS", "ROBUST_EVAL_IMAGES", "SMOOTHGRAD_QUICK_SAMPLES",
        "DEMO_FILES",
    ),
    "captum_robust.cli.evaluate": (
        "ATTACK_ITERATIONS", "ATTACKS", "ATTRIBUTIONS", "EVALUATE_BATCH", "EVALUATE_EXAMPLES", "EVALUATE_OUT",
        "FIGURE_EXAMPLES", "L2_EPS", "LINF_EPS", "MEASURES", "SMOOTHGRAD_ATTACK_SAMPLES", "SMOOTHGRAD_CLIP",
        "SURROGATE_BETA", "_merge_robustness", "EVALUATE_FILES",
    ),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}
_SUBCOMMANDS = ("demo", "evaluate", "certify")

__all__ = ["main", "build_parser"]

PROG = "captum-robust"


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBCOMMANDS:
        return importlib.import_module(f"captum_robust.cli.{name}")
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'captum_robust.cli' has no attribute {name!r}")


def build_parser() -> "argparse.ArgumentParser":
    """Return the ``captum-robust`` argument parser (one subparser per subcommand)."""
    import argparse

    from captum_robust import __version__
    from captum_robust.cli import certify, demo, evaluate

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Robustness of model explanations: attributions, attacks on them, certified maps.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    demo.add_parser(sub)
    evaluate.add_parser(sub)
    certify.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``captum-robust`` command and return its exit status.

    Args:
        argv (sequence of str, optional): the arguments without the program name; default
            ``sys.argv[1:]``.

    Returns:
        int: 0 on success (also for ``--help`` / ``--version``), 2 for bad input -- arguments,
        files, an unusable or already used ``--out``, a model or data that cannot work (a one-line
        message on stderr, no traceback) -- and 130 if interrupted (one line; what the run
        created is removed).

    Example:
        >>> from captum_robust.cli import main
        >>> main(["demo", "--quick", "--no-progress", "--out", "demo_out"])  # doctest: +SKIP
        0
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:  # anywhere: start-up (imports), the run, or the clean-up
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(argv: Optional[Sequence[str]]) -> int:
    from captum_robust.cli._runtime import UsageError

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
