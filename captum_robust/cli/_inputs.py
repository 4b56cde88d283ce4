"""The user's model, weights and test data for ``evaluate`` and ``certify``: the ``model and data``
options, the factory import, the weights check and the data sets, each failure a one-line
:class:`~captum_robust.cli._runtime.UsageError`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from captum_robust._utils.validation import check_model_dtype
from captum_robust.cli import _types
from captum_robust.cli._defaults import IMAGE_SIZE, TEST_FRACTION
from captum_robust.cli._runtime import UsageError

__all__ = [
    "DATA_KINDS", "UserRun", "add_model_options", "build_model", "load_weights", "check_logits", "load_test_data",
    "prepare_run", "LogitsOf", "first_conv_channels",
]

DATA_KINDS = ("digits", "mnist", "fashion-mnist", "cifar10", "npz", "folder")


def add_model_options(p: argparse.ArgumentParser, examples: int) -> None:
    """The ``model and data`` options shared by ``evaluate`` and ``certify``."""
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model", required=True, metavar="MODULE:FACTORY",
        help=(
            "the model factory, e.g. mypackage.nets:make_model or mymodule:Net: MODULE is imported (the current "
            "directory is searched too) and FACTORY is called with no arguments (or --model-kwargs); it must return "
            "a torch.nn.Module that maps images (N x C x H x W; pixels in [0, 1], or normalised by --normalize) "
            "to class logits, a tensor or an output with .logits (Hugging Face models)"
        ),
    )
    g.add_argument("--weights", required=True, metavar="FILE",
                   help="the model's state_dict saved with torch.save(model.state_dict(), FILE); loaded with "
                        "torch.load(FILE, weights_only=True), so pickled Python objects are refused")
    g.add_argument("--model-kwargs", default=None, metavar="JSON",
                   help="keyword arguments for the factory as a JSON object, e.g. '{\"num_classes\": 10}'")
    g.add_argument(
        "--data", default="digits", metavar="SPEC",
        help=(
            "the test images: digits (scikit-learn's digits, the demo's test split: 360 images), mnist:DIR, "
            "fashion-mnist:DIR (IDX files t10k-*), cifar10:DIR (binary test_batch.bin) or npz:FILE (arrays 'x' "
            "N x C x H x W or N x H x W, float in [0, 1] or uint8, and 'y' int labels; see "
            "captum_robust.data.load_npz) or folder:DIR (PNG/JPEG images in class sub-folders DIR/<class>/, classes in "
            "sorted order; captum_robust.data.load_image_folder) (default: digits)"
        ),
    )
    g.add_argument("--image-size", type=_types.positive_int, default=None, metavar="PX",
                   help="--data digits: the side, 28 (default, upsampled like MNIST) or 8 (the original pixels); "
                        "--data folder: resize the shorter side of every image to PX (bilinear; default: keep the "
                        "files' sizes)")
    g.add_argument("--center-crop", nargs="?", const=True, default=False, type=_types.positive_int, metavar="PX",
                   help="--data folder: keep the central square, PX x PX or --image-size x --image-size when PX is "
                        "omitted (e.g. --image-size 256 --center-crop 224)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="--data folder: read the images as grey-scale (1) or RGB (3) (default: the in_channels of "
                        "the model's first convolution, else 1 when every image is grey-scale)")
    g.add_argument(
        "--normalize", type=_types.mean_std, default=None, metavar="MEAN:STD",
        help=(
            "the model expects (x - MEAN) / STD per channel: MEAN and STD are comma-separated per-channel values, "
            "e.g. 0.485,0.456,0.406:0.229,0.224,0.225, or imagenet for those; the CLI normalises inside a wrapper "
            "(captum_robust.data.Normalize) so attacks, --eps, --rho, --sigma and the reported radii stay in "
            "pixels in [0, 1] (default: no normalisation)"
        ),
    )
    g.add_argument("--examples", type=_types.positive_int, default=examples, metavar="N",
                   help=f"evaluate the first N test images (default: {examples})")


def build_model(spec: str, kwargs_json: Optional[str]) -> torch.nn.Module:
    """Import ``module:factory`` (the current directory on sys.path while importing) and call it."""
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


def load_weights(model: torch.nn.Module, path_text: str) -> None:
    """``torch.load(weights_only=True)`` into the model, with one-line errors for every failure."""
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
    params = {name for name, _ in model.named_parameters()}
    broken = [k for k, v in state.items() if v.is_floating_point()
              and bool(torch.isnan(v).any() or (k in params and torch.isinf(v).any()))]
    if broken:  # argmax of NaN logits is class 0: every result would be silently wrong
        raise UsageError(
            f"--weights '{path_text}' holds NaN or infinite values in {len(broken)} tensor(s) ({short(broken)}): the "
            "weights were probably saved after training diverged; use an earlier checkpoint or retrain"
        )
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # pragma: no cover - caught above in practice
        raise UsageError(f"--weights '{path_text}' does not load into the model: {str(exc).splitlines()[0]}") from None


def check_logits(logits: torch.Tensor, args: argparse.Namespace, first: int = 0) -> None:
    """UsageError naming ``--weights`` when the model's outputs on the examples ``first ..`` hold
    NaN or inf: a prediction (argmax of NaN is 0), an accuracy or a map would be meaningless."""
    from captum_robust._utils.validation import check_finite_outputs

    what = f"the model's outputs on examples {first}..{first + len(logits) - 1}"
    try:
        check_finite_outputs(logits, what=what)
    except ValueError as exc:
        raise UsageError(f"--weights '{args.weights}': {exc}") from None


def load_test_data(spec: str, image_size: Optional[int], center_crop: Any = False,
                   channels: Optional[int] = None) -> Tuple[Any, str]:
    """``--data`` -> (TensorDataset of the test split, description)."""
    from captum_robust import data as cdata

    kind, sep, location = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in DATA_KINDS:
        raise UsageError(f"--data {spec!r}: unknown data set {kind!r}; expected one of "
                         "digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, npz:FILE, folder:DIR")
    if kind not in ("digits", "folder") and image_size is not None:
        raise UsageError(f"--image-size applies to --data digits and folder:DIR only, not to {kind}")
    if kind != "folder" and (center_crop is not False or channels is not None):
        raise UsageError(f"--{'center-crop' if center_crop is not False else 'channels'} applies to --data "
                         f"folder:DIR only, not to {kind}")
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
    if kind == "folder":
        try:
            ds = cdata.load_image_folder(location, size=image_size, center_crop=center_crop, channels=channels)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--data {spec!r}: {str(exc).splitlines()[0]}") from None
        c, h, w = ds.tensors[0].shape[1:]
        names = ", ".join(ds.classes[:6]) + (", ..." if len(ds.classes) > 6 else "")
        return ds, (f"images in '{location}' ({len(ds.classes)} classes: {names}; {c} x {h} x {w}, "
                    f"{len(ds.tensors[1])} images)")
    try:
        if kind == "npz":
            return cdata.load_npz(location), f"'{location}' (npz)"
        loader = {"mnist": cdata.load_mnist, "fashion-mnist": cdata.load_fashion_mnist, "cifar10": cdata.load_cifar10}[kind]
        return loader(location, train=False), f"{kind} test set in '{location}'"
    except (OSError, ValueError) as exc:  # FileNotFoundError, NotADirectoryError, DataFormatError
        raise UsageError(f"--data {spec!r}: {exc}") from None


@dataclass
class UserRun:
    """The user's model (in eval mode, on the device) and the first ``--examples`` test images."""

    model: torch.nn.Module  # what the library runs: the user's model, wrapped for --normalize / .logits
    x: torch.Tensor
    y: torch.Tensor
    data: str  # the data set in words
    n_classes: int
    n_params: int
    user_model: Optional[torch.nn.Module] = None  # the factory's module (--layer names are its submodules)
    notes: List[str] = field(default_factory=list)  # how the model is wrapped, in words

    def print_summary(self, args: argparse.Namespace, ctx: Any) -> None:
        """Print the model and the data (on rank 0)."""
        print(f"model: {args.model} with weights {args.weights} ({self.n_params:,} parameters, "
              f"{self.n_classes} classes)")
        over = f" over {ctx.world_size} processes" if ctx.distributed else ""
        print(f"data: {self.data}; {len(self.y)} examples{over}")
        for note in self.notes:
            print(f"input: {note}")

    def report_head(self, command: str, args: argparse.Namespace, settings: Dict[str, Any], in_brackets: str = "",
                    after: str = "") -> List[str]:
        """The first lines of ``command``'s report: title, version, the model (``in_brackets`` added
        after its parameter count, ``after`` after the brackets) and the data."""
        from captum_robust import __version__

        kwargs = f" with `{args.model_kwargs}`" if args.model_kwargs else ""
        return [
            f"# captum-robust {command} report",
            "",
            f"Generated by `captum-robust {command}` (captum_robust {__version__}).",
            "",
            f"- model: `{args.model}`{kwargs}, weights `{args.weights}` "
            f"({self.n_params:,} parameters{in_brackets}){after}",
            f"- data: {self.data}; the first {settings['examples']} images",
            *[f"- input: {note}" for note in self.notes],
        ]

    def settings(self, args: argparse.Namespace, ctx: Any, device: torch.device, **method: Any) -> Dict[str, Any]:
        """The ``settings`` of ``results.json``: the model and data, the subcommand's ``method``
        settings, then the run's."""
        from captum_robust import __version__

        return {
            "model": args.model, "model_kwargs": args.model_kwargs, "weights": args.weights, "data": args.data,
            "data_description": self.data, "examples": len(self.y),
            "normalize": None if getattr(args, "normalize", None) is None else
            {"mean": list(args.normalize[0]), "std": list(args.normalize[1])}, **method, "batch_size": args.batch_size,
            "seed": args.seed, "device": str(device), "world_size": ctx.world_size, "version": __version__,
        }


