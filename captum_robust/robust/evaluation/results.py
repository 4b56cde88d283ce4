"""What the attribution-robustness runner returns: :class:`RobustnessReport` and :class:`AttackedExamples`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from captum_robust._utils.reporting import fmt, json_text, markdown_table
from captum_robust.robust.evaluation._stats import column_summary

__all__ = ["AttackedExamples", "RobustnessReport"]

PathLike = Union[str, Path]


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
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))


@dataclass
class RobustnessReport:
    """What :func:`attribution_robustness` measured.

    Attributes:
        summary (dict): JSON-serializable aggregate numbers: counts, ``clean_accuracy``,
            ``kept_fraction`` (of the attacked examples, those whose prediction the attack did
            not change), ``accepted_fraction`` (those where the attack found an accepted
            perturbation), ``adversarial_accuracy`` (under PGD, over all examples; None when
            skipped), ``measures`` (per measure, the :func:`summarize` statistics over the kept
            examples, for the clean maps against the attacked ones; stability metrics over all
            attacked examples), ``stability`` (only with stability metrics: per metric, the
            number of perturbations that changed the prediction, None when not checked),
            ``seconds`` (attack, PGD, stability when measured, total) and ``settings``.
        per_example (dict): column name -> list, one entry per evaluated example (also the
            misclassified ones, with NaN measures): ``index``, ``label``, ``clean_prediction``,
            ``attacked``, ``prediction``, ``kept``, ``accepted``, ``norm``, ``steps``, one column
            per measure (and ``<metric>_n_prediction_changed`` per stability metric, -1 where not
            attacked or not checked) and ``pgd_prediction``.
        examples (AttackedExamples or None): the first attacked examples' inputs and maps
            (``keep_examples`` of :func:`attribution_robustness`); None when none were kept.
            Not part of :meth:`as_dict` / :meth:`to_json`.
    """

    summary: Dict[str, Any]
    per_example: Dict[str, List[Any]] = field(repr=False)
    examples: Optional[AttackedExamples] = field(default=None, repr=False, compare=False)

    def measure(self, name: str) -> Dict[str, float]:
        """The statistics of one measure, by the name given to :func:`attribution_robustness`:
        ``"topk"`` finds the ``"top{k}"`` entry (the table names the ``k``)."""
        table = self.summary["measures"]
        if name in table:
            return table[name]
        if name == "topk":
            k = self.summary["settings"].get("k")
            if f"top{k}" in table:
                return table[f"top{k}"]
        raise KeyError(f"no measure {name!r} in this report; it has {list(table)}")

    def as_dict(self) -> Dict[str, Any]:
        """``{"summary": ..., "per_example": ...}`` (JSON-serializable)."""
        return {"summary": self.summary, "per_example": self.per_example}

    def to_json(self, path: Optional[PathLike] = None, indent: int = 2) -> str:
        """The report as JSON text (NaN written as ``NaN``); also written to ``path`` when given."""
        return json_text(self.as_dict(), indent=indent, nan="keep", path=path)

    def to_markdown(self) -> str:
        """The aggregate table (one row per measure) and the accuracy lines, as markdown."""
        s = self.summary
        pct = f"{100 * s['settings'].get('confidence', 0.95):g}%"
        headers = ["measure", "n", "mean", f"{pct} CI of the mean", "median", f"{pct} of examples within"]
        rows = [
            [name, st["n"], fmt(st["mean"]), f"[{fmt(st['ci_low'])}, {fmt(st['ci_high'])}]", fmt(st["median"]),
             f"[{fmt(st['q_low'])}, {fmt(st['q_high'])}]"]
            for name, st in s["measures"].items()
        ]
        adv = s["adversarial_accuracy"]
        sec = s["seconds"]
        return "\n".join([
            markdown_table(headers, rows, align="lrrcrc"),
            "",
            f"Examples: {s['n_examples']}, correctly classified (attacked): {s['n_attacked']} "
            f"(clean accuracy {fmt(s['clean_accuracy'])}); prediction kept by the attack: "
            f"{fmt(s['kept_fraction'])}; attack accepted: {fmt(s['accepted_fraction'])}; "
            f"adversarial accuracy (PGD): {'not measured' if adv is None else fmt(adv)}.",
            f"Time: attack {sec['attack']:.1f} s, PGD {sec['pgd']:.1f} s, "
            + (f"stability metrics {sec['stability']:.1f} s, " if "stability" in sec else "")
            + f"total {sec['total']:.1f} s "
            f"({s['settings']['attack']}, {s['settings']['attribution']}).",
            *_stability_lines(s.get("stability")),
        ])

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
        stability = list(reports[0].summary.get("stability", {}))
        summary = {
            **column_summary(cols, [n for n in names if n not in stability], settings.get("confidence", 0.95),
                             with_pgd, stability_names=stability),
            "seconds": {key: sum(r.summary["seconds"][key] for r in reports) for key in reports[0].summary["seconds"]},
            "settings": settings,
        }
        return cls(summary=summary, per_example=cols, examples=reports[0].examples)


def _stability_lines(stability: Optional[Dict[str, Any]]) -> List[str]:
    """The report's note on its stability metrics (none without them)."""
    if not stability:
        return []
    changed = [f"{name} {st['n_prediction_changed']}" for name, st in stability.items()
               if st["n_prediction_changed"] is not None]
    return [
        f"Stability metrics ({', '.join(stability)}): the clean maps under random noise, summarized over all "
        "attacked examples (an average-case property of the attribution, not of the attack)"
        + (f"; perturbations left out because they changed the prediction: {', '.join(changed)}." if changed else ".")
    ]
