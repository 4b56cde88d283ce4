"""Statistics of the evaluation reports: :func:`summarize` and the summary of a report's columns."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import torch

from captum_robust._utils.validation import OPEN_UNIT, check_fraction

__all__ = ["summarize", "column_summary"]


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

    check_fraction(confidence, "confidence", OPEN_UNIT)
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


def column_summary(cols: Dict[str, List[Any]], measure_names: Sequence[str], confidence: float,
                   with_pgd: bool, stability_names: Sequence[str] = ()) -> Dict[str, Any]:
    """The counts, fractions, accuracies and per-measure statistics of a robustness report's columns.

    The measures are summarized over the attacked examples whose prediction the attack kept, the
    stability metrics (a property of the clean maps) over all attacked examples; the adversarial
    accuracy (None without PGD) over all examples.
    """
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
        "measures": {
            **{name: summarize([cols[name][i] for i in kept_rows], confidence) for name in measure_names},
            **{name: summarize([cols[name][i] for i in attacked], confidence) for name in stability_names},
        },
        **({"stability": {name: _changed_count(cols, name, attacked) for name in stability_names}}
           if stability_names else {}),
    }


def _changed_count(cols: Dict[str, List[Any]], name: str, rows: Sequence[int]) -> Dict[str, Any]:
    """How many perturbations of a stability metric changed the prediction, over ``rows`` (None
    when the metric did not check predictions)."""
    counts = [c for i in rows if (c := cols[f"{name}_n_prediction_changed"][i]) >= 0]
    return {"summarized_over": "attacked examples", "n_prediction_changed": sum(counts) if counts else None}
