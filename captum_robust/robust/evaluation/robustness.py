r"""The attribution-robustness runner: attack the attributions of a data set and report how much they changed.

:func:`attribution_robustness` runs an attack on attributions over a data loader, measures
the maps before and after with the chosen measures, and adds the adversarial accuracy of the
model under :class:`~captum_robust.robust.attacks.PGD` -- the protocol of Chen et al. (2019,
Table 2) and Boopathy et al. (2020, Tables 1 and 3). It returns a :class:`RobustnessReport`.
"""

from __future__ import annotations

import functools
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.validation import check_bool, check_finite_outputs, check_int, check_kwargs
from captum_robust._utils.validation import classification_outputs
from captum_robust.robust.attacks import PGD
from captum_robust.robust.attacks._adapter import AttributionAdapter, apply_preparation, make_preparation
from captum_robust.robust.attacks._base import attack_mode
from captum_robust.robust.attacks._map_attack import MapAttack
from captum_robust.robust import stability as _stability
from captum_robust.robust.discrepancy import MEASURES, measure_function
from captum_robust.robust.evaluation._data import batches, model_device
from captum_robust.robust.evaluation._stats import column_summary
from captum_robust.robust.evaluation.results import AttackedExamples, RobustnessReport

__all__ = ["attribution_robustness", "STABILITY_MEASURES"]

#: The stability metrics of :mod:`captum_robust.robust.stability` that :func:`attribution_robustness`
#: reports next to the attack measures (by name in ``measures``): its ``METRICS``.
STABILITY_MEASURES = _stability.METRICS

PathLike = Union[str, Path]
MeasureFn = Callable[[Tensor, Tensor], Tensor]


