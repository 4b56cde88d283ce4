"""Shared tiny models and perturbations of the stability tests."""

import torch
from captum.attr import Saliency

from captum_robust.robust.stability import METRICS  # noqa: F401  (the tests run every metric)
from tests.helpers.models import TinyGapNet


def tiny(dtype=torch.float64, seed=0):
    """A smooth (softplus) TinyGapNet in eval mode, 3 examples B x 2 x 5 x 5 and their predictions."""
    torch.manual_seed(seed)
    model = TinyGapNet(softplus=3.0).to(dtype).eval()
    x = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype) + 0.1
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def perturbations(x, n, scale=0.1, seed=3):
    """n x B x ... perturbed inputs: U[-scale, scale] noise."""
    g = torch.Generator().manual_seed(seed)
    return x.unsqueeze(0) + (torch.rand((n,) + tuple(x.shape), generator=g, dtype=x.dtype) * 2 - 1) * scale


def extra(metric, model):
    return {"layer": model.conv2} if metric == "relative_representation_stability" else {}


def saliency(model):
    return Saliency(model)


class FlipNet(torch.nn.Module):
    """Logits ``(1/2 ||x||^2 - 1, 0)``: the class flips where ``||x||^2`` crosses 2; the saliency
    map of class 0 is ``x`` itself. ``self.square`` (x -> x^2) is a layer for RRS."""

    def __init__(self):
        super().__init__()
        self.square = Square()

    def forward(self, x):
        q = 0.5 * self.square(x.flatten(1)).sum(1) - 1.0
        return torch.stack([q, torch.zeros_like(q)], dim=1)


class Square(torch.nn.Module):
    def forward(self, x):
        return x * x


def near_boundary(dtype=torch.float64):
    """FlipNet and 3 examples of 8 features near its decision boundary (class 1, 0, 0)."""
    x = torch.tensor([0.48, 0.51, 0.60], dtype=dtype)[:, None] * torch.ones(3, 8, dtype=dtype)
    return FlipNet().eval(), x, torch.zeros(3, dtype=torch.long)
