r"""Shared machinery of the attacks: the attribution adapter, balls and boxes, per-example
bookkeeping and the result dataclasses.

Everything here is batched: every example keeps its own step size, acceptance flag and
best iterate in ``(B,)`` tensors, and examples are selected with masks or index tensors,
never with a Python loop over the batch.

Inputs are handled as tuples of tensors internally (Captum's convention: the user gives a
tensor or a tuple of tensors and gets the same back). The :math:`\ell_\infty` norm of a
perturbation is the largest absolute change over *all* input tensors of an example, the
:math:`\ell_2` norm the Euclidean norm of all of them together.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import numbers
import warnings
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import (
    TargetType,
    TensorOrTuple,
    check_int_range,
    classification_outputs,
    format_additional_args,
    format_inputs,
    resolve_target,
)
from captum_robust.robust.discrepancy import kendall_tau, prepare_maps, spearman, topk_intersection

__all__ = [
    "AttackResult",
    "AttributionAttackResult",
    "ObjectiveResult",
    "PGDResult",
    "ISAResult",
    "ghorbani_maps",
]

from captum_robust._utils.geometry import (  # noqa: F401  (re-exported: the old home of these names)
    BoundType,
    Tensors,
    per_example,
    where,
    detach_all,
    norm_of,
    Box,
    clamp_box,
    check_inside_box,
    project,
    random_in_ball,
    random_on_sphere,
    steepest_step,
)


# --------------------------------------------------------------------------- results


def _describe(t: Tensor) -> str:
    if t.dtype == torch.bool:
        return f"{int(t.sum())}/{t.numel()} True"
    if not t.is_floating_point():
        return f"ints in [{int(t.min())}, {int(t.max())}]" if t.numel() else "empty"
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return "no finite values"
    return f"mean {float(finite.mean()):.4g}"


@dataclass
class AttackResult:
    """Per-example outcome of an attack: every field is a ``(B,)`` tensor on the inputs' device.

    Attributes:
        accepted (Tensor): bool. For attacks on attributions: an iterate other than the clean
            input was accepted (the prediction kept) and improved the attack's selection
            score; the returned input is the clean input where this is False. For :class:`PGD`
            and :class:`ISA`: the attack succeeded (misclassified, or the target reached).
        norm (Tensor): the size of the returned perturbation in the attack's norm
            (:math:`\\ell_\\infty` or :math:`\\ell_2`, over all input tensors of an example).
        steps (Tensor): int64, gradient steps computed for the example in total.
        best_step (Tensor): int64, the step that produced the returned input (0: the start).
        predictions (Tensor): int64, the model's class at the returned input.
        clean_predictions (Tensor): int64, the model's class at the clean input.
    """

    accepted: Tensor
    norm: Tensor
    steps: Tensor
    best_step: Tensor
    predictions: Tensor
    clean_predictions: Tensor

    def __len__(self) -> int:
        return int(self.accepted.shape[0])

    def as_dict(self) -> Dict[str, List[Any]]:
        """The fields as JSON-serializable lists (one entry per example)."""
        return {f.name: getattr(self, f.name).detach().cpu().tolist() for f in fields(self)}

    def __repr__(self) -> str:
        parts = ", ".join(f"{f.name}=<{_describe(getattr(self, f.name))}>" for f in fields(self))
        return f"{type(self).__name__}(n={len(self)}, {parts})"


@dataclass(repr=False)
class AttributionAttackResult(AttackResult):
    """Result of an attack on attribution maps (keeps the prediction): the fields of
    :class:`AttackResult` and two more.

    Attributes:
        similarity (Tensor): the attack's ``measure`` (e.g. top-k intersection or Kendall's
            tau) between the maps of the clean and the returned input, computed on the real
            model; lower means a stronger attack. It equals
            ``attack.similarity(inputs, x_adv, target)``.
        objective (Tensor): the attack's objective at the returned input on the real model's
            maps (the quantity the attack decreases, e.g. the map mass on the clean top-k).
    """

    similarity: Tensor
    objective: Tensor


@dataclass(repr=False)
class ObjectiveResult(AttackResult):
    """Result of :class:`AttributionPGD`: ``objective`` is the (maximized) objective at the
    returned input; ``accepted`` is True where the returned input is a perturbed point (not the
    clean input) that, with ``keep_prediction``, kept the prediction."""

    objective: Tensor


@dataclass(repr=False)
class PGDResult(AttackResult):
    """Result of :class:`PGD`: ``accepted`` is the success flag (also :attr:`success`) and
    ``loss`` the attack loss at the returned input."""

    loss: Tensor

    @property
    def success(self) -> Tensor:
        """Alias of ``accepted``: the returned input is misclassified (or has the target class)."""
        return self.accepted


@dataclass(repr=False)
class ISAResult(AttackResult):
    """Result of :class:`ISA` (``accepted`` = success, also :attr:`success`): the fields of
    :class:`AttackResult` and these.

    Attributes:
        eps_star (Tensor): the smallest successful perturbation size found by the first
            bisection (``inf`` where the attack fails even at ``eps_max``).
        eps (Tensor): the size the returned input was searched in (``eps_multiple * eps_star``).
        weight (Tensor): the largest discrepancy weight :math:`\\gamma = 1/\\lambda` with a
            successful attack found by the second bisection (0 if only the pure misclassification
            attack succeeded).
        discrepancy (Tensor): :math:`\\mathcal{D}_{2,\\ell_1}` (Boopathy eq. 4) between the clean
            and the returned input's maps of the two classes (NaN where the attack failed).
        nds (Tensor): the normalized discrepancy score of the same two maps (Boopathy App. B).
    """

    eps_star: Tensor
    eps: Tensor
    weight: Tensor
    discrepancy: Tensor
    nds: Tensor

    @property
    def success(self) -> Tensor:
        """Alias of ``accepted``."""
        return self.accepted


# --------------------------------------------------------------------------- argument checks


def check_nonneg_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
    if float(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {name}={value!r}")
    return float(value)


def check_pos_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    if float(value) <= 0:
        raise ValueError(f"{name} must be > 0, got {name}={value!r}")
    return float(value)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


_NORM_ALIASES = {"linf": "linf", "l_inf": "linf", "inf": "linf", "l2": "l2", "2": "l2"}


def check_norm(norm: Any) -> str:
    """``"linf"`` or ``"l2"`` (also ``"Linf"``, ``"L2"``, ``"inf"``, ``float("inf")``, ``2``)."""
    if isinstance(norm, bool):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if isinstance(norm, numbers.Real):
        if math.isinf(float(norm)) and norm > 0:
            return "linf"
        if float(norm) == 2:
            return "l2"
    if isinstance(norm, str) and norm.lower() in _NORM_ALIASES:
        return _NORM_ALIASES[norm.lower()]
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def check_generator(generator: Any, device: torch.device) -> Optional[torch.Generator]:
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on device {generator.device} but the inputs are on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )
    return generator


def check_float_inputs(inputs: Tensors, is_tuple: bool) -> None:
    for i, x in enumerate(inputs):
        if not x.is_floating_point():
            label = f"inputs[{i}]" if is_tuple else "inputs"
            raise TypeError(f"{label} must be a floating-point tensor (attacks need gradients), got {x.dtype}")


# --------------------------------------------------------------------------- tuples, norms, balls, boxes


def index_args(args: Tuple[Any, ...], idx: Tensor, batch: int) -> Tuple[Any, ...]:
    """Select the examples ``idx`` from batch-first tensors in ``additional_forward_args``."""
    return tuple(a[idx] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch else a for a in args)


def check_args(args: Tuple[Any, ...], batch: int) -> None:
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] != batch:
            raise ValueError(
                f"additional_forward_args[{i}] has first dimension {a.shape[0]} but the inputs have batch size "
                f"{batch}; tensor arguments must be batch-first (pass per-call constants as 0-dim tensors)"
            )


def unformat(xs: Tensors, is_tuple: bool) -> TensorOrTuple:
    return tuple(xs) if is_tuple else xs[0]


# --------------------------------------------------------------------------- model helpers


def _bn_or_dropout_training(model: Any) -> List[str]:
    if not isinstance(model, nn.Module):
        return []
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.AlphaDropout)
    return [name or type(m).__name__ for name, m in model.named_modules() if m.training and isinstance(m, kinds)]


@contextlib.contextmanager
def attack_mode(*models: Any, eval_mode: bool = True, warn: bool = True) -> Iterator[None]:
    """Run the models in eval mode with frozen parameters (``requires_grad=False``); restore
    every mode, ``.grad`` and ``requires_grad`` on exit, also on exceptions.

    Warns when a model in training mode has BatchNorm or Dropout layers (their output would
    depend on the batch or on chance): the attack runs it in eval mode.
    """
    if eval_mode and warn:
        for model in models:
            found = _bn_or_dropout_training(model)
            if found:
                warnings.warn(
                    f"{type(model).__name__} is in training mode with BatchNorm/Dropout layers "
                    f"({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}); the attack runs it in eval mode "
                    "(call model.eval() to silence this warning)",
                    UserWarning,
                    stacklevel=4,
                )
    with contextlib.ExitStack() as stack:
        seen = set()
        for model in models:
            if isinstance(model, nn.Module) and id(model) not in seen:
                seen.add(id(model))
                stack.enter_context(preserved_model_state(model, train=False if eval_mode else None))
        for model in models:
            if isinstance(model, nn.Module):
                for p in model.parameters():
                    p.requires_grad_(False)
        yield


def forward(model: Callable[..., Any], xs: Sequence[Tensor], args: Tuple[Any, ...]) -> Tensor:
    return classification_outputs(model(*xs, *args))


def predict(model: Callable[..., Any], xs: Sequence[Tensor], args: Tuple[Any, ...]) -> Tensor:
    with torch.no_grad():
        return forward(model, xs, args).argmax(dim=1)


def input_gradients(value: Tensor, xs: Sequence[Tensor]) -> Tuple[Tensors, bool]:
    """Gradients of ``value.sum()`` with respect to ``xs`` (zeros where unused); also whether
    the value depended on the inputs at all."""
    if not value.requires_grad:
        return tuple(torch.zeros_like(x) for x in xs), False
    grads = torch.autograd.grad(value.sum(), list(xs), allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs)), True


def warn_zero_gradient(grads: Sequence[Tensor], what: str, stacklevel: int = 4) -> None:
    """Warn once when the attack gradient is exactly zero for every example."""
    if all(not bool(g.any()) for g in grads):
        warnings.warn(
            f"the gradient of the {what} with respect to the inputs is identically zero for every example, so the "
            "attack cannot move. For a ReLU network the derivatives of gradient-based maps vanish almost "
            "everywhere: pass surrogate=softplus_surrogate(model) to take the attack gradients through a smooth "
            "copy with the same weights (or the map does not depend on the input, e.g. a linear model's gradient).",
            UserWarning,
            stacklevel=stacklevel,
        )


# --------------------------------------------------------------------------- map preparation and measures


def ghorbani_maps(maps: Tensor) -> Tensor:
    r"""Ghorbani et al.'s (and Chen et al.'s) saliency map :math:`S`: the absolute attribution,
    summed over the channels for ``B x C x H x W`` maps, scaled to sum to its number of elements
    (``H * W``): ``prepare_maps(maps, "sum", absolute=True, normalize="sum")``. Maps of other
    ranks are not channel-reduced."""
    return prepare_maps(maps, "sum" if maps.dim() == 4 else None, absolute=True, normalize="sum")


def make_preparation(spec: Any) -> Callable[[Tensor], Tensor]:
    """``"ghorbani"`` -> :func:`ghorbani_maps`; ``None`` -> raw maps; a dict -> keyword arguments of
    :func:`~captum_robust.robust.discrepancy.prepare_maps`; a callable -> used as is."""
    if spec is None:
        return lambda m: m
    if isinstance(spec, str):
        if spec == "ghorbani":
            return ghorbani_maps
        if spec == "abs":
            return lambda m: m.abs()
        raise ValueError(f"map_preparation must be 'ghorbani', 'abs', None, a dict or a callable, got {spec!r}")
    if isinstance(spec, dict):
        bad = {"reference", "k", "keep_shape"} & set(spec)
        if bad:
            raise ValueError(f"map_preparation cannot restrict to a top-k ({sorted(bad)}); the attacks do that")
        kwargs = dict(spec)
        return lambda m: prepare_maps(m, **kwargs)
    if callable(spec):
        return spec
    raise TypeError(f"map_preparation must be 'ghorbani', 'abs', None, a dict or a callable, got {type(spec).__name__}")


def apply_preparation(prepare: Callable[[Tensor], Tensor], maps: Tensors) -> Tensor:
    """Prepare each map tensor; several input tensors give one flattened ``B x n`` map."""
    if len(maps) == 1:
        return prepare(maps[0])
    return torch.cat([prepare(m).reshape(m.shape[0], -1) for m in maps], dim=1)


MEASURES = ("topk", "kendall", "spearman")


def make_measure(measure: Any, k: Optional[int]) -> Tuple[str, Callable[[Tensor, Tensor], Tensor]]:
    """A similarity between prepared maps: ``"topk"`` (intersection of the top ``k``),
    ``"kendall"``, ``"spearman"`` or a callable ``(clean, adversarial) -> (B,)``."""
    if isinstance(measure, str):
        if measure == "topk":
            if k is None:
                raise ValueError("measure='topk' needs measure_k, the size of the top sets")
            return "topk", lambda a, b: topk_intersection(a, b, k)
        if measure == "kendall":
            return "kendall", kendall_tau
        if measure == "spearman":
            return "spearman", spearman
        raise ValueError(f"measure must be one of {MEASURES} or a callable, got {measure!r}")
    if callable(measure):
        return getattr(measure, "__name__", "custom"), measure
    raise TypeError(f"measure must be one of {MEASURES} or a callable, got {type(measure).__name__}")


# --------------------------------------------------------------------------- attribution adapter


_RESERVED = ("inputs", "target", "additional_forward_args", "create_graph", "return_convergence_delta", "generator")


def _rebind(obj: Any, model: nn.Module, surrogate: Any) -> Any:
    """A shallow copy of ``obj`` whose references to ``model`` and its submodules point to the
    ``surrogate`` and its same-named submodules."""
    if not isinstance(model, nn.Module) or not isinstance(surrogate, nn.Module):
        raise TypeError(
            "surrogate= with an Attribution object needs the model and the surrogate to be nn.Modules with the same "
            "structure (e.g. softplus_surrogate(model)); for other callables pass a plain attribution callable "
            "(model, inputs, target) -> maps"
        )
    names = {id(m): n for n, m in model.named_modules()}
    new = copy.copy(obj)
    for key, value in vars(obj).items():
        if isinstance(value, nn.Module) and id(value) in names:
            setattr(new, key, submodule_like(surrogate, names[id(value)]))
    return new


def submodule_like(surrogate: nn.Module, name: str) -> nn.Module:
    try:
        return surrogate.get_submodule(name)
    except AttributeError:
        raise ValueError(
            f"the surrogate has no submodule {name!r}, which the attribution uses in the model; the surrogate must "
            "have the model's structure (softplus_surrogate(model) does)"
        ) from None


class AttributionAdapter:
    """Call any attribution of this library (an object with ``attribute(..., create_graph=...)``)
    or a plain callable ``(model, inputs, target) -> maps`` the same way.

    * ``maps(..., create_graph=True)``: the maps the attack differentiates, from the
      ``surrogate`` when one is given, with ``gradient_kwargs`` added to ``attribution_kwargs``,
      and noise (for attributions taking ``generator=``) from the attack's generator;
    * ``maps(..., create_graph=False)``: the *reported* maps, always of the real model, detached;
      noisy attributions get a fresh generator seeded with ``noise_seed`` at every call, so the
      reported map is a deterministic function of the input.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        attribution: Any,
        surrogate: Optional[Callable[..., Any]] = None,
        attribution_kwargs: Optional[Dict[str, Any]] = None,
        gradient_kwargs: Optional[Dict[str, Any]] = None,
        noise_seed: int = 0,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
        if surrogate is not None and not callable(surrogate):
            raise TypeError(f"surrogate must be None, an nn.Module or a callable, got {type(surrogate).__name__}")
        if isinstance(attribution, type):
            raise TypeError(
                f"attribution must be an attribution object (e.g. {attribution.__name__}(model)) or a callable "
                "(model, inputs, target) -> maps, got the class itself"
            )
        self.model = model
        self.surrogate = surrogate
        self.kwargs = self._check_kwargs(attribution_kwargs, "attribution_kwargs")
        self.gradient_kwargs = self._check_kwargs(gradient_kwargs, "gradient_attribution_kwargs")
        self.noise_seed = check_int_range(noise_seed, "noise_seed", 0)
        method = getattr(attribution, "attribute", None)
        if method is not None and callable(method):
            params = inspect.signature(method).parameters
            if "create_graph" not in params:
                raise TypeError(
                    f"{type(attribution).__name__}.attribute does not take create_graph, so its maps cannot be "
                    "differentiated; use an attribution of captum_robust.attr or wrap the method in a callable "
                    "(model, inputs, target) -> maps that returns a differentiable map"
                )
            self.kind = "attribute"
            self.accepts_generator = "generator" in params
            self.name = type(attribution).__name__
            if surrogate is not None and getattr(attribution, "forward_func", None) is not model:
                raise ValueError(
                    f"the attribution's forward_func is not the model given to the attack, so it cannot be moved to "
                    f"the surrogate; build the attribution on the model itself or pass a callable"
                )
            self.gradient_attribution = attribution if surrogate is None else _rebind(attribution, model, surrogate)
            if surrogate is not None:
                self.gradient_kwargs_modules = {
                    k: submodule_like(surrogate, dict((id(m), n) for n, m in model.named_modules())[id(v)])
                    for k, v in {**self.kwargs, **self.gradient_kwargs}.items()
                    if isinstance(v, nn.Module) and any(v is m for m in model.modules())
                }
            else:
                self.gradient_kwargs_modules = {}
        elif callable(attribution):
            self.kind = "callable"
            self.accepts_generator = False
            self.name = getattr(attribution, "__name__", type(attribution).__name__)
            self.gradient_attribution = attribution
            self.gradient_kwargs_modules = {}
            if self.kwargs or self.gradient_kwargs:
                raise ValueError("attribution_kwargs apply to attribution objects; a callable takes no keyword arguments")
        else:
            raise TypeError(
                "attribution must be an attribution object with attribute(..., create_graph=...) or a callable "
                f"(model, inputs, target) -> maps, got {type(attribution).__name__}"
            )
        self.attribution = attribution

    @staticmethod
    def _check_kwargs(kwargs: Optional[Dict[str, Any]], name: str) -> Dict[str, Any]:
        if kwargs is None:
            return {}
        if not isinstance(kwargs, dict):
            raise TypeError(f"{name} must be a dict of keyword arguments for attribute(), got {type(kwargs).__name__}")
        bad = [k for k in kwargs if k in _RESERVED]
        if bad:
            raise ValueError(
                f"{name} must not set {bad}: the attack passes inputs, target, additional_forward_args, "
                "create_graph and the noise generator itself"
            )
        return dict(kwargs)

    @property
    def reusable(self) -> bool:
        """Whether the differentiable maps are the reported maps (no surrogate, no extra
        keyword arguments, no noise), so the attack can reuse them instead of a second pass."""
        return self.surrogate is None and not self.gradient_kwargs and not self.accepts_generator

    def maps(
        self,
        xs: Tensors,
        is_tuple: bool,
        target: Tensor,
        args: Tuple[Any, ...],
        create_graph: bool,
        generator: Optional[torch.Generator] = None,
    ) -> Tensors:
        if not create_graph:
            # fresh tensor objects: a callable may call requires_grad_() on what it receives
            xs = tuple(x.detach() for x in xs)
        inputs = unformat(xs, is_tuple)
        if self.kind == "attribute":
            attr = self.gradient_attribution if create_graph else self.attribution
            kwargs = dict(self.kwargs)
            if create_graph:
                kwargs.update(self.gradient_kwargs)
                kwargs.update(self.gradient_kwargs_modules)
            if self.accepts_generator:
                if create_graph:
                    kwargs["generator"] = generator
                else:
                    g = torch.Generator(device=xs[0].device)
                    g.manual_seed(self.noise_seed)
                    kwargs["generator"] = g
            with torch.enable_grad():
                out = attr.attribute(
                    inputs,
                    target=target,
                    additional_forward_args=args if args else None,
                    create_graph=create_graph,
                    **kwargs,
                )
        else:
            fn = self.attribution
            model = self.surrogate if (create_graph and self.surrogate is not None) else self.model
            with torch.enable_grad():
                out = fn(model, inputs, target) if not args else fn(model, inputs, target, args)
        maps = out if isinstance(out, tuple) else (out,)
        for i, m in enumerate(maps):
            if not isinstance(m, Tensor) or not m.is_floating_point() or m.dim() < 2 or m.shape[0] != xs[0].shape[0]:
                desc = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(
                    f"the attribution ({self.name}) must return floating-point maps B x ... with the batch size "
                    f"{xs[0].shape[0]} (or a tuple of such), got {desc} at position {i}"
                )
        if not create_graph:
            maps = tuple(m.detach() for m in maps)
        return maps


