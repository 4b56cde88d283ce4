r"""RemOve And Retrain (ROAR): faithfulness of an attribution by retraining without its top features.

Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks" (NeurIPS
2019); the evaluation of Zeng et al. :func:`roar` returns a :class:`ROARResult`; the feature
removal itself is in :mod:`captum_robust.robust.evaluation.removal`.
"""

from __future__ import annotations

import inspect
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.reporting import fmt, json_text, markdown_table
from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import (
    OPEN_UNIT,
    check_bool,
    check_fraction,
    check_generator,
    check_int,
    check_positive,
)
from captum_robust.robust.evaluation._data import batches, model_device
from captum_robust.robust.evaluation.removal import (
    check_map_shape,
    feature_scores,
    replacement_values,
    top_fraction_mask,
)

__all__ = ["roar", "ROARResult", "ROAR_FRACTIONS"]

PathLike = Union[str, Path]

#: The fractions of Hooker et al. (2019): 10%, 30%, 50%, 70% and 90% of the features removed.
ROAR_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass
class ROARResult:
    """What :func:`roar` measured.

    Attributes:
        fractions (list of float): the fractions removed, with ``0.0`` (the unmodified data)
            first when the reference was trained.
        accuracies (list of list of float): test accuracy of every retrained model,
            ``accuracies[i][r]`` for fraction ``i`` and repeat ``r``.
        mean (list of float), std (list of float): per fraction, over the repeats (``std``
            is the sample standard deviation; NaN for one repeat).
        auc (float): area under the mean accuracy-vs-fraction curve (trapezoid rule) from the
            first to the last fraction in ``fractions``; lower = the attribution found the
            features the task needs (more faithful).
        normalized_auc (float): ``auc`` divided by the width of the fraction range (the
            average accuracy over it).
        seconds (dict): ``maps`` (attribution of every example), ``training`` (all
            retrainings and evaluations) and ``total``.
        settings (dict): the arguments (names of the attribution and the replacement, the
            seeds, epochs, ...), JSON-serializable.
    """

    fractions: List[float]
    accuracies: List[List[float]]
    mean: List[float]
    std: List[float]
    auc: float
    normalized_auc: float
    seconds: Dict[str, float]
    settings: Dict[str, Any]

    @property
    def reference_accuracy(self) -> Optional[float]:
        """Mean test accuracy with nothing removed (None when the reference was not trained)."""
        return self.mean[0] if self.fractions and self.fractions[0] == 0.0 else None

    def as_dict(self) -> Dict[str, Any]:
        """The result as a JSON-serializable dict."""
        return {
            "fractions": list(self.fractions), "accuracies": [list(a) for a in self.accuracies],
            "mean": list(self.mean), "std": list(self.std), "auc": self.auc,
            "normalized_auc": self.normalized_auc, "reference_accuracy": self.reference_accuracy,
            "seconds": dict(self.seconds), "settings": dict(self.settings),
        }

    def to_json(self, path: Optional[PathLike] = None, indent: int = 2) -> str:
        """The result as JSON text (NaN written as ``NaN``); also written to ``path`` when given."""
        return json_text(self.as_dict(), indent=indent, nan="keep", path=path)

    def to_markdown(self) -> str:
        """One row per fraction: mean and std of the test accuracy, then the AUC."""
        rows = [[f"{f:g}", fmt(m), fmt(s), len(a)]
                for f, m, s, a in zip(self.fractions, self.mean, self.std, self.accuracies)]
        table = markdown_table(["fraction removed", "test accuracy (mean)", "std", "repeats"], rows, align="rrrr")
        return "\n".join([
            table,
            "",
            f"AUC (trapezoid, fractions {self.fractions[0]:g}..{self.fractions[-1]:g}): {fmt(self.auc)}; "
            f"normalized: {fmt(self.normalized_auc)} ({self.settings.get('attribution')}, "
            f"{self.seconds['total']:.1f} s).",
        ])

    def __str__(self) -> str:
        return self.to_markdown()


