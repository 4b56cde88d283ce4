r"""The base classes of the attacks on attribution maps: :class:`MapAttack` (the model, the
attribution, the map preparation, the measure and the data box, and the passes every such
attack makes) and :class:`IterativeMapAttack` (Ghorbani et al.'s sign-step scheme, run by the
shared loop of ``_loop.py``). A subclass names its objective in two hooks: ``_setup`` (the
per-example state taken from the clean maps) and ``_objective`` (what the attack decreases).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_robust._utils.geometry import BoundType, Box, Tensors, check_norm, detach_all, per_example, project
from captum_robust._utils.compiled import uncompiled
from captum_robust._utils.geometry import random_in_ball
from captum_robust._utils.validation import TargetType, TensorOrTuple, check_bool, check_choice, check_int
from captum_robust._utils.validation import check_nonnegative, check_positive, check_submodule, format_inputs
from captum_robust.attr._core.tokens import TokenBatch, check_token_mask, embed_tokens
from captum_robust.robust.attacks._adapter import AttributionAdapter, apply_preparation, make_measure, make_preparation
from captum_robust.robust.attacks._adapter import MEASURES, prepare_token_maps, rebind_model, submodule_like
from captum_robust.robust.attacks._base import Attack, AttackCall, attack_mode, clean_batch, clean_predictions, filled
from captum_robust.robust.attacks._base import finite_rows, forward, index_args, input_gradients, progress, warn_zero_gradient
from captum_robust.robust.attacks._loop import BestIterateTracker, sign_step_loop
from captum_robust.robust.attacks._results import AttributionAttackResult

__all__ = ["MapAttack", "IterativeMapAttack"]


class _Context:
    """Everything one ``perturb`` call needs about the clean batch."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _sub_context(ctx: _Context, idx: Tensor) -> _Context:
    """A view of the context restricted to the examples ``idx`` (for objectives reading ctx)."""
    sub = _Context(**ctx.__dict__)
    sub.target = ctx.target[idx]
    sub.pred0 = ctx.pred0[idx]
    sub.batch = int(idx.shape[0])
    if ctx.token_mask is not None:
        sub.token_mask = ctx.token_mask[idx]
    return sub