def attribution_robustness(
    model: Callable[..., Any],
    attribution: Any,
    attack: Any,
    data: Any,
    measures: Any = ("topk", "kendall"),
    *,
    k: Optional[int] = None,
    map_preparation: Any = "attack",
    pgd: Any = "auto",
    attribution_kwargs: Optional[Dict[str, Any]] = None,
    stability_kwargs: Optional[Dict[str, Any]] = None,
    max_examples: Optional[int] = None,
    keep_examples: int = 0,
    confidence: float = 0.95,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
    json_path: Optional[PathLike] = None,
) -> RobustnessReport:
    r"""Attack the attributions of every correctly classified example of ``data`` and report
    how much the maps changed, with the model's adversarial accuracy.

    For each batch ``(x, y)``: examples the model misclassifies are skipped (Chen et al.: "we
    only consider the test samples that are correctly classified"); the rest are attacked
    with ``attack.perturb(x, target=y)``; the maps of ``attribution`` (real model, target
    ``y``) at ``x`` and at the attacked input are prepared and compared with every measure.
    Statistics are taken over the examples whose *prediction the attack kept* (Boopathy et
    al. report only those): mean, median, Student's-t confidence interval of the mean and the
    central percentile interval (:func:`summarize`). The fraction kept and the fraction
    where the attack found an accepted perturbation are reported too. Separately, ``pgd``
    attacks every example (misclassified ones count as errors) for the adversarial accuracy.

    Args:
        model (nn.Module or callable): the classifier (B x C logits).
        attribution: the attribution whose maps are compared (an attribution of
            :mod:`captum_robust.attr` or a callable ``(model, inputs, target) -> maps``), or
            ``None`` for the attack's own (its reported maps, e.g. with its SmoothGrad noise seed).
        attack: an attack on attributions of :mod:`captum_robust.robust.attacks`
            (:class:`TopKAttack`, :class:`AAI`, :class:`L2TopKAttack`, ...; anything with
            ``perturb(x, target=y, generator=...)`` returning ``(x_adv, result)`` where
            ``target`` is the label, e.g. :class:`AttributionPGD`; not :class:`ISA`).
        data: a DataLoader (or any iterable) of ``(inputs, labels)`` batches, or one
            ``(inputs, labels)`` pair of tensors. Inputs are moved to the model's device.
        measures: names among :data:`~captum_robust.robust.discrepancy.MEASURES` (``"topk"``,
            the top-``k`` intersection; ``"kendall"``, ``"spearman"``, ``"center_dislocation"``,
            ``"l1"``, ``"l2"``: norms of the map difference), callables
            ``(clean_maps, adversarial_maps) -> (B,)``, or a dict ``{name: name-or-callable}``.
            Default ``("topk", "kendall")``. Also the names of :data:`STABILITY_MEASURES`
            (``"max_sensitivity"``, ``"relative_input_stability"``, ...): the metric of
            :mod:`captum_robust.robust.stability` on the measured attribution's raw maps at the
            clean input (target the label), one value per attacked example, summarized over all
            attacked examples (it does not depend on the attack).
            ``report.measure("topk")`` finds the ``"top{k}"`` entry.
        k (int, optional): ``k`` of ``"topk"``: default the attack's ``measure_k`` (or ``k``),
            else 100.
        map_preparation: how maps are prepared before measuring: ``"attack"`` (default, the
            attack's preparation, e.g. Ghorbani's channel-summed normalized absolute map, or the
            raw CAM for :class:`AAI`), ``"ghorbani"``, ``"abs"``, ``None``, a dict of
            :func:`~captum_robust.robust.discrepancy.prepare_maps` arguments or a callable.
        pgd: a :class:`~captum_robust.robust.attacks.PGD`, ``"auto"`` (default:
            ``PGD(model, eps, eps / 16, 40, norm)`` with the attack's ``eps`` (or ``rho``) and
            norm) or ``None`` to skip the adversarial accuracy.
        attribution_kwargs (dict, optional): keyword arguments of ``attribution.attribute``
            for the measured maps (e.g. ``{"n_steps": 16, "method": "riemann_middle"}`` for
            Integrated Gradients, to measure with the settings the attack used). Only with an
            explicit ``attribution``; with ``attribution=None`` the attack's own settings apply.
        stability_kwargs (dict, optional): keyword arguments of every stability metric asked
            for (``n_samples``, ``radius``, ``internal_batch_size``, ...; the generator is
            ``generator``); ``layer`` goes to ``relative_representation_stability`` only (found by
            :func:`~captum_robust.attr.find_cam_layers` when omitted). The counts of perturbations that changed the prediction are the per-example
            columns ``"<metric>_n_prediction_changed"`` and ``summary["stability"]``.
        max_examples (int, optional): stop after this many examples.
        keep_examples (int): keep the clean and attacked inputs, the labels and the prepared
            maps (exactly those the measures compared) of the first ``keep_examples`` attacked
            examples in ``report.examples`` (:class:`AttackedExamples`). Default 0: none.
        confidence (float): level of the intervals. Default 0.95.
        generator (torch.Generator, optional): randomness of the attacks.
        show_progress (bool): a tqdm bar over the examples.
        json_path (str or Path, optional): also write the report as JSON there.

    Returns:
        RobustnessReport: ``summary`` (aggregate table), ``per_example``, ``examples``,
        ``to_markdown()``, ``to_json()``.

    Raises:
        TypeError, ValueError: an attack without ``perturb``, unknown measures, bad data.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import CAM
        >>> from captum_robust.robust.attacks import AAI
        >>> from captum_robust.robust.evaluation import attribution_robustness
        >>> model = Small().eval()
        >>> cam = CAM(model, model.feature_layer, model.classifier)
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> report = attribution_robustness(model, cam, AAI(model, cam, n_iterations=5), (x, y),
        ...                                 measures=("topk", "kendall"), k=8, pgd=None)
        >>> sorted(report.summary["measures"])
        ['kendall', 'top8']
        >>> table = report.to_markdown()
    """
    t_start = time.perf_counter()
    _check_attack(attack)
    check_bool(show_progress, "show_progress")
    check_int(max_examples, "max_examples", 1, allow_none=True)
    keep_examples = check_int(keep_examples, "keep_examples", 0)
    if k is None:
        k = getattr(attack, "measure_k", None) or getattr(attack, "k", None) or 100
    k = check_int(k, "k", 1)
    run = _Run(
        model=model,
        attack=attack,
        measure_fns=_resolve_measures(measures, k),
        stability=_stability_metrics(measures, stability_kwargs),
        adapter=_measured_adapter(model, attribution, attack, attribution_kwargs),
        prepare=_preparation(attack, map_preparation),
        pgd=_resolve_pgd(model, attack, pgd),
        generator=generator,
    )
    records = _Records(list(run.measure_fns), list(run.stability), keep_examples)
    from tqdm.auto import tqdm

    device = model_device(model)
    with tqdm(total=_expected_total(data, max_examples), disable=not show_progress,
              desc="attribution robustness", leave=False) as bar:
        for x, y in _limited(batches(data), max_examples):
            if device is not None:
                x, y = x.to(device), y.to(device)
            records.add(run.evaluate_batch(x, y, records))
            bar.update(x.shape[0])
    if records.seen == 0:
        raise ValueError("data yielded no examples")
    summary: Dict[str, Any] = {
        **column_summary(records.cols, list(run.measure_fns), confidence, with_pgd=run.pgd is not None,
                         stability_names=list(run.stability)),
        "seconds": {**run.seconds, "total": time.perf_counter() - t_start},
        "settings": _settings(run, _preparation_name(attack, map_preparation), k, confidence),
    }
    report = RobustnessReport(summary=summary, per_example=records.cols, examples=records.examples())
    if json_path is not None:
        report.to_json(json_path)
    return report


