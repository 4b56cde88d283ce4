r"""The root class of every attack, and what all attacks share: checking the clean batch,
running the model (frozen, in eval mode), input gradients and progress bars.

Everything is batched: every example keeps its own step size, acceptance flag and best
iterate in ``(B,)`` tensors, and examples are selected with masks or index tensors, never
with a Python loop over the batch. Inputs are handled as tuples of tensors internally
(Captum's convention: the user gives a tensor or a tuple of tensors and gets the same back).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_robust._utils.geometry import Box, Tensors, check_inside_box, detach_all, norm_of
from captum_robust._utils.state import preserved_model_state, warn_train_mode
from captum_robust._utils.validation import TargetType, TensorOrTuple, check_bool, check_finite_outputs
from captum_robust._utils.validation import check_float_inputs, check_forward_args_batch, check_generator
from captum_robust._utils.validation import normal_tensor
from captum_robust._utils.validation import check_model_dtype, check_nonempty_batch, classification_outputs
from captum_robust._utils.validation import format_additional_args, format_inputs, resolve_target

__all__ = ["Attack", "AttackCall"]

# --------------------------------------------------------------------------- tuples and arguments


def unformat(xs: Tensors, is_tuple: bool) -> TensorOrTuple:
    """The inverse of ``format_inputs``: a tuple back to the user's tensor or tuple."""
    return tuple(xs) if is_tuple else xs[0]


def index_args(args: Tuple[Any, ...], idx: Tensor, batch: int) -> Tuple[Any, ...]:
    """Select the examples ``idx`` from batch-first tensors in ``additional_forward_args``."""
    return tuple(a[idx] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch else a for a in args)