class MapAttack(Attack):
    r"""Base class of the attacks on attribution maps (not instantiated directly); the arguments
    below are common to all of them.

    Holds the model, the attribution adapter, the map preparation, the similarity measure and
    the data box, and offers :meth:`attribution_maps`, :meth:`prepare_maps` and
    :meth:`similarity`, which recompute exactly what an attack reports.

    Args:
        model (nn.Module or callable): the classifier (``B x C`` logits).
        attribution: an attribution of :mod:`captum_robust.attr` built on ``model``
            (:class:`~captum_robust.attr.BatchedIntegratedGradients`, CAM, Grad-CAM, the
            SmoothGrad family, ...), whose ``attribute`` takes ``create_graph``; or a callable
            ``(model, inputs, target) -> maps`` returning maps differentiable with respect to
            ``inputs`` (``(model, inputs, target, additional_forward_args)`` when those are given).
        surrogate (nn.Module or callable, optional): a model with the same weights used for the
            attack *gradients* only (e.g. :func:`~captum_robust.robust.attacks.softplus_surrogate`);
            predictions, acceptance and the reported maps always use ``model``. Second
            derivatives through ReLU vanish almost everywhere, so gradient-based maps of a ReLU
            network (plain gradients, SmoothGrad) need one; Ghorbani used a softplus copy with
            :math:`\beta = 1`.
        measure (str or callable): the similarity reported (and, with
            ``select_by="similarity"``, minimized over the accepted iterates): ``"topk"``
            (top-``measure_k`` intersection), ``"kendall"``, ``"spearman"`` or a callable
            ``(clean_maps, adversarial_maps) -> (B,)`` on prepared maps.
        measure_k (int, optional): ``k`` of the ``"topk"`` measure.
        map_preparation (str, dict, callable or None): how maps are turned into the saliency
            map the attack works on: ``"ghorbani"`` (the absolute map summed over channels and
            scaled to sum to its number of pixels,
            :func:`~captum_robust.robust.attacks.ghorbani_maps`), ``"abs"``, ``None`` (raw
            maps), a dict of :func:`~captum_robust.robust.discrepancy.prepare_maps` arguments
            or a callable. Several input tensors give one flattened map.
        clip_min, clip_max (float, Tensor, tuple or None): the data box (default [0, 1]);
            ``None`` for no bound on that side. The clean inputs must lie inside it.
        attribution_kwargs (dict, optional): keyword arguments for ``attribution.attribute``
            (e.g. ``{"n_steps": 20, "method": "riemann_middle"}`` for Integrated Gradients).
        gradient_attribution_kwargs (dict, optional): extra keyword arguments for the
            differentiable passes only (e.g. fewer ``n_samples`` for SmoothGrad, as Levine did).
        noise_seed (int): seed of the noise of the *reported* maps of noisy attributions
            (SmoothGrad), drawn afresh with this seed at every evaluation so a reported map is
            a deterministic function of its input. The attack's own gradient noise comes from
            ``perturb``'s ``generator``. Default 0.
        embedding_layer (nn.Module, optional): attack a token model through this module of
            ``model`` (e.g. ``model.bert.embeddings``), see "Token models" below. Supported by
            :class:`~captum_robust.robust.attacks.TopKAttack` and
            :class:`~captum_robust.robust.attacks.L2TopKAttack` (the others raise ``ValueError``).

    Token models (``embedding_layer=``): ``perturb(ids, target, additional_forward_args,
    token_mask=...)`` takes ``B x T`` integer token ids (the other model inputs, e.g. the
    ``attention_mask``, go through ``additional_forward_args``) and attacks in the space of the
    embedding module's output :math:`e` (``B x T x D``): the model is run with that output
    replaced (:func:`~captum_robust.attr.embed_tokens`) and the attribution, built on ``model``,
    is moved onto the replaced model, so it explains :math:`e`. The ball (``eps``/``rho`` in the
    attack's norm) is measured on each example's whole ``T x D`` embedding tensor (absolute
    units: a BERT embedding after its LayerNorm has norm about :math:`\sqrt{D}` per token);
    there is no data box (``clip_min``/``clip_max`` are ignored); padding positions
    (``token_mask`` 0) are never perturbed (their gradient, random start and projected step
    are zero, so their embeddings are returned exactly). The maps are token maps: the
    attribution summed over :math:`D` (one score per token), prepared (``"ghorbani"``: absolute
    value scaled so the real tokens sum to their number), padding excluded from the top-k and
    masked in the measures (custom measure callables receive padding as 0). The prediction is
    kept as for float inputs. The returned adversarial tensor is the adversarial
    *embeddings* ``B x T x D`` (the ids are unchanged); :meth:`attribution_maps`,
    :meth:`similarity` and :meth:`prepare_maps` take ids (and ``token_mask``) too. For a
    discrete adversary that swaps tokens see :class:`~captum_robust.robust.attacks.TokenSwapAttack`.
    """

    #: whether the objective needs the logits of the gradient model
    _needs_logits = False
    #: whether the attack supports embedding_layer= (token ids)
    _token_support = False

    def __init__(
        self, model: Callable[..., Any], attribution: Any, *, surrogate: Optional[Callable[..., Any]] = None,
        measure: Any = "topk", measure_k: Optional[int] = None, map_preparation: Any = "ghorbani",
        clip_min: BoundType = 0.0, clip_max: BoundType = 1.0, attribution_kwargs: Optional[Dict[str, Any]] = None,
        gradient_attribution_kwargs: Optional[Dict[str, Any]] = None, noise_seed: int = 0,
        embedding_layer: Optional[nn.Module] = None,
    ) -> None:
        self.embedding_layer = embedding_layer
        self._token_mask: Optional[Tensor] = None  # set on the float view of a token batch
        if embedding_layer is not None:
            if not self._token_support:
                raise ValueError(
                    f"{type(self).__name__} does not support embedding_layer= (token models); use TopKAttack, "
                    "L2TopKAttack or TokenSwapAttack"
                )
            check_submodule(model, embedding_layer, "embedding_layer")
            if surrogate is not None:
                names = {id(m): n for n, m in uncompiled(model).named_modules()} if isinstance(model, nn.Module) else {}
                if not isinstance(surrogate, nn.Module) or id(embedding_layer) not in names:
                    raise TypeError("embedding_layer= with surrogate= needs nn.Module models of the same structure")
                self._surrogate_layer = submodule_like(surrogate, names[id(embedding_layer)])
        self.model = model
        self.surrogate = surrogate
        self.adapter = AttributionAdapter(
            model, attribution, surrogate, attribution_kwargs, gradient_attribution_kwargs, noise_seed
        )
        self.attribution = attribution
        self.measure_k = check_int(measure_k, "measure_k", 1, allow_none=True)
        self.measure_name, self._measure = make_measure(measure, measure_k)
        self.measure = measure
        self.map_preparation = map_preparation
        self._prepare = make_preparation(map_preparation)
        self.box = Box(clip_min, clip_max)

    # ------------------------------------------------------------------ public helpers

    def attribution_maps(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        token_mask: Any = None,
    ) -> TensorOrTuple:
        """The reported maps of the real model (detached), as the attack computes them.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): inputs, batch first (``B x T`` token ids
                with ``embedding_layer=``).
            target (int, list[int], Tensor or None): the class of each map; ``None``: the
                model's prediction at ``inputs``.
            additional_forward_args (Any, optional): extra model arguments.
            token_mask (Tensor, optional): with ``embedding_layer=``: ``B x T``, 1 for real tokens.

        Returns:
            Tensor or tuple[Tensor, ...]: the attribution's output (``B x T x D`` maps of the
            embedding output with ``embedding_layer=``).
        """
        if self.embedding_layer is not None:
            with attack_mode(self.model, self.surrogate):  # warns naming the user's model
                tb, view = self._token_view(inputs, additional_forward_args, token_mask)
                return view.attribution_maps(tb.embeddings, target, tb.forward_args)
        self._no_token_mask(token_mask)
        with attack_mode(self.model, self.surrogate):
            clean = clean_batch(inputs, additional_forward_args)
            self._check_dtypes(clean.xs)
            _, _, tgt = clean_predictions(self.model, clean, target)
            maps = self.adapter.maps(clean.xs, clean.is_tuple, tgt, clean.args, create_graph=False)
        return maps if isinstance(maps, tuple) and len(maps) > 1 else maps[0]

    def prepare_maps(self, maps: TensorOrTuple, token_mask: Any = None) -> Tensor:
        """The attack's ``map_preparation`` applied to maps (detached): what its measures compare.

        Args:
            maps (Tensor or tuple[Tensor, ...]): attribution maps, batch first.
            token_mask (Tensor, optional): with ``embedding_layer=``: ``B x T``, 1 for real
                tokens (None: all); the maps are then ``B x T x D`` and the result the
                prepared ``B x T`` token maps (padding 0).

        Returns:
            Tensor: the prepared maps, ``B x ...``.
        """
        maps = maps if isinstance(maps, tuple) else (maps,)
        if self.embedding_layer is not None:
            m = maps[0]
            mask = (torch.ones(m.shape[:2], dtype=torch.bool, device=m.device) if token_mask is None
                    else check_token_mask(token_mask, m))
            with torch.no_grad():
                return prepare_token_maps(self.map_preparation, self._prepare, maps, mask)
        self._no_token_mask(token_mask)
        with torch.no_grad():
            return apply_preparation(self._prepare, maps)

    def similarity(
        self, inputs: TensorOrTuple, inputs_adv: TensorOrTuple, target: TargetType = None,
        additional_forward_args: Any = None, token_mask: Any = None,
    ) -> Tensor:
        """The attack's ``measure`` between the prepared maps of ``inputs`` and ``inputs_adv``
        (both for ``target``; ``None``: the model's prediction at ``inputs``) -- what the
        attack reports as :attr:`AttributionAttackResult.similarity`.

        With ``embedding_layer=``: ``inputs`` are ``B x T`` token ids, ``inputs_adv`` either
        adversarial embeddings ``B x T x D`` (what the continuous attacks return) or token ids
        (what :class:`~captum_robust.robust.attacks.TokenSwapAttack` returns), ``token_mask``
        marks the real tokens (None: all), and the measure compares the token maps with the
        padding masked.

        Returns:
            Tensor: ``(B,)`` similarities.
        """
        if self.embedding_layer is not None:
            with attack_mode(self.model, self.surrogate):
                return self._token_similarity(inputs, inputs_adv, target, additional_forward_args, token_mask)
        self._no_token_mask(token_mask)
        with attack_mode(self.model, self.surrogate):
            clean_inputs = clean_batch(inputs, additional_forward_args)
            self._check_dtypes(clean_inputs.xs)
            is_tuple, xs, args = clean_inputs.is_tuple, clean_inputs.xs, clean_inputs.args
            _, _, tgt = clean_predictions(self.model, clean_inputs, target)
            adv_tuple, xs_adv = format_inputs(inputs_adv, "inputs_adv")
            if adv_tuple != is_tuple or len(xs_adv) != len(xs) or any(a.shape != b.shape for a, b in zip(xs, xs_adv)):
                raise ValueError("inputs_adv must have the structure and shapes of inputs")
            with torch.no_grad():
                clean = self._prepared(self.adapter.maps(xs, is_tuple, tgt, args, False), self._token_mask)
                adv = self._prepared(self.adapter.maps(detach_all(xs_adv), is_tuple, tgt, args, False), self._token_mask)
            return self._compare(clean, adv, self._token_mask)

    # ------------------------------------------------------------------ token models

    @staticmethod
    def _no_token_mask(token_mask: Any) -> None:
        if token_mask is not None:
            raise ValueError("token_mask= is for token ids, with an attack built with embedding_layer=")

    def _embed(self, ids: Any, additional_forward_args: Any, token_mask: Any) -> TokenBatch:
        """Token ids checked and embedded by the real model's ``embedding_layer`` (eval mode)."""
        with attack_mode(self.model, self.surrogate, warn=False):
            return embed_tokens(self.model, self.embedding_layer, ids, additional_forward_args, token_mask)

    def _token_view(self, ids: Any, additional_forward_args: Any, token_mask: Any) -> Tuple[TokenBatch, "MapAttack"]:
        """The embedded batch and a copy of the attack that runs on its embeddings: the model
        (and surrogate) with the embedding output replaced, the attribution moved onto it, no
        data box, and the token mask (all True when None) for the token maps and measures."""
        tb = self._embed(ids, additional_forward_args, token_mask)
        view = copy.copy(self)
        view.embedding_layer = None
        view.model = tb.model
        view.surrogate = None
        if self.surrogate is not None:
            with attack_mode(self.surrogate, warn=False):
                view.surrogate = embed_tokens(self.surrogate, self._surrogate_layer, tb.ids, tb.args).model
        attribution = self.attribution
        if self.adapter.kind == "attribute":
            attribution = rebind_model(self.adapter.attribution, self.model, tb.model)
        a = self.adapter
        view.adapter = AttributionAdapter(tb.model, attribution, view.surrogate, a.kwargs, a.gradient_kwargs, a.noise_seed)
        view.box = Box(None, None)
        view._token_mask = tb.mask if tb.mask is not None else torch.ones(
            tb.ids.shape[:2], dtype=torch.bool, device=tb.ids.device)
        return tb, view

    def _perturb_tokens(self, call: AttackCall) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        with attack_mode(self.model, self.surrogate):
            tb, view = self._token_view(call.inputs, call.additional_forward_args, call.token_mask)
            emb_call = AttackCall(tb.embeddings, call.target, tb.forward_args, call.generator, call.show_progress,
                                  dict(call.options))
            return view._perturb(emb_call)

    def _token_similarity(
        self, ids: Any, adv: Any, target: TargetType, additional_forward_args: Any, token_mask: Any
    ) -> Tensor:
        tb, view = self._token_view(ids, additional_forward_args, token_mask)
        if isinstance(adv, Tensor) and adv.is_floating_point():
            if adv.shape != tb.embeddings.shape:
                raise ValueError(
                    f"inputs_adv must be adversarial embeddings of shape {tuple(tb.embeddings.shape)} or token ids of "
                    f"shape {tuple(tb.ids.shape)}, got {tuple(adv.shape)}"
                )
            emb_adv, args_adv = adv.detach(), tb.forward_args
        else:
            tb_adv = self._embed(adv, additional_forward_args, token_mask)
            if tb_adv.ids.shape != tb.ids.shape:
                raise ValueError(
                    f"inputs_adv must have the ids' shape {tuple(tb.ids.shape)}, got {tuple(tb_adv.ids.shape)}"
                )
            emb_adv, args_adv = tb_adv.embeddings, tb_adv.forward_args
        mask = view._token_mask
        with attack_mode(view.model, view.surrogate):
            clean = clean_batch(tb.embeddings, tb.forward_args)
            _, _, tgt = clean_predictions(view.model, clean, target)
            with torch.no_grad():
                a = view._prepared(view.adapter.maps((tb.embeddings,), False, tgt, tb.forward_args, False), mask)
                b = view._prepared(view.adapter.maps((emb_adv,), False, tgt, args_adv, False), mask)
        return view._compare(a, b, mask)

    def _prepared(self, maps: Tensors, mask: Optional[Tensor]) -> Tensor:
        """The prepared maps (token maps with padding 0 when ``mask`` is given)."""
        if mask is None:
            return apply_preparation(self._prepare, maps)
        return prepare_token_maps(self.map_preparation, self._prepare, maps, mask)

    def _compare(self, clean: Tensor, adv: Tensor, mask: Optional[Tensor]) -> Tensor:
        """The measure between prepared maps, over the real tokens where ``mask`` is given."""
        if mask is None or self.measure_name not in MEASURES:
            return self._measure(clean, adv)
        return self._measure(clean, adv, mask=mask)

    @staticmethod
    def _keep_padding(x0: Tensors, xs: Tensors, mask: Optional[Tensor]) -> Tensors:
        """``xs`` with the padding positions (``mask`` False) reset to ``x0`` exactly."""
        if mask is None:
            return xs
        keep = mask[..., None]
        return tuple(torch.where(keep, x, c) for x, c in zip(xs, x0))

    # ------------------------------------------------------------------ hooks

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        """Per-example state of the objective (tensors with the batch first)."""
        return {}

    def _objective(
        self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context
    ) -> Tensor:
        """The per-example objective the attack *decreases* (differentiable)."""
        raise NotImplementedError

    def _check_k(self, ctx: _Context) -> None:
        """``k`` (and a top-k measure's ``measure_k``) at most the number of elements of a prepared map."""
        n = ctx.clean_prepared[0].numel()
        if self.k > n:
            raise ValueError(f"k must be in [1, {n}] (the number of elements of a prepared map), got k={self.k}")
        if self.measure_name == "topk" and self.measure_k > n:
            raise ValueError(f"measure_k must be in [1, {n}] (the number of elements of a prepared map), got {self.measure_k}")

    # ------------------------------------------------------------------ shared passes

    def _context(self, call: AttackCall, target: TargetType) -> _Context:
        """The checked clean batch of ``call``, its predictions, ``target`` resolved (``None``:
        the predictions), the clean maps and the objective's state; ``call.options`` become
        attributes too."""
        clean = clean_batch(call.inputs, call.additional_forward_args, self.box, call.generator)
        xs, args = clean.xs, clean.args
        logits, pred, tgt = clean_predictions(self.model, clean, target)
        ctx = _Context(
            x0=xs, is_tuple=clean.is_tuple, args=args, pred0=pred, target=tgt, bounds=clean.bounds,
            generator=clean.generator, batch=clean.batch, logits0=logits, token_mask=self._token_mask, **call.options
        )
        with torch.no_grad():
            ctx.clean_maps = self.adapter.maps(xs, clean.is_tuple, tgt, args, create_graph=False)
            ctx.clean_prepared = self._prepared(ctx.clean_maps, ctx.token_mask)
        ctx.state = self._setup(ctx)
        with torch.no_grad():
            ctx.similarity0 = self._compare(ctx.clean_prepared, ctx.clean_prepared, ctx.token_mask)
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
        mask = self._mask_of(ctx, idx)
        xg = tuple(x.detach().requires_grad_(True) for x in xs)
        with torch.enable_grad():
            maps = self.adapter.maps(xg, ctx.is_tuple, tgt, args, create_graph=True, generator=ctx.generator)
            prepared = self._prepared(maps, mask)
            logits = None
            if self._needs_logits:
                model = self.surrogate if self.surrogate is not None else self.model
                logits = forward(model, xg, args)
            sub = ctx if idx is None else _sub_context(ctx, idx)
            obj = self._objective(prepared, maps, logits, self._sub(ctx.state, idx), sub)
            grads, _ = input_gradients(obj, xg)
        if mask is not None:  # padding is never perturbed
            grads = tuple(g * mask[..., None].to(g.dtype) for g in grads)
        return grads, detach_all(maps), obj.detach(), None if logits is None else logits.detach()

    @staticmethod
    def _mask_of(ctx: _Context, idx: Optional[Tensor]) -> Optional[Tensor]:
        """The token mask of the examples ``idx`` (all if None); None for float inputs."""
        if ctx.token_mask is None or idx is None:
            return ctx.token_mask
        return ctx.token_mask[idx]

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
        accept = (pred == pred0) & finite_rows(logits)  # argmax of NaN keeps nothing
        if maps is None or not self.adapter.reusable:
            maps = self.adapter.maps(xs, ctx.is_tuple, tgt, args, create_graph=False)
            objective = None
        mask = self._mask_of(ctx, idx)
        with torch.no_grad():
            prepared = self._prepared(maps, mask)
            clean = ctx.clean_prepared if idx is None else ctx.clean_prepared[idx]
            sim = self._compare(clean, prepared, mask)
            if objective is None:
                sub = ctx if idx is None else _sub_context(ctx, idx)
                objective = self._objective(prepared, maps, logits, self._sub(ctx.state, idx), sub).detach()
        return accept, sim, objective, pred

    def _tracker(self, ctx: _Context, select_by: str) -> BestIterateTracker:
        """The best accepted iterate (lowest similarity or objective), starting at the clean input."""
        score0 = ctx.similarity0 if select_by == "similarity" else ctx.objective0
        values = {"similarity": ctx.similarity0, "objective": ctx.objective0}
        return BestIterateTracker(ctx.x0, score0, values, ctx.pred0)

    def _observe(
        self, ctx: _Context, tracker: BestIterateTracker, select_by: str, xs: Sequence[Tensor], idx: Optional[Tensor],
        step: Any, maps: Optional[Tensors] = None, objective: Optional[Tensor] = None,
    ) -> None:
        """Offer iterates to the tracker: accepted where the real model's prediction is kept."""
        accept, sim, objective, pred = self._evaluate(ctx, xs, idx, maps, objective)
        score = sim if select_by == "similarity" else objective
        tracker.update(xs, score, accept, step, {"similarity": sim, "objective": objective}, pred, idx)

    def _result(
        self, ctx: _Context, tracker: BestIterateTracker, steps: Tensor
    ) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        """The tracker's best iterates and their :class:`AttributionAttackResult`."""
        return self._finish(
            AttributionAttackResult, tracker.best, ctx.x0, ctx.is_tuple, accepted=tracker.accepted, steps=steps,
            best_step=tracker.best_step, predictions=tracker.predictions, clean_predictions=ctx.pred0,
            similarity=tracker.values["similarity"], objective=tracker.values["objective"],
        )