# --------------------------------------------------------------------------- resolving the arguments


def _check_attack(attack: Any) -> None:
    if not callable(getattr(attack, "perturb", None)):
        raise TypeError(f"attack must have a perturb(inputs, target=...) method, got {type(attack).__name__}")
    from captum_robust.robust.attacks import ISA

    if isinstance(attack, ISA):
        raise TypeError(
            "ISA is a targeted misclassification attack: its target is the class to reach, not the label, and its "
            "result (eps_star, discrepancy, nds) is the report; this runner measures attacks that keep the label"
        )


def _resolve_measures(measures: Any, k: int) -> Dict[str, MeasureFn]:
    """Names or ``{name: callable}`` -> ``{name: fn(clean, adversarial) -> (B,)}``."""

    def builtin(name: str) -> MeasureFn:
        if name not in MEASURES:
            raise ValueError(
                f"unknown measure {name!r}; built-in measures are {MEASURES}, the stability metrics "
                f"{STABILITY_MEASURES}, or pass {{name: callable}}"
            )
        return measure_function(name, k)

    if isinstance(measures, str):
        measures = (measures,)
    if isinstance(measures, Mapping):
        out = {}
        for name, fn in measures.items():
            if isinstance(fn, str) and fn in STABILITY_MEASURES:
                continue
            if not isinstance(name, str):
                raise TypeError(f"measure names must be strings, got {name!r}")
            out[name] = builtin(fn) if isinstance(fn, str) else fn
            if not callable(out[name]):
                raise TypeError(f"measure {name!r} must be a callable (clean_maps, adversarial_maps) -> (B,)")
        return out
    if isinstance(measures, (list, tuple)):
        if not measures:
            raise ValueError("measures must name at least one measure")
        out = {}
        for m in measures:
            if isinstance(m, str) and m in STABILITY_MEASURES:
                continue
            if isinstance(m, str):
                out[m if m != "topk" else f"top{k}"] = builtin(m)
            elif callable(m):
                out[getattr(m, "__name__", f"measure{len(out)}")] = m
            else:
                raise TypeError(f"measures must hold names or callables, got {type(m).__name__}")
        return out
    raise TypeError(f"measures must be a name, a sequence of names/callables or a dict, got {type(measures).__name__}")


