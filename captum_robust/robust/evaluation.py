r"""Evaluation runners: attack the attributions of a data set and report how much they changed.

:func:`attribution_robustness` runs an attack on attributions over a data loader, measures
the maps before and after with the chosen measures, and adds the adversarial accuracy of the
model under :class:`~captum_robust.robust.attacks.PGD` -- the protocol of Chen et al. (2019,
Table 2) and Boopathy et al. (2020, Tables 1 and 3). It returns a
:class:`RobustnessReport`: per-example records, an aggregate table (markdown) and JSON.

:func:`roar` measures faithfulness instead: RemOve And Retrain (Hooker et al., 2019; the
evaluation of Zeng et al.) replaces the features an attribution ranks highest and reports the
test accuracy of freshly retrained models (:class:`ROARResult`); :func:`top_fraction_mask`,
:func:`remove_features` and :func:`replacement_values` are its building blocks.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import check_int_range
from captum_robust.robust.attacks import PGD
from captum_robust.robust.attacks.base import (
    AttributionAdapter,
    MapAttack,
    apply_preparation,
    attack_mode,
    make_preparation,
)
from captum_robust.robust.discrepancy import MEASURES, measure_function

__all__ = ["attribution_robustness", "RobustnessReport", "AttackedExamples", "summarize"]

PathLike = Union[str, Path]
MeasureFn = Callable[[Tensor, Tensor], Tensor]

def _resolve_measures(measures: Any, k: int) -> Dict[str, MeasureFn]:
    """Names or ``{name: callable}`` -> ``{name: fn(clean, adversarial) -> (B,)}``."""

    def builtin(name: str) -> MeasureFn:
        if name not in MEASURES:
            raise ValueError(f"unknown measure {name!r}; built-in measures are {MEASURES}, or pass {{name: callable}}")
        return measure_function(name, k)

    if isinstance(measures, str):
        measures = (measures,)
    if isinstance(measures, Mapping):
        out = {}
        for name, fn in measures.items():
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
            if isinstance(m, str):
                out[m if m != "topk" else f"top{k}"] = builtin(m)
            elif callable(m):
                out[getattr(m, "__name__", f"measure{len(out)}")] = m
            else:
                raise TypeError(f"measures must hold names or callables, got {type(m).__name__}")
        return out
    raise TypeError(f"measures must be a name, a sequence of names/callables or a dict, got {type(measures).__name__}")


def summarize(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    r"""Mean, median, a confidence interval of the mean and the central percentile interval.

    The interval of the mean is Student's :math:`t` interval,
    :math:`\bar v \pm t_{n-1, (1+c)/2}\, s / \sqrt n`; the percentile interval holds the central
    ``confidence`` fraction of the values (NaN values are dropped; counted in ``n_nan``).

    Args:
        values (sequence of float): one value per example.
        confidence (float): in (0, 1). Default 0.95.

    Returns:
        dict: ``n``, ``n_nan``, ``mean``, ``std``, ``median``, ``ci_low``, ``ci_high``
        (interval of the mean), ``q_low``, ``q_high`` (percentiles); NaN where undefined.

    Example::

        >>> s = summarize([0.2, 0.4, 0.6])
        >>> round(s["mean"], 3), round(s["median"], 3), s["n"]
        (0.4, 0.4, 3)
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    v = torch.as_tensor(list(values), dtype=torch.float64)
    finite = v[~torch.isnan(v)]
    n = int(finite.numel())
    nan = float("nan")
    out = {"n": n, "n_nan": int(v.numel() - n), "mean": nan, "std": nan, "median": nan,
           "ci_low": nan, "ci_high": nan, "q_low": nan, "q_high": nan}
    if n == 0:
        return out
    mean = float(finite.mean())
    out["mean"] = mean
    out["median"] = float(finite.median()) if n % 2 else float(finite.sort().values[n // 2 - 1 : n // 2 + 1].mean())
    tail = (1 - confidence) / 2
    out["q_low"] = float(torch.quantile(finite, tail))
    out["q_high"] = float(torch.quantile(finite, 1 - tail))
    if n > 1:
        std = float(finite.std(unbiased=True))
        half = float(stats.t.ppf(1 - tail, n - 1)) * std / math.sqrt(n)
        out.update(std=std, ci_low=mean - half, ci_high=mean + half)
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}f}"
    return str(v)


