r"""The batched perturb-and-explain engine shared by the six stability metrics.

Every metric has the same shape: draw ``n_samples`` perturbed copies :math:`x'_{s,i}` of every
example :math:`x_i`, explain them, compute one score per (sample, example) pair from the clean
map :math:`e_{x_i}`, the perturbed map :math:`e_{x'_{s,i}}` and, for some metrics, the model's
outputs, then reduce over the samples (max or mean), leaving out the perturbations that changed
the predicted class where asked to. :func:`run_metric` does this with the ``n_samples x B``
perturbed examples flattened into rows ``r = s * B + i`` and explained in chunks of
``internal_batch_size`` rows: the only Python loop of the hot path runs over the chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_robust._utils.layers import forward_with_layer
from captum_robust._utils.state import evaluation_mode
from captum_robust._utils.validation import (
    normal_tensor,
    InvalidParameterError,
    check_bool,
    check_choice,
    check_finite,
    check_finite_outputs,
    check_float_inputs,
    check_model_dtype,
    check_nonempty_batch,
    check_generator,
    check_int,
    check_number,
    check_positive,
    check_submodule,
    format_additional_args,
    format_inputs,
)

__all__ = ["StabilityResult", "run_metric", "default_perturbations", "NORMS"]

#: The norms every metric takes (``"l2"`` is Quantus' ``fro_norm`` / Captum's ``"fro"`` on the flattened map).
NORMS = ("l2", "l1", "linf")
_P = {"l2": 2.0, "l1": 1.0, "linf": float("inf")}


@dataclass(frozen=True)
class StabilityResult:
    """What every stability metric returns.

    Attributes:
        values (Tensor): ``(B,)``, one value per example, in the inputs' dtype; NaN where the
            metric is undefined (a zero denominator, or every perturbation changed the prediction).
        scores (Tensor): ``(n_samples, B)``, the score of every perturbation before the max/mean;
            NaN for the perturbations left out because they changed the prediction.
        n_prediction_changed (Tensor or None): ``(B,)`` int64, how many of the ``n_samples``
            perturbations changed the predicted class (argmax of the model's output); None when
            the predictions were not checked (no exclusion asked and no model output needed).
        n_samples (int): perturbations per example.
        metric (str): the metric's function name.
    """

    values: Tensor
    scores: Tensor
    n_prediction_changed: Optional[Tensor]
    n_samples: int
    metric: str


# --------------------------------------------------------------------------- perturbations


def default_perturbations(
    inputs: Tuple[Tensor, ...], n_samples: int, noise: str, radius: Any, generator: Optional[torch.Generator]
) -> Tuple[Tensor, ...]:
    """``n_samples x B x ...`` perturbed copies of every input tensor, drawn in one call per tensor.

    ``noise="uniform"``: ``radius`` r adds U[-r, r] to every element; a pair ``(low, high)`` adds
    U[low, high] (Quantus' ``lower_bound``/``upper_bound``). ``noise="gaussian"``: adds N(0, r^2).
    """
    out = []
    for x in inputs:
        shape = (n_samples,) + tuple(x.shape)
        if noise == "gaussian":
            delta = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * radius
        else:
            low, high = (-radius, radius) if not isinstance(radius, tuple) else radius
            delta = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) * (high - low) + low
        out.append(x.unsqueeze(0) + delta)
    return tuple(out)


def check_radius(radius: Any, noise: str) -> Any:
    if noise == "uniform" and isinstance(radius, (tuple, list)):
        if len(radius) != 2:
            raise ValueError(f"radius as a pair must be (low, high), got radius={radius!r}")
        low = check_number(radius[0], "radius[0]")
        high = check_number(radius[1], "radius[1]")
        if not high > low:
            raise ValueError(f"radius=(low, high) needs high > low, got radius={tuple(radius)!r}")
        return (float(low), float(high))
    return float(check_positive(radius, "radius"))


def user_perturbations(
    perturb_func: Callable[..., Any], inputs: Tuple[Tensor, ...], is_tuple: bool, n_samples: int,
    generator: Optional[torch.Generator],
) -> Tuple[Tensor, ...]:
    """Call ``perturb_func(inputs, n_samples, generator)`` and check its contract."""
    given = inputs if is_tuple else inputs[0]
    out = perturb_func(tuple(x.detach().clone() for x in inputs) if is_tuple else given.detach().clone(),
                       n_samples, generator)
    parts = out if isinstance(out, tuple) else (out,)
    if len(parts) != len(inputs):
        raise ValueError(f"perturb_func must return {len(inputs)} tensor(s) (one per input tensor), got {len(parts)}")
    for i, (p, x) in enumerate(zip(parts, inputs)):
        want = (n_samples,) + tuple(x.shape)
        if not isinstance(p, Tensor) or tuple(p.shape) != want:
            got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(
                f"perturb_func must return tensors of shape n_samples x inputs.shape = {want} "
                f"(perturbed inputs, not noise), got {got} at position {i}"
            )
    return tuple(p.detach().to(device=x.device, dtype=x.dtype) for p, x in zip(parts, inputs))


# --------------------------------------------------------------------------- explainer and model


class _Explainer:
    """Calls an attribution object (``attribute(inputs, target=..., additional_forward_args=...)``)
    or a callable ``(inputs, target[, additional_forward_args]) -> maps`` the same way."""

    def __init__(self, explainer: Any, attribute_kwargs: Optional[Dict[str, Any]]) -> None:
        if isinstance(explainer, type):
            raise InvalidParameterError(
                f"explainer must be an attribution object (e.g. {explainer.__name__}(model)) or a callable "
                "(inputs, target) -> maps, got the class itself"
            )
        if attribute_kwargs is not None and not isinstance(attribute_kwargs, dict):
            raise InvalidParameterError(
                f"attribute_kwargs must be a dict or None, got {type(attribute_kwargs).__name__}"
            )
        self.kwargs = dict(attribute_kwargs or {})
        bad = [k for k in self.kwargs if k in ("inputs", "target", "additional_forward_args")]
        if bad:
            raise ValueError(f"attribute_kwargs must not set {bad}: the metric passes them itself")
        method = getattr(explainer, "attribute", None)
        if callable(method):
            self.fn = method
        elif callable(explainer):
            self.fn = explainer
        else:
            raise InvalidParameterError(
                "explainer must have an attribute(inputs, target=...) method or be a callable (inputs, target) -> "
                f"maps, got {type(explainer).__name__}"
            )
        self.is_object = callable(method)
        self.name = type(explainer).__name__ if self.is_object else getattr(explainer, "__name__", "explainer")
        self.forward_func = getattr(explainer, "forward_func", None)

    def __call__(self, xs: Tuple[Tensor, ...], is_tuple: bool, target: Any, args: Tuple[Any, ...],
                 kwargs: Dict[str, Any]) -> Tensor:
        xs = tuple(x.requires_grad_() for x in xs)  # fresh copies made by the engine
        inputs = xs if is_tuple else xs[0]
        with torch.enable_grad():
            if self.is_object:
                out = self.fn(inputs, target=target, additional_forward_args=args if args else None, **kwargs)
            elif args:
                out = self.fn(inputs, target, args, **kwargs)
            else:
                out = self.fn(inputs, target, **kwargs)
        maps = out if isinstance(out, tuple) else (out,)
        b = xs[0].shape[0]
        for i, m in enumerate(maps):
            if not isinstance(m, Tensor) or not m.is_floating_point() or m.dim() < 1 or m.shape[0] != b:
                desc = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(
                    f"the explainer ({self.name}) must return floating-point maps B x ... with the batch size {b} "
                    f"(or a tuple of such), got {desc} at position {i}"
                )
        # one flattened map per example: the parts of a tuple are concatenated (norms over all parts together)
        flat = torch.cat([m.detach().reshape(b, -1) for m in maps], dim=1)
        check_finite_outputs(flat, f"the maps of the explainer ({self.name})")
        return flat


def _rows(value: Any, b: int, index: Tensor) -> Any:
    """Index a per-example tensor (first dimension ``B``) by the rows' example ``index``; pass anything else."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == b:
        return value[index]
    if isinstance(value, tuple):
        return tuple(_rows(v, b, index) for v in value)
    return value


def _target(target: Any, b: int, device: torch.device) -> Any:
    """None or an int pass through; a sequence or tensor of one class per example becomes a ``(B,)`` tensor."""
    if target is None or (isinstance(target, int) and not isinstance(target, bool)):
        return target
    if isinstance(target, Tensor) and target.dim() == 0:
        return int(target)
    if isinstance(target, (list, tuple, Tensor)):
        t = torch.as_tensor(target, device=device)
        if t.is_floating_point() or t.dtype == torch.bool or t.dim() != 1:
            raise InvalidParameterError(
                f"target must be None, an int or one integer class per example, got {t.dtype} of shape "
                f"{tuple(t.shape)}"
            )
        if t.shape[0] != b:
            raise ValueError(f"target has {t.shape[0]} entries but the batch has {b} examples")
        return t.long()
    raise InvalidParameterError(
        f"target must be None, an int, a sequence of ints or an integer tensor, got {type(target).__name__}"
    )


def normalise_maps(maps: Tensor, how: Optional[str]) -> Tensor:
    """Per example (row of a ``B x d`` map): ``"max"`` divides by the largest absolute value
    (Quantus' ``normalise_by_max``), ``"second_moment"`` by :math:`\\sqrt{\\mathrm{mean}(e^2)}`
    (Quantus' ``normalise_by_average_second_moment_estimate``); an all-zero map stays as it is."""
    if how is None:
        return maps
    if how == "max":
        scale = maps.abs().amax(dim=1, keepdim=True)
    else:
        scale = maps.pow(2).mean(dim=1, keepdim=True).sqrt()
    return maps / torch.where(scale == 0, torch.ones_like(scale), scale)


# --------------------------------------------------------------------------- the engine


@dataclass
class Setup:
    """The validated arguments of one call (built by :func:`prepare`)."""

    explain: _Explainer
    xs: Tuple[Tensor, ...]
    is_tuple: bool
    target: Any
    args: Tuple[Any, ...]
    n_samples: int
    chunk: int
    norm: str
    normalise: Optional[str]
    abs: bool
    model: Optional[Callable[..., Any]]
    layer: Optional[nn.Module]
    exclude: bool
    show_progress: bool
    generator: Optional[torch.Generator]
    perturb_func: Optional[Callable[..., Any]]
    noise: str
    radius: Any


def prepare(
    explainer: Any, inputs: Any, target: Any, *, additional_forward_args: Any, attribute_kwargs: Any, n_samples: Any,
    radius: Any, noise: str, norm: Any, perturb_func: Any, normalise: Any, normalise_how: str, abs: Any,
    internal_batch_size: Any, generator: Any, show_progress: Any, forward_func: Any = None, layer: Any = None,
    exclude: Any = False, needs_model: bool = False,
) -> Setup:
    """Validate the common arguments of the six metrics (clear errors through ``_utils.validation``)."""
    explain = _Explainer(explainer, attribute_kwargs)
    is_tuple, xs = format_inputs(inputs)
    check_float_inputs(xs, is_tuple, "stability metrics perturb them")
    for i, x in enumerate(xs):
        check_finite(x, f"inputs[{i}]" if is_tuple else "inputs")
    b = check_nonempty_batch(xs, "inputs")
    n_samples = check_int(n_samples, "n_samples", 1)
    chunk = check_int(internal_batch_size, "internal_batch_size", 1, allow_none=True)
    norm = check_choice(norm, "norm", NORMS)
    check_bool(normalise, "normalise")
    check_bool(abs, "abs")
    exclude = check_bool(exclude, "exclude_changed")
    check_bool(show_progress, "show_progress")
    generator = check_generator(generator, xs[0].device)
    if perturb_func is None:
        radius = check_radius(radius, noise)
    elif not callable(perturb_func):
        raise InvalidParameterError(f"perturb_func must be None or a callable, got {type(perturb_func).__name__}")
    model = forward_func if forward_func is not None else explain.forward_func
    if forward_func is not None and not callable(forward_func):
        raise InvalidParameterError(f"forward_func must be None or a callable, got {type(forward_func).__name__}")
    if (needs_model or exclude) and model is None:
        why = "to exclude perturbations that change the prediction" if exclude else "for its denominator"
        raise ValueError(
            f"forward_func is needed {why}: pass forward_func=model (or an explainer with a forward_func attribute)"
        )
    if layer is not None:
        check_submodule(model, layer, "layer")
    check_model_dtype(model, xs, "inputs")
    return Setup(
        explain=explain, xs=tuple(normal_tensor(x).detach() for x in xs),
        is_tuple=is_tuple, target=_target(target, b, xs[0].device),
        args=format_additional_args(additional_forward_args), n_samples=n_samples, chunk=chunk or n_samples * b,
        norm=norm, normalise=normalise_how if normalise else None, abs=abs, model=model, layer=layer, exclude=exclude,
        show_progress=show_progress, generator=generator, perturb_func=perturb_func, noise=noise, radius=radius,
    )


# score(ex, clean, rows) -> (c,) scores; ``clean``/``rows`` hold "x" (flattened inputs), "e" (maps),
# "h" (model outputs) and "L" (layer representations) as the metric needs them.
ScoreFn = Callable[[Tensor, Dict[str, Tensor], Dict[str, Tensor]], Tensor]


def _pass(s: Setup, xs: Tuple[Tensor, ...], ex: Tensor, want_model: bool) -> Dict[str, Tensor]:
    """Explain (and run the model on) one chunk of rows whose examples are ``ex``."""
    b = s.xs[0].shape[0]
    target = _rows(s.target, b, ex)
    args = tuple(_rows(a, b, ex) for a in s.args)
    kwargs = {k: _rows(v, b, ex) for k, v in s.explain.kwargs.items()}
    maps = s.explain(xs, s.is_tuple, target, args, kwargs)
    maps = normalise_maps(maps, s.normalise)
    if s.abs:
        maps = maps.abs()
    out = {"e": maps, "x": torch.cat([x.detach().reshape(x.shape[0], -1) for x in xs], dim=1)}
    if want_model:
        with torch.no_grad():
            if s.layer is not None:
                h, rep = forward_with_layer(s.model, s.layer, xs, args, grad_enabled=False)
                out["L"] = rep.detach().reshape(rep.shape[0], -1)
            else:
                h = s.model(*xs, *args)
        h = h.detach().reshape(h.shape[0], -1)
        check_finite_outputs(h, "the model's outputs")
        out["h"] = h
    return out


def run_metric(s: Setup, score: ScoreFn, reduce: str, metric: str, needs_model: bool = False) -> StabilityResult:
    """Perturb, explain in chunks, score every (sample, example) pair and reduce (``"max"``/``"mean"``)."""
    b, n = s.xs[0].shape[0], s.n_samples
    want_model = needs_model or s.exclude
    with evaluation_mode(s.model, who=metric):
        if s.perturb_func is not None:
            pert = user_perturbations(s.perturb_func, s.xs, s.is_tuple, n, s.generator)
        else:
            pert = default_perturbations(s.xs, n, s.noise, s.radius, s.generator)
        pert = tuple(p.reshape((n * b,) + tuple(p.shape[2:])) for p in pert)
        example = torch.arange(b, device=s.xs[0].device)
        clean_parts = [
            _pass(s, tuple(x[i:i + s.chunk].clone() for x in s.xs), example[i:i + s.chunk], want_model)
            for i in range(0, b, s.chunk)
        ]
        clean = {k: torch.cat([c[k] for c in clean_parts]) for k in clean_parts[0]}
        scores = s.xs[0].new_empty(n * b)
        changed = torch.zeros(n * b, dtype=torch.bool, device=s.xs[0].device)
        starts = range(0, n * b, s.chunk)
        if s.show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=metric, leave=False)
        for r0 in starts:
            r1 = min(r0 + s.chunk, n * b)
            ex = torch.arange(r0, r1, device=s.xs[0].device) % b
            rows = _pass(s, tuple(p[r0:r1].clone() for p in pert), ex, want_model)
            scores[r0:r1] = score(ex, clean, rows).to(scores.dtype)
            if want_model:
                changed[r0:r1] = rows["h"].argmax(dim=1) != clean["h"].argmax(dim=1)[ex]
    scores, changed = scores.reshape(n, b), changed.reshape(n, b)
    kept = scores.masked_fill(changed, float("nan")) if s.exclude else scores
    if reduce == "max":
        values = (kept.masked_fill(changed, float("-inf")) if s.exclude else kept).amax(dim=0)
    else:
        values = (kept.masked_fill(changed, 0.0) if s.exclude else kept).sum(dim=0)
        values = values / (n - changed.sum(dim=0) if s.exclude else torch.full_like(values, n))
    if s.exclude:
        values = values.masked_fill(changed.all(dim=0), float("nan"))
    return StabilityResult(
        values=values, scores=kept, n_prediction_changed=changed.sum(dim=0) if want_model else None,
        n_samples=n, metric=metric,
    )


def pnorm(v: Tensor, norm: str) -> Tensor:
    """Per-row norm of a ``c x d`` tensor."""
    return torch.linalg.vector_norm(v, ord=_P[norm], dim=1)


def relative_change(a: Tensor, ref: Tensor, eps: float) -> Tensor:
    r"""Agarwal et al.'s elementwise relative change :math:`(\mathrm{ref} - a) / \mathrm{ref}`, with
    ``eps`` in place of the exact zeros of ``ref`` (Quantus' ``ref + (ref == 0) * eps_min``)."""
    return (ref - a) / (ref + (ref == 0).to(ref.dtype) * eps)


def floor_zero(d: Tensor, eps: float) -> Tensor:
    """Quantus' ``d + (d == 0) * eps_min``."""
    return d + (d == 0).to(d.dtype) * eps


def check_eps(eps_min: Any) -> float:
    return float(check_positive(eps_min, "eps_min"))


def call_kwargs(local: Dict[str, Any]) -> Dict[str, Any]:
    """A metric's ``locals()`` as keyword arguments of :func:`prepare`: without the positional
    arguments and ``relative``, ``exclude_changed`` renamed ``exclude``."""
    kw = {k: v for k, v in local.items() if k not in ("explainer", "inputs", "target", "relative")}
    kw["exclude"] = kw.pop("exclude_changed")
    return kw
