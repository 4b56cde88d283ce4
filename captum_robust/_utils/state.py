"""Context managers that leave a model exactly as they found it: train/eval flags, ``.grad`` and
``requires_grad`` (:func:`preserved_model_state`), and the one train-mode policy of every public
attribution, attack, certificate and stability call (:func:`evaluation_mode`): the model runs in
eval mode for the call, with a warning when that changes BatchNorm or Dropout layers."""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Any, ContextManager, Iterator, List, Optional

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


def bn_or_dropout_training(model: Any) -> List[str]:
    """Names of the BatchNorm and Dropout layers of ``model`` that are in training mode."""
    if not isinstance(model, nn.Module):
        return []
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.AlphaDropout)
    return [name or type(m).__name__ for name, m in model.named_modules() if m.training and isinstance(m, kinds)]


def warn_train_mode(model: Any, who: str, stacklevel: int = 4) -> None:
    """Warn when ``model`` is in training mode with BatchNorm/Dropout layers that ``who`` runs in
    eval mode (their output would otherwise depend on the batch or on chance, and BatchNorm would
    update its running statistics)."""
    found = bn_or_dropout_training(model)
    if found:
        warnings.warn(
            f"{type(model).__name__} is in training mode with BatchNorm/Dropout layers "
            f"({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}); {who} runs it in eval mode "
            "(call model.eval() to silence this warning)",
            UserWarning,
            stacklevel=stacklevel,
        )


@contextlib.contextmanager
def evaluation_mode(model: Any, who: str = "the call", warn: bool = True) -> Iterator[None]:
    """Run ``model`` in eval mode for the block and restore every module's mode, ``.grad`` and
    ``requires_grad`` after it (also on exceptions); warn first if that changes BatchNorm/Dropout
    layers (see :func:`warn_train_mode`). Parameters keep their ``requires_grad``."""
    if warn:
        warn_train_mode(model, who, stacklevel=4)
    with preserved_model_state(model, train=False):
        yield


_KEEP_MODE: "contextvars.ContextVar[bool]" = contextvars.ContextVar("captum_robust_keep_model_mode", default=False)


@contextlib.contextmanager
def keep_model_mode() -> Iterator[None]:
    """Attribution calls inside this block run the model in the mode it is in: no switch to eval
    mode and no warning (the model's flags, ``.grad`` and ``requires_grad`` are still restored).

    For training terms that ask for batch statistics on purpose (the regularizers'
    ``eval_mode=False``, which also protect the BatchNorm buffers themselves); every other
    caller gets the library's policy (:func:`captum_robust._utils.state.evaluation_mode`).
    """
    token = _KEEP_MODE.set(True)
    try:
        yield
    finally:
        _KEEP_MODE.reset(token)


def call_mode(model: Any, who: str) -> ContextManager[None]:
    """The train-mode policy of one public attribution call: eval mode for the call with a
    warning when that changes BatchNorm/Dropout layers, unless inside :func:`keep_model_mode`."""
    if _KEEP_MODE.get():
        return preserved_model_state(model)
    return evaluation_mode(model, who=who)
