"""The markdown-table and JSON writers: exact text, NaN handling, errors."""

import doctest
import json
import math

import numpy as np
import pytest
import torch

from captum_robust._utils import reporting
from captum_robust._utils.reporting import fmt, json_text, jsonable, markdown_table, write_json


def test_docstring_examples():
    result = doctest.testmod(reporting, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_markdown_table_exact_text_and_alignment():
    text = markdown_table(["a", "b", "c"], [[1, "x", 2.5], ["y", None, True]], align="lcr")
    assert text == "| a | b | c |\n|---|:---:|---:|\n| 1 | x | 2.5 |\n| y | None | True |"
    assert markdown_table(["a", "b"], []) == "| a | b |\n|---|---:|"


def test_markdown_table_errors():
    with pytest.raises(ValueError, match="one character per column"):
        markdown_table(["a", "b"], [], align="l")
    with pytest.raises(ValueError, match="'l', 'r' or 'c'"):
        markdown_table(["a", "b"], [], align="lx")
    with pytest.raises(ValueError, match="2 cells, got 1"):
        markdown_table(["a", "b"], [[1]])


def test_fmt():
    assert fmt(1 / 3) == "0.3333" and fmt(1 / 3, digits=2) == "0.33"
    assert fmt(3) == "3.0000" and fmt(True) == "True"
    assert fmt(float("nan")) == "n/a" and fmt(None, missing="-") == "-"
    assert fmt(float("inf")) == "inf" and fmt(float("-inf")) == "-inf"
    assert fmt(np.float64(0.5), digits=1) == "0.5"


def test_jsonable_converts_tensors_numpy_tuples_keys_and_nan():
    obj = {1: (torch.tensor([1.5, float("nan")]), np.int64(3)), "p": float("inf"), "path": __import__("pathlib").Path("a")}
    assert jsonable(obj) == {"1": [[1.5, None], 3], "p": None, "path": "a"}
    kept = jsonable(obj, nan="keep")
    assert math.isnan(kept["1"][0][1]) and kept["p"] == math.inf
    with pytest.raises(ValueError, match="nan must be one of"):
        jsonable(obj, nan="drop")


def test_json_text_modes():
    obj = {"a": float("nan"), "b": [float("-inf"), 1]}
    assert json_text(obj, indent=None) == '{"a": null, "b": [null, 1]}'
    assert json_text(obj, indent=None, nan="keep") == '{"a": NaN, "b": [-Infinity, 1]}'
    back = json.loads(json_text(obj, nan="keep"))
    assert math.isnan(back["a"]) and back["b"] == [-math.inf, 1]
    assert json_text({"x": 1}) == '{\n  "x": 1\n}'


def test_json_text_also_writes_to_path(tmp_path):
    path = tmp_path / "a" / "b.json"
    text = json_text({"m": float("nan")}, indent=None, nan="keep", path=path)
    assert text == '{"m": NaN}' and path.read_text(encoding="utf-8") == text + "\n"


def test_write_json(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"x": torch.tensor(2.0), "y": float("nan")})
    assert path == tmp_path / "sub" / "r.json"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and json.loads(text) == {"x": 2.0, "y": None}
    write_json(path, {"y": float("nan")}, indent=None, nan="keep")
    assert path.read_text(encoding="utf-8") == '{"y": NaN}\n'
