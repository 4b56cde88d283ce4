r"""Evaluation runners: attack the attributions of a data set and report how much they changed.

:func:`attribution_robustness` runs an attack on attributions over a data loader, measures
the maps before and after with the chosen measures, and adds the adversarial accuracy of the
model under :class:`~captum_robust.robust.attacks.PGD` -- the protocol of Chen et al. (2019,
Table 2) and Boopathy et al. (2020, Tables 1 and 3). It returns a
:class:`RobustnessReport`: per-example records, an aggregate table (markdown) and JSON.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_robust._utils.validation import check_int_range
from captum_robust.robust.attacks import PGD
from captum_robust.robust.attacks.base import (
    AttributionAdapter,
    MapAttack,
    apply_preparation,
    attack_mode,
    make_preparation,
)
from captum_robust.robust.discrepancy import center_dislocation, kendall_tau, spearman, topk_intersection

__all__ = ["attribution_robustness", "RobustnessReport", "summarize"]

PathLike = Union[str, Path]
MeasureFn = Callable[[Tensor, Tensor], Tensor]

_BUILTIN = ("topk", "kendall", "spearman", "center_dislocation", "l1", "l2")


def _resolve_measures(measures: Any, k: int) -> Dict[str, MeasureFn]:
    """Names or ``{name: callable}`` -> ``{name: fn(clean, adversarial) -> (B,)}``."""

    def builtin(name: str) -> MeasureFn:
        if name == "topk":
            return lambda a, b: topk_intersection(a, b, k)
        if name == "kendall":
            return kendall_tau
        if name == "spearman":
            return spearman
        if name == "center_dislocation":
            return center_dislocation
        if name in ("l1", "l2"):
            p = 1 if name == "l1" else 2
            return lambda a, b: torch.linalg.vector_norm((a - b).reshape(a.shape[0], -1), ord=p, dim=1)
        raise ValueError(f"unknown measure {name!r}; built-in measures are {_BUILTIN}, or pass {{name: callable}}")

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
    """

    summary: Dict[str, Any]
    per_example: Dict[str, List[Any]] = field(repr=False)

    def as_dict(self) -> Dict[str, Any]:
        """``{"summary": ..., "per_example": ...}`` (JSON-serializable)."""
        return {"summary": self.summary, "per_example": self.per_example}

    def to_json(self, path: Optional[PathLike] = None, indent: int = 2) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.as_dict(), indent=indent, allow_nan=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

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
    max_examples: Optional[int] = None,
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
        max_examples (int, optional): stop after this many examples.
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
    if k is None:
        k = getattr(attack, "measure_k", None) or getattr(attack, "k", None) or 100
    k = check_int_range(k, "k", 1)
    measure_fns = _resolve_measures(measures, k)
    if attribution is None:
        if not isinstance(attack, MapAttack):
            raise ValueError("attribution=None uses the attack's attribution, but the attack has none; pass one")
        adapter = attack.adapter
    else:
        adapter = AttributionAdapter(model, attribution)
    if isinstance(map_preparation, str) and map_preparation == "attack":
        prepare = attack._prepare if isinstance(attack, MapAttack) else make_preparation(None)
        prep_name = repr(getattr(attack, "map_preparation", None))
    else:
        prepare = make_preparation(map_preparation)
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
                    pc = apply_preparation(prepare, clean_maps)
                    pv = apply_preparation(prepare, adv_maps)
                    for name, fn in measure_fns.items():
                        values[name][idx.cpu()] = fn(pc, pv).detach().to(torch.float64).cpu()
                pred_adv[idx] = pa
                kept[idx] = pa == clean_pred[idx]
                accepted[idx] = result.accepted
                norms[idx.cpu()] = result.norm.detach().to(torch.float64).cpu()
                steps[idx.cpu()] = result.steps.detach().cpu()
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
    attacked = [i for i in range(n) if cols["attacked"][i]]
    kept_rows = [i for i in attacked if cols["kept"][i]]
    stats = {name: summarize([cols[name][i] for i in kept_rows], confidence) for name in measure_fns}
    n_att = len(attacked)
    labels = cols["label"]
    adv_acc = None
    if pgd is not None:
        adv_acc = sum(int(p == l) for p, l in zip(cols["pgd_prediction"], labels)) / n
    summary: Dict[str, Any] = {
        "n_examples": n,
        "n_attacked": n_att,
        "n_kept": len(kept_rows),
        "clean_accuracy": n_att / n,
        "kept_fraction": (len(kept_rows) / n_att) if n_att else float("nan"),
        "accepted_fraction": (sum(int(cols["accepted"][i]) for i in attacked) / n_att) if n_att else float("nan"),
        "adversarial_accuracy": adv_acc,
        "measures": stats,
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
    report = RobustnessReport(summary=summary, per_example=cols)
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
