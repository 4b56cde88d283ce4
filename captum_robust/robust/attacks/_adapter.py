r"""How an attack gets and compares attribution maps: the attribution adapter (any attribution
of :mod:`captum_robust.attr`, or a callable, called the same way and moved onto a surrogate),
the map preparation (e.g. Ghorbani's saliency map) and the similarity measures."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_robust._utils.compiled import is_compiled, uncompiled, warn_uncompiled
from captum_robust._utils.geometry import Tensors
from captum_robust._utils.validation import check_int, check_kwargs
from captum_robust.attr._core.tokens import token_scores
from captum_robust.robust.attacks._base import unformat
from captum_robust.robust.discrepancy import measure_function, prepare_maps

__all__ = [
    "AttributionAdapter", "ghorbani_maps", "make_preparation", "apply_preparation", "make_measure",
    "prepare_token_maps", "rebind_model",
]


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


def prepare_token_maps(spec: Any, prepare: Callable[[Tensor], Tensor], maps: Tensors, mask: Tensor) -> Tensor:
    """Token maps (``B x T``) of attributions on an embedding output, prepared, padding 0.

    A token's score is the sum of its attribution over the embedding dimension
    (:func:`~captum_robust.attr._core.tokens.token_scores`); ``"ghorbani"`` takes its absolute
    value scaled so the real tokens of each example sum to their number; other preparations are
    applied to the ``B x T`` scores. Padding tokens get 0 (the measures mask them)."""
    if len(maps) != 1 or maps[0].dim() < 3 or tuple(maps[0].shape[:2]) != tuple(mask.shape):
        got = [tuple(m.shape) for m in maps]
        raise ValueError(
            f"with embedding_layer= the attribution must return one B x T x D map of the embedding output "
            f"(B x T = {tuple(mask.shape)}), got shapes {got}"
        )
    scores = token_scores(maps[0], mask, 0.0)
    if spec == "ghorbani":
        a = scores.abs()
        total = a.sum(dim=1, keepdim=True)
        n = mask.sum(dim=1, keepdim=True).to(a.dtype)
        return torch.where(total > 0, a * n / torch.where(total > 0, total, torch.ones_like(total)), a)
    return prepare(scores).masked_fill(~mask, 0.0)


def rebind_model(obj: Any, model: Any, replaced: nn.Module) -> Any:
    """A shallow copy of the attribution ``obj`` whose references to ``model`` point to
    ``replaced`` (the model with its embedding output replaced, of
    :func:`~captum_robust.attr.embed_tokens`); references to submodules stay (the replaced
    model runs them). ``ValueError`` when ``obj`` does not hold ``model`` itself."""
    inner = uncompiled(model)
    new = copy.copy(obj)
    found = False
    for key, value in vars(obj).items():
        if uncompiled(value) is inner:
            setattr(new, key, replaced)
            found = True
    if not found:
        raise ValueError(
            f"with embedding_layer= the attribution ({type(obj).__name__}) must be built on the model given to the "
            "attack (its forward_func is the model itself), so that it can run on the embeddings; or pass a "
            "callable (model, inputs, target, additional_forward_args) -> maps"
        )
    return new


#: The measures an attack may report and select by: the rank-type members of
#: :data:`captum_robust.robust.discrepancy.MEASURES` (similarities: higher means more alike).
MEASURES = ("topk", "kendall", "spearman")


def make_measure(measure: Any, k: Optional[int]) -> Tuple[str, Callable[[Tensor, Tensor], Tensor]]:
    """A similarity between prepared maps: ``"topk"`` (intersection of the top ``k``),
    ``"kendall"``, ``"spearman"`` (from :func:`~captum_robust.robust.discrepancy.measure_function`)
    or a callable ``(clean, adversarial) -> (B,)``."""
    if isinstance(measure, str):
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES} or a callable, got {measure!r}")
        if measure == "topk" and k is None:
            raise ValueError("measure='topk' needs measure_k, the size of the top sets")
        return measure, measure_function(measure, k)
    if callable(measure):
        return getattr(measure, "__name__", "custom"), measure
    raise TypeError(f"measure must be one of {MEASURES} or a callable, got {type(measure).__name__}")


# --------------------------------------------------------------------------- attribution adapter


_RESERVED = ("inputs", "target", "additional_forward_args", "create_graph", "return_convergence_delta", "generator")
_WHY = "the attack passes inputs, target, additional_forward_args, create_graph and the noise generator itself"


def _rebind(obj: Any, model: nn.Module, surrogate: Any) -> Any:
    """A shallow copy of ``obj`` whose references to ``model`` and its submodules point to the
    ``surrogate`` and its same-named submodules."""
    if not isinstance(model, nn.Module) or not isinstance(surrogate, nn.Module):
        raise TypeError(
            "surrogate= with an Attribution object needs the model and the surrogate to be nn.Modules with the same "
            "structure (e.g. softplus_surrogate(model)); for other callables pass a plain attribution callable "
            "(model, inputs, target) -> maps"
        )
    model = uncompiled(model)  # names relative to the module inside torch.compile
    names = {id(m): n for n, m in model.named_modules()}
    new = copy.copy(obj)
    for key, value in vars(obj).items():
        value = uncompiled(value)
        if isinstance(value, nn.Module) and id(value) in names:
            setattr(new, key, submodule_like(surrogate, names[id(value)]))
    return new


def _without_compile(obj: Any) -> Any:
    """A shallow copy of the attribution ``obj`` whose ``torch.compile``-d references (its
    ``forward_func``, a compiled layer) point to the uncompiled modules (same parameters and
    submodules): the maps an attack differentiates need ``create_graph=True``, which a compiled
    graph does not support."""
    new = copy.copy(obj)
    for key, value in vars(obj).items():
        if is_compiled(value):
            setattr(new, key, uncompiled(value))
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
        self.kwargs = check_kwargs(attribution_kwargs, "attribution_kwargs", _RESERVED, _WHY)
        self.gradient_kwargs = check_kwargs(gradient_kwargs, "gradient_attribution_kwargs", _RESERVED, _WHY)
        self.noise_seed = check_int(noise_seed, "noise_seed", 0)
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
            forward_func = uncompiled(getattr(attribution, "forward_func", None))
            if surrogate is not None and forward_func is not uncompiled(model):
                raise ValueError(
                    "the attribution's forward_func is not the model given to the attack, so it cannot be moved to "
                    "the surrogate; build the attribution on the model itself or pass a callable"
                )
            if surrogate is not None:
                self.gradient_attribution = _rebind(attribution, model, surrogate)
            elif any(is_compiled(v) for v in vars(attribution).values()):
                # said once, here, before any attack step: every map runs uncompiled (the differentiated
                # ones need create_graph; hooks added to a compiled model's layers after its first call do not
                # fire, so a layer attribution's reported maps cannot run compiled either)
                warn_uncompiled(getattr(attribution, "forward_func", model), f"the attack's {self.name}",
                                what="its attribution maps")
                attribution = self.gradient_attribution = _without_compile(attribution)
            else:
                self.gradient_attribution = attribution
            if surrogate is not None:
                names = {id(m): n for n, m in uncompiled(model).named_modules()}  # once, not per argument
                self.gradient_kwargs_modules = {
                    k: submodule_like(surrogate, names[id(v)])
                    for k, v in {**self.kwargs, **self.gradient_kwargs}.items()
                    if isinstance(v, nn.Module) and id(v) in names
                }
            else:
                self.gradient_kwargs_modules = {}
        elif callable(attribution):
            self.kind = "callable"
            self.accepts_generator = False
            self.name = getattr(attribution, "__name__", type(attribution).__name__)
            self.gradient_attribution = attribution
            self.gradient_kwargs_modules = {}
            if surrogate is None and is_compiled(model):
                warn_uncompiled(model, f"the attack's attribution {self.name}", what="its differentiated maps")
            if self.kwargs or self.gradient_kwargs:
                raise ValueError("attribution_kwargs apply to attribution objects; a callable takes no keyword arguments")
        else:
            raise TypeError(
                "attribution must be an attribution object with attribute(..., create_graph=...) or a callable "
                f"(model, inputs, target) -> maps, got {type(attribution).__name__}"
            )
        self.attribution = attribution

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
            model = self.model
            if create_graph:  # the differentiated maps: the surrogate, or the model uncompiled
                model = self.surrogate if self.surrogate is not None else uncompiled(self.model)
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
