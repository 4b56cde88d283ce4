"""Data access shared by the evaluation runners: ``(inputs, labels)`` batches and the model's device."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["batches", "model_device"]


def batches(data: Any) -> Iterable[Tuple[Tensor, Tensor]]:
    """The ``(inputs, labels)`` batches of a loader (or iterable), or one ``(inputs, labels)`` pair."""
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


def model_device(model: Any) -> Optional[torch.device]:
    """The device of the model's first parameter; None for a callable or a model without parameters."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return None
