"""The docstring examples of the attacks and the runner run as written."""

import doctest

import pytest
import torch

import captum_robust.robust.attacks as attacks
import captum_robust.robust.evaluation as evaluation
from captum_robust.robust.attacks import aai, attribution_pgd, feature_importance, isa, l2_topk, pgd, surrogate, token_swap
from tests.robust.attacks._models import one_thread


@pytest.mark.parametrize(
    "module", [attacks, feature_importance, aai, isa, l2_topk, pgd, attribution_pgd, surrogate, token_swap, evaluation],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module):
    with one_thread(), torch.random.fork_rng():
        torch.manual_seed(0)
        result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
