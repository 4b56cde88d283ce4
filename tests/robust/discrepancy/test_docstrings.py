"""The docstring examples hold hand-computed values: run them."""

import doctest

import pytest
import torch

import captum_robust.robust.discrepancy as discrepancy
from captum_robust.robust.discrepancy import center, maps, measures, rank, registry, topk


@pytest.mark.parametrize("module", [discrepancy, rank, topk, center, maps, measures, registry], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    globs = {"torch": torch, **{name: getattr(discrepancy, name) for name in discrepancy.__all__}}
    result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 0
    assert result.failed == 0
