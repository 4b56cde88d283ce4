"""A context manager that leaves a model exactly as it found it: train/eval flags, ``.grad`` and ``requires_grad``."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

from torch import nn


@contextlib.contextmanager
def preserved_model_state(model: Any, train: Optional[bool] = None) -> Iterator[None]:
    """Restore every module's train/eval flag and every parameter's ``.grad`` and
    ``requires_grad`` on exit, also when an exception escapes.

    Args:
        model: an ``nn.Module`` (anything else is passed through untouched).
        train: if not None, put the model in this mode for the duration of the block
            (e.g. ``False`` to run attribution passes with BatchNorm/Dropout in eval mode).
    """
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    try:
        if train is not None:
            model.train(train)
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, grad, req in params:
            p.grad = grad
            if p.requires_grad != req:
                p.requires_grad_(req)