# --------------------------------------------------------------------------- best-iterate bookkeeping


class BestTracker:
    """The best accepted iterate of every example so far.

    ``score`` is minimized (``higher_is_better=False``) or maximized; an iterate replaces the
    current best only where it is accepted and *strictly* better (NaN never is), so the start
    point stays where nothing improves on it. ``values`` are other per-example quantities kept
    with the best iterate (e.g. the similarity and the objective).
    """

    def __init__(
        self,
        x0: Tensors,
        score: Tensor,
        values: Dict[str, Tensor],
        predictions: Tensor,
        higher_is_better: bool = False,
    ) -> None:
        self.x = tuple(x.detach().clone() for x in x0)
        self.score = score.detach().clone()
        self.values = {k: v.detach().clone() for k, v in values.items()}
        self.predictions = predictions.detach().clone()
        self.higher = higher_is_better
        b = self.score.shape[0]
        self.accepted = torch.zeros(b, dtype=torch.bool, device=self.score.device)
        self.best_step = torch.zeros(b, dtype=torch.long, device=self.score.device)

    def update(
        self,
        xs: Sequence[Tensor],
        score: Tensor,
        accept: Tensor,
        step: Union[int, Tensor],
        values: Dict[str, Tensor],
        predictions: Tensor,
        idx: Optional[Tensor] = None,
    ) -> Tensor:
        """Update with iterates ``xs`` of the examples ``idx`` (all if None); returns the mask
        (over ``idx``) of the examples whose best changed."""
        if idx is None:
            idx = torch.arange(self.score.shape[0], device=self.score.device)
        current = self.score[idx]
        better = accept & ((score > current) if self.higher else (score < current))
        rows = idx[better]
        if rows.numel():
            for mine, new in zip(self.x, xs):
                mine[rows] = new.detach()[better].to(mine.dtype)
            self.score[rows] = score.detach()[better].to(self.score.dtype)
            for k, v in values.items():
                self.values[k][rows] = v.detach()[better].to(self.values[k].dtype)
            self.predictions[rows] = predictions[better]
            self.accepted[rows] = True
            step_t = step[better] if isinstance(step, Tensor) else torch.full_like(rows, int(step))
            self.best_step[rows] = step_t
        return better


