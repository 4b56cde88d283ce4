r"""A smooth copy of a ReLU network for second-order attack gradients."""

from __future__ import annotations

import copy
import math
import numbers
import warnings

from torch import nn

from captum_robust._utils.compiled import uncompiled

__all__ = ["softplus_surrogate"]


def softplus_surrogate(model: nn.Module, beta: float = 1.0, share_parameters: bool = True) -> nn.Module:
    r"""A copy of ``model`` with every :class:`torch.nn.ReLU` module replaced by
    :class:`torch.nn.Softplus` ``(beta)``, :math:`\mathrm{softplus}_\beta(z) = \frac1\beta \log(1 + e^{\beta z})`.

    Attacks on gradient-based attributions differentiate the map, i.e. take second derivatives
    of the network. Through ReLU these vanish almost everywhere (the map is piecewise constant
    in the activation pattern), so the attack gradient of, e.g., a plain gradient map is zero.
    Ghorbani et al. (2019) therefore take the attack gradients through a softplus copy with the
    same weights (:math:`\beta = 1`); Levine et al. train and attack softplus networks. Larger
    :math:`\beta` makes the copy closer to the ReLU network (:math:`\mathrm{softplus}_\beta \to
    \mathrm{ReLU}` as :math:`\beta \to \infty`, with error at most :math:`\log 2 / \beta`) but its
    curvature more concentrated. Pass the copy as ``surrogate=`` to an attack: it is used for
    the gradients only, while predictions, acceptance and the reported maps use ``model``.

    The copy is a :func:`copy.deepcopy` of the model (same structure and module names, so the
    attribution's layers map onto it by name), in the model's train/eval mode.

    * ``share_parameters=True`` (default): the copy *shares* the parameters and buffers of the
      model (the same tensors), so it follows the model during training and costs no memory --
      the setting the inner maximizers of robust training need. Do not train the copy itself
      unless you mean to train the model.
    * ``share_parameters=False``: the copy holds its own copies of the parameters (a frozen
      snapshot).

    Only ``nn.ReLU`` *modules* are replaced: ``torch.relu`` / ``F.relu`` calls in a
    ``forward`` cannot be seen (the models of :mod:`captum_robust.models` use modules only).
    A warning is given when the model contains no ``nn.ReLU`` module. A ``torch.compile``-d
    model gives the copy of its ``_orig_mod``, uncompiled (the surrogate serves the second-order
    passes, which a compiled graph does not support).

    Args:
        model (nn.Module): the network.
        beta (float): the softplus sharpness :math:`\beta > 0`. Default 1 (Ghorbani).
        share_parameters (bool): share (default) or copy the parameters and buffers.

    Returns:
        nn.Module: the smooth copy.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``beta`` not a number.
        ValueError: ``beta`` not finite and positive.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.attacks import softplus_surrogate
        >>> model = Small().eval()
        >>> smooth = softplus_surrogate(model, beta=10.0)
        >>> smooth.classifier.weight is model.classifier.weight
        True
        >>> x = torch.rand(2, 1, 28, 28)
        >>> bool((smooth(x) - model(x)).abs().max() < 1.0)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a positive float, got {type(beta).__name__} {beta!r}")
    if not (math.isfinite(float(beta)) and float(beta) > 0):
        raise ValueError(f"beta must be a finite number > 0, got beta={beta!r}")
    if not isinstance(share_parameters, bool):
        raise TypeError(f"share_parameters must be a bool, got {type(share_parameters).__name__}")
    model = uncompiled(model)  # a torch.compile'd model: the copy of its _orig_mod (second-order passes)
    memo: dict = {}
    if share_parameters:
        for t in list(model.parameters()) + list(model.buffers()):
            memo[id(t)] = t
    smooth = copy.deepcopy(model, memo)
    replaced = _replace_relu(smooth, float(beta))
    if replaced == 0:
        warnings.warn(
            f"{type(model).__name__} has no nn.ReLU module, so the surrogate is an unchanged copy; functional relu "
            "calls (torch.relu, F.relu) cannot be replaced -- use nn.ReLU modules or build a smooth model yourself",
            UserWarning,
            stacklevel=2,
        )
    return smooth


def _replace_relu(module: nn.Module, beta: float) -> int:
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.ReLU:
            softplus = nn.Softplus(beta=beta)
            softplus.train(child.training)
            setattr(module, name, softplus)
            count += 1
        else:
            count += _replace_relu(child, beta)
    return count
