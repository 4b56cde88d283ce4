r"""Interpretation discrepancy measures (Boopathy et al. 2020), attribution-aware robustness
metrics and saliency alignment (Gali et al.; Etmann et al. 2019).

The discrepancy measures compare the maps of *every* class (or of a set of classes) at a
clean input ``x`` and a perturbed one ``x'``. They take maps ``B x C x ...``, class in
dimension 1, as :meth:`captum_robust.attr.CAM.attribute` returns them with ``target=None``;
maps of a single class are ``B x 1 x ...``. They are differentiable (attacks and the Int /
Int2 regularizers minimize or maximize them), with gradients checked by ``gradcheck``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import TargetType, format_additional_args, resolve_target
from captum_robust.robust.discrepancy._checks import (
    ClassesType,
    check_maps,
    check_p,
    check_pair,
    resolve_class_index,
    resolve_classes,
)
from captum_robust.robust.discrepancy.registry import measure_function

__all__ = [
    "lp_discrepancy",
    "two_class_discrepancy",
    "target_free_discrepancy",
    "normalized_discrepancy_score",
    "normalized_slope",
    "attribution_aware",
    "alignment",
    "binarized_alignment",
]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]


def _class_maps(maps: Tensor, idx: Tensor) -> Tensor:
    """``B x m x n``: the flattened maps of the classes ``idx`` (B x m) of each example."""
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    return flat.gather(1, idx[:, :, None].expand(-1, -1, flat.shape[2]))


def _norms(diff: Tensor, p: int) -> Tensor:
    """l_p norm over the last dimension."""
    if p == 1:
        return diff.abs().sum(dim=-1)
    return torch.linalg.vector_norm(diff, ord=2, dim=-1)


def _check_class_maps(maps_x: Any, maps_x_adv: Any) -> None:
    check_pair(maps_x, maps_x_adv, "maps_x", "maps_x_adv")


def lp_discrepancy(maps_x: Tensor, maps_x_adv: Tensor, p: int = 1, classes: ClassesType = None) -> Tensor:
    r"""The :math:`\ell_p` interpretation discrepancy over a class set (Boopathy et al. 2020, eq. 3).

    .. math::

        \mathcal{D}(x, x') = \frac{1}{|\mathcal{C}|} \sum_{i \in \mathcal{C}}
            \lVert I(x, i) - I(x', i) \rVert_p ,

    the norm taken over the whole (flattened) map of class ``i``.

    Args:
        maps_x (Tensor): maps of the clean inputs, ``B x C x ...`` (class in dimension 1).
        maps_x_adv (Tensor): maps of the perturbed inputs, same shape.
        p (int): 1 (default) or 2.
        classes: the class set :math:`\mathcal{C}` of each example: ``None`` (default) for all
            ``C`` classes; an int for that class in every example; ``B`` indices (list or 1-D
            tensor) for one class per example; ``B x m`` indices for ``m`` classes per
            example (a set shared by all examples: ``torch.tensor([3, 5]).expand(B, 2)``).

    Returns:
        Tensor: ``B`` discrepancies, differentiable with respect to both maps.

    Raises:
        TypeError: maps that are not floating-point tensors, non-integer classes.
        ValueError: shapes differ, no class dimension, NaN/inf, ``p`` not 1 or 2, class
            indices outside ``[0, C)``, ``classes`` with the wrong number of rows.

    Example::

        >>> a = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])      # B=1, C=2, n=2
        >>> b = torch.tensor([[[0.0, 2.0], [3.0, 4.0]]])
        >>> lp_discrepancy(a, b, p=1)                         # (1 + 7) / 2
        tensor([4.])
        >>> lp_discrepancy(a, b, p=2, classes=1)
        tensor([5.])
    """
    _check_class_maps(maps_x, maps_x_adv)
    p = check_p(p)
    idx = resolve_classes(classes, maps_x.shape[0], maps_x.shape[1], maps_x.device)
    diff = _class_maps(maps_x, idx) - _class_maps(maps_x_adv, idx)
    return _norms(diff, p).mean(dim=1)


def two_class_discrepancy(
    maps_x: Tensor, maps_x_adv: Tensor, target: TargetType, adv_target: TargetType, p: int = 1
) -> Tensor:
    r"""The 2-class discrepancy :math:`\mathcal{D}_{2,\ell_p}` (Boopathy et al. 2020, eq. 4).

    .. math::

        \mathcal{D}_{2,\ell_1}(x, x') = \tfrac{1}{2} \big( \lVert I(x, y) - I(x', y) \rVert_1
            + \lVert I(x, y') - I(x', y') \rVert_1 \big),

    with ``y`` the class of the clean input and ``y'`` that of the perturbed one.
    Proposition 1 of the paper: when the interpreter is complete (CAM, Integrated Gradients)
    and ``x'`` is classified ``y' != y``, :math:`\mathcal{D}_{2,\ell_1}(x, x') \ge
    \tfrac12 (f_y(x) - f_{y'}(x))` for any ``x'``: a successful attack cannot keep this
    discrepancy small. (When ``y' == y`` this is the 1-class measure.)

    Args:
        maps_x (Tensor): clean maps ``B x C x ...``.
        maps_x_adv (Tensor): perturbed maps, same shape.
        target: ``y``, an int or ``B`` class indices (list or tensor).
        adv_target: ``y'``, an int or ``B`` class indices.
        p (int): 1 (default, eq. 4) or 2.

    Returns:
        Tensor: ``B`` discrepancies, differentiable with respect to both maps.

    Example::

        >>> a = torch.zeros(1, 3, 2); b = torch.ones(1, 3, 2)
        >>> two_class_discrepancy(a, b, target=0, adv_target=2)
        tensor([2.])
    """
    _check_class_maps(maps_x, maps_x_adv)
    b, c = maps_x.shape[:2]
    y = resolve_class_index(target, "target", b, c, maps_x.device)
    y_adv = resolve_class_index(adv_target, "adv_target", b, c, maps_x.device)
    return lp_discrepancy(maps_x, maps_x_adv, p=p, classes=torch.stack([y, y_adv], dim=1))


def target_free_discrepancy(
    maps_x: Tensor, maps_x_adv: Tensor, logits_adv: Tensor, target: TargetType, code_form: bool = False
) -> Tensor:
    r"""The target-label-free discrepancy :math:`\tilde{\mathcal{D}}` (Boopathy et al. 2020, eq. 7).

    The defender does not know the attacker's class ``y'``, so the second term of eq. 4 is
    replaced by the discrepancies of all other classes weighted by the perturbed input's
    softmax :math:`s = \mathrm{softmax}(f(x'))`:

    .. math::

        \tilde{\mathcal{D}}(x, x') = \tfrac12 \lVert I(x, y) - I(x', y) \rVert_1
            + \tfrac12 \sum_{i \ne y} s_i \, \lVert I(x, i) - I(x', i) \rVert_1 .

    ``code_form=True`` computes what the authors' code computed instead: no factors
    :math:`\tfrac12` and the weights renormalised over the other classes,
    :math:`\tilde s_i = e^{f_i(x')} / \sum_{j \ne y} e^{f_j(x')}`:
    :math:`\lVert I(x,y) - I(x',y) \rVert_1 + \sum_{i \ne y} \tilde s_i \lVert I(x,i) - I(x',i) \rVert_1`.
    The paper's regularization strength :math:`\gamma = 0.01` was tuned with that form on
    raw CAM maps (u times the maps of eq. 1).

    Gradients flow through the maps *and* through the softmax weights (``logits_adv``), as in
    the Int / Int2 objectives (eq. 8-10).

    Args:
        maps_x (Tensor): clean maps of every class, ``B x C x ...``.
        maps_x_adv (Tensor): perturbed maps, same shape.
        logits_adv (Tensor): the model's logits at the perturbed inputs, ``B x C``.
        target: ``y``, an int or ``B`` class indices.
        code_form (bool): the authors' code form instead of eq. 7. Default False.

    Returns:
        Tensor: ``B`` discrepancies, differentiable with respect to the maps and the logits.

    Raises:
        ValueError: ``logits_adv`` not ``B x C`` for the maps' ``B`` and ``C``; and as
            :func:`lp_discrepancy`.

    Example::

        >>> a = torch.zeros(1, 2, 3); b = torch.ones(1, 2, 3)
        >>> target_free_discrepancy(a, b, torch.zeros(1, 2), target=0)   # 1.5 + 0.5 * 3
        tensor([2.2500])
        >>> target_free_discrepancy(a, b, torch.zeros(1, 2), target=0, code_form=True)
        tensor([6.])
    """
    _check_class_maps(maps_x, maps_x_adv)
    check_maps(logits_adv, "logits_adv")
    b, c = maps_x.shape[:2]
    if logits_adv.shape != (b, c):
        raise ValueError(
            f"logits_adv must be B x C = {b} x {c} to match the maps (classes in dimension 1), "
            f"got shape {tuple(logits_adv.shape)}"
        )
    if logits_adv.device != maps_x.device:
        raise ValueError(f"logits_adv is on {logits_adv.device} but the maps are on {maps_x.device}")
    y = resolve_class_index(target, "target", b, c, maps_x.device)
    flat_x = maps_x.reshape(b, c, -1)
    flat_adv = maps_x_adv.reshape(b, c, -1)
    per_class = (flat_x - flat_adv).abs().sum(dim=2)  # B x C
    own = F.one_hot(y, c).to(torch.bool)
    true_term = per_class.gather(1, y[:, None]).squeeze(1)
    logits = logits_adv.to(per_class.dtype)
    if code_form:
        weights = torch.softmax(logits.masked_fill(own, float("-inf")), dim=1) if c > 1 else torch.zeros_like(logits)
        weights = weights.masked_fill(own, 0.0)
        return true_term + (weights * per_class).sum(dim=1)
    weights = torch.softmax(logits, dim=1).masked_fill(own, 0.0)
    return 0.5 * true_term + 0.5 * (weights * per_class).sum(dim=1)


def normalized_discrepancy_score(
    maps_x: Tensor, maps_x_adv: Tensor, p: int = 1, classes: ClassesType = None
) -> Tensor:
    r"""Normalized discrepancy score, NDS (Boopathy et al. 2020, App. B).

    Eq. 3 with each class's difference divided by the range of the clean map of that class,
    so interpreters of different scales can be compared:

    .. math::

        \mathcal{D}_{norm}(x, x') = \frac{1}{|\mathcal{C}|} \sum_{i \in \mathcal{C}}
            \left\lVert \frac{I(x, i) - I(x', i)}{\max_j I(x, i)_j - \min_j I(x, i)_j} \right\rVert_p .

    A clean class map that is constant (zero range) makes the score of its example NaN.

    Args:
        maps_x, maps_x_adv, p, classes: as in :func:`lp_discrepancy`.

    Returns:
        Tensor: ``B`` scores, differentiable with respect to both maps.

    Example::

        >>> a = torch.tensor([[[0.0, 2.0, 4.0]]]); b = torch.tensor([[[1.0, 2.0, 4.0]]])
        >>> normalized_discrepancy_score(a, b)
        tensor([0.2500])
    """
    _check_class_maps(maps_x, maps_x_adv)
    p = check_p(p)
    idx = resolve_classes(classes, maps_x.shape[0], maps_x.shape[1], maps_x.device)
    clean = _class_maps(maps_x, idx)
    diff = clean - _class_maps(maps_x_adv, idx)
    span = clean.amax(dim=2) - clean.amin(dim=2)  # B x m
    safe = torch.where(span > 0, span, torch.ones_like(span))
    scores = _norms(diff, p) / safe
    scores = torch.where(span > 0, scores, torch.full_like(scores, float("nan")))
    return scores.mean(dim=1)


def _as_batch(value: Any, name: str, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        t = value.to(device=like.device, dtype=like.dtype)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != like.shape[0]):
            raise ValueError(f"{name} must be a number or hold one value per example ({like.shape[0]}), got shape {tuple(t.shape)}")
        return t
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    return torch.full_like(like, float(value))


def normalized_slope(
    nds_low: Tensor, nds_high: Tensor, eps_low: Union[float, Tensor], eps_high: Union[None, float, Tensor] = None
) -> Tensor:
    r"""Normalized slope, NSL (Boopathy et al. 2020, App. B): how fast the NDS of an attack
    grows with its perturbation size.

    .. math::

        S_{norm} = \frac{\lvert \mathcal{D}_{norm}^{(\hat\epsilon)} - \mathcal{D}_{norm}^{(\check\epsilon)} \rvert
            / \mathcal{D}_{norm}^{(\check\epsilon)}}{(\hat\epsilon - \check\epsilon) / \check\epsilon},

    the relative change of the score divided by the relative change of :math:`\epsilon`. The
    paper uses :math:`\check\epsilon = \epsilon^*`, the smallest successful PGD size of each
    example (found by bisection), and :math:`\hat\epsilon = 1.6\,\epsilon^*` (the default
    here). A small NSL means the attack cannot make the interpretation change less by using
    a larger perturbation. (The formula's denominator is garbled in the published text; we
    read it, like its numerator, as relative to the lower end.)

    This function is the formula; finding :math:`\epsilon^*` and the two scores takes an
    attack (the evaluation runners do it).

    Args:
        nds_low (Tensor): ``B`` scores (:func:`normalized_discrepancy_score`) at ``eps_low``.
        nds_high (Tensor): ``B`` scores at ``eps_high``.
        eps_low (float or Tensor): :math:`\check\epsilon` (> 0), one number or one per example.
        eps_high (float or Tensor, optional): :math:`\hat\epsilon > \check\epsilon`; default
            ``1.6 * eps_low``.

    Returns:
        Tensor: ``B`` slopes (inf where ``nds_low`` is 0 and the score changed, NaN where
        both are 0).

    Example::

        >>> normalized_slope(torch.tensor([0.5]), torch.tensor([0.56]), eps_low=0.1)
        tensor([0.2000])
    """
    check_maps(nds_low, "nds_low", min_dim=1)
    check_maps(nds_high, "nds_high", min_dim=1)
    if nds_low.dim() != 1 or nds_high.shape != nds_low.shape:
        raise ValueError(
            f"nds_low and nds_high must be 1-D with one score per example and the same length, "
            f"got shapes {tuple(nds_low.shape)} and {tuple(nds_high.shape)}"
        )
    if bool((nds_low < 0).any()) or bool((nds_high < 0).any()):
        raise ValueError("normalized discrepancy scores are norms and cannot be negative")
    low = _as_batch(eps_low, "eps_low", nds_low)
    high = low * 1.6 if eps_high is None else _as_batch(eps_high, "eps_high", nds_low)
    if not bool(torch.isfinite(low).all()) or bool((low <= 0).any()):
        raise ValueError(f"eps_low must be finite and > 0, got {eps_low!r}")
    if not bool(torch.isfinite(high).all()) or bool((high <= low).any()):
        raise ValueError(f"eps_high must be finite and larger than eps_low, got eps_high={eps_high!r}, eps_low={eps_low!r}")
    relative_score = (nds_high - nds_low).abs() / nds_low
    return relative_score / ((high - low) / low)


_METRICS = {"topk": "topk", "top-k": "topk", "top_k": "topk", "kendall": "kendall", "spearman": "spearman"}


def attribution_aware(
    metric: Union[str, Callable[[Tensor, Tensor], Tensor]],
    reference: Tensor,
    before: Tensor,
    after: Tensor,
    k: Optional[int] = None,
    return_components: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    r"""Attribution-aware robustness metrics AA-Top-K, AA-Kendall, AA-Spearman (Gali et al., eq. 10-12).

    A map that is stable under attack is only worth something if it is also a good map:

    .. math::

        \mathrm{AA\text{-}M} = \underbrace{M(A, B)}_{\text{goodness}} \cdot
            \underbrace{M(B, C)}_{\text{stability}},

    with :math:`B, C` the maps before and after the attack and :math:`A` a reference
    ("true", object-aligned) map: the saliency of an adversarially trained model, or an
    object mask. :math:`M` is the top-k intersection (eq. 10), Kendall's tau (eq. 11) or
    Spearman's rho (eq. 12), computed on the flattened maps.

    Args:
        metric (str or callable): ``"topk"`` (needs ``k``), ``"kendall"``, ``"spearman"``,
            or a function ``(maps_a, maps_b) -> B values``.
        reference (Tensor): :math:`A`, maps ``B x ...``.
        before (Tensor): :math:`B`, same shape.
        after (Tensor): :math:`C`, same shape.
        k (int, optional): top-k size for ``"topk"``.
        return_components (bool): also return the goodness and stability terms.

    Returns:
        Tensor: ``B`` values, or ``(aa, goodness, stability)`` with ``return_components``.

    Example::

        >>> a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
        >>> attribution_aware("topk", a, a, torch.tensor([[4.0, 1.0, 3.0, 2.0]]), k=2)
        tensor([0.5000])
    """
    check_pair(reference, before, "reference", "before", floating=False)
    check_pair(before, after, "before", "after", floating=False)
    if callable(metric):
        fn = metric
    elif isinstance(metric, str) and metric.lower() in _METRICS:
        name = _METRICS[metric.lower()]
        if name == "topk" and k is None:
            raise ValueError("metric='topk' needs k=, the size of the top sets")
        if name != "topk" and k is not None:
            raise ValueError(f"k applies to metric='topk' only, got k={k} with metric={metric!r}")
        fn = measure_function(name, k)
    else:
        raise ValueError(f"metric must be 'topk', 'kendall', 'spearman' or a callable, got {metric!r}")
    goodness = fn(reference, before)
    stability = fn(before, after)
    aa = goodness * stability
    return (aa, goodness, stability) if return_components else aa


# --------------------------------------------------------------------------- alignment


def _flat_inputs(inputs: TensorOrTuple, name: str = "inputs") -> Tuple[bool, Tuple[Tensor, ...]]:
    is_tuple = isinstance(inputs, tuple)
    xs = inputs if is_tuple else (inputs,)
    if not xs:
        raise ValueError(f"{name} must be a tensor or a non-empty tuple of tensors")
    for i, t in enumerate(xs):
        check_maps(t, f"{name}[{i}]" if is_tuple else name, min_dim=1)
        if t.shape[0] != xs[0].shape[0]:
            raise ValueError(f"{name}[{i}] has batch size {t.shape[0]} but {name}[0] has {xs[0].shape[0]}")
    return is_tuple, xs


def _class_gradients(
    forward_func: Callable[..., Any], xs: Tuple[Tensor, ...], args: Tuple[Any, ...], classes: Any
) -> Tuple[Tensor, Tensor]:
    """Logits ``B x C`` and flattened input gradients of the class scores, from one forward pass.

    ``classes``: ``None`` for the gradients of every class, ``B x C x D`` (one backward pass
    per class, not per example); ``"predicted"`` or a Captum-style target for one class per
    example, ``B x D``. The model's train/eval mode, parameter gradients and
    ``requires_grad`` flags are left as found.
    """
    with preserved_model_state(forward_func), torch.enable_grad():
        leaves = tuple(t.detach().requires_grad_() for t in xs)
        logits = forward_func(*leaves, *args)
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != xs[0].shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must return class scores of shape (batch, classes), got {shape}")
        if classes is not None:
            if isinstance(classes, str):
                classes = logits.detach().argmax(dim=1)
            else:
                classes = resolve_target(classes, logits.shape[0], logits.shape[1], logits.device)
            picked = logits.gather(1, classes[:, None]).sum()
            grads = torch.autograd.grad(picked, leaves, allow_unused=True)
            flat = torch.cat([_flat_grad(g, t) for g, t in zip(grads, leaves)], dim=1)
            return logits.detach(), flat
        per_class = []
        for c in range(logits.shape[1]):
            grads = torch.autograd.grad(logits[:, c].sum(), leaves, retain_graph=c + 1 < logits.shape[1], allow_unused=True)
            per_class.append(torch.cat([_flat_grad(g, t) for g, t in zip(grads, leaves)], dim=1))
        return logits.detach(), torch.stack(per_class, dim=1)


def _flat_grad(g: Optional[Tensor], t: Tensor) -> Tensor:
    return (torch.zeros_like(t) if g is None else g).reshape(t.shape[0], -1)


def _alignment_ratio(x_flat: Tensor, g_flat: Tensor) -> Tensor:
    """``|<x, g>| / ||g||_2`` per row (NaN where the gradient is zero)."""
    inner = (x_flat * g_flat).sum(dim=1).abs()
    norm = torch.linalg.vector_norm(g_flat, ord=2, dim=1)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.where(norm > 0, inner / safe, torch.full_like(inner, float("nan")))


def alignment(
    inputs: TensorOrTuple,
    saliency: Union[TensorOrTuple, Callable[..., Any]],
    target: TargetType = None,
    additional_forward_args: Any = None,
) -> Tensor:
    r"""Alignment of the input with its saliency map (Etmann et al. 2019; Gali et al., eq. 1).

    .. math::

        \alpha(x) = \frac{\lvert \langle x, \nabla f_{\hat y}(x) \rangle \rvert}{\lVert \nabla f_{\hat y}(x) \rVert_2},
        \qquad \hat y = \arg\max_i f_i(x).

    Large alignment means the saliency map looks like the image; Etmann et al. show it grows
    with the network's (linearized) robustness. ``saliency`` is either the gradient maps
    themselves (a tensor, or tuple of tensors, shaped like ``inputs``) or the model, in which
    case the gradient of its predicted class (or of ``target``) is computed here from one
    forward pass of the model as it is (call ``model.eval()`` first for BatchNorm/Dropout);
    its mode, parameter gradients and ``requires_grad`` flags are left as found. Tuples of
    inputs are treated as one concatenated vector.

    Args:
        inputs (Tensor or tuple[Tensor, ...]): the inputs ``x``, batch first.
        saliency (Tensor, tuple or callable): the gradient maps, or the model.
        target (optional): with a model, the class whose gradient is used instead of the
            prediction (an int or ``B`` indices).
        additional_forward_args (Any, optional): extra model arguments, as in Captum.

    Returns:
        Tensor: ``B`` alignments (NaN where the gradient is zero). With gradient tensors,
        differentiable with respect to them and the inputs.

    Example::

        >>> x = torch.tensor([[3.0, 4.0]])
        >>> alignment(x, torch.tensor([[0.0, 2.0]]))        # |0 + 8| / 2
        tensor([4.])
    """
    is_tuple, xs = _flat_inputs(inputs)
    b = xs[0].shape[0]
    x_flat = torch.cat([t.reshape(b, -1) for t in xs], dim=1)
    if callable(saliency) and not isinstance(saliency, Tensor):
        args = format_additional_args(additional_forward_args)
        _, g_flat = _class_gradients(saliency, xs, args, "predicted" if target is None else target)
        return _alignment_ratio(x_flat.detach(), g_flat.to(x_flat.dtype))
    if target is not None:
        raise ValueError("target= selects the class of the model's gradient; with gradient tensors leave it None")
    _, gs = _flat_inputs(saliency, "saliency")
    if len(gs) != len(xs) or any(g.shape != t.shape for g, t in zip(gs, xs)):
        raise ValueError(
            f"saliency must have the shape of the inputs, got {[tuple(g.shape) for g in gs]} "
            f"for inputs {[tuple(t.shape) for t in xs]}"
        )
    g_flat = torch.cat([g.reshape(b, -1) for g in gs], dim=1)
    return _alignment_ratio(x_flat, g_flat)


def binarized_alignment(
    inputs: TensorOrTuple,
    saliency: Union[TensorOrTuple, Callable[..., Any]],
    logits: Optional[Tensor] = None,
    runner_up: str = "linearized",
    additional_forward_args: Any = None,
    return_classes: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    r"""Binarized alignment :math:`\alpha^+` (Etmann et al. 2019; Gali et al., eq. 4).

    The alignment of the input with the gradient of the margin between the predicted class
    :math:`i^*` and a runner-up :math:`j^*`:

    .. math::

        \alpha^+(x) = \frac{\lvert \langle x, \nabla (f_{i^*} - f_{j^*})(x) \rangle \rvert}
                           {\lVert \nabla (f_{i^*} - f_{j^*})(x) \rVert_2},

    which bounds the linearized robustness :math:`\hat\rho(x) \le \alpha^+(x) + C / \lVert g \rVert`
    (Gali eq. 2-3). ``runner_up="linearized"`` (default, the papers' definition) takes
    :math:`j^*` as the minimizer of the linearized robustness,
    :math:`\arg\min_{j \ne i^*} (f_{i^*} - f_j) / \lVert \nabla f_{i^*} - \nabla f_j \rVert`;
    ``runner_up="logit"`` takes the class with the second-largest logit.
    For a linear binary classifier both equal :func:`alignment`.

    Args:
        inputs (Tensor or tuple[Tensor, ...]): the inputs ``x``.
        saliency (Tensor, tuple or callable): the model, or the input gradients of *every*
            class, ``B x C x ...`` (``B x C`` followed by each input's shape; a tuple for tuple
            inputs), together with ``logits``.
        logits (Tensor, optional): ``B x C`` scores; required with gradient tensors.
        runner_up (str): ``"linearized"`` (default) or ``"logit"``.
        additional_forward_args (Any, optional): extra model arguments.
        return_classes (bool): also return :math:`i^*` and :math:`j^*`.

    Returns:
        Tensor: ``B`` values, or ``(alpha_plus, i_star, j_star)``.

    Example::

        >>> x = torch.tensor([[1.0, 1.0]])
        >>> grads = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])   # B x C x 2
        >>> binarized_alignment(x, grads, logits=torch.tensor([[2.0, 1.0, 0.0]]), runner_up="logit")
        tensor([0.])
    """
    if runner_up not in ("linearized", "logit"):
        raise ValueError(f"runner_up must be 'linearized' or 'logit', got {runner_up!r}")
    is_tuple, xs = _flat_inputs(inputs)
    b = xs[0].shape[0]
    x_flat = torch.cat([t.reshape(b, -1) for t in xs], dim=1)
    if callable(saliency) and not isinstance(saliency, Tensor):
        if logits is not None:
            raise ValueError("logits= goes with gradient tensors; with a model they are computed here")
        args = format_additional_args(additional_forward_args)
        logits, grads = _class_gradients(saliency, xs, args, None)
        x_flat = x_flat.detach()
    else:
        _, gs = _flat_inputs(saliency, "saliency")
        if logits is None:
            raise ValueError("binarized_alignment with gradient tensors needs logits= (B x C)")
        check_maps(logits, "logits")
        if logits.dim() != 2 or logits.shape[0] != b:
            raise ValueError(f"logits must be B x C with B = {b}, got shape {tuple(logits.shape)}")
        c = logits.shape[1]
        if len(gs) != len(xs) or any(g.shape != (b, c) + t.shape[1:] for g, t in zip(gs, xs)):
            raise ValueError(
                "saliency must hold the input gradients of every class, B x C x (input shape): expected "
                f"{[(b, c) + tuple(t.shape[1:]) for t in xs]}, got {[tuple(g.shape) for g in gs]}"
            )
        grads = torch.cat([g.reshape(b, c, -1) for g in gs], dim=2)
    c = logits.shape[1]
    if c < 2:
        raise ValueError(f"binarized alignment needs at least 2 classes, got logits with {c}")
    grads = grads.to(x_flat.dtype)
    i_star = logits.argmax(dim=1)
    own = F.one_hot(i_star, c).to(torch.bool)
    if runner_up == "logit":
        j_star = logits.masked_fill(own, float("-inf")).argmax(dim=1)
    else:
        with torch.no_grad():
            margins = logits.gather(1, i_star[:, None]) - logits  # B x C, >= 0
            g_top = grads.gather(1, i_star[:, None, None].expand(-1, 1, grads.shape[2]))
            dist = torch.linalg.vector_norm(g_top - grads, ord=2, dim=2)
            ratio = torch.where(dist > 0, margins / torch.where(dist > 0, dist, torch.ones_like(dist)), torch.full_like(dist, math.inf))
            ratio = ratio.masked_fill(own, math.inf)
            j_star = ratio.argmin(dim=1)
            # every other class has the same gradient as i*: fall back to the logit runner-up
            fallback = logits.masked_fill(own, float("-inf")).argmax(dim=1)
            j_star = torch.where(torch.isinf(ratio.gather(1, j_star[:, None]).squeeze(1)), fallback, j_star)
    idx = lambda v: v[:, None, None].expand(-1, 1, grads.shape[2])  # noqa: E731
    g = (grads.gather(1, idx(i_star)) - grads.gather(1, idx(j_star))).squeeze(1)
    alpha = _alignment_ratio(x_flat, g)
    return (alpha, i_star, j_star) if return_classes else alpha