class LogitsOf(torch.nn.Module):
    """``model(x).logits`` (or ``["logits"]``): a model with a structured output (a Hugging Face
    ``ImageClassifierOutput``, a dict) as a module returning the logits tensor. The user's model
    is ``self.model``: its layers stay the same objects."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits_of(self.model(x))


def _logits_of(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out
    logits = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else out


def first_conv_channels(model: torch.nn.Module) -> Optional[int]:
    """``in_channels`` of the model's first ``nn.Conv2d`` when it is 1 or 3 (else None)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return conv.in_channels if conv is not None and conv.in_channels in (1, 3) else None


def _wrap(model: torch.nn.Module, outputs: Any, args: argparse.Namespace) -> Tuple[torch.nn.Module, List[str]]:
    """The module the library runs: ``LogitsOf`` when the outputs are structured, ``Normalize``
    for --normalize (outermost, so attacks and certificates see pixels)."""
    from captum_robust.data import Normalize

    notes = []
    if not isinstance(outputs, torch.Tensor) and isinstance(_logits_of(outputs), torch.Tensor):
        model = LogitsOf(model)
        notes.append(f"the model returns a {type(outputs).__name__}; its .logits are the class scores")
    if args.normalize is not None:
        mean, std = args.normalize  # its channel count is checked against the images by prepare_run
        model = Normalize(model, mean, std)
        notes.append(f"the model sees (x - mean) / std per channel, mean {', '.join(f'{v:g}' for v in mean)}, std "
                     f"{', '.join(f'{v:g}' for v in std)}; attacks, radii and noise are in pixels in [0, 1]")
    return model, notes