def progress(total: int, show: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not show, desc=desc, leave=False)


# --------------------------------------------------------------------------- attacks on attribution maps


class _Context:
    """Everything one ``perturb`` call needs about the clean batch."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class MapAttack:
    """Base class of the attacks on attribution maps (not instantiated directly).

    Holds the model, the attribution adapter, the map preparation, the similarity measure and
    the data box, and offers :meth:`attribution_maps` and :meth:`similarity`, which recompute
    exactly what an attack reports.
    """

    #: whether the objective needs the logits of the gradient model
    _needs_logits = False

    def __init__(
        self,
        model: Callable[..., Any],
        attribution: Any,
        *,
        surrogate: Optional[Callable[..., Any]] = None,
        measure: Any = "topk",
        measure_k: Optional[int] = None,
        map_preparation: Any = "ghorbani",
        clip_min: BoundType = 0.0,
        clip_max: BoundType = 1.0,
        attribution_kwargs: Optional[Dict[str, Any]] = None,
        gradient_attribution_kwargs: Optional[Dict[str, Any]] = None,
        noise_seed: int = 0,
    ) -> None:
        self.model = model
        self.surrogate = surrogate
        self.adapter = AttributionAdapter(
            model, attribution, surrogate, attribution_kwargs, gradient_attribution_kwargs, noise_seed
        )
        self.attribution = attribution
        if measure_k is not None:
            check_int_range(measure_k, "measure_k", 1)
        self.measure_k = measure_k
        self.measure_name, self._measure = make_measure(measure, measure_k)
        self.measure = measure
        self.map_preparation = map_preparation
        self._prepare = make_preparation(map_preparation)
        self.box = Box(clip_min, clip_max)

    # ------------------------------------------------------------------ public helpers

    def _clean_setup(
        self, inputs: TensorOrTuple, target: TargetType, additional_forward_args: Any
    ) -> Tuple[bool, Tensors, Tuple[Any, ...], Tensor, Tensor, Tensor]:
        is_tuple, xs = format_inputs(inputs)
        check_float_inputs(xs, is_tuple)
        xs = detach_all(xs)
        args = format_additional_args(additional_forward_args)
        check_args(args, xs[0].shape[0])
        with torch.no_grad():
            logits = forward(self.model, xs, args)
        pred = logits.argmax(dim=1)
        tgt = pred if target is None else resolve_target(target, xs[0].shape[0], logits.shape[1], xs[0].device)
        return is_tuple, xs, args, logits, pred, tgt

    def attribution_maps(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None
    ) -> TensorOrTuple:
        """The reported maps of the real model (detached), as the attack computes them.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): inputs, batch first.
            target (int, list[int], Tensor or None): the class of each map; ``None``: the
                model's prediction at ``inputs``.
            additional_forward_args (Any, optional): extra model arguments.

        Returns:
            Tensor or tuple[Tensor, ...]: the attribution's output.
        """
        with attack_mode(self.model, self.surrogate):
            is_tuple, xs, args, _, _, tgt = self._clean_setup(inputs, target, additional_forward_args)
            maps = self.adapter.maps(xs, is_tuple, tgt, args, create_graph=False)
        return maps if isinstance(maps, tuple) and len(maps) > 1 else maps[0]

    def prepare_maps(self, maps: TensorOrTuple) -> Tensor:
        """The attack's ``map_preparation`` applied to maps (detached): what its measures compare.

        Args:
            maps (Tensor or tuple[Tensor, ...]): attribution maps, batch first.

        Returns:
            Tensor: the prepared maps, ``B x ...``.
        """
        with torch.no_grad():
            return apply_preparation(self._prepare, maps if isinstance(maps, tuple) else (maps,))

    def similarity(
        self,
        inputs: TensorOrTuple,
        inputs_adv: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """The attack's ``measure`` between the prepared maps of ``inputs`` and ``inputs_adv``
        (both for ``target``; ``None``: the model's prediction at ``inputs``) -- what the
        attack reports as :attr:`AttributionAttackResult.similarity`.

        Returns:
            Tensor: ``(B,)`` similarities.
        """
        with attack_mode(self.model, self.surrogate):
            is_tuple, xs, args, _, _, tgt = self._clean_setup(inputs, target, additional_forward_args)
            adv_tuple, xs_adv = format_inputs(inputs_adv, "inputs_adv")
            if adv_tuple != is_tuple or len(xs_adv) != len(xs) or any(a.shape != b.shape for a, b in zip(xs, xs_adv)):
                raise ValueError("inputs_adv must have the structure and shapes of inputs")
            with torch.no_grad():
                clean = apply_preparation(self._prepare, self.adapter.maps(xs, is_tuple, tgt, args, False))
                adv = apply_preparation(self._prepare, self.adapter.maps(detach_all(xs_adv), is_tuple, tgt, args, False))
            return self._measure(clean, adv)

    # ------------------------------------------------------------------ hooks

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        """Per-example state of the objective (tensors with the batch first)."""
        return {}

    def _objective(
        self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context
    ) -> Tensor:
        """The per-example objective the attack *decreases* (differentiable)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared passes

    def _context(
        self,
        inputs: TensorOrTuple,
        target: TargetType,
        additional_forward_args: Any,
        generator: Any,
        **extra: Any,
    ) -> _Context:
        is_tuple, xs, args, logits, pred, tgt = self._clean_setup(inputs, target, additional_forward_args)
        bounds = self.box.resolve(xs)
        check_inside_box(xs, bounds, is_tuple)
        gen = check_generator(generator, xs[0].device)
        ctx = _Context(
            x0=xs, is_tuple=is_tuple, args=args, pred0=pred, target=tgt, bounds=bounds, generator=gen,
            batch=xs[0].shape[0], logits0=logits, **extra
        )
        with torch.no_grad():
            ctx.clean_maps = self.adapter.maps(xs, is_tuple, tgt, args, create_graph=False)
            ctx.clean_prepared = apply_preparation(self._prepare, ctx.clean_maps)
        ctx.state = self._setup(ctx)
        with torch.no_grad():
            ctx.similarity0 = self._measure(ctx.clean_prepared, ctx.clean_prepared)
            ctx.objective0 = self._objective(ctx.clean_prepared, ctx.clean_maps, logits, ctx.state, ctx).detach()
        return ctx

    @staticmethod
    def _sub(state: Dict[str, Tensor], idx: Optional[Tensor]) -> Dict[str, Tensor]:
        if idx is None:
            return state
        return {k: v[idx] for k, v in state.items()}

    def _sub_ctx_args(self, ctx: _Context, idx: Optional[Tensor]) -> Tuple[Tuple[Any, ...], Tensor]:
        if idx is None:
            return ctx.args, ctx.target
        return index_args(ctx.args, idx, ctx.batch), ctx.target[idx]

    def _gradient_pass(
        self, ctx: _Context, xs: Sequence[Tensor], idx: Optional[Tensor]
    ) -> Tuple[Tensors, Tensors, Tensor, Optional[Tensor]]:
        """Objective gradients at ``xs`` (examples ``idx``); also the maps, the objective and the
        logits computed on the way (those of the real model when no surrogate is used)."""
        args, tgt = self._sub_ctx_args(ctx, idx)
        xg = tuple(x.detach().requires_grad_(True) for x in xs)
        with torch.enable_grad():
            maps = self.adapter.maps(xg, ctx.is_tuple, tgt, args, create_graph=True, generator=ctx.generator)
            prepared = apply_preparation(self._prepare, maps)
            logits = None
            if self._needs_logits:
                model = self.surrogate if self.surrogate is not None else self.model
                logits = forward(model, xg, args)
            obj = self._objective(prepared, maps, logits, self._sub(ctx.state, idx), ctx if idx is None else _sub_context(ctx, idx))
            grads, _ = input_gradients(obj, xg)
        return grads, detach_all(maps), obj.detach(), None if logits is None else logits.detach()

    def _evaluate(
        self,
        ctx: _Context,
        xs: Sequence[Tensor],
        idx: Optional[Tensor],
        maps: Optional[Tensors] = None,
        objective: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Real-model prediction, acceptance (prediction kept), similarity and objective at ``xs``."""
        args, tgt = self._sub_ctx_args(ctx, idx)
        xs = detach_all(xs)
        with torch.no_grad():
            logits = forward(self.model, xs, args)
        pred = logits.argmax(dim=1)
        pred0 = ctx.pred0 if idx is None else ctx.pred0[idx]
        accept = pred == pred0
        if maps is None or not self.adapter.reusable:
            maps = self.adapter.maps(xs, ctx.is_tuple, tgt, args, create_graph=False)
            objective = None
        with torch.no_grad():
            prepared = apply_preparation(self._prepare, maps)
            clean = ctx.clean_prepared if idx is None else ctx.clean_prepared[idx]
            sim = self._measure(clean, prepared)
            if objective is None:
                sub = ctx if idx is None else _sub_context(ctx, idx)
                objective = self._objective(prepared, maps, logits, self._sub(ctx.state, idx), sub).detach()
        return accept, sim, objective, pred

    def _result(self, ctx: _Context, tracker: BestTracker, steps: Tensor, norm: str) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        x_adv = tracker.x
        result = AttributionAttackResult(
            accepted=tracker.accepted,
            norm=norm_of([a - c for a, c in zip(x_adv, ctx.x0)], norm),
            steps=steps,
            best_step=tracker.best_step,
            predictions=tracker.predictions,
            clean_predictions=ctx.pred0,
            similarity=tracker.values["similarity"],
            objective=tracker.values["objective"],
        )
        return unformat(x_adv, ctx.is_tuple), result


def _sub_context(ctx: _Context, idx: Tensor) -> _Context:
    """A view of the context restricted to the examples ``idx`` (for objectives reading ctx)."""
    sub = _Context(**ctx.__dict__)
    sub.target = ctx.target[idx]
    sub.pred0 = ctx.pred0[idx]
    sub.batch = int(idx.shape[0])
    return sub


_SELECT = ("similarity", "objective")


class IterativeMapAttack(MapAttack):
    r"""Iterative sign-step attack on attribution maps (Ghorbani et al.'s scheme).

    Starting at :math:`x` (or a random point of the ball), each step is

    .. math::

        \tilde x \leftarrow \Pi_{\text{box}}\Big(x + \Pi_{\epsilon}\big(\tilde x - \alpha\,
            \mathrm{sign}\,\nabla_{\tilde x} L(\tilde x) - x\big)\Big)

    for the attack's objective :math:`L` (the projection :math:`\Pi_\epsilon` onto the
    :math:`\ell_\infty` or :math:`\ell_2` ball). Every iterate is checked on the real model:
    one whose predicted class differs from the clean input's is rejected (the trajectory goes
    on from it), and the accepted iterate with the best selection score is returned.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        attribution: Any,
        eps: float,
        step_size: float,
        n_iterations: int,
        *,
        norm: str = "linf",
        random_start: bool = False,
        select_by: str = "similarity",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, attribution, **kwargs)
        self.eps = check_nonneg_float(eps, "eps")
        self.step_size = check_pos_float(step_size, "step_size")
        self.n_iterations = check_int_range(n_iterations, "n_iterations", 1)
        self.norm = check_norm(norm)
        self.random_start = check_bool(random_start, "random_start")
        if select_by not in _SELECT:
            raise ValueError(f"select_by must be one of {_SELECT}, got {select_by!r}")
        self.select_by = select_by

    def _perturb(
        self,
        inputs: TensorOrTuple,
        target: TargetType,
        additional_forward_args: Any,
        generator: Optional[torch.Generator],
        show_progress: bool,
        **extra: Any,
    ) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        check_bool(show_progress, "show_progress")
        with attack_mode(self.model, self.surrogate):
            ctx = self._context(inputs, target, additional_forward_args, generator, **extra)
            b = ctx.batch
            device = ctx.x0[0].device
            eps = torch.full((b,), self.eps, dtype=ctx.x0[0].dtype, device=device)
            alpha = torch.full((b,), self.step_size, dtype=ctx.x0[0].dtype, device=device)
            score0 = ctx.similarity0 if self.select_by == "similarity" else ctx.objective0
            tracker = BestTracker(
                ctx.x0, score0, {"similarity": ctx.similarity0, "objective": ctx.objective0}, ctx.pred0
            )
            if self.random_start:
                x = random_in_ball(ctx.x0, eps, self.norm, ctx.bounds, ctx.generator)
            else:
                x = ctx.x0
            steps = torch.zeros(b, dtype=torch.long, device=device)

            def evaluate(xs: Tensors, step: int, maps: Optional[Tensors] = None, obj: Optional[Tensor] = None) -> None:
                accept, sim, objective, pred = self._evaluate(ctx, xs, None, maps, obj)
                score = sim if self.select_by == "similarity" else objective
                tracker.update(xs, score, accept, step, {"similarity": sim, "objective": objective}, pred)

            with progress(self.n_iterations, show_progress, type(self).__name__) as bar:
                for t in range(self.n_iterations):
                    grads, maps, obj, _ = self._gradient_pass(ctx, x, None)
                    if t == 0:
                        warn_zero_gradient(grads, f"{type(self).__name__} objective", stacklevel=5)
                    if t > 0 or self.random_start:
                        evaluate(x, t, maps, obj)
                    stepped = tuple(xi - per_example(alpha, xi) * g.sign() for xi, g in zip(x, grads))
                    x = project(ctx.x0, stepped, eps, self.norm, ctx.bounds)
                    steps += 1
                    bar.update(1)
            evaluate(x, self.n_iterations)
            return self._result(ctx, tracker, steps, self.norm)
