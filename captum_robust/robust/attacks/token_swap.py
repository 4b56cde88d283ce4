r"""A discrete attack on the explanations of token models: greedy swaps of tokens for their
nearest neighbours in the vocabulary that change the explanation and keep the prediction.

The continuous attacks with ``embedding_layer=`` move the embeddings off the vocabulary; this
adversary returns real token ids. Each step, for every example still improving:

1. the gradient :math:`g_t` of the attack's differentiable objective (the prepared token map's
   mass on the clean top-``k`` tokens, as :class:`~captum_robust.robust.attacks.TopKAttack`
   decreases it) with respect to the *output of the word-embedding table* at every position
   :math:`t` -- so the first-order change of swapping the token :math:`x_t` for :math:`w` is
   :math:`(W_w - W_{x_t}) \cdot g_t`, exact to first order even when position embeddings and a
   LayerNorm follow the table inside ``embedding_layer``;
2. candidates: at every real position not yet swapped whose token is not forbidden, the
   ``n_neighbours`` tokens nearest (:math:`\ell_2` in the vocabulary matrix :math:`W`) to the
   *original* token there, never a forbidden id nor the token itself;
3. the ``candidates_per_step`` candidates of lowest first-order estimate are evaluated exactly, all
   examples' candidates in one batch (the real model's prediction and the real attribution);
4. of the candidates whose prediction is the label (``target``, or the clean prediction), the
   one with the lowest similarity (ties: the lowest objective) is accepted where it lowers the
   similarity -- or keeps it and lowers the objective, so a top-k measure with few distinct values
   does not stop the search while the attributions move --; an example stops when no candidate
   improves, after ``max_swaps`` swaps, or when no position is left.

Each position is swapped at most once; padding positions (``token_mask`` 0) and forbidden tokens
(special tokens, ``forbidden_ids`` and the table's ``padding_idx``) are never touched.
Deterministic (no randomness besides a noisy attribution's gradient noise from ``generator``).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_robust._utils.geometry import Tensors
from captum_robust._utils.validation import check_int, check_submodule
from captum_robust.attr._core.tokens import TokenBatch, embed_tokens, token_scores
from captum_robust.robust.attacks._base import AttackCall, attack_mode, finite_rows, forward, index_args
from captum_robust.robust.attacks._map_attack import MapAttack, _Context, _sub_context
from captum_robust.robust.attacks._results import TokenSwapResult
from captum_robust.robust.discrepancy import kendall_tau, topk_intersection, topk_mask

__all__ = ["TokenSwapAttack"]


def _find_word_embeddings(model: Any, layer: nn.Module, given: Optional[nn.Module]) -> nn.Embedding:
    """The vocabulary table: ``given``, the layer itself, its only ``nn.Embedding``, or the
    model's ``get_input_embeddings()`` (Hugging Face) among several; otherwise an error (the
    largest table is not a safe guess: BERT's 512 position embeddings outnumber a small vocabulary)."""
    if given is not None:
        if not isinstance(given, nn.Embedding):
            raise TypeError(f"word_embeddings must be an nn.Embedding (the vocabulary table), got {type(given).__name__}")
        return given
    if isinstance(layer, nn.Embedding):
        return layer
    tables = [(n, m) for n, m in layer.named_modules() if isinstance(m, nn.Embedding)]
    if not tables:
        raise ValueError(
            f"embedding_layer ({type(layer).__name__}) holds no nn.Embedding; pass word_embeddings=, the table "
            "whose rows are the vocabulary"
        )
    if len(tables) == 1:
        return tables[0][1]
    getter = getattr(model, "get_input_embeddings", None)
    found = getter() if callable(getter) else None
    if isinstance(found, nn.Embedding) and any(m is found for _, m in tables):
        return found
    names = ", ".join(f"{n} ({m.num_embeddings} rows)" for n, m in tables)
    raise ValueError(
        f"embedding_layer ({type(layer).__name__}) holds several nn.Embedding tables: {names}; pass "
        "word_embeddings=, the one whose rows are the vocabulary"
    )