def prepare_run(args: argparse.Namespace, device: torch.device) -> UserRun:
    """Model (eval, on device, wrapped for --normalize and structured outputs), the first --examples
    test images and labels, checked against each other."""
    user_model = build_model(args.model, args.model_kwargs)
    load_weights(user_model, args.weights)
    user_model = user_model.to(device).eval()
    channels = getattr(args, "channels", None)
    if channels is None and args.data.strip().lower().startswith("folder"):
        channels = first_conv_channels(user_model)
    dataset, data_desc = load_test_data(args.data, args.image_size, getattr(args, "center_crop", False), channels)
    x_all, y_all = dataset.tensors[0], dataset.tensors[1]
    if args.examples > len(y_all):
        raise UsageError(f"--examples {args.examples} is larger than the test set ({len(y_all)} images)")
    x, y = x_all[: args.examples], y_all[: args.examples]
    first = x[: min(len(x), getattr(args, "batch_size", 1))]  # the first batch
    try:
        check_model_dtype(user_model, (first,), name="images")
    except TypeError:
        dtype = next(p.dtype for p in user_model.parameters() if p.is_floating_point())
        raise UsageError(
            f"--model {args.model!r} has {dtype} parameters but the images of --data are {first.dtype}: make the "
            f"factory return a {str(first.dtype).replace('torch.', '')} model (e.g. return model.float())"
        ) from None
    normalize = getattr(args, "normalize", None)
    if normalize is not None and len(normalize[0]) not in (1, x.shape[1]):
        raise UsageError(f"--normalize has {len(normalize[0])} per-channel values but the images of --data have "
                         f"{x.shape[1]} channel(s); give {x.shape[1]} means and {x.shape[1]} standard deviations")
    try:
        with torch.no_grad():
            probe = user_model
            if normalize is not None:
                from captum_robust.data import Normalize

                probe = Normalize(user_model, *normalize).to(device)
            outputs = probe(first.to(device))
    except Exception as exc:
        hint = " (for a model of 8x8 digits pass --image-size 8)" if args.data.strip().lower() == "digits" else ""
        raise UsageError(
            f"the model fails on an input of shape {tuple(x[:1].shape)} from --data {args.data!r}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{hint}"
        ) from None
    logits = _logits_of(outputs)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(first):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UsageError(f"the model must return class logits of shape N x classes (a tensor, or an output with "
                         f".logits), got {shape} for {len(first)} image(s)")
    if not hasattr(args, "normalize"):
        args.normalize = None
    model, notes = _wrap(user_model, outputs, args)
    model = model.to(device).eval()
    check_logits(logits, args)
    n_classes = logits.shape[1]
    if int(y.max()) >= n_classes or int(y.min()) < 0:
        bad = int(y.max()) if int(y.max()) >= n_classes else int(y.min())
        raise UsageError(f"the data has label {bad} but the model returns class scores for 0..{n_classes - 1}")
    n_params = sum(p.numel() for p in user_model.parameters())
    return UserRun(model=model, x=x, y=y, data=data_desc, n_classes=n_classes, n_params=n_params,
                   user_model=user_model, notes=notes)
