"""Regularizers on a Hugging Face classifier without a wrapper: the value equals the one on the
same model returning ``.logits`` (structured outputs are read the same way as by the attributions)."""

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="the zoo tests need transformers (the zoo extra)")

from captum_robust.robust.regularizers import InputGradientRegularizer, Int, IntAdv, PGDAdversarialLoss  # noqa: E402


class Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


@pytest.mark.parametrize("cls, kwargs", [
    (Int, dict(eps=0.05, n_iterations=2, random_start=False)),
    (IntAdv, dict(eps=0.05, n_iterations=2, random_start=False)),
    (InputGradientRegularizer, {}),
    (PGDAdversarialLoss, dict(eps=0.05, n_iterations=2)),
])
def test_regularizer_on_a_hugging_face_output_equals_the_logits_model(cls, kwargs):
    torch.manual_seed(0)
    config = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                       num_labels=5)
    model = transformers.ResNetForImageClassification(config).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3])
    raw = cls(model, **kwargs)(x, y)
    wrapped = cls(Logits(model), **kwargs)(x, y)
    assert torch.isfinite(raw)
    torch.testing.assert_close(raw, wrapped)