class TokenSwapAttack(MapAttack):
    r"""Greedy nearest-neighbour token swaps that change a token model's explanation and keep
    its prediction (the algorithm is in the module docstring).

    Args:
        model (nn.Module): the classifier, called ``model(ids, *additional_forward_args)``.
        attribution: an attribution of :mod:`captum_robust.attr` built on ``model`` (run on the
            embedding output, e.g. ``Saliency(model)``), or a callable ``(model, inputs, target,
            additional_forward_args) -> maps``; as for
            :class:`~captum_robust.robust.attacks.TopKAttack` with ``embedding_layer=``.
        embedding_layer (nn.Module): the module of ``model`` whose output the attribution
            explains (e.g. ``model.bert.embeddings``).
        word_embeddings (nn.Embedding, optional): the vocabulary table; default
            ``embedding_layer`` itself if it is an ``nn.Embedding``, else its only
            ``nn.Embedding`` submodule, or among several the model's
            ``get_input_embeddings()`` (Hugging Face: ``bert.embeddings.word_embeddings``);
            otherwise pass it.
        k (int): size of the clean top set whose mass the objective measures. Default 3.
        max_swaps (int): at most this many positions swapped per example. Default 3.
        n_neighbours (int): candidate tokens per position. Default 10.
        candidates_per_step (int or None): candidates evaluated exactly per example and step
            (None: all of them). Default 8.
        measure (str or callable): the similarity minimised and reported: ``"topk"``,
            ``"kendall"``, ``"spearman"`` or a callable on prepared token maps. Default ``"topk"``.
        measure_k (int, optional): ``k`` of the ``"topk"`` measure (and of the reported
            ``topk_intersection``); default ``k``.
        forbidden_ids (sequence of int): token ids never swapped in nor out (special tokens such
            as ``[CLS]``, ``[SEP]``); the table's ``padding_idx`` is added.
        map_preparation: as :class:`~captum_robust.robust.attacks._map_attack.MapAttack`'s.
            Default ``"ghorbani"``.
        **kwargs: ``surrogate``, ``attribution_kwargs``, ``gradient_attribution_kwargs``,
            ``noise_seed`` of :class:`~captum_robust.robust.attacks._map_attack.MapAttack`.

    Hugging Face transformers need eager attention for the second derivatives of the attack
    gradient (``config._attn_implementation = "eager"``; PyTorch's fused attention kernels
    have no double backward), as for every attack on gradient-based maps.

    ``perturb(ids, target=None, additional_forward_args=None, generator=None,
    show_progress=False, token_mask=None)`` returns ``(adversarial_ids, result)``, a
    :class:`~captum_robust.robust.attacks.TokenSwapResult`. :meth:`similarity` with the clean
    and the adversarial ids recomputes ``result.similarity``.

    Example::

        >>> import torch
        >>> from captum_robust.attr import Saliency
        >>> from captum_robust.models import TokenBagClassifier
        >>> from captum_robust.robust.attacks import TokenSwapAttack
        >>> model = TokenBagClassifier(vocab_size=50, n_classes=3, softplus=2.0).eval()
        >>> ids = torch.tensor([[5, 7, 9, 11, 13, 0], [3, 4, 8, 12, 0, 0]])
        >>> mask = (ids != 0).long()                      # 0 is the padding id
        >>> attack = TokenSwapAttack(model, Saliency(model), model.embedding, k=2, max_swaps=2,
        ...                          n_neighbours=5)
        >>> ids_adv, result = attack.perturb(ids, additional_forward_args=(mask,), token_mask=mask)
        >>> bool((result.n_swaps <= 2).all()), bool(result.prediction_kept.all())
        (True, True)
    """

    _token_support = True

    def __init__(
        self, model: Callable[..., Any], attribution: Any, embedding_layer: nn.Module, *,
        word_embeddings: Optional[nn.Embedding] = None, k: int = 3, max_swaps: int = 3, n_neighbours: int = 10,
        candidates_per_step: Optional[int] = 8, measure: Any = "topk", measure_k: Optional[int] = None,
        forbidden_ids: Sequence[int] = (), map_preparation: Any = "ghorbani", **kwargs: Any,
    ) -> None:
        if embedding_layer is None:
            raise ValueError("TokenSwapAttack needs embedding_layer=, the module that embeds the token ids")
        self.k = check_int(k, "k", 1)
        super().__init__(
            model, attribution, measure=measure, measure_k=self.k if measure_k is None else measure_k,
            map_preparation=map_preparation, embedding_layer=embedding_layer, **kwargs,
        )
        self.word_embeddings = _find_word_embeddings(model, embedding_layer, word_embeddings)
        check_submodule(model, self.word_embeddings, "word_embeddings")
        self.max_swaps = check_int(max_swaps, "max_swaps", 1)
        self.n_neighbours = check_int(n_neighbours, "n_neighbours", 1)
        self.candidates_per_step = check_int(candidates_per_step, "candidates_per_step", 1, allow_none=True)
        vocab = self.word_embeddings.num_embeddings
        forbidden = set()
        for t in forbidden_ids:
            if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= int(t) < vocab:
                raise ValueError(f"forbidden_ids must hold token ids in [0, {vocab - 1}], got {t!r}")
            forbidden.add(int(t))
        if self.word_embeddings.padding_idx is not None:
            forbidden.add(int(self.word_embeddings.padding_idx) % vocab)
        self.forbidden_ids = tuple(sorted(forbidden))
        if self.n_neighbours > vocab - 1 - len(self.forbidden_ids):
            raise ValueError(
                f"n_neighbours must be at most {vocab - 1 - len(self.forbidden_ids)} (the vocabulary of {vocab} tokens "
                f"less the token itself and {len(self.forbidden_ids)} forbidden ids), got {self.n_neighbours}"
            )

    def _setup(self, ctx: _Context) -> Dict[str, Tensor]:
        self._check_k(ctx)
        top = topk_mask(ctx.clean_prepared, self.k, mask=ctx.token_mask)
        return {"mask": top.to(ctx.clean_prepared.dtype)}

    def _objective(
        self, prepared: Tensor, maps: Tensors, logits: Optional[Tensor], state: Dict[str, Tensor], ctx: _Context
    ) -> Tensor:
        return (prepared * state["mask"]).reshape(prepared.shape[0], -1).sum(dim=1)

    # ------------------------------------------------------------------ the attack

    def neighbours(self, ids: Tensor) -> Tensor:
        """The ``n_neighbours`` allowed tokens nearest (:math:`\\ell_2` between rows of the
        vocabulary table) to each id, nearest first: ``ids.shape + (n_neighbours,)``. Never the
        id itself nor a forbidden id; ties go to the lower id."""
        w = self.word_embeddings.weight.detach()
        uniq, inverse = torch.unique(ids, return_inverse=True)
        dist = torch.cdist(w[uniq], w)
        dist[:, list(self.forbidden_ids)] = float("inf")
        dist[torch.arange(uniq.shape[0], device=dist.device), uniq] = float("inf")
        order = torch.sort(dist, dim=1, stable=True).indices[:, : self.n_neighbours]
        return order[inverse]

    def _perturb_tokens(self, call: AttackCall) -> Tuple[Tensor, TokenSwapResult]:
        with attack_mode(self.model, self.surrogate):
            tb, view = self._token_view(call.inputs, call.additional_forward_args, call.token_mask)
            ctx = view._context(AttackCall(tb.embeddings, call.target, tb.forward_args, call.generator), call.target)
            ids, mask = tb.ids, ctx.token_mask
            forbidden = torch.tensor(self.forbidden_ids, dtype=ids.dtype, device=ids.device)
            movable = mask & ~torch.isin(ids, forbidden)
            nbrs = self.neighbours(ids)
            cur, swapped = ids.clone(), torch.zeros_like(mask)
            cur_sim, cur_obj = ctx.similarity0.clone(), ctx.objective0.clone()
            active = movable.any(dim=1)
            for _ in range(self.max_swaps):
                if not bool(active.any()):
                    break
                idx = active.nonzero().flatten()
                free = movable & ~swapped
                improved, pos, tok, sim, obj = self._step(tb, view, ctx, cur, idx, nbrs, free, cur_sim, cur_obj)
                rows = idx[improved]
                cur[rows, pos] = tok
                swapped[rows, pos] = True
                cur_sim[rows], cur_obj[rows] = sim, obj
                active[idx[~improved]] = False
                active &= (movable & ~swapped).any(dim=1)
            return cur, self._report(tb, view, ctx, cur, swapped)

    def _step(
        self, tb: TokenBatch, view: MapAttack, ctx: _Context, cur: Tensor, idx: Tensor, nbrs: Tensor, free: Tensor,
        cur_sim: Tensor, cur_obj: Tensor,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One greedy step for the examples ``idx``: where each improved, and the accepted
        swap's position, token, similarity and objective (for the improved ones)."""
        w = self.word_embeddings.weight.detach()
        grad = self._word_gradient(tb, view, ctx, cur, idx)  # B' x T x D
        nb = nbrs[idx]  # B' x T x n
        m, t, n = nb.shape
        est = torch.einsum("btnd,btd->btn", w[nb] - w[cur[idx]][:, :, None, :], grad.to(w.dtype))
        est = est.masked_fill(~free[idx][:, :, None], float("inf")).reshape(m, t * n)
        c = t * n if self.candidates_per_step is None else min(self.candidates_per_step, t * n)
        order = torch.sort(est, dim=1, stable=True).indices[:, :c]  # lowest first-order estimate first
        valid = torch.isfinite(est.gather(1, order))
        pos, tok = order // n, nb.reshape(m, t * n).gather(1, order)
        ex = idx.repeat_interleave(c)  # candidate rows: example index
        cand = cur[ex].clone()
        cand[torch.arange(m * c, device=cur.device), pos.flatten()] = tok.flatten()
        sel = valid.flatten().nonzero().flatten()
        sim = torch.full((m * c,), float("inf"), dtype=cur_sim.dtype, device=cur.device)
        obj = sim.clone()
        if sel.numel():
            s, o, pred = self._score(tb, view, ctx, cand[sel], ex[sel])
            keep = (pred == ctx.target[ex[sel]]) & ~torch.isnan(s)
            sim[sel] = torch.where(keep, s, torch.full_like(s, float("inf")))
            obj[sel] = torch.where(keep, o, torch.full_like(o, float("inf")))
        sim, obj = sim.reshape(m, c), obj.reshape(m, c)
        best = sim.min(dim=1, keepdim=True).values
        obj_tied = torch.where((sim == best) & torch.isfinite(sim), obj, torch.full_like(obj, float("inf")))
        j = obj_tied.argmin(dim=1, keepdim=True)  # the first of the lowest: deterministic
        s_best, o_best = best[:, 0], obj_tied.gather(1, j)[:, 0]
        s_cur, o_cur = cur_sim[idx], cur_obj[idx]
        improved = torch.isfinite(s_best) & ((s_best < s_cur) | ((s_best == s_cur) & (o_best < o_cur)))
        pick = j[:, 0][improved]
        rows = improved.nonzero().flatten()
        return improved, pos[rows, pick], tok[rows, pick], s_best[improved], o_best[improved]

    def _word_gradient(self, tb: TokenBatch, view: MapAttack, ctx: _Context, cur: Tensor, idx: Tensor) -> Tensor:
        """Gradient of the objective with respect to the word-embedding table's output at ``cur[idx]``."""
        args = index_args(tb.args, idx, ctx.batch)
        leaf = []

        def hook(module: nn.Module, inp: Any, out: Tensor) -> Tensor:
            w = out.detach().requires_grad_(True)
            leaf.append(w)
            return w

        handle = self.word_embeddings.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                e = embed_tokens(self.model, self.embedding_layer, cur[idx], args, create_graph=True).embeddings
        finally:
            handle.remove()
        ctx.args = (cur, *tb.args)  # the model's other uses of the ids see the current ones
        g_e = view._gradient_pass(ctx, (e.detach(),), idx)[0][0]
        if not leaf or not e.requires_grad:
            raise ValueError("word_embeddings was not called inside embedding_layer; pass the table embedding_layer uses")
        (g_w,) = torch.autograd.grad(e, leaf[0], g_e, allow_unused=True)
        return torch.zeros_like(leaf[0]) if g_w is None else g_w

    def _evaluate_ids(
        self, tb: TokenBatch, view: MapAttack, ctx: _Context, ids: Tensor, ex: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensors]:
        """Real-model predictions, prepared token maps, objective and raw maps at ``ids``
        (rows of the examples ``ex``)."""
        args = index_args(tb.args, ex, ctx.batch)
        fargs = (ids, *args)
        e = embed_tokens(self.model, self.embedding_layer, ids, args).embeddings
        with torch.no_grad():
            logits = forward(view.model, (e,), fargs)
        pred = torch.where(finite_rows(logits), logits.argmax(dim=1), torch.full_like(logits[:, 0], -1, dtype=torch.long))
        maps = view.adapter.maps((e,), False, ctx.target[ex], fargs, create_graph=False)
        mask = ctx.token_mask[ex]
        with torch.no_grad():
            prepared = view._prepared(maps, mask)
            obj = view._objective(prepared, maps, logits, view._sub(ctx.state, ex), _sub_context(ctx, ex)).detach()
        return pred, prepared, obj, maps

    def _score(
        self, tb: TokenBatch, view: MapAttack, ctx: _Context, ids: Tensor, ex: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        pred, prepared, obj, _ = self._evaluate_ids(tb, view, ctx, ids, ex)
        sim = view._compare(ctx.clean_prepared[ex], prepared, ctx.token_mask[ex])
        return sim, obj, pred

    def _report(self, tb: TokenBatch, view: MapAttack, ctx: _Context, cur: Tensor, swapped: Tensor) -> TokenSwapResult:
        every = torch.arange(ctx.batch, device=cur.device)
        pred, prepared, obj, maps = self._evaluate_ids(tb, view, ctx, cur, every)
        mask = ctx.token_mask
        clean = ctx.clean_prepared
        k = min(self.measure_k, clean.shape[1])  # measure_k: k unless given (the constructor)
        return TokenSwapResult(
            adversarial_ids=cur, n_swaps=swapped.sum(dim=1), swapped=swapped,
            clean_token_maps=token_scores(ctx.clean_maps[0], mask, 0.0),
            adversarial_token_maps=token_scores(maps[0], mask, 0.0),
            similarity=view._compare(clean, prepared, mask), objective=obj,
            topk_intersection=topk_intersection(clean, prepared, k, mask=mask),
            kendall=kendall_tau(clean, prepared, mask=mask),
            labels=ctx.target, predictions=pred, clean_predictions=ctx.pred0, prediction_kept=pred == ctx.target,
        )