def roar(
    model_factory: Callable[[], torch.nn.Module],
    attribution: Any,
    train_data: Any,
    test_data: Any,
    fractions: Sequence[float] = ROAR_FRACTIONS,
    *,
    replacement: Any = "mean",
    absolute: bool = True,
    aggregate_channels: bool = False,
    target: str = "label",
    attribution_kwargs: Optional[Dict[str, Any]] = None,
    train_fn: Optional[Callable[..., Any]] = None,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    internal_batch_size: int = 256,
    repeats: int = 1,
    include_reference: bool = True,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
    json_path: Optional[PathLike] = None,
) -> ROARResult:
    r"""RemOve And Retrain (ROAR): how much test accuracy a fresh model loses when the features
    an attribution ranks highest are removed from the training *and* the test set.

    Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks"
    (NeurIPS 2019), sec. 3; used by Zeng et al. (supplementary, Table 1 and Fig. 1) to compare
    the saliency maps of standard and adversarially trained models. The procedure:

    1. ``attribution`` (built on a model trained on the original data) maps every training
       and test example, for its label (``target="label"``) or the model's prediction, in
       batches of ``internal_batch_size``.
    2. For each fraction :math:`f`, every example's top :math:`\lfloor f n + \tfrac12\rfloor`
       features by :math:`|m|` (:func:`remove_features`) are replaced with an uninformative
       value: by default the per-channel mean of the unmodified training set, as in Hooker et
       al. (``"zero"`` or a constant are options; Zeng et al. do not state theirs).
    3. A *fresh* model from ``model_factory`` is trained on the modified training set and its
       accuracy on the modified test set is recorded; ``repeats`` times (Hooker et al. train 5
       models per point and report mean and spread).

    Retraining is what separates ROAR from deletion curves: without it the accuracy drop mixes
    the information removed with the distribution shift of the modified images. A faithful
    attribution degrades accuracy *faster* than the ``"random"`` baseline (lower curve, lower
    :attr:`ROARResult.auc`). Hooker et al. use fractions 10..90% (the default); Zeng et al.
    20, 40, 60, 80%. With ``include_reference`` the unmodified data (fraction 0) is trained
    too and starts the curve.

    Seeds: ``s_0..s_{R-1}, s_noise = torch.randint(0, 2**62, (repeats + 1,),
    generator=generator)``. Repeat ``r`` of *every* fraction uses ``s_r`` (common random
    numbers: fractions and attributions evaluated with the same ``generator`` seed differ only
    in the data): the model is ``model_factory()`` under ``torch.manual_seed(s_r)`` (inside
    :func:`torch.random.fork_rng`, so the caller's global RNG is untouched), the training
    loader shuffles with ``torch.Generator().manual_seed(s_r)`` and ``train_fn`` gets
    ``generator=torch.Generator().manual_seed(s_r)``. ``s_noise`` seeds the ``"random"``
    ranking (``torch.rand`` of the inputs' shape) and the noise of attributions whose
    ``attribute`` takes ``generator=``. Same ``generator`` seed, same result (on one machine).

    Args:
        model_factory (callable): ``() -> nn.Module``, a fresh untrained model per call.
        attribution: an attribution object (``attribute(inputs, target=..., **attribution_kwargs)``,
            e.g. :class:`~captum_robust.attr.BatchedIntegratedGradients`, a SmoothGrad, CAM
            with ``attribution_kwargs={"upsample": True}`` or Captum's ``Saliency``) whose
            model was trained on the original data; a callable ``(inputs, target) -> maps``;
            or ``"random"`` for the random baseline. Maps must have the inputs' shape (every
            element ranked) or the channel-summed shape ``B x 1 x H x W`` / ``B x H x W``
            (pixels ranked, all channels of a pixel removed).
        train_data, test_data: a ``Dataset``, a ``DataLoader`` (or iterable of
            ``(inputs, labels)`` batches) or an ``(inputs, labels)`` pair of tensors; read once
            in order.
        fractions (sequence of float): increasing, distinct, in (0, 1). Default
            ``(0.1, 0.3, 0.5, 0.7, 0.9)``.
        replacement (str or float): ``"mean"`` (default), ``"zero"`` or a number
            (:func:`replacement_values`).
        absolute (bool): rank by ``|map|`` (default) or by the signed map.
        aggregate_channels (bool): rank pixels by the channel sum of the scores.
        target (str): ``"label"`` (default) or ``"prediction"`` (needs an attribution with a
            module ``forward_func``).
        attribution_kwargs (dict, optional): passed to ``attribute``.
        train_fn (callable, optional): ``train_fn(model, train_loader, generator)`` trains in
            place; default :func:`~captum_robust.training.train_classifier` with ``epochs``
            and ``lr``.
        epochs (int): epochs of the default ``train_fn``. Default 10.
        lr (float): Adam learning rate of the default ``train_fn``. Default 1e-3.
        batch_size (int): batch size of the retraining loader (and of the evaluation). Default 64.
        internal_batch_size (int): examples per attribution call. Default 256.
        repeats (int): models trained per fraction. Default 1.
        include_reference (bool): also train on the unmodified data (fraction 0). Default True.
        generator (torch.Generator, optional): the seeds above; None draws them from the
            global RNG.
        show_progress (bool): tqdm bars over the maps and the retrainings.
        json_path (str or Path, optional): also write the result as JSON there.

    Returns:
        ROARResult: per-fraction accuracies (all repeats, mean, std), ``auc``,
        ``normalized_auc``, ``seconds``, ``settings``; ``to_markdown()``, ``to_json()``.

    Raises:
        ValueError: fractions outside (0, 1), unsorted or repeated; empty data; maps of the
            wrong shape or with NaN; bad ``replacement``, ``target`` or counts.
        TypeError: a ``model_factory`` that does not return an ``nn.Module``, an attribution
            that is neither an attribution object, a callable nor ``"random"``.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(64, 1, 4, 4, generator=g)
        >>> y = (x[:, 0, 0, 0] > 0.5).long()
        >>> factory = lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> result = roar(factory, "random", (x[:48], y[:48]), (x[48:], y[48:]), fractions=(0.5,),
        ...               epochs=2, generator=torch.Generator().manual_seed(0))
        >>> result.fractions
        [0.0, 0.5]
        >>> 0.0 <= result.auc <= 0.5
        True
    """
    t_start = time.perf_counter()
    if not callable(model_factory) or isinstance(model_factory, torch.nn.Module):
        raise TypeError(
            "model_factory must be a callable () -> nn.Module that builds a fresh model, got "
            f"{type(model_factory).__name__}"
            + (" (pass e.g. lambda: Small(), not a model)" if isinstance(model_factory, torch.nn.Module) else "")
        )
    fracs = _check_fractions(fractions)
    attr_name = _attribution_name(attribution)
    if target not in ("label", "prediction"):
        raise ValueError(f"target must be 'label' or 'prediction', got {target!r}")
    if target == "prediction" and (attr_name == "random" or _forward_module(attribution) is None):
        raise ValueError("target='prediction' needs an attribution whose forward_func is the trained nn.Module")
    attribution_kwargs = _check_attribution_kwargs(attribution, attribution_kwargs)
    for flag, flag_name in ((absolute, "absolute"), (aggregate_channels, "aggregate_channels"),
                            (include_reference, "include_reference"), (show_progress, "show_progress")):
        check_bool(flag, flag_name)
    repeats = check_int(repeats, "repeats", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    internal_batch_size = check_int(internal_batch_size, "internal_batch_size", 1)
    train_fn, train_name = _resolve_train_fn(train_fn, epochs, lr)
    check_generator(generator, torch.device("cpu"))

    x_train, y_train = _materialize(train_data, "train_data")
    x_test, y_test = _materialize(test_data, "test_data")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"train_data and test_data inputs differ in shape: {tuple(x_train.shape[1:])} vs {tuple(x_test.shape[1:])}"
        )
    value = replacement_values(x_train, replacement)
    seeds = [int(s) for s in torch.randint(0, 2**62, (repeats + 1,), generator=generator)]
    repeat_seeds, noise_seed = seeds[:repeats], seeds[repeats]

    # 1. scores of every example (one ranking, reused for every fraction)
    t0 = time.perf_counter()
    maps_train, maps_test = _all_maps(attribution, x_train, y_train, x_test, y_test, target, internal_batch_size,
                                      attribution_kwargs, noise_seed, show_progress)
    scores_train = feature_scores(x_train, maps_train, absolute, aggregate_channels)
    scores_test = feature_scores(x_test, maps_test, absolute, aggregate_channels)
    t_maps = time.perf_counter() - t0

    # 2-3. remove, retrain, evaluate
    t0 = time.perf_counter()
    curve = ([0.0] if include_reference else []) + list(fracs)
    retrain = _Retraining(model_factory, train_fn, y_train, y_test, batch_size, repeat_seeds)
    with _progress(len(curve) * repeats, show_progress, "ROAR retraining") as bar:
        accuracies = [
            retrain.accuracies(*_removed(x_train, x_test, scores_train, scores_test, value, f), bar) for f in curve
        ]
    t_train = time.perf_counter() - t0

    settings = {
        "attribution": attr_name,
        "replacement": replacement if isinstance(replacement, str) else float(replacement),
        "absolute": absolute,
        "aggregate_channels": aggregate_channels,
        "target": target,
        "train_fn": train_name,
        "batch_size": batch_size,
        "repeats": repeats,
        "seeds": repeat_seeds,
        "noise_seed": noise_seed,
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "n_features": int(scores_train[0].numel()),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    seconds = {"maps": t_maps, "training": t_train, "total": time.perf_counter() - t_start}
    result = _result(curve, accuracies, seconds, settings)
    if json_path is not None:
        result.to_json(json_path)
    return result


# --------------------------------------------------------------------------- arguments


def _attribution_name(attribution: Any) -> str:
    """The attribution's name for the report (``"random"`` for the baseline); raise for anything else."""
    if isinstance(attribution, str):
        if attribution != "random":
            raise ValueError(f"attribution must be an attribution object, a callable or 'random', got {attribution!r}")
        return "random"
    if isinstance(attribution, type):
        raise TypeError(f"attribution must be an attribution object (e.g. {attribution.__name__}(model)), got the class")
    if callable(getattr(attribution, "attribute", None)):
        return type(attribution).__name__
    if callable(attribution):
        return getattr(attribution, "__name__", type(attribution).__name__)
    raise TypeError(
        "attribution must be an attribution object with attribute(inputs, target=...), a callable "
        f"(inputs, target) -> maps or 'random', got {type(attribution).__name__}"
    )


def _check_attribution_kwargs(attribution: Any, attribution_kwargs: Any) -> Dict[str, Any]:
    if attribution_kwargs is None:
        return {}
    if not isinstance(attribution_kwargs, dict):
        raise TypeError(f"attribution_kwargs must be a dict, got {type(attribution_kwargs).__name__}")
    if attribution_kwargs and not callable(getattr(attribution, "attribute", None)):
        raise ValueError("attribution_kwargs apply to attribution objects (with an attribute method) only")
    bad = [k for k in attribution_kwargs if k in ("inputs", "target")]
    if bad:
        raise ValueError(f"attribution_kwargs must not set {bad}: roar passes the inputs and the target")
    return attribution_kwargs


def _resolve_train_fn(train_fn: Any, epochs: Any, lr: Any) -> Tuple[Callable[..., Any], str]:
    """The retraining function and its name for the report."""
    if train_fn is None:
        epochs = check_int(epochs, "epochs", 1)
        check_positive(lr, "lr")
        return _default_train_fn(epochs, float(lr)), f"train_classifier(epochs={epochs}, lr={lr})"
    if not callable(train_fn):
        raise TypeError(f"train_fn must be a callable (model, loader, generator), got {type(train_fn).__name__}")
    return train_fn, getattr(train_fn, "__name__", type(train_fn).__name__)


def _check_fractions(fractions: Any) -> Tuple[float, ...]:
    if isinstance(fractions, (int, float)) and not isinstance(fractions, bool):
        fractions = (fractions,)
    if isinstance(fractions, Tensor):
        fractions = fractions.tolist()
    if not isinstance(fractions, (list, tuple)):
        raise TypeError(f"fractions must be a sequence of floats in (0, 1), got {type(fractions).__name__}")
    if len(fractions) == 0:
        raise ValueError("fractions must hold at least one fraction in (0, 1), got an empty sequence")
    out = tuple(check_fraction(f, f"fractions[{i}]", OPEN_UNIT) for i, f in enumerate(fractions))
    for i in range(1, len(out)):
        if out[i] == out[i - 1]:
            raise ValueError(f"fractions must not repeat a value, got {tuple(fractions)!r} ({out[i]!r} twice)")
        if out[i] < out[i - 1]:
            raise ValueError(f"fractions must be sorted in increasing order, got {tuple(fractions)!r}")
    return out



def _materialize(data: Any, name: str) -> Tuple[Tensor, Tensor]:
    """A data set, a loader or an ``(inputs, labels)`` pair -> two tensors (all examples, in order)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data[0], data[1]
    else:
        if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
            if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) >= 2:
                x, y = data.tensors[0], data.tensors[1]
                data = None
            else:
                data = torch.utils.data.DataLoader(data, batch_size=256, shuffle=False)
        if data is not None:
            xs, ys = [], []
            try:
                for x_b, y_b in batches(data):
                    xs.append(x_b)
                    ys.append(y_b)
            except TypeError as err:
                if "not iterable" in str(err):
                    raise TypeError(
                        f"{name} must be a Dataset, a DataLoader (or iterable of (inputs, labels) batches) or an "
                        f"(inputs, labels) pair of tensors, got {type(data).__name__}"
                    ) from None
                raise
            if not xs:
                raise ValueError(f"{name} is empty")
            x, y = torch.cat(xs), torch.cat(ys)
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if x.dim() < 2:
        raise ValueError(f"{name} inputs must be batched (N x ...), got shape {tuple(x.shape)}")
    if y.shape[:1] != x.shape[:1] or y.dim() != 1:
        raise ValueError(
            f"{name} labels must be a vector of length N={x.shape[0]}, got shape {tuple(y.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} inputs must be floating point, got {x.dtype}")
    return x.detach(), y.detach().long()


def _forward_module(attribution: Any) -> Optional[torch.nn.Module]:
    f = getattr(attribution, "forward_func", None)
    return f if isinstance(f, torch.nn.Module) else None


def _attribution_maps(
    attribution: Any,
    x: Tensor,
    y: Tensor,
    target: str,
    batch_size: int,
    kwargs: Dict[str, Any],
    noise_seed: int,
    bar: Any,
) -> Tensor:
    """Maps of every example, computed ``batch_size`` examples at a time (on the model's device)."""
    model = _forward_module(attribution)
    device = model_device(model) if model is not None else None
    method = getattr(attribution, "attribute", None)
    accepts_generator = callable(method) and "generator" in inspect.signature(method).parameters
    gen_device = device if device is not None else x.device
    generator = torch.Generator(device=gen_device).manual_seed(noise_seed) if accepts_generator else None
    out = []
    with preserved_model_state(model, train=False):
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            if device is not None:
                xb, yb = xb.to(device), yb.to(device)
            if target == "prediction":
                with torch.no_grad():
                    yb = model(xb).argmax(dim=1)
            if callable(method):
                extra = dict(kwargs)
                if generator is not None and "generator" not in extra:
                    extra["generator"] = generator
                maps = method(xb, target=yb, **extra)
            else:
                maps = attribution(xb, yb)
            if isinstance(maps, tuple):
                if len(maps) != 1:
                    raise ValueError(f"the attribution returned a tuple of {len(maps)} maps; ROAR needs one map per input")
                maps = maps[0]
            if not isinstance(maps, Tensor):
                raise TypeError(f"the attribution must return a tensor of maps, got {type(maps).__name__}")
            check_map_shape(tuple(xb.shape), maps)
            out.append(maps.detach().to(x.device))
            bar.update(xb.shape[0])
    return torch.cat(out)


def _default_train_fn(epochs: int, lr: float) -> Callable[..., Any]:
    from captum_robust.training import train_classifier

    def train(model: torch.nn.Module, loader: Any, generator: torch.Generator) -> Any:
        return train_classifier(model, loader, epochs=epochs, lr=lr, generator=generator)

    return train


# --------------------------------------------------------------------------- the steps


def _progress(total: int, show: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not show, desc=desc, leave=False)


def _all_maps(attribution: Any, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, target: str,
              batch_size: int, kwargs: Dict[str, Any], noise_seed: int, show_progress: bool) -> Tuple[Tensor, Tensor]:
    """The maps of every training and test example (uniform noise for the ``"random"`` baseline)."""
    if isinstance(attribution, str):  # "random"
        g = torch.Generator().manual_seed(noise_seed)
        maps_train = torch.rand(x_train.shape, generator=g, dtype=torch.float64).to(x_train.device)
        maps_test = torch.rand(x_test.shape, generator=g, dtype=torch.float64).to(x_test.device)
        return maps_train, maps_test
    with _progress(x_train.shape[0] + x_test.shape[0], show_progress, "ROAR maps") as bar:
        maps_train = _attribution_maps(attribution, x_train, y_train, target, batch_size, kwargs, noise_seed, bar)
        maps_test = _attribution_maps(attribution, x_test, y_test, target, batch_size, kwargs, noise_seed + 1, bar)
    return maps_train, maps_test


def _removed(x_train: Tensor, x_test: Tensor, scores_train: Tensor, scores_test: Tensor, value: Tensor,
             fraction: float) -> Tuple[Tensor, Tensor]:
    """The training and test inputs with the top ``fraction`` of their features replaced (0: unmodified)."""
    if fraction == 0.0:
        return x_train, x_test
    vt = value.to(x_train.dtype)
    return (torch.where(top_fraction_mask(scores_train, fraction), vt, x_train),
            torch.where(top_fraction_mask(scores_test, fraction), vt, x_test))


@dataclass
class _Retraining:
    """Train a fresh model per repeat seed on modified data and measure its test accuracy."""

    model_factory: Callable[[], torch.nn.Module]
    train_fn: Callable[..., Any]
    y_train: Tensor
    y_test: Tensor
    batch_size: int
    seeds: List[int]

    def accuracies(self, x_train: Tensor, x_test: Tensor, bar: Any) -> List[float]:
        from torch.utils.data import DataLoader, TensorDataset

        from captum_robust.training import evaluate_accuracy

        accs = []
        for seed in self.seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = self.model_factory()
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"model_factory must return an nn.Module, got {type(model).__name__}")
            loader = DataLoader(TensorDataset(x_train, self.y_train), batch_size=self.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            self.train_fn(model, loader, torch.Generator().manual_seed(seed))
            test_loader = DataLoader(TensorDataset(x_test, self.y_test), batch_size=max(self.batch_size, 256))
            accs.append(float(evaluate_accuracy(model, test_loader)))
            bar.update(1)
        return accs


def _result(curve: List[float], accuracies: List[List[float]], seconds: Dict[str, float],
            settings: Dict[str, Any]) -> "ROARResult":
    """Means, standard deviations and the area under the mean curve."""
    from scipy.integrate import trapezoid

    mean = [sum(a) / len(a) for a in accuracies]
    std = [float(torch.tensor(a, dtype=torch.float64).std()) if len(a) > 1 else float("nan") for a in accuracies]
    if len(curve) > 1:
        auc = float(trapezoid(mean, curve))
        normalized = auc / (curve[-1] - curve[0])
    else:
        auc = normalized = float("nan")
    return ROARResult(fractions=curve, accuracies=accuracies, mean=mean, std=std, auc=auc,
                      normalized_auc=normalized, seconds=seconds, settings=settings)