@dataclass(frozen=True, eq=False)
class AttackedExamples:
    """The first attacked examples of a run, as :func:`attribution_robustness` measured them
    (``keep_examples``): detached, on the CPU, in data order.

    Only correctly classified examples are attacked, so these are the first ``keep_examples``
    of those (``index`` says where each one is in the data).

    Attributes:
        index (Tensor): ``(n,)`` positions of the examples in the data (the report's ``index`` column).
        inputs (Tensor): ``n x ...`` the clean inputs.
        inputs_adv (Tensor): ``n x ...`` what the attack returned for them.
        target (Tensor): ``(n,)`` the labels (the attack's and the maps' target).
        maps (Tensor): the prepared maps of ``inputs`` -- exactly what the measures compared.
        maps_adv (Tensor): the prepared maps of ``inputs_adv``.
    """

    index: Tensor
    inputs: Tensor
    inputs_adv: Tensor
    target: Tensor
    maps: Tensor
    maps_adv: Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def concatenate(cls, parts: Sequence["AttackedExamples"]) -> "AttackedExamples":
        """The parts one after the other."""
        return cls(*(torch.cat([getattr(p, name) for p in parts]) for name in
                     ("index", "inputs", "inputs_adv", "target", "maps", "maps_adv")))


@dataclass
class RobustnessReport:
    """What :func:`attribution_robustness` measured.

    Attributes:
        summary (dict): JSON-serializable aggregate numbers: counts, ``clean_accuracy``,
            ``kept_fraction`` (of the attacked examples, those whose prediction the attack did
            not change), ``accepted_fraction`` (those where the attack found an accepted
            perturbation), ``adversarial_accuracy`` (under PGD, over all examples; None when
            skipped), ``measures`` (per measure, the :func:`summarize` statistics over the kept
            examples, for the clean maps against the attacked ones), ``seconds`` (attack, PGD,
            total) and ``settings``.
        per_example (dict): column name -> list, one entry per evaluated example (also the
            misclassified ones, with NaN measures): ``index``, ``label``, ``clean_prediction``,
            ``attacked``, ``prediction``, ``kept``, ``accepted``, ``norm``, ``steps``, one column
            per measure and ``pgd_prediction``.
        examples (AttackedExamples or None): the first attacked examples' inputs and maps
            (``keep_examples`` of :func:`attribution_robustness`); None when none were kept.
            Not part of :meth:`as_dict` / :meth:`to_json`.
    """

    summary: Dict[str, Any]
    per_example: Dict[str, List[Any]] = field(repr=False)
    examples: Optional[AttackedExamples] = field(default=None, repr=False, compare=False)

    def as_dict(self) -> Dict[str, Any]:
        """``{"summary": ..., "per_example": ...}`` (JSON-serializable)."""
        return {"summary": self.summary, "per_example": self.per_example}

    def to_json(self, path: Optional[PathLike] = None, indent: int = 2) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        return _json_text(self.as_dict(), path, indent)

    def to_markdown(self) -> str:
        """The aggregate table (one row per measure) and the accuracy lines, as markdown."""
        s = self.summary
        conf = s["settings"].get("confidence", 0.95)
        pct = f"{100 * conf:g}%"
        lines = [
            f"| measure | n | mean | {pct} CI of the mean | median | {pct} of examples within |",
            "|---|---:|---:|:---:|---:|:---:|",
        ]
        for name, st in s["measures"].items():
            lines.append(
                f"| {name} | {st['n']} | {_fmt(st['mean'])} | [{_fmt(st['ci_low'])}, {_fmt(st['ci_high'])}] | "
                f"{_fmt(st['median'])} | [{_fmt(st['q_low'])}, {_fmt(st['q_high'])}] |"
            )
        lines.append("")
        adv = s["adversarial_accuracy"]
        lines.append(
            f"Examples: {s['n_examples']}, correctly classified (attacked): {s['n_attacked']} "
            f"(clean accuracy {_fmt(s['clean_accuracy'])}); prediction kept by the attack: "
            f"{_fmt(s['kept_fraction'])}; attack accepted: {_fmt(s['accepted_fraction'])}; "
            f"adversarial accuracy (PGD): {'not measured' if adv is None else _fmt(adv)}."
        )
        sec = s["seconds"]
        lines.append(
            f"Time: attack {sec['attack']:.1f} s, PGD {sec['pgd']:.1f} s, total {sec['total']:.1f} s "
            f"({s['settings']['attack']}, {s['settings']['attribution']})."
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    @classmethod
    def merge(cls, reports: Sequence["RobustnessReport"]) -> "RobustnessReport":
        """One report from reports on consecutive, disjoint parts of a data set.

        The per-example columns are concatenated in the given order (``index`` renumbered
        0, 1, ...), and the summary statistics are recomputed over all examples exactly as
        :func:`attribution_robustness` computes them over one data set, so merging the
        reports of a sharded run gives the numbers of one run over the same examples with
        the same per-batch randomness. Times are summed; the settings and the kept
        ``examples`` are the first report's.

        Args:
            reports (sequence of RobustnessReport): at least one, with the same measures and
                the same PGD setting.

        Returns:
            RobustnessReport
        """
        reports = list(reports)
        if not reports or not all(isinstance(r, cls) for r in reports):
            raise TypeError("merge needs one or more RobustnessReport objects")
        names = list(reports[0].summary["measures"])
        with_pgd = reports[0].summary["adversarial_accuracy"] is not None
        for r in reports[1:]:
            if list(r.summary["measures"]) != names or (r.summary["adversarial_accuracy"] is not None) != with_pgd:
                raise ValueError("the reports to merge must have the same measures and the same PGD setting")
        cols: Dict[str, List[Any]] = {}
        for r in reports:
            for name, values in r.per_example.items():
                cols.setdefault(name, []).extend(values)
        cols["index"] = list(range(len(cols["index"])))
        settings = reports[0].summary["settings"]
        summary = {
            **_column_summary(cols, names, settings.get("confidence", 0.95), with_pgd),
            "seconds": {key: sum(r.summary["seconds"][key] for r in reports) for key in ("attack", "pgd", "total")},
            "settings": settings,
        }
        return cls(summary=summary, per_example=cols, examples=reports[0].examples)


def _column_summary(cols: Dict[str, List[Any]], measure_names: Sequence[str], confidence: float,
                    with_pgd: bool) -> Dict[str, Any]:
    """The counts, fractions, accuracies and per-measure statistics of a report's columns."""
    n = len(cols["index"])
    attacked = [i for i in range(n) if cols["attacked"][i]]
    kept_rows = [i for i in attacked if cols["kept"][i]]
    n_att = len(attacked)
    adv_acc = None
    if with_pgd:
        adv_acc = sum(int(p == l) for p, l in zip(cols["pgd_prediction"], cols["label"])) / n
    return {
        "n_examples": n,
        "n_attacked": n_att,
        "n_kept": len(kept_rows),
        "clean_accuracy": n_att / n,
        "kept_fraction": (len(kept_rows) / n_att) if n_att else float("nan"),
        "accepted_fraction": (sum(int(cols["accepted"][i]) for i in attacked) / n_att) if n_att else float("nan"),
        "adversarial_accuracy": adv_acc,
        "measures": {name: summarize([cols[name][i] for i in kept_rows], confidence) for name in measure_names},
    }


def _json_text(obj: Dict[str, Any], path: Optional[PathLike], indent: int) -> str:
    """``obj`` as JSON text (NaN allowed), also written to ``path`` when given."""
    text = json.dumps(obj, indent=indent, allow_nan=True)
    if path is not None:
        Path(path).write_text(text + "\n", encoding="utf-8")
    return text


def _batches(data: Any) -> Iterable[Tuple[Tensor, Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        yield data[0], data[1]
        return
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("data must yield (inputs, labels) batches (e.g. a DataLoader of a TensorDataset)")
        x, y = batch[0], batch[1]
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f"inputs and labels must be tensors, got {type(x).__name__} and {type(y).__name__}")
        yield x, y


def _model_device(model: Any) -> Optional[torch.device]:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return None


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
        measures: names among ``"topk"`` (top-``k`` intersection), ``"kendall"``,
            ``"spearman"``, ``"center_dislocation"``, ``"l1"``, ``"l2"`` (norms of the map
            difference), callables ``(clean_maps, adversarial_maps) -> (B,)``, or a dict
            ``{name: name-or-callable}``. Default ``("topk", "kendall")``.
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
        max_examples (int, optional): stop after this many examples.
        keep_examples (int): keep the clean and attacked inputs, the labels and the prepared
            maps (exactly those the measures compared) of the first ``keep_examples`` attacked
            examples in ``report.examples`` (:class:`AttackedExamples`). Default 0: none.
        confidence (float): level of the intervals. Default 0.95.
        generator (torch.Generator, optional): randomness of the attacks.
        show_progress (bool): a tqdm bar over the examples.
        json_path (str or Path, optional): also write the report as JSON there.

    Returns:
        RobustnessReport: ``summary`` (aggregate table), ``per_example``, ``to_markdown()``,
        ``to_json()``.

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
    if not callable(getattr(attack, "perturb", None)):
        raise TypeError(f"attack must have a perturb(inputs, target=...) method, got {type(attack).__name__}")
    from captum_robust.robust.attacks import ISA

    if isinstance(attack, ISA):
        raise TypeError(
            "ISA is a targeted misclassification attack: its target is the class to reach, not the label, and its "
            "result (eps_star, discrepancy, nds) is the report; this runner measures attacks that keep the label"
        )
    if not isinstance(show_progress, bool):
        raise TypeError(f"show_progress must be a bool, got {type(show_progress).__name__}")
    if max_examples is not None:
        check_int_range(max_examples, "max_examples", 1)
    keep_examples = check_int_range(keep_examples, "keep_examples", 0)
    if k is None:
        k = getattr(attack, "measure_k", None) or getattr(attack, "k", None) or 100
    k = check_int_range(k, "k", 1)
    measure_fns = _resolve_measures(measures, k)
    if attribution is None:
        if not isinstance(attack, MapAttack):
            raise ValueError("attribution=None uses the attack's attribution, but the attack has none; pass one")
        if attribution_kwargs:
            raise ValueError(
                "attribution_kwargs apply to an explicit attribution; with attribution=None the attack's own "
                "attribution_kwargs are used"
            )
        adapter = attack.adapter
    else:
        adapter = AttributionAdapter(model, attribution, attribution_kwargs=attribution_kwargs)
    if isinstance(map_preparation, str) and map_preparation == "attack":
        if isinstance(attack, MapAttack):
            prepare = attack.prepare_maps
        else:
            prepare = functools.partial(apply_preparation, make_preparation(None))
        prep_name = repr(getattr(attack, "map_preparation", None))
    else:
        prepare = functools.partial(apply_preparation, make_preparation(map_preparation))
        prep_name = repr(map_preparation) if not callable(map_preparation) else getattr(map_preparation, "__name__", "custom")
    if isinstance(pgd, str):
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
        pgd = PGD(model, eps=max(float(eps), 0.0), step_size=max(float(eps), 1e-12) / 16, n_iterations=40, norm=norm, **kwargs)
    elif pgd is not None and not callable(getattr(pgd, "perturb", None)):
        raise TypeError(f"pgd must be a PGD attack, 'auto' or None, got {type(pgd).__name__}")

    device = _model_device(model)
    cols: Dict[str, List[Any]] = {
        "index": [], "label": [], "clean_prediction": [], "attacked": [], "prediction": [], "kept": [],
        "accepted": [], "norm": [], "steps": [],
    }
    for name in measure_fns:
        cols[name] = []
    cols["pgd_prediction"] = []
    seconds = {"attack": 0.0, "pgd": 0.0}
    seen = 0
    kept_parts: List[AttackedExamples] = []
    n_kept = 0

    from tqdm.auto import tqdm

    total = max_examples
    if total is None and hasattr(data, "dataset"):
        try:
            total = len(data.dataset)
        except TypeError:
            total = None
    with tqdm(total=total, disable=not show_progress, desc="attribution robustness", leave=False) as bar:
        for x, y in _batches(data):
            if max_examples is not None:
                if seen >= max_examples:
                    break
                x, y = x[: max_examples - seen], y[: max_examples - seen]
            if device is not None:
                x, y = x.to(device), y.to(device)
            b = x.shape[0]
            with attack_mode(model):
                with torch.no_grad():
                    clean_pred = model(x).argmax(dim=1)
            correct = clean_pred == y
            idx = torch.nonzero(correct).squeeze(1)
            pred_adv = clean_pred.clone()
            kept = torch.zeros(b, dtype=torch.bool, device=x.device)
            accepted = torch.zeros(b, dtype=torch.bool, device=x.device)
            norms = torch.full((b,), float("nan"), dtype=torch.float64)
            steps = torch.zeros(b, dtype=torch.long)
            values = {name: torch.full((b,), float("nan"), dtype=torch.float64) for name in measure_fns}
            if idx.numel():
                xc, yc = x[idx], y[idx]
                t0 = time.perf_counter()
                x_adv, result = attack.perturb(xc, target=yc, generator=generator)
                seconds["attack"] += time.perf_counter() - t0
                x_adv_t = x_adv[0] if isinstance(x_adv, tuple) else x_adv
                with attack_mode(model):
                    with torch.no_grad():
                        pa = model(x_adv_t).argmax(dim=1)
                    clean_maps = adapter.maps((xc,), False, yc, (), create_graph=False)
                    adv_maps = adapter.maps((x_adv_t.detach(),), False, yc, (), create_graph=False)
                with torch.no_grad():
                    pc = prepare(clean_maps)
                    pv = prepare(adv_maps)
                    for name, fn in measure_fns.items():
                        values[name][idx.cpu()] = fn(pc, pv).detach().to(torch.float64).cpu()
                pred_adv[idx] = pa
                kept[idx] = pa == clean_pred[idx]
                accepted[idx] = result.accepted
                norms[idx.cpu()] = result.norm.detach().to(torch.float64).cpu()
                steps[idx.cpu()] = result.steps.detach().cpu()
                take = min(keep_examples - n_kept, idx.numel())
                if take > 0:
                    kept_parts.append(AttackedExamples(*(
                        t[:take].detach().cpu() for t in (idx + seen, xc, x_adv_t, yc, pc, pv)
                    )))
                    n_kept += take
            pgd_pred = torch.full((b,), -1, dtype=torch.long)
            if pgd is not None:
                t0 = time.perf_counter()
                x_pgd, _ = pgd.perturb(x, target=y, generator=generator)
                with attack_mode(model):
                    with torch.no_grad():
                        pgd_pred = model(x_pgd).argmax(dim=1).cpu()
                seconds["pgd"] += time.perf_counter() - t0
            cols["index"] += list(range(seen, seen + b))
            cols["label"] += y.cpu().tolist()
            cols["clean_prediction"] += clean_pred.cpu().tolist()
            cols["attacked"] += correct.cpu().tolist()
            cols["prediction"] += pred_adv.cpu().tolist()
            cols["kept"] += kept.cpu().tolist()
            cols["accepted"] += accepted.cpu().tolist()
            cols["norm"] += norms.tolist()
            cols["steps"] += steps.tolist()
            for name in measure_fns:
                # NaN where not attacked; measures are summarized over the kept examples
                cols[name] += values[name].tolist()
            cols["pgd_prediction"] += pgd_pred.tolist()
            seen += b
            bar.update(b)

    n = len(cols["index"])
    if n == 0:
        raise ValueError("data yielded no examples")
    summary: Dict[str, Any] = {
        **_column_summary(cols, list(measure_fns), confidence, with_pgd=pgd is not None),
        "seconds": {"attack": seconds["attack"], "pgd": seconds["pgd"], "total": time.perf_counter() - t_start},
        "settings": {
            "attack": type(attack).__name__,
            "attack_parameters": _attack_parameters(attack),
            "attribution": adapter.name,
            "map_preparation": prep_name,
            "k": k,
            "pgd": None if pgd is None else _attack_parameters(pgd),
            "confidence": confidence,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    examples = AttackedExamples.concatenate(kept_parts) if kept_parts else None
    report = RobustnessReport(summary=summary, per_example=cols, examples=examples)
    if json_path is not None:
        report.to_json(json_path)
    return report


def _attack_parameters(attack: Any) -> Dict[str, Any]:
    """The attack's scalar settings (for the report)."""
    out = {}
    for key, value in sorted(vars(attack).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
    return out


# --------------------------------------------------------------------------- ROAR (remove and retrain)

__all__ += ["roar", "ROARResult", "top_fraction_mask", "remove_features", "replacement_values"]

#: The fractions of Hooker et al. (2019): 10%, 30%, 50%, 70% and 90% of the features removed.
ROAR_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _check_fraction(fraction: Any, name: str = "fraction") -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"{name} must be a float in (0, 1), got {fraction!r}")
    f = float(fraction)
    if not 0.0 < f < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in the open interval (0, 1), got {fraction!r}")
    return f


def _check_fractions(fractions: Any) -> Tuple[float, ...]:
    if isinstance(fractions, (int, float)) and not isinstance(fractions, bool):
        fractions = (fractions,)
    if isinstance(fractions, Tensor):
        fractions = fractions.tolist()
    if not isinstance(fractions, (list, tuple)):
        raise TypeError(f"fractions must be a sequence of floats in (0, 1), got {type(fractions).__name__}")
    if len(fractions) == 0:
        raise ValueError("fractions must hold at least one fraction in (0, 1), got an empty sequence")
    out = tuple(_check_fraction(f, f"fractions[{i}]") for i, f in enumerate(fractions))
    for i in range(1, len(out)):
        if out[i] == out[i - 1]:
            raise ValueError(f"fractions must not repeat a value, got {tuple(fractions)!r} ({out[i]!r} twice)")
        if out[i] < out[i - 1]:
            raise ValueError(f"fractions must be sorted in increasing order, got {tuple(fractions)!r}")
    return out


def _n_removed(fraction: float, n_features: int) -> int:
    """``round(fraction * n_features)`` with halves rounded up (``floor(f n + 1/2)``)."""
    return int(math.floor(fraction * n_features + 0.5))


def top_fraction_mask(scores: Tensor, fraction: float) -> Tensor:
    r"""Boolean mask of the ``round(fraction * n)`` highest scores of every example.

    ``scores`` is ``B x ...``; each example's ``n`` scores are ranked (descending, stable:
    among equal scores the one with the lower flat index ranks first, so ties are broken
    deterministically) and the first :math:`k = \lfloor f n + \tfrac12 \rfloor` are marked.

    Args:
        scores (Tensor): ``B x ...`` importance scores (higher = more important), finite.
        fraction (float): the fraction :math:`f` in (0, 1) to mark.

    Returns:
        Tensor: bool, the shape of ``scores``, exactly ``k`` True entries per example.

    Raises:
        ValueError: ``fraction`` outside (0, 1), scores with fewer than 2 dimensions or
            with NaN.

    Example::

        >>> import torch
        >>> top_fraction_mask(torch.tensor([[0.1, 0.9, 0.5, 0.9]]), 0.5)
        tensor([[False,  True, False,  True]])
    """
    f = _check_fraction(fraction)
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a tensor, got {type(scores).__name__}")
    if scores.dim() < 2:
        raise ValueError(f"scores must be batched (B x ...), got shape {tuple(scores.shape)}")
    flat = scores.detach().reshape(scores.shape[0], -1)
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN; cannot rank the features")
    k = _n_removed(f, flat.shape[1])
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    if k > 0:
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
        mask.scatter_(1, order, True)
    return mask.view(scores.shape)


def replacement_values(inputs: Tensor, replacement: Any = "mean") -> Tensor:
    """The uninformative value that replaces removed features, broadcastable to ``inputs``.

    ``"mean"``: the per-channel mean of ``inputs`` (over the batch and every dimension after
    the channel dimension 1; for ``N x D`` inputs every feature is its own channel) -- Hooker
    et al.'s choice, computed on the *unmodified training set*; ``"zero"``: 0; a number: that
    constant.

    Args:
        inputs (Tensor): ``N x C x ...`` (or ``N x D``) training inputs.
        replacement (str or float): ``"mean"`` (default), ``"zero"`` or a finite number.

    Returns:
        Tensor: ``1 x C x 1 ...`` (``"mean"``) or a 0-dimensional tensor, inputs' dtype and device.

    Example::

        >>> import torch
        >>> replacement_values(torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]]), "mean").flatten()
        tensor([1., 1.])
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or inputs.shape[0] == 0:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a non-empty batched tensor N x C x ..., got {got}")
    if isinstance(replacement, str):
        if replacement == "mean":
            dims = [0] + list(range(2, inputs.dim()))
            return inputs.detach().mean(dim=dims, keepdim=True)
        if replacement == "zero":
            return torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        raise ValueError(f"replacement must be 'mean', 'zero' or a number, got {replacement!r}")
    if isinstance(replacement, bool) or not isinstance(replacement, (int, float)) or not math.isfinite(replacement):
        raise ValueError(f"replacement must be 'mean', 'zero' or a finite number, got {replacement!r}")
    return torch.tensor(float(replacement), dtype=inputs.dtype, device=inputs.device)


def _check_map_shape(shape: Tuple[int, ...], maps: Any) -> None:
    """Raise unless ``maps`` has the inputs' ``shape`` or a channel-summed one."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"attribution maps must be tensors, got {type(maps).__name__}")
    shape, ms = tuple(shape), tuple(maps.shape)
    allowed = [shape]
    if len(shape) >= 3:
        allowed += [s for s in ((shape[0], 1) + shape[2:], (shape[0],) + shape[2:]) if s != shape]
    if ms not in allowed:
        hint = ""
        if len(shape) >= 3 and len(ms) == len(shape) and ms[:2] in (shape[:2], (shape[0], 1)) and ms[2:] != shape[2:]:
            hint = " (a low-resolution map such as CAM's: pass attribution_kwargs={'upsample': True})"
        others = " or ".join(str(a) for a in allowed[1:])
        raise ValueError(
            f"attribution maps must have the inputs' shape {shape}"
            + (f" or the channel-summed shape {others}" if others else "")
            + f", got {ms}{hint}"
        )


def _feature_scores(inputs: Tensor, maps: Tensor, absolute: bool, aggregate_channels: bool) -> Tensor:
    """Validate ``maps`` against ``inputs`` and return the scores (``B x C x ...`` or ``B x 1 x ...``)."""
    _check_map_shape(tuple(inputs.shape), maps)
    scores = maps.detach()
    if inputs.dim() >= 3 and scores.dim() == inputs.dim() - 1:
        scores = scores.unsqueeze(1)
    if absolute:
        scores = scores.abs()
    if aggregate_channels and scores.dim() >= 3 and scores.shape[1] > 1:
        scores = scores.sum(dim=1, keepdim=True)
    if not torch.isfinite(scores).all():
        raise ValueError("attribution maps contain NaN or inf; cannot rank the features")
    return scores


def remove_features(
    inputs: Tensor,
    maps: Tensor,
    fraction: float,
    value: Any = 0.0,
    *,
    absolute: bool = True,
    aggregate_channels: bool = False,
) -> Tensor:
    r"""Replace the top ``fraction`` of every example's features, ranked by ``maps``, with ``value``.

    The ROAR modification (Hooker et al., 2019, sec. 3): for every example the
    :math:`\lfloor f n + \tfrac12 \rfloor` features with the largest score are replaced by an
    uninformative value (:func:`top_fraction_mask`; ties go to the lower flat index). The
    score is :math:`|m|` (``absolute=True``, default: the sign of a gradient says in which
    direction a feature moves the output, not how much it matters) or the signed map.

    A map with the inputs' shape ranks every element (``n = C H W``). A channel-summed map
    (``B x 1 x H x W`` or ``B x H x W``) ranks pixels (``n = H W``) and a removed pixel is
    replaced in all channels; ``aggregate_channels=True`` turns a full map into that by
    summing the scores over the channels.

    Args:
        inputs (Tensor): ``B x C x ...`` (or ``B x D``) inputs; not modified.
        maps (Tensor): attribution maps, shaped as described above.
        fraction (float): the fraction in (0, 1) to remove.
        value (Tensor or float): the replacement, broadcastable to ``inputs`` (e.g.
            :func:`replacement_values`). Default 0.
        absolute (bool): rank by ``|maps|``. Default True.
        aggregate_channels (bool): rank whole pixels by the channel sum of the scores.

    Returns:
        Tensor: a modified copy of ``inputs``.

    Example::

        >>> import torch
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> remove_features(x, torch.tensor([[[[0.0, -5.0], [1.0, 2.0]]]]), 0.5, value=0.0)
        tensor([[[[1., 0.],
                  [3., 0.]]]])
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
    scores = _feature_scores(inputs, maps, absolute, aggregate_channels)
    mask = top_fraction_mask(scores, fraction)
    value_t = torch.as_tensor(value, dtype=inputs.dtype, device=inputs.device)
    return torch.where(mask, value_t, inputs.detach())


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
                for x_b, y_b in _batches(data):
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
        """The result as JSON text; also written to ``path`` when given."""
        return _json_text(self.as_dict(), path, indent)

    def to_markdown(self) -> str:
        """One row per fraction: mean and std of the test accuracy, then the AUC."""
        lines = ["| fraction removed | test accuracy (mean) | std | repeats |", "|---:|---:|---:|---:|"]
        for f, m, s, a in zip(self.fractions, self.mean, self.std, self.accuracies):
            lines.append(f"| {f:g} | {_fmt(m)} | {_fmt(s)} | {len(a)} |")
        lines.append("")
        lines.append(
            f"AUC (trapezoid, fractions {self.fractions[0]:g}..{self.fractions[-1]:g}): {_fmt(self.auc)}; "
            f"normalized: {_fmt(self.normalized_auc)} ({self.settings.get('attribution')}, "
            f"{self.seconds['total']:.1f} s)."
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


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
    device = _model_device(model) if model is not None else None
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
            _check_map_shape(tuple(xb.shape), maps)
            out.append(maps.detach().to(x.device))
            bar.update(xb.shape[0])
    return torch.cat(out)


def _default_train_fn(epochs: int, lr: float) -> Callable[..., Any]:
    from captum_robust.training import train_classifier

    def train(model: torch.nn.Module, loader: Any, generator: torch.Generator) -> Any:
        return train_classifier(model, loader, epochs=epochs, lr=lr, generator=generator)

    return train


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
    from scipy.integrate import trapezoid
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm.auto import tqdm

    from captum_robust.training import evaluate_accuracy

    if not callable(model_factory) or isinstance(model_factory, torch.nn.Module):
        raise TypeError(
            "model_factory must be a callable () -> nn.Module that builds a fresh model, got "
            f"{type(model_factory).__name__}" + (" (pass e.g. lambda: Small(), not a model)" if isinstance(model_factory, torch.nn.Module) else "")
        )
    fracs = _check_fractions(fractions)
    if isinstance(attribution, str):
        if attribution != "random":
            raise ValueError(f"attribution must be an attribution object, a callable or 'random', got {attribution!r}")
        attr_name = "random"
    elif isinstance(attribution, type):
        raise TypeError(f"attribution must be an attribution object (e.g. {attribution.__name__}(model)), got the class")
    elif callable(getattr(attribution, "attribute", None)):
        attr_name = type(attribution).__name__
    elif callable(attribution):
        attr_name = getattr(attribution, "__name__", type(attribution).__name__)
    else:
        raise TypeError(
            "attribution must be an attribution object with attribute(inputs, target=...), a callable "
            f"(inputs, target) -> maps or 'random', got {type(attribution).__name__}"
        )
    if target not in ("label", "prediction"):
        raise ValueError(f"target must be 'label' or 'prediction', got {target!r}")
    if target == "prediction" and (attr_name == "random" or _forward_module(attribution) is None):
        raise ValueError("target='prediction' needs an attribution whose forward_func is the trained nn.Module")
    if attribution_kwargs is None:
        attribution_kwargs = {}
    if not isinstance(attribution_kwargs, dict):
        raise TypeError(f"attribution_kwargs must be a dict, got {type(attribution_kwargs).__name__}")
    if attribution_kwargs and not callable(getattr(attribution, "attribute", None)):
        raise ValueError("attribution_kwargs apply to attribution objects (with an attribute method) only")
    bad = [k for k in attribution_kwargs if k in ("inputs", "target")]
    if bad:
        raise ValueError(f"attribution_kwargs must not set {bad}: roar passes the inputs and the target")
    for flag, fname in ((absolute, "absolute"), (aggregate_channels, "aggregate_channels"),
                        (include_reference, "include_reference"), (show_progress, "show_progress")):
        if not isinstance(flag, bool):
            raise TypeError(f"{fname} must be a bool, got {flag!r}")
    repeats = check_int_range(repeats, "repeats", 1)
    batch_size = check_int_range(batch_size, "batch_size", 1)
    internal_batch_size = check_int_range(internal_batch_size, "internal_batch_size", 1)
    if train_fn is None:
        epochs = check_int_range(epochs, "epochs", 1)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got lr={lr!r}")
        train_fn = _default_train_fn(epochs, float(lr))
        train_name = f"train_classifier(epochs={epochs}, lr={lr})"
    elif not callable(train_fn):
        raise TypeError(f"train_fn must be a callable (model, loader, generator), got {type(train_fn).__name__}")
    else:
        train_name = getattr(train_fn, "__name__", type(train_fn).__name__)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

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
    if attr_name == "random":
        g = torch.Generator().manual_seed(noise_seed)
        maps_train = torch.rand(x_train.shape, generator=g, dtype=torch.float64).to(x_train.device)
        maps_test = torch.rand(x_test.shape, generator=g, dtype=torch.float64).to(x_test.device)
    else:
        n_all = x_train.shape[0] + x_test.shape[0]
        with tqdm(total=n_all, disable=not show_progress, desc="ROAR maps", leave=False) as bar:
            maps_train = _attribution_maps(attribution, x_train, y_train, target, internal_batch_size,
                                           attribution_kwargs, noise_seed, bar)
            maps_test = _attribution_maps(attribution, x_test, y_test, target, internal_batch_size,
                                          attribution_kwargs, noise_seed + 1, bar)
    scores_train = _feature_scores(x_train, maps_train, absolute, aggregate_channels)
    scores_test = _feature_scores(x_test, maps_test, absolute, aggregate_channels)
    t_maps = time.perf_counter() - t0

    # 2-3. remove, retrain, evaluate
    t0 = time.perf_counter()
    curve = ([0.0] if include_reference else []) + list(fracs)
    accuracies: List[List[float]] = []
    with tqdm(total=len(curve) * repeats, disable=not show_progress, desc="ROAR retraining", leave=False) as bar:
        for f in curve:
            if f == 0.0:
                xf_train, xf_test = x_train, x_test
            else:
                vt = value.to(x_train.dtype)
                xf_train = torch.where(top_fraction_mask(scores_train, f), vt, x_train)
                xf_test = torch.where(top_fraction_mask(scores_test, f), vt, x_test)
            accs = []
            for seed in repeat_seeds:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model = model_factory()
                if not isinstance(model, torch.nn.Module):
                    raise TypeError(f"model_factory must return an nn.Module, got {type(model).__name__}")
                loader = DataLoader(TensorDataset(xf_train, y_train), batch_size=batch_size, shuffle=True,
                                    generator=torch.Generator().manual_seed(seed))
                train_fn(model, loader, torch.Generator().manual_seed(seed))
                test_loader = DataLoader(TensorDataset(xf_test, y_test), batch_size=max(batch_size, 256))
                accs.append(float(evaluate_accuracy(model, test_loader)))
                bar.update(1)
            accuracies.append(accs)
    t_train = time.perf_counter() - t0

    mean = [sum(a) / len(a) for a in accuracies]
    std = [float(torch.tensor(a, dtype=torch.float64).std()) if len(a) > 1 else float("nan") for a in accuracies]
    if len(curve) > 1:
        auc = float(trapezoid(mean, curve))
        normalized = auc / (curve[-1] - curve[0])
    else:
        auc = normalized = float("nan")
    result = ROARResult(
        fractions=curve,
        accuracies=accuracies,
        mean=mean,
        std=std,
        auc=auc,
        normalized_auc=normalized,
        seconds={"maps": t_maps, "training": t_train, "total": time.perf_counter() - t_start},
        settings={
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
        },
    )
    if json_path is not None:
        result.to_json(json_path)
    return result
