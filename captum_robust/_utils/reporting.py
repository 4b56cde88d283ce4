"""The one markdown-table writer and the one JSON writer of the package.

Reports of the evaluation runners, the CLI and the benchmarks are written with these:

* :func:`markdown_table` -- a table from a header and rows of cells;
* :func:`fmt` -- a number as a table cell (fixed decimals, a placeholder for None / NaN);
* :func:`jsonable` -- an object made writable by :func:`json.dumps` (tensors, numpy values, tuples, paths);
* :func:`json_text` and :func:`write_json` -- JSON text and files, with the choice of how
  NaN and infinities are written: ``nan="null"`` (strict JSON, the values become ``null``)
  or ``nan="keep"`` (Python's ``NaN`` / ``Infinity`` tokens, which :func:`json.loads` reads back).

Example::

    >>> print(markdown_table(["measure", "mean"], [["kendall", fmt(0.51234)], ["top8", fmt(float("nan"))]]))
    | measure | mean |
    |---|---:|
    | kendall | 0.5123 |
    | top8 | n/a |
    >>> json_text({"mean": float("nan"), "n": (1, 2)}, indent=None)
    '{"mean": null, "n": [1, 2]}'
    >>> json_text({"mean": float("nan")}, indent=None, nan="keep")
    '{"mean": NaN}'
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

__all__ = ["markdown_table", "fmt", "jsonable", "json_text", "write_json"]

PathLike = Union[str, Path]

_SEPARATORS = {"l": "---", "r": "---:", "c": ":---:"}
_NAN_MODES = ("null", "keep")


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    """A markdown table; every cell is written with ``str``.

    Args:
        headers (sequence): the column titles.
        rows (sequence of sequences): one sequence of cells per row, each as long as ``headers``.
        align (str, optional): one character per column: ``"l"`` (left), ``"r"`` (right) or
            ``"c"`` (centered). Default: left for the first column, right for the others.

    Returns:
        str: the table, lines joined by ``"\\n"`` (no trailing newline).

    Raises:
        ValueError: ``align`` or a row without one entry per column, or an unknown alignment.
    """
    headers = list(headers)
    if align is None:
        align = "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"align must have one character per column ({len(headers)}), got {align!r}")
    bad = sorted(set(align) - set(_SEPARATORS))
    if bad:
        raise ValueError(f"align characters must be 'l', 'r' or 'c', got {align!r}")
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"every row must have {len(headers)} cells, got {len(row)}: {list(row)!r}")
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join(_SEPARATORS[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any, digits: int = 4, missing: str = "n/a") -> str:
    """A table cell: a number with ``digits`` decimals, ``missing`` for None and NaN.

    Infinities are written ``inf`` / ``-inf``; booleans and anything that is not a number with ``str``.

    Example::

        >>> fmt(0.123456), fmt(2, digits=1), fmt(None), fmt(float("-inf")), fmt("CAM")
        ('0.1235', '2.0', 'n/a', '-inf', 'CAM')
    """
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return missing
    return f"{value:.{digits}f}"


def jsonable(obj: Any, nan: str = "null") -> Any:
    """``obj`` made writable by :func:`json.dumps`.

    Dict keys become strings, tuples lists, tensors and numpy arrays / scalars lists or numbers
    (through ``tolist``), anything else that JSON cannot hold (paths, dtypes) its ``str``.
    With ``nan="null"`` NaN and infinite floats become None; with ``"keep"`` they stay.
    """
    _check_nan_mode(nan)
    if isinstance(obj, dict):
        return {str(k): jsonable(v, nan) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, nan) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj) and nan == "null":
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, tensors
        return jsonable(obj.tolist(), nan)
    return str(obj)


def json_text(obj: Any, indent: Optional[int] = 2, nan: str = "null", path: Optional[PathLike] = None) -> str:
    """``obj`` as JSON text (through :func:`jsonable`); also written to ``path`` when given.

    Args:
        obj: a dict, list or value.
        indent (int, optional): as :func:`json.dumps`. Default 2.
        nan (str): ``"null"`` (default, strict JSON: NaN and infinities written ``null``) or
            ``"keep"`` (written ``NaN`` / ``Infinity`` / ``-Infinity``, read back by :func:`json.loads`).
        path (str or Path, optional): a file to write the text to, with a final newline
            (parent folders created).

    Returns:
        str: the text, without a trailing newline.
    """
    text = json.dumps(jsonable(obj, nan), indent=indent, allow_nan=nan == "keep")
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    return text


def write_json(path: PathLike, obj: Any, indent: Optional[int] = 2, nan: str = "null") -> Path:
    """Write :func:`json_text` of ``obj`` to ``path`` with a final newline (parent folders created).

    Returns:
        Path: ``path``.
    """
    json_text(obj, indent=indent, nan=nan, path=path)
    return Path(path)


def _check_nan_mode(nan: Any) -> None:
    if nan not in _NAN_MODES:
        raise ValueError(f"nan must be one of {_NAN_MODES}, got nan={nan!r}")