def _stability_metrics(measures: Any, stability_kwargs: Optional[Dict[str, Any]]) -> Dict[str, Callable[..., Any]]:
    """The stability metrics asked for in ``measures`` -> ``{report name: fn(explainer, x, y, model, generator)}``."""
    if isinstance(measures, str):
        measures = (measures,)
    if isinstance(measures, Mapping):
        wanted = [(name, fn) for name, fn in measures.items() if isinstance(fn, str) and fn in STABILITY_MEASURES]
    elif isinstance(measures, (list, tuple)):
        wanted = [(m, m) for m in measures if isinstance(m, str) and m in STABILITY_MEASURES]
    else:
        wanted = []
    kwargs = check_kwargs(stability_kwargs, "stability_kwargs", _STABILITY_RESERVED,
                          "the runner passes the maps, the clean inputs, the labels, the model and the generator itself")
    if "layer" in kwargs and "relative_representation_stability" not in [m for _, m in wanted]:
        raise ValueError("stability_kwargs sets layer, which only relative_representation_stability takes; ask for it "
                         "in measures or drop layer")
    out = {}
    for name, metric in wanted:
        fn = getattr(_stability, metric)
        kw = dict(kwargs)
        if metric != "relative_representation_stability":
            kw.pop("layer", None)
        out[name] = functools.partial(_run_stability, fn, kw)
    return out


_STABILITY_RESERVED = ("explainer", "inputs", "target", "forward_func", "generator", "show_progress")


def _run_stability(fn: Callable[..., Any], kwargs: Dict[str, Any], explainer: Callable[..., Any], x: Tensor,
                   y: Tensor, model: Any, generator: Optional[torch.Generator]) -> Any:
    return fn(explainer, x, y, forward_func=model, generator=generator, **kwargs)


def _measured_adapter(model: Any, attribution: Any, attack: Any,
                      attribution_kwargs: Optional[Dict[str, Any]]) -> AttributionAdapter:
    """The attribution whose maps are measured: the given one, or the attack's own for None."""
    if attribution is not None:
        return AttributionAdapter(model, attribution, attribution_kwargs=attribution_kwargs)
    if not isinstance(attack, MapAttack):
        raise ValueError("attribution=None uses the attack's attribution, but the attack has none; pass one")
    if attribution_kwargs:
        raise ValueError(
            "attribution_kwargs apply to an explicit attribution; with attribution=None the attack's own "
            "attribution_kwargs are used"
        )
    return attack.adapter


def _is_attack_preparation(map_preparation: Any) -> bool:
    return isinstance(map_preparation, str) and map_preparation == "attack"


def _preparation(attack: Any, map_preparation: Any) -> Callable[[Tuple[Tensor, ...]], Tensor]:
    """``maps tuple -> B x ...`` prepared maps: the attack's own preparation or the one asked for."""
    if _is_attack_preparation(map_preparation):
        if isinstance(attack, MapAttack):
            return attack.prepare_maps
        return functools.partial(apply_preparation, make_preparation(None))
    return functools.partial(apply_preparation, make_preparation(map_preparation))


def _preparation_name(attack: Any, map_preparation: Any) -> str:
    """How the report names the map preparation."""
    if _is_attack_preparation(map_preparation):
        return repr(getattr(attack, "map_preparation", None))
    if callable(map_preparation):
        return getattr(map_preparation, "__name__", "custom")
    return repr(map_preparation)


def _resolve_pgd(model: Any, attack: Any, pgd: Any) -> Any:
    """The PGD attack of the adversarial accuracy, or None to skip it."""
    if pgd is None:
        return None
    if not isinstance(pgd, str):
        if not callable(getattr(pgd, "perturb", None)):
            raise TypeError(f"pgd must be a PGD attack, 'auto' or None, got {type(pgd).__name__}")
        return pgd
    if pgd != "auto":
        raise ValueError(f"pgd must be a PGD attack, 'auto' or None, got {pgd!r}")
    eps = getattr(attack, "eps", None)
    if eps is None:
        eps = getattr(attack, "rho", None)
    if eps is None:
        raise ValueError("pgd='auto' takes eps (or rho) from the attack, which has none; pass a PGD or None")
    norm = getattr(attack, "norm", "linf")
    box = getattr(attack, "box", None)
    kwargs = {} if box is None else {"clip_min": box.clip_min, "clip_max": box.clip_max}
    return PGD(model, eps=max(float(eps), 0.0), step_size=max(float(eps), 1e-12) / 16, n_iterations=40, norm=norm,
               **kwargs)


def _expected_total(data: Any, max_examples: Optional[int]) -> Optional[int]:
    """The number of examples for the progress bar, when it is known."""
    if max_examples is not None or not hasattr(data, "dataset"):
        return max_examples
    try:
        return len(data.dataset)
    except TypeError:
        return None


