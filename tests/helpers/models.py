"""Tiny models for the tests (seconds, not minutes)."""

from typing import Optional

import torch
from torch import nn


def _act(softplus: Optional[float]) -> nn.Module:
    return nn.ReLU() if softplus is None else nn.Softplus(beta=softplus)


class TinyGapNet(nn.Module):
    """conv(2->3, k3) -> act -> conv(3->4, k3) [feature] -> GAP -> Linear(4, 3); input B x 2 x 5 x 5."""

    def __init__(self, softplus: Optional[float] = None, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.act = _act(softplus)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv2(self.act(self.conv1(x)))
        return self.fc(a.mean(dim=(2, 3)))


class BNNet(nn.Module):
    """TinyGapNet's layout with BatchNorm and Dropout, whose output depends on train/eval mode:
    conv1(2->hidden) -> BatchNorm -> softplus -> Dropout(0.5) -> conv2(hidden->features) [feature]
    -> GAP -> Linear(features, 3); input B x 2 x 5 x 5."""

    def __init__(self, hidden: int = 4, features: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, hidden, 3, padding=1)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = nn.Softplus()
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(hidden, features, 3, padding=1)
        self.fc = nn.Linear(features, 3)
        self.feature_layer, self.classifier = self.conv2, self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.drop(self.act(self.bn(self.conv1(x))))).mean(dim=(2, 3)))


class TwoInputNet(nn.Module):
    """Two image inputs plus an additional scalar argument, GAP -> linear head."""

    def __init__(self, softplus: Optional[float] = None) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 3, 3, padding=1)
        self.act = _act(softplus)
        self.feat = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        h = self.feat(self.act(self.a(x1) + scale * self.b(x2)))
        return self.fc(h.mean(dim=(2, 3)))


class ExpHeadNet(nn.Module):
    """exp() of a score that is linear in the feature map (where Grad-CAM++'s closed form is exact)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.base(x))
