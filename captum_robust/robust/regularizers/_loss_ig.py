r"""What IG-Norm and IG-Sum-Norm share (:mod:`captum_robust.robust.regularizers.ig_norm` explains
the method): the quadrature checks, the IG of the loss and its size, and the inner attack, on float
inputs and on token embeddings."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.validation import check_choice, check_int, check_internal_batch_size, classification_outputs
from captum_robust.attr import BatchedIntegratedGradients
from captum_robust.attr._core._quadrature import SUPPORTED_METHODS
from captum_robust.attr._core.tokens import TokenBatch
from captum_robust.robust.attacks.base import attack_mode
from captum_robust.robust.regularizers._base import (
    EpsType,
    check_adversarial,
    check_num_classes,
    check_surrogate,
    check_token_adversarial,
    unchanged_buffers,
)
from captum_robust.robust.regularizers._inner import AttackTerm
from captum_robust.robust.regularizers._tokens import MaskedTokenModel, keep_padding, per_row
from captum_robust.robust.regularizers._tokens import radius_scale, real_tokens, refuse_token_arguments

__all__ = ["SIZES", "LossIGTerm"]

SIZES: Tuple[str, ...] = ("l1", "sum")


def _check_quadrature(method: Any, n_steps: Any, method_name: str, steps_name: str) -> Tuple[str, int]:
    """A quadrature rule of :class:`~captum_robust.attr.BatchedIntegratedGradients` and its
    number of path points (the trapezoid rule needs two)."""
    method = check_choice(method, method_name, SUPPORTED_METHODS)
    return method, check_int(n_steps, steps_name, 2 if method == "riemann_trapezoid" else 1)


# --------------------------------------------------------------------------- shared machinery


class LossIGTerm(AttackTerm):
    """What IG-Norm and IG-Sum-Norm share: the IG of the loss, its size, the inner attack."""

    def __init__(self, model: nn.Module, eps: EpsType, *, n_steps: int, method: str, attack_n_steps: int,
                 attack_method: str, n_iterations: int, step_size: float, norm: str, n_restarts: int, size: str,
                 internal_batch_size: Union[None, int, str], surrogate: Optional[nn.Module], auto_step: bool,
                 eval_mode: bool, generator: Optional[torch.Generator], clip_min: Any, clip_max: Any,
                 random_start: Union[bool, str] = True) -> None:
        super().__init__(model, eps, step_size=step_size, n_iterations=n_iterations, norm=norm, clip_min=clip_min,
                         clip_max=clip_max, random_start=random_start, auto_step=auto_step, eval_mode=eval_mode,
                         generator=generator)
        self.method, self.n_steps = _check_quadrature(method, n_steps, "method", "n_steps")
        self.attack_method, self.attack_n_steps = _check_quadrature(
            attack_method, attack_n_steps, "attack_method", "attack_n_steps"
        )
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
        if not isinstance(size, str) or size not in SIZES:
            raise ValueError(f"size must be one of {SIZES} ('l1': Chen's ||.||_1, 'sum': Prop. 1), got {size!r}")
        self.size = size
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        # not a submodule: the regularizer owns neither the model nor its smooth copy
        object.__setattr__(self, "_surrogate", check_surrogate(surrogate))

    @property
    def surrogate(self) -> Optional[nn.Module]:
        """The smooth copy whose gradients the inner attack uses (None: the model itself)."""
        return self._surrogate  # type: ignore[attr-defined]

    # ----------------------------------------------------------------- IG of the loss

    def _loss_ig(
        self, model: Callable[..., Any], inputs: Tensor, target: Tensor, inputs_adv: Tensor, n_steps: int, method: str,
        forward_args: Tuple[Any, ...] = (),
    ) -> Tensor:
        r""":math:`\mathrm{IG}^{\ell_y}(x, x')` (differentiable: ``create_graph=True``), the model called
        as ``model(r, *forward_args)`` (token models: the embedding-replaced model and its ids).

        Every evaluation of the model runs inside :meth:`attribution_mode`, also the recomputation of
        a chunk (``internal_batch_size``) in the backward pass, which happens after this call has
        returned, when the model is back in the user's mode: otherwise Dropout would draw new masks
        and BatchNorm use (and update) batch statistics there, and the parameter gradient would not
        be that of the value."""
        checked = []

        def loss(r: Tensor, *rest: Any) -> Tensor:
            *args, t = rest
            with self.attribution_mode():
                logits = classification_outputs(model(r, *args))
            if not checked:  # once per call (one device sync), not per chunk
                check_num_classes(t, logits.shape[1])
                checked.append(True)
            return F.cross_entropy(logits, t, reduction="none")

        ig = BatchedIntegratedGradients(loss)
        return ig.attribute(
            inputs_adv,
            baselines=inputs,
            target=None,
            additional_forward_args=(*forward_args, target),
            n_steps=n_steps,
            method=method,
            internal_batch_size=self.internal_batch_size,
            create_graph=True,
        )

    def _size(self, ig: Tensor) -> Tensor:
        flat = ig.flatten(1)
        return flat.abs().sum(dim=1) if self.size == "l1" else flat.sum(dim=1)

    def size_at(self, inputs: Tensor, target: Any, inputs_adv: Tensor, additional_forward_args: Any = None,
                token_mask: Any = None) -> Tensor:
        r"""Per-example :math:`s(\mathrm{IG}^{\ell_y}(x, x'))` with the outer quadrature
        (``n_steps``, ``method``), through the model (not the surrogate) in the attribution
        mode; differentiable with respect to the parameters (and to the inputs).

        Args:
            inputs (Tensor): the clean batch :math:`x`, ``B x ...``.
            target (Tensor): labels, integer ``(B,)``.
            inputs_adv (Tensor): the end points :math:`x'`, shaped like ``inputs``; with
                ``embedding_layer=``, the end-point *embeddings* ``B x T x D`` (their padding
                positions are ignored: the clean embeddings are used there).
            additional_forward_args, token_mask: as in :meth:`forward` (token models only).

        Returns:
            Tensor: shape ``(B,)``.
        """
        if self.embedding_layer is not None:
            tokens, y = self._check_tokens(inputs, target, additional_forward_args, token_mask)
            return self._token_size_at(tokens, y, check_token_adversarial(tokens, inputs_adv))
        refuse_token_arguments(additional_forward_args, token_mask)
        inputs, y = self._check_inputs(inputs, target)
        inputs_adv = check_adversarial(inputs, inputs_adv, strict=True)
        return self._size_at(inputs, y, inputs_adv)

    def _size_at(self, inputs: Tensor, y: Tensor, inputs_adv: Tensor) -> Tensor:
        with self.attribution_mode():
            ig = self._loss_ig(self.module, inputs, y, inputs_adv, self.n_steps, self.method)
        return self._size(ig)

    def _token_size_at(self, tokens: TokenBatch, y: Tensor, embeddings_adv: Tensor) -> Tensor:
        r""":meth:`_size_at` on token embeddings: the path from :math:`e` to :math:`e + \delta`,
        :math:`\delta = e' - e` detached, so the term reaches the embedding weights through :math:`e`.

        Computed as the IG of :math:`r \mapsto \ell(e + r)` from :math:`0` to :math:`\delta` (the same
        numbers) with :math:`e` passed as a model argument: only the model arguments, not the path's two
        end points, then carry the graph to the embedding weights, which keeps the parameter gradient exact
        under ``internal_batch_size`` chunking (end points that both require grad do not)."""
        e = tokens.embeddings
        delta = (embeddings_adv - e).detach()
        model = tokens.model

        def shifted(r: Tensor, e_rows: Tensor, *args: Any) -> Any:
            return model(e_rows + r, *args)

        with self.attribution_mode():
            ig = self._loss_ig(shifted, torch.zeros_like(delta), y, delta, self.n_steps, self.method,
                               (e, *tokens.forward_args))
        return self._size(ig)

    @staticmethod
    def _attack_point(x_adv: Tensor, x: Tensor, args: Any, tokens: bool) -> Tuple[Tensor, Tensor, Tuple[Any, ...]]:
        """``(x', x, model arguments)`` of an attack objective call: for token embeddings the
        attack's coordinates ``e' / scale`` are mapped back, padding kept (see :meth:`_attack`)."""
        if not tokens:
            return x_adv, x, ()
        e0, mask, scale, *rest = args
        return keep_padding(x_adv * per_row(scale, x_adv), e0, mask), e0, tuple(rest)

    # ----------------------------------------------------------------- inner attack

    #: token models: ``eps`` and ``step_size`` relative to the embeddings' size (an option of
    #: :class:`IGNorm` and :class:`IGSumNorm`)
    relative_eps = False

    def _attack_objective(self, model: nn.Module, tokens: bool = False) -> Callable[..., Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    @contextlib.contextmanager
    def _surrogate_mode(self) -> Iterator[None]:
        if self.surrogate is None:
            yield
            return
        with attack_mode(self.surrogate, eval_mode=self.eval_mode, warn=False):
            yield

    def _attack(self, inputs: Tensor, y: Tensor, eps: float,
                tokens: Optional[TokenBatch] = None) -> Tuple[Tensor, Tensor]:
        """Best of ``n_restarts`` AttributionPGD runs per example: ``(x', objective)``; with ``tokens``
        on their embeddings (``inputs``), without a data box, the padding kept, in the coordinates
        ``e / scale`` (``scale``: ones, or :func:`._tokens.radius_scale` with ``relative_eps``)."""
        if tokens is None:
            model, args, mask = self.surrogate if self.surrogate is not None else self.module, None, None
            attacker = self.attribution_pgd(self._attack_objective(model), eps, keep_best=True)
        else:
            model, mask = tokens.model, real_tokens(tokens)
            scale = radius_scale(inputs, mask, self.norm) if self.relative_eps else inputs.new_ones(inputs.shape[0])
            args = (inputs, mask, scale, *tokens.forward_args)
            inputs = inputs / per_row(scale, inputs)
            attacker = self.attribution_pgd(self._attack_objective(model, tokens=True), eps,
                                            model=MaskedTokenModel(model), box=False, keep_best=True)
        best_x: Optional[Tensor] = None
        best_value: Optional[Tensor] = None
        # eval_mode=False: the attack runs in the user's mode on copies of the buffers (BatchNorm's
        # running statistics untouched, as with eval_mode=True)
        with self._surrogate_mode(), unchanged_buffers(model):
            for _ in range(self.n_restarts):
                x_adv, result = attacker.perturb(inputs, target=y, additional_forward_args=args,
                                                 generator=self.generator)
                value = result.objective
                if best_x is None or best_value is None:
                    best_x, best_value = x_adv, value
                    continue
                better = value > best_value
                best_x = torch.where(per_row(better, x_adv), x_adv, best_x)
                best_value = torch.where(better, value, best_value)
        assert best_x is not None and best_value is not None
        if args is not None:  # back to embeddings
            e0, mask, scale = args[:3]
            best_x = keep_padding(best_x * per_row(scale, best_x), e0, mask)
        return best_x.detach(), best_value.detach()