def _limited(stream: Any, max_examples: Optional[int]) -> Any:
    """The batches, cut to ``max_examples`` examples in all."""
    seen = 0
    for x, y in stream:
        if max_examples is not None:
            if seen >= max_examples:
                return
            x, y = x[: max_examples - seen], y[: max_examples - seen]
        seen += x.shape[0]
        yield x, y


def _settings(run: "_Run", prep_name: str, k: int, confidence: float) -> Dict[str, Any]:
    return {
        "attack": type(run.attack).__name__,
        "attack_parameters": _attack_parameters(run.attack),
        "attribution": run.adapter.name,
        "map_preparation": prep_name,
        "k": k,
        "pgd": None if run.pgd is None else _attack_parameters(run.pgd),
        "confidence": confidence,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _attack_parameters(attack: Any) -> Dict[str, Any]:
    """The attack's scalar settings (for the report)."""
    out = {}
    for key, value in sorted(vars(attack).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
    return out


# --------------------------------------------------------------------------- one batch, and the records


@dataclass
class _BatchResult:
    """What one batch gave, one entry per example (misclassified ones: not attacked, NaN measures)."""

    label: Tensor
    clean_prediction: Tensor
    attacked: Tensor
    prediction: Tensor
    kept: Tensor
    accepted: Tensor
    norm: Tensor
    steps: Tensor
    values: Dict[str, Tensor]
    pgd_prediction: Tensor
    n_changed: Dict[str, Tensor] = field(default_factory=dict)
    examples: Optional[AttackedExamples] = None

    @classmethod
    def unattacked(cls, y: Tensor, clean_pred: Tensor, measure_names: List[str]) -> "_BatchResult":
        b = y.shape[0]
        nan = torch.full((b,), float("nan"), dtype=torch.float64)
        return cls(
            label=y, clean_prediction=clean_pred, attacked=clean_pred == y, prediction=clean_pred.clone(),
            kept=torch.zeros(b, dtype=torch.bool, device=y.device),
            accepted=torch.zeros(b, dtype=torch.bool, device=y.device), norm=nan.clone(),
            steps=torch.zeros(b, dtype=torch.long), values={name: nan.clone() for name in measure_names},
            pgd_prediction=torch.full((b,), -1, dtype=torch.long),
        )


class _Records:
    """The report's per-example columns, filled batch by batch, and the kept examples."""

    _COLUMNS = ("label", "clean_prediction", "attacked", "prediction", "kept", "accepted", "norm", "steps")

    def __init__(self, measure_names: List[str], stability_names: List[str], keep_examples: int) -> None:
        self.measure_names = measure_names + stability_names
        self.stability_names = stability_names
        self.keep_examples = keep_examples
        self.cols: Dict[str, List[Any]] = {"index": [], **{name: [] for name in self._COLUMNS}}
        for name in self.measure_names:
            self.cols[name] = []  # NaN where not attacked; summarized over the kept (stability: attacked) examples
        for name in stability_names:
            self.cols[f"{name}_n_prediction_changed"] = []  # -1 where not attacked or not checked
        self.cols["pgd_prediction"] = []
        self.seen = 0
        self._kept: List[AttackedExamples] = []

    @property
    def n_kept(self) -> int:
        return sum(len(part) for part in self._kept)

    def add(self, batch: _BatchResult) -> None:
        b = batch.label.shape[0]
        self.cols["index"] += list(range(self.seen, self.seen + b))
        for name in self._COLUMNS:
            self.cols[name] += getattr(batch, name).cpu().tolist()
        for name in self.measure_names:
            self.cols[name] += batch.values[name].tolist()
        for name in self.stability_names:
            changed = batch.n_changed.get(name, torch.full((b,), -1, dtype=torch.long))
            self.cols[f"{name}_n_prediction_changed"] += changed.tolist()
        self.cols["pgd_prediction"] += batch.pgd_prediction.tolist()
        if batch.examples is not None:
            self._kept.append(batch.examples)
        self.seen += b

    def examples(self) -> Optional[AttackedExamples]:
        return AttackedExamples.concatenate(self._kept) if self._kept else None


@dataclass
class _Run:
    """The resolved settings of a run and its timers; evaluates one batch at a time."""

    model: Any
    attack: Any
    measure_fns: Dict[str, MeasureFn]
    stability: Dict[str, Callable[..., Any]]
    adapter: AttributionAdapter
    prepare: Callable[[Tuple[Tensor, ...]], Tensor]
    pgd: Any
    generator: Optional[torch.Generator]

    def __post_init__(self) -> None:
        self.seconds = {"attack": 0.0, "pgd": 0.0}
        if self.stability:
            self.seconds["stability"] = 0.0

    def _stability(self, xc: Tensor, yc: Tensor, idx_cpu: Tensor, out: "_BatchResult") -> None:
        """The stability metrics of the measured attribution's raw maps at the clean inputs."""

        def explainer(inputs: Tensor, target: Tensor) -> Tensor:
            return self.adapter.maps((inputs,), False, target, (), create_graph=False)[0]

        t0 = time.perf_counter()
        b = idx_cpu.numel()
        for name, fn in self.stability.items():
            with attack_mode(self.model, warn=False):
                res = fn(explainer, xc, yc, self.model, self.generator)
            out.values[name][idx_cpu] = res.values.detach().to(torch.float64).cpu()
            if res.n_prediction_changed is not None:
                changed = out.n_changed.setdefault(name, torch.full((out.label.shape[0],), -1, dtype=torch.long))
                changed[idx_cpu] = res.n_prediction_changed.detach().cpu()[:b]
        self.seconds["stability"] += time.perf_counter() - t0

    def _predict(self, x: Tensor) -> Tensor:
        with attack_mode(self.model):
            with torch.no_grad():
                logits = classification_outputs(self.model(x))
        check_finite_outputs(logits)  # argmax of NaN is 0: it would count as a prediction
        return logits.argmax(dim=1)

    def evaluate_batch(self, x: Tensor, y: Tensor, records: _Records) -> _BatchResult:
        """Attack the correctly classified examples of ``(x, y)``, measure their maps, run PGD."""
        out = _BatchResult.unattacked(y, self._predict(x), list(self.measure_fns) + list(self.stability))
        idx = torch.nonzero(out.attacked).squeeze(1)
        if idx.numel():
            self._attack(x[idx], y[idx], idx, out, records)
        if self.pgd is not None:
            t0 = time.perf_counter()
            x_pgd, _ = self.pgd.perturb(x, target=y, generator=self.generator)
            out.pgd_prediction = self._predict(x_pgd).cpu()
            self.seconds["pgd"] += time.perf_counter() - t0
        return out

    def _attack(self, xc: Tensor, yc: Tensor, idx: Tensor, out: _BatchResult, records: _Records) -> None:
        t0 = time.perf_counter()
        x_adv, result = self.attack.perturb(xc, target=yc, generator=self.generator)
        self.seconds["attack"] += time.perf_counter() - t0
        x_adv = x_adv[0] if isinstance(x_adv, tuple) else x_adv
        pa = self._predict(x_adv)
        with attack_mode(self.model):
            clean_maps = self.adapter.maps((xc,), False, yc, (), create_graph=False)
            adv_maps = self.adapter.maps((x_adv.detach(),), False, yc, (), create_graph=False)
        idx_cpu = idx.cpu()
        with torch.no_grad():
            pc, pv = self.prepare(clean_maps), self.prepare(adv_maps)
            for name, fn in self.measure_fns.items():
                out.values[name][idx_cpu] = fn(pc, pv).detach().to(torch.float64).cpu()
        if self.stability:
            self._stability(xc, yc, idx_cpu, out)
        out.prediction[idx] = pa
        out.kept[idx] = pa == out.clean_prediction[idx]
        out.accepted[idx] = result.accepted
        out.norm[idx_cpu] = result.norm.detach().to(torch.float64).cpu()
        out.steps[idx_cpu] = result.steps.detach().cpu()
        take = min(records.keep_examples - records.n_kept, idx.numel())
        if take > 0:
            parts = (idx + records.seen, xc, x_adv, yc, pc, pv)
            out.examples = AttackedExamples(*(t[:take].detach().cpu() for t in parts))
