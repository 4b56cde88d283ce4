r"""``torch.compile``-d models: detect them and find the module they wrap.

``torch.compile(model)`` returns an ``OptimizedModule`` whose ``_orig_mod`` is the model itself:
the same parameters, buffers and submodules, called without the compiled graph. A compiled
graph differentiates once: AOT autograd donates its saved buffers to the backward pass, so a
second-order pass (``create_graph=True``: IG-Norm, Int, input-gradient regularizers, the
gradients of attribution attacks through maps) fails with *"compiled with non-empty donated
buffers which requires create_graph=False"*, and forward hooks registered on the submodules
after compilation do not fire inside the compiled graph. The library therefore runs those passes
on :func:`uncompiled` ``(model)`` and says so once (:func:`warn_uncompiled`); first-order
passes (the user's training forward, ``Saliency``/IG without ``create_graph``, ``PGD``) run as
given.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from captum_robust._utils.compiled import is_compiled, uncompiled
    >>> model = nn.Linear(4, 2)
    >>> compiled = torch.compile(model)
    >>> is_compiled(compiled), is_compiled(model), uncompiled(compiled) is model
    (True, False, True)
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from typing import Any, Optional, Set

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_NN_DIR = os.path.join("torch", "nn", "modules")

__all__ = ["CompiledModelWarning", "is_compiled", "uncompiled", "warn_uncompiled", "second_order_model"]


class CompiledModelWarning(UserWarning):
    """A pass runs on the uncompiled module of a ``torch.compile``-d model (filter this category
    to silence it)."""


def _optimized_module_type() -> Any:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except Exception:  # pragma: no cover - torch without dynamo
        return None
    return OptimizedModule


def is_compiled(model: Any) -> bool:
    """Whether ``model`` is the result of ``torch.compile``: an ``OptimizedModule`` (a compiled
    ``nn.Module``) or a compiled function."""
    optimized = _optimized_module_type()
    if optimized is not None and isinstance(model, optimized):
        return True
    return callable(model) and getattr(model, "_torchdynamo_orig_callable", None) is not None


def uncompiled(model: Any) -> Any:
    """The model inside ``torch.compile``: ``model._orig_mod`` of an ``OptimizedModule`` (same
    parameters, buffers and submodules; repeated for a model compiled twice), the original
    function of a compiled function, or ``model`` itself when it is not compiled."""
    optimized = _optimized_module_type()
    for _ in range(16):  # a chain of compiles is short; never loop forever on an odd object
        if optimized is not None and isinstance(model, optimized):
            model = model._orig_mod
        elif callable(model) and getattr(model, "_torchdynamo_orig_callable", None) is not None:
            model = model._torchdynamo_orig_callable
        else:
            break
    return model


# who has already warned about which compiled model (weak: a model that is gone is forgotten)
_WARNED: "weakref.WeakKeyDictionary[Any, Set[str]]" = weakref.WeakKeyDictionary()


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this package (and outside ``torch.nn``'s
    module-call machinery), so the warning names the user's line."""
    frame: Optional[Any] = sys._getframe(1)
    level = 1
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if not name.startswith(_PACKAGE_DIR) and _TORCH_NN_DIR not in name:
            return level
        frame = frame.f_back
        level += 1
    return 2


def warn_uncompiled(model: Any, who: str, stacklevel: Optional[int] = None,
                    what: str = "its second-order passes") -> None:
    """Warn once per compiled ``model`` and ``who`` that ``who`` runs ``what`` on the uncompiled
    module (nothing when ``model`` is not compiled). ``stacklevel`` None points the warning at
    the first line outside the library."""
    if not is_compiled(model):
        return
    try:
        seen = _WARNED.setdefault(model, set())
    except TypeError:  # pragma: no cover - an object that cannot be weakly referenced
        seen = set()
    if who in seen:
        return
    seen.add(who)
    warnings.warn(
        f"{who} runs {what} on the uncompiled module (model._orig_mod, same parameters): "
        "torch.compile does not support create_graph=True here (AOT autograd's compiled backward runs once), "
        "nor hooks added to its layers after compiling. "
        "First-order passes still use the compiled model. Filter "
        "captum_robust._utils.compiled.CompiledModelWarning to silence this.",
        CompiledModelWarning,
        stacklevel=_user_stacklevel() if stacklevel is None else stacklevel,
    )


def second_order_model(model: Any, who: str, create_graph: bool = True, stacklevel: Optional[int] = None) -> Any:
    """The callable a pass should run: :func:`uncompiled` ``(model)`` with one warning
    (:func:`warn_uncompiled`) when ``create_graph`` is True and ``model`` is compiled, else
    ``model``."""
    if create_graph and is_compiled(model):
        warn_uncompiled(model, who, stacklevel=stacklevel)
        return uncompiled(model)
    return model