_SELECT = ("similarity", "objective")


class IterativeMapAttack(MapAttack):
    r"""Iterative sign-step attack on attribution maps (Ghorbani et al.'s scheme), the base of
    :class:`~captum_robust.robust.attacks.TopKAttack`, ``MassCenterAttack``,
    ``TargetedAttributionAttack`` and ``AAI``; the arguments below are common to them, besides
    those of :class:`MapAttack`.

    Starting at :math:`x` (or a random point of the ball), each step is

    .. math::

        \tilde x \leftarrow \Pi_{\text{box}}\Big(x + \Pi_{\epsilon}\big(\tilde x - \alpha\,
            \mathrm{sign}\,\nabla_{\tilde x} L(\tilde x) - x\big)\Big)

    for the attack's objective :math:`L` (the projection :math:`\Pi_\epsilon` onto the
    :math:`\ell_\infty` or :math:`\ell_2` ball). Every iterate is checked on the real model:
    one whose predicted class differs from the clean input's is rejected (the trajectory goes
    on from it), and the accepted iterate with the best selection score is returned.

    Args:
        eps (float): radius :math:`\epsilon \ge 0` of the ball.
        step_size (float): :math:`\alpha > 0`.
        n_iterations (int): number of steps, >= 1.
        norm (str): ``"linf"`` (default, Ghorbani's attack) or ``"l2"``: the ball the
            perturbation is projected onto after every sign step (with ``"l2"`` this is the
            baseline Levine et al. compare their
            :class:`~captum_robust.robust.attacks.L2TopKAttack` with, App. C).
        random_start (bool): start at a uniform random point of the ball instead of at
            :math:`x` (Ghorbani starts at :math:`x`). Default False.
        select_by (str): which accepted iterate is returned: the one with the lowest
            ``"similarity"`` or the lowest ``"objective"`` (on the real model's maps).
    """

    def __init__(
        self, model: Callable[..., Any], attribution: Any, eps: float, step_size: float, n_iterations: int, *,
        norm: str = "linf", random_start: bool = False, select_by: str = "similarity", **kwargs: Any,
    ) -> None:
        super().__init__(model, attribution, **kwargs)
        self.eps = check_nonnegative(eps, "eps")
        self.step_size = check_positive(step_size, "step_size")
        self.n_iterations = check_int(n_iterations, "n_iterations", 1)
        self.norm = check_norm(norm)
        self.random_start = check_bool(random_start, "random_start")
        self.select_by = check_choice(select_by, "select_by", _SELECT)

    def _attack(self, call: AttackCall) -> Tuple[TensorOrTuple, AttributionAttackResult]:
        with attack_mode(self.model, self.surrogate):
            ctx = self._context(call, call.target)
            x0 = ctx.x0
            eps, alpha = filled(self.eps, x0[0]), filled(self.step_size, x0[0])
            tracker = self._tracker(ctx, self.select_by)
            start = random_in_ball(x0, eps, self.norm, ctx.bounds, ctx.generator) if self.random_start else x0
            start = self._keep_padding(x0, start, ctx.token_mask)

            def gradient(x: Tensors) -> Tuple[Tensors, Any]:
                grads, maps, obj, _ = self._gradient_pass(ctx, x, None)
                return grads, (maps, obj)

            def step(x: Tensors, grads: Tensors) -> Tensors:
                stepped = tuple(xi - per_example(alpha, xi) * g.sign() for xi, g in zip(x, grads))
                return self._keep_padding(x0, project(x0, stepped, eps, self.norm, ctx.bounds), ctx.token_mask)

            def observe(x: Tensors, t: int, info: Any) -> None:
                maps, obj = info if info is not None else (None, None)
                self._observe(ctx, tracker, self.select_by, x, None, t, maps, obj)

            def warn(grads: Tensors) -> None:
                warn_zero_gradient(grads, f"{type(self).__name__} objective", stacklevel=7)

            with progress(self.n_iterations, call.show_progress, type(self).__name__) as bar:
                sign_step_loop(start, self.n_iterations, gradient, step, observe,
                               observe_start=self.random_start, bar=bar, on_first_gradient=warn)
            return self._result(ctx, tracker, filled(self.n_iterations, x0[0], torch.long))