def filled(value: Any, like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """A ``(B,)`` tensor holding ``value`` for each of the ``B`` examples of ``like`` (on its
    device, in its dtype unless ``dtype`` is given): per-example step sizes, radii, counts."""
    return torch.full((like.shape[0],), value, dtype=like.dtype if dtype is None else dtype, device=like.device)


def check_args(args: Tuple[Any, ...], batch: int) -> None:
    """Tensor arguments with a batch dimension must have one row per example (or a single row,
    shared by all examples): ``validation.check_forward_args_batch``."""
    check_forward_args_batch(args, batch)


def usable(values: Sequence[Any]) -> Tuple[Any, ...]:
    """``values`` with every tensor created under ``torch.inference_mode()`` replaced by a normal
    copy (an inference tensor can neither require gradients nor be saved for backward outside
    inference mode; cloning it outside inference mode gives an ordinary tensor)."""
    return tuple(normal_tensor(v) for v in values)


def finite_rows(logits: Tensor) -> Tensor:
    """``(B,)`` bool: the examples whose class scores are all finite (an argmax of NaN is
    meaningless, so an iterate with non-finite scores is never accepted nor a success)."""
    return torch.isfinite(logits.reshape(logits.shape[0], -1)).all(dim=1)


@dataclass
class CleanBatch:
    """The checked clean batch of one ``perturb`` call (inputs as a detached tuple)."""

    xs: Tensors
    is_tuple: bool
    args: Tuple[Any, ...]
    bounds: Optional[List[Tuple[Optional[Tensor], Optional[Tensor]]]] = None
    generator: Optional[torch.Generator] = None

    @property
    def batch(self) -> int:
        return int(self.xs[0].shape[0])


def clean_batch(
    inputs: TensorOrTuple, additional_forward_args: Any, box: Optional[Box] = None, generator: Any = None
) -> CleanBatch:
    """Check the inputs (finite floating-point tensors sharing the batch size), the extra
    arguments, and -- with a ``box`` -- that the inputs lie inside it and the generator."""
    is_tuple, xs = format_inputs(inputs)
    check_nonempty_batch(xs, "inputs")
    check_float_inputs(xs, is_tuple, "attacks need gradients")
    xs = detach_all(usable(xs))
    args = usable(format_additional_args(additional_forward_args))
    check_args(args, xs[0].shape[0])
    clean = CleanBatch(xs, is_tuple, args)
    if box is not None:
        clean.bounds = box.resolve(xs)
        check_inside_box(xs, clean.bounds, is_tuple)
        clean.generator = check_generator(generator, xs[0].device)
    return clean


def clean_predictions(
    model: Callable[..., Any], clean: CleanBatch, target: TargetType, default_prediction: bool = True
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The model's logits and predicted classes at the clean batch (no graph), and ``target``
    resolved to a ``(B,)`` class tensor; ``None`` gives the predictions (``default_prediction``)
    or stays ``None``. ``ValueError`` where the logits hold NaN or inf (every result depends on
    the clean prediction)."""
    with torch.no_grad():
        logits = forward(model, clean.xs, clean.args)
    check_finite_outputs(logits, "the model's outputs")
    pred = logits.argmax(dim=1)
    if target is None:
        return logits, pred, pred if default_prediction else None
    return logits, pred, resolve_target(target, clean.batch, logits.shape[1], clean.xs[0].device)


# --------------------------------------------------------------------------- the model


@contextlib.contextmanager
def attack_mode(*models: Any, eval_mode: bool = True, warn: bool = True) -> Iterator[None]:
    """Run the models in eval mode with frozen parameters (``requires_grad=False``); restore
    every mode, ``.grad`` and ``requires_grad`` on exit, also on exceptions.

    Warns when a model in training mode has BatchNorm or Dropout layers (their output would
    depend on the batch or on chance): the attack runs it in eval mode.
    """
    if eval_mode and warn:
        for model in models:
            warn_train_mode(model, "the attack", stacklevel=5)
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
    """The model's ``B x C`` class scores at ``xs`` (checked)."""
    return classification_outputs(model(*xs, *args))


def predict(model: Callable[..., Any], xs: Sequence[Tensor], args: Tuple[Any, ...]) -> Tensor:
    """The model's predicted classes at ``xs`` (no graph); -1 where the class scores are not
    all finite (so such a point never "keeps the class")."""
    with torch.no_grad():
        logits = forward(model, xs, args)
    pred = logits.argmax(dim=1)
    return torch.where(finite_rows(logits), pred, torch.full_like(pred, -1))


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


def progress(total: int, show: bool, desc: str):
    """A tqdm bar (disabled unless ``show``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not show, desc=desc, leave=False)


# --------------------------------------------------------------------------- the root class


@dataclass(frozen=True)
class AttackCall:
    """The arguments of one :meth:`Attack.perturb` call, as the ``_attack`` hook receives them
    (``show_progress`` already checked). ``options`` holds an attack's own extra arguments of
    ``perturb`` (``region`` of ``TargetedAttributionAttack``, ``label`` of ``ISA``)."""

    inputs: TensorOrTuple
    target: TargetType = None
    additional_forward_args: Any = None
    generator: Optional[torch.Generator] = None
    show_progress: bool = False
    options: Dict[str, Any] = field(default_factory=dict)
    token_mask: Any = None


class Attack:
    r"""The root class of the attacks: :meth:`perturb` and its documentation are defined here
    once, and every attack implements the hook ``_attack(call)``, which receives the call's
    arguments as one :class:`AttackCall`.

    An attack is built with the model (and, for the attacks on attribution maps, an
    attribution) and its hyper-parameters, and called with :meth:`perturb` on a batch. Every
    example is attacked on its own terms (its own step size, acceptance flag, best iterate,
    bracket or budget), all examples together. The model runs in eval mode with frozen
    parameters during the attack; its mode, its parameters' ``.grad`` and ``requires_grad``
    and the inputs are left as found, also when an exception escapes.
    """

    @log_usage()
    def perturb(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        generator: Optional[torch.Generator] = None, show_progress: bool = False, token_mask: Any = None,
    ) -> Tuple[TensorOrTuple, Any]:
        r"""Run the attack on a batch.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): clean inputs, batch first, inside the data
                box (``clip_min``, ``clip_max``).
            target (int, list[int], Tensor or None): one class for every example, or one per
                example. For the attacks on attribution maps, the class whose map is attacked
                (``None``: the model's prediction); they keep the model's *prediction* in any
                case. For :class:`~captum_robust.robust.attacks.PGD`, the true labels
                (``None``: the predictions) or, targeted, the classes to reach. For
                :class:`~captum_robust.robust.attacks.AttributionPGD`, passed to the
                objective as a ``(B,)`` tensor (``None`` stays ``None``).
            additional_forward_args (Any, optional): extra model arguments, Captum's
                convention; batch-first tensors among them are selected along with the
                examples.
            generator (torch.Generator, optional): randomness of the random starts and of a
                noisy attribution's gradient passes.
            show_progress (bool): a tqdm bar over the iterations (or restarts).
            token_mask (Tensor, optional): for an attack built with ``embedding_layer=`` (whose
                ``inputs`` are ``B x T`` token ids): ``B x T``, 1 (or True) for the real
                tokens, 0 for padding, e.g. the Hugging Face ``attention_mask``; padding is
                never perturbed, never in a top-k and masked in the measures. Default None:
                every token is real. Refused without ``embedding_layer=``.

        Returns:
            (Tensor or tuple[Tensor, ...], AttackResult): the perturbed inputs, detached, in
            the format of ``inputs`` (each example's best accepted iterate, or its clean input
            where none was accepted), and the per-example results: an
            :class:`~captum_robust.robust.attacks.AttributionAttackResult` for the attacks on
            maps, a :class:`~captum_robust.robust.attacks.PGDResult` for ``PGD``, an
            :class:`~captum_robust.robust.attacks.ObjectiveResult` for ``AttributionPGD``.
            With ``embedding_layer=`` the perturbed tensor is the adversarial *embeddings*
            ``B x T x D`` (the ids are unchanged; ``TokenSwapAttack`` returns ids and a
            :class:`~captum_robust.robust.attacks.TokenSwapResult`).

        Raises:
            ValueError: an empty batch, NaN/inf inputs, inputs on the ``meta`` device, inputs
                outside the box, a target of the wrong length or out of range, a generator on
                another device, a tensor in ``additional_forward_args`` whose rows are neither
                one nor one per example, NaN/inf model outputs at the clean inputs.
            TypeError: non-floating-point inputs, inputs whose dtype differs from the model's
                parameters, a ``show_progress`` that is not a bool.
        """
        check_bool(show_progress, "show_progress")
        call = AttackCall(inputs, target, additional_forward_args, generator, show_progress, token_mask=token_mask)
        return self._dispatch(call)

    def _dispatch(self, call: AttackCall) -> Tuple[TensorOrTuple, Any]:
        """Token ids (an attack built with ``embedding_layer=``) or float inputs."""
        if getattr(self, "embedding_layer", None) is not None:
            return self._perturb_tokens(call)
        if call.token_mask is not None:
            raise ValueError(
                f"token_mask= is for token ids, with an attack built with embedding_layer=; {type(self).__name__} "
                "was built without one (pass embedding_layer= to the constructor, or drop token_mask)"
            )
        return self._perturb(call)

    def _perturb_tokens(self, call: AttackCall) -> Tuple[TensorOrTuple, Any]:
        """The attack on token ids through ``embedding_layer`` (attacks that support it)."""
        raise NotImplementedError

    def _models(self) -> Tuple[Any, ...]:
        """The models the attack runs (for the dtype check): ``model`` and ``surrogate``."""
        return tuple(m for m in (getattr(self, "model", None), getattr(self, "surrogate", None)) if m is not None)

    def _check_dtypes(self, xs: Sequence[Tensor]) -> None:
        """``TypeError`` where floating-point inputs and a model's parameters differ in dtype."""
        for model in self._models():
            check_model_dtype(model, xs, "inputs")

    def _perturb(self, call: AttackCall) -> Tuple[TensorOrTuple, Any]:
        """The checks every attack shares, once, before its ``_attack`` hook: a non-empty batch
        of finite floating-point inputs on a real device, in the dtype of the model's
        parameters, extra arguments with one row per example (or one row), and inputs made
        under ``torch.inference_mode()`` replaced by normal copies."""
        is_tuple, xs = format_inputs(call.inputs)
        batch = check_nonempty_batch(xs, "inputs")
        check_float_inputs(xs, is_tuple, "attacks need gradients")
        self._check_dtypes(xs)
        args = format_additional_args(call.additional_forward_args)
        check_args(args, batch)
        if any(isinstance(v, Tensor) and v.is_inference() for v in (*xs, *args)):
            inputs = tuple(usable(xs)) if is_tuple else usable(xs)[0]
            extra = call.additional_forward_args
            if extra is not None:
                extra = usable(args) if isinstance(extra, tuple) else usable(args)[0]
            call = dataclasses.replace(call, inputs=inputs, additional_forward_args=extra)
        return self._attack(call)

    def _attack(self, call: AttackCall) -> Tuple[TensorOrTuple, Any]:
        """The attack itself: the perturbed inputs in the user's format and the result."""
        raise NotImplementedError

    def _finish(
        self, result_type: Callable[..., Any], x_adv: Tensors, x0: Tensors, is_tuple: bool, **fields: Any
    ) -> Tuple[TensorOrTuple, Any]:
        """The perturbed inputs ``x_adv`` in the user's format and the result of type
        ``result_type`` built from ``fields`` and the size of ``x_adv - x0`` in the attack's ``norm``."""
        result = result_type(norm=norm_of([a - c for a, c in zip(x_adv, x0)], self.norm), **fields)
        return unformat(x_adv, is_tuple), result
