r"""What every regularizer shares: the epsilon schedule, the base class :class:`RobustTerm`
(the model guard, the logging fields) and the argument checks of the regularizers."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from captum_robust._utils.compiled import is_compiled, uncompiled, warn_uncompiled
from captum_robust._utils.state import keep_model_mode, preserved_model_state
from captum_robust._utils.validation import (
    normal_tensor,
    check_bool,
    output_tensor,
    check_finite,
    check_finite_outputs,
    check_int,
    check_model_dtype,
    check_nonempty_batch,
    check_nonnegative,
)
from captum_robust.attr._core.tokens import TokenBatch, embed_tokens
from captum_robust.robust.regularizers._tokens import check_embedding_layer, keep_padding, real_tokens
from captum_robust.robust.regularizers._tokens import refuse_token_arguments

__all__ = [
    "EpsilonSchedule",
    "RobustTerm",
    "unwrap_model",
    "compiled_wrapper",
    "check_weight",
    "check_target",
    "check_num_classes",
    "check_adversarial",
    "check_token_adversarial",
    "class_scores",
    "check_surrogate",
    "check_teacher",
    "teacher_logits",
    "EpsType",
    "fresh",
    "unchanged_buffers",
]


def check_weight(value: Any, name: str) -> float:
    """A finite, non-negative float (a regularization strength such as lambda, gamma, beta):
    :func:`~captum_robust._utils.validation.check_nonnegative`."""
    return check_nonnegative(value, name)


class EpsilonSchedule:
    r"""The perturbation-size warm-up every paper uses: :math:`\epsilon = 0` for the first
    ``warmup_steps`` steps, then a linear ramp to ``final`` over ``ramp_steps`` steps, then
    ``final``:

    .. math::

        \epsilon(t) = \epsilon_\text{final} \cdot
            \mathrm{clip}\Big(\frac{t - t_\text{warmup}}{t_\text{ramp}}, 0, 1\Big)
        \quad (t_\text{ramp} = 0: \text{a jump to } \epsilon_\text{final} \text{ at } t_\text{warmup}).

    Boopathy et al.'s MNIST recipe is ``EpsilonSchedule(0.3, warmup_steps=2000, ramp_steps=8000)``
    (final epsilon reached at step 10000); on CIFAR-10 ``EpsilonSchedule(8/255, 5000, ...)``.

    The schedule keeps a step counter. Pass it as ``eps=`` to any regularizer of
    :mod:`captum_robust.robust.regularizers`; the regularizer then reads :attr:`value` on every
    call and, with ``auto_step=True`` (its default) and while the regularizer is in training
    mode, calls :meth:`step` after each call -- one step per training batch. With
    ``auto_step=False`` call :meth:`step` yourself (e.g. once per epoch: then the step counts
    are in epochs). One schedule may be shared by several regularizers; let only one of them
    step it.

    Args:
        final (float): the final epsilon, >= 0.
        warmup_steps (int): steps at epsilon 0, >= 0. Default 0.
        ramp_steps (int): steps of the linear ramp, >= 0. Default 0.

    Example::

        >>> s = EpsilonSchedule(0.3, warmup_steps=2, ramp_steps=4)
        >>> [round(s(t), 3) for t in range(8)]
        [0.0, 0.0, 0.0, 0.075, 0.15, 0.225, 0.3, 0.3]
        >>> s.value, s.step(), s.step(), s.step(), s.value
        (0.0, None, None, None, 0.075)
    """

    def __init__(self, final: float, warmup_steps: int = 0, ramp_steps: int = 0) -> None:
        self.final = check_weight(final, "final")
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
        self.ramp_steps = check_int(ramp_steps, "ramp_steps", 0)
        self.current_step = 0

    def __call__(self, step: Optional[int] = None) -> float:
        """Epsilon at ``step`` (default: the current step)."""
        t = self.current_step if step is None else check_int(step, "step", 0)
        if t < self.warmup_steps:
            return 0.0
        if self.ramp_steps == 0:
            return self.final
        return self.final * min(1.0, (t - self.warmup_steps) / self.ramp_steps)

    @property
    def value(self) -> float:
        """Epsilon at the current step."""
        return self(self.current_step)

    def step(self, n: int = 1) -> None:
        """Advance the step counter by ``n`` (>= 0)."""
        self.current_step += check_int(n, "n", 0)

    def reset(self) -> None:
        """Back to step 0."""
        self.current_step = 0

    def state_dict(self) -> Dict[str, Any]:
        """The schedule's state, for checkpoints."""
        return {
            "final": self.final,
            "warmup_steps": self.warmup_steps,
            "ramp_steps": self.ramp_steps,
            "current_step": self.current_step,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.__init__(state["final"], state["warmup_steps"], state["ramp_steps"])  # type: ignore[misc]
        self.current_step = check_int(state["current_step"], "current_step", 0)

    def __repr__(self) -> str:
        return (
            f"EpsilonSchedule(final={self.final}, warmup_steps={self.warmup_steps}, "
            f"ramp_steps={self.ramp_steps}, current_step={self.current_step})"
        )


EpsType = Union[float, EpsilonSchedule]


def unwrap_model(model: Any) -> Any:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` and ``torch.compile``
    (``_orig_mod``, :func:`~captum_robust._utils.compiled.uncompiled`), in any order (else the
    model itself).

    Attack and attribution passes run on the inner module: a forward pass through the DDP
    wrapper arms its gradient hooks for one backward pass, which an inner attack (that only
    differentiates with respect to the inputs) never runs; a compiled graph differentiates only
    once (no ``create_graph=True``) and ignores hooks added after compiling.
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif is_compiled(model):
            model = uncompiled(model)
        else:
            return model


def compiled_wrapper(model: Any) -> Any:
    """The outermost ``torch.compile``-d module around ``model``'s inner module (through
    ``DistributedDataParallel`` / ``DataParallel``), or None when nothing is compiled."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if is_compiled(model):
            return model
        if isinstance(model, wrappers):
            model = model.module
        else:
            return None


def fresh(tensor: Tensor) -> Tensor:
    """``tensor``, or a normal copy of it when it was created under ``torch.inference_mode()``
    (an inference tensor cannot enter a graph; its clone outside inference mode can)."""
    return normal_tensor(tensor)


def check_target(target: Any, batch: int, device: torch.device,
                 inputs_shape: Optional[Tuple[int, ...]] = None) -> Tensor:
    """The labels of a training batch: an integer tensor of shape ``(batch,)`` (or a list of ints).
    ``inputs_shape`` (the inputs' shape) makes the length error say what the inputs look like."""
    if isinstance(target, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in target):
        target = torch.tensor(list(target), dtype=torch.long)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be an integer tensor of shape ({batch},) (the labels), got {type(target).__name__}")
    check_finite(target, "target")  # refuses a meta tensor before any copy or .item()
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must be an integer tensor of class indices (e.g. torch.long), got dtype {target.dtype}; "
            "soft or one-hot labels are not supported"
        )
    if target.dim() != 1 or target.shape[0] != batch:
        where = "" if inputs_shape is None else f" of inputs, whose shape is {tuple(inputs_shape)}"
        hint = ""
        if inputs_shape is not None and target.numel() == 1 and batch != 1:
            hint = (
                f"; if inputs is one example without its batch dimension, pass inputs.unsqueeze(0) "
                f"(shape {(1,) + tuple(inputs_shape)})"
            )
        raise ValueError(
            f"target must have shape ({batch},) (one label per example{where}), got {tuple(target.shape)}{hint}"
        )
    return fresh(target).to(device=device, dtype=torch.long)


def check_num_classes(target: Tensor, num_classes: int) -> None:
    """Labels inside the model's output range."""
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        bad = int(target[(target < 0) | (target >= num_classes)][0])
        raise ValueError(f"target holds class index {bad}, outside the model's range [0, {num_classes - 1}]")


def class_scores(out: Any, who: str = "the model") -> Tensor:
    """Check that a model returned ``B x C`` class scores (a tensor, or the ``.logits`` of a
    Hugging Face output) and return them."""
    out = output_tensor(out)
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{who} must return class scores of shape (batch, classes), got {shape}")
    return out


def check_adversarial(inputs: Tensor, inputs_adv: Any, *, strict: bool = False) -> Tensor:
    """``inputs_adv`` of ``objective_at``: a finite floating-point tensor shaped like ``inputs``,
    returned in the dtype and on the device of ``inputs``; ``strict=True`` requires that dtype
    and device already."""
    if not isinstance(inputs_adv, Tensor) or not (strict or inputs_adv.is_floating_point()):
        desc = f"dtype {inputs_adv.dtype}" if isinstance(inputs_adv, Tensor) else type(inputs_adv).__name__
        raise TypeError(f"inputs_adv must be a floating-point tensor shaped like inputs, got {desc}")
    if strict and (inputs_adv.shape, inputs_adv.dtype, inputs_adv.device) != (inputs.shape, inputs.dtype, inputs.device):
        raise ValueError(
            f"inputs_adv must have the shape, dtype and device of inputs ({tuple(inputs.shape)}, {inputs.dtype}, "
            f"{inputs.device}), got ({tuple(inputs_adv.shape)}, {inputs_adv.dtype}, {inputs_adv.device})"
        )
    if inputs_adv.shape != inputs.shape:
        raise ValueError(
            f"inputs_adv must have the shape of inputs {tuple(inputs.shape)}, got {tuple(inputs_adv.shape)}"
        )
    check_finite(inputs_adv, "inputs_adv")
    return fresh(inputs_adv).to(dtype=inputs.dtype, device=inputs.device)


def check_token_adversarial(tokens: TokenBatch, inputs_adv: Any) -> Tensor:
    """``inputs_adv`` of a token model's ``objective_at``/``size_at``: end-point embeddings shaped like
    ``tokens.embeddings`` (:func:`check_adversarial`), with the clean embeddings at the padding positions."""
    e_adv = check_adversarial(tokens.embeddings, inputs_adv)
    return keep_padding(e_adv, tokens.embeddings.detach(), real_tokens(tokens))


@contextlib.contextmanager
def unchanged_buffers(module: Any) -> Iterator[None]:
    """Run the block on copies of ``module``'s buffers (BatchNorm running statistics and counts)
    and put the originals back afterwards, untouched: a pass in training mode inside the block
    updates only the copies. The originals are never written in place, so a graph built inside
    the block (which may hold the copies for its backward pass) stays valid."""
    if not isinstance(module, nn.Module):
        yield
        return
    saved = [(m, name, b) for m in module.modules() for name, b in m._buffers.items() if b is not None]
    for m, name, b in saved:
        m._buffers[name] = b.clone()
    try:
        yield
    finally:
        for m, name, b in saved:
            m._buffers[name] = b


def probe_model(module: nn.Module, inputs: Tensor, target: Tensor, rows: Optional[int] = None) -> None:
    """One forward pass without a graph, in eval mode (buffers untouched), on the first ``rows``
    examples of ``inputs`` (all when None), before any other pass: a clear ``ValueError`` naming
    ``inputs`` when the model cannot run on them (a missing batch dimension, a wrong channel
    count: torch's own error is chained), when it returns no ``B x C`` class scores, when
    ``target`` holds a class outside ``[0, C)``, or (``rows=None``) when the outputs hold NaN or
    inf (:func:`~captum_robust._utils.validation.check_finite_outputs`)."""
    x = inputs if rows is None else inputs[:rows]
    with preserved_model_state(module, train=False), torch.no_grad():
        try:
            out = module(x)
        except (RuntimeError, IndexError) as err:
            if isinstance(err, torch.OutOfMemoryError):
                raise
            raise ValueError(
                f"the model cannot run on inputs of shape {tuple(inputs.shape)} ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); inputs must be a batch B x ... of "
                "the model's input: check the batch dimension (one example: inputs.unsqueeze(0)) and the number "
                "of channels"
            ) from err
    logits = class_scores(out)
    check_num_classes(target, logits.shape[1])
    if rows is None:  # a probe of a few rows leaves the check to the term's own pass over the batch
        check_finite_outputs(logits, "the model's outputs")


def check_surrogate(surrogate: Any) -> Optional[nn.Module]:
    """None or an ``nn.Module`` (the smooth copy whose gradients an inner attack uses)."""
    if surrogate is not None and not isinstance(surrogate, nn.Module):
        raise TypeError(
            "surrogate must be an nn.Module (e.g. softplus_surrogate(model)) or None, "
            f"got {type(surrogate).__name__}"
        )
    if is_compiled(surrogate):  # its gradients are differentiated again: run it uncompiled
        warn_uncompiled(surrogate, "the surrogate")
        surrogate = uncompiled(surrogate)
    return surrogate


def check_teacher(teacher: Any, model: nn.Module) -> nn.Module:
    """A teacher network: an ``nn.Module`` that is not the student and shares none of its parameters."""
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    inner_t, inner_s = unwrap_model(teacher), unwrap_model(model)
    if teacher is model or inner_t is inner_s:
        raise ValueError(
            "teacher is the student model itself; pass a separate, frozen network (e.g. an adversarially "
            "trained model, or copy.deepcopy(model) of a trained one)"
        )

    def storage(p: Tensor) -> int:
        try:
            return p.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
            return 0

    student_ids = {id(p) for p in inner_s.parameters()}
    student_storage = {storage(p) for p in inner_s.parameters()} - {0}
    for name, p in inner_t.named_parameters():
        if id(p) in student_ids or storage(p) in student_storage:
            raise ValueError(
                f"teacher shares the parameter {name!r} with the student; the teacher must be a separate, frozen "
                "network (a teacher sharing weights would be trained through the student)"
            )
    return teacher


def teacher_logits(teacher: nn.Module, inputs: Tensor) -> Tensor:
    """The teacher's logits without a graph, the teacher in eval mode (its mode, ``.grad`` and
    ``requires_grad`` restored afterwards)."""
    with preserved_model_state(teacher, train=False), torch.no_grad():
        out = teacher(inputs)
    return class_scores(out, "the teacher").detach()


class RobustTerm(nn.Module):
    r"""Base class of the regularizers: an ``nn.Module`` whose ``forward(inputs, target)``
    returns a scalar (the batch mean) to add to the user's loss, or to use as the loss.

    It holds (without registering them as submodules, so ``parameters()``, ``state_dict()``
    and ``train()``/``eval()`` of the regularizer never touch the model) the ``model`` and its
    epsilon, a float or an :class:`EpsilonSchedule`. Subclasses implement
    ``_forward(inputs, target, eps) -> scalar`` and record ``last_adversarial`` and
    ``last_stats``.

    The arguments the regularizers share, documented here once (each class lists its own):

    Args:
        model (nn.Module): the classifier being trained (``B x C`` logits), possibly wrapped in
            ``DistributedDataParallel`` (attack and attribution passes use the inner module).
        eps (float or EpsilonSchedule): radius of the perturbation ball, >= 0. ``eps == 0``
            gives ``x' = x`` without an attack.
        auto_step (bool): step an :class:`EpsilonSchedule` after each call in training mode.
        eval_mode (bool): run the attack and attribution passes with BatchNorm/Dropout in eval
            mode, the model's mode restored afterwards (default); False keeps the user's mode.
        generator (torch.Generator, optional): randomness of the attacks' random starts.
        step_size (float): the inner attack's step, > 0 (regularizers that run an attack).
        n_iterations (int): the inner attack's steps, >= 1.
        norm (str): the ball, ``"linf"`` or ``"l2"`` (also ``"Linf"``, ``"L2"``, ``"inf"``, ``2``).
        random_start (bool or str): ``True`` (default): the attacks' rule, never weaker than no
            random start (the first run starts at the clean input, further runs at random points;
            where the objective vanishes with its gradient at the clean input -- IG-Norm, TRADES,
            Int, Int-one-class -- every run starts at a random point); ``"always"``: every run at a
            uniform random point of the ball (Madry et al.; the default before issue 18);
            ``False``: at the clean input. See :mod:`~captum_robust.robust.regularizers._inner`.
        clip_min, clip_max (float, Tensor or None): the data box, checked at construction.
            Default [0, 1]. Ignored with ``embedding_layer=`` (no box in embedding space).
        embedding_layer (nn.Module, optional): for token models (``IGNorm``, ``IGSumNorm``,
            ``InputGradientRegularizer``, ``SaliencyStability``): the module embedding the token
            ids; the call then takes ``B x T`` ids, ``additional_forward_args`` and ``token_mask``
            (see :mod:`~captum_robust.robust.regularizers._tokens`). Default None.

    Attributes:
        last_adversarial (Tensor or None): the perturbed inputs of the last call (detached).
        last_stats (dict): floats of the last call, at least ``"value"`` (the returned scalar)
            and ``"eps"``; attack-based terms add ``"attack_success"`` and term parts.
    """

    #: whether the term differentiates through an input gradient or an attribution map
    #: (``create_graph=True``): then a ``torch.compile``-d model gets one warning at construction
    #: that those passes run on its uncompiled module (:mod:`captum_robust._utils.compiled`)
    _second_order = True

    def __init__(self, model: nn.Module, eps: EpsType = 0.3, *, auto_step: bool = True, eval_mode: bool = True,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        compiled = compiled_wrapper(model)
        if compiled is not None and self._second_order:
            # said once, now: every attribution and attack pass below runs on self.module (uncompiled)
            warn_uncompiled(compiled, type(self).__name__)
        if not isinstance(eps, EpsilonSchedule):
            eps = check_weight(eps, "eps")
        check_bool(auto_step, "auto_step")
        check_bool(eval_mode, "eval_mode")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        # plain attributes, not submodules: the regularizer must not own (or switch the mode of) the model
        object.__setattr__(self, "_model", model)
        self._eps = eps
        self.auto_step = auto_step
        self.eval_mode = eval_mode
        self.generator = generator
        self.last_adversarial: Optional[Tensor] = None
        self.last_stats: Dict[str, float] = {}

    @property
    def model(self) -> nn.Module:
        """The model being trained (as passed, possibly wrapped in DistributedDataParallel)."""
        return self._model  # type: ignore[attr-defined]

    @property
    def module(self) -> nn.Module:
        """The model without a ``DistributedDataParallel`` / ``DataParallel`` wrapper and without
        ``torch.compile`` (its ``_orig_mod``: same parameters), where the attack and attribution
        passes run."""
        return unwrap_model(self.model)

    @property
    def schedule(self) -> Optional[EpsilonSchedule]:
        """The epsilon schedule, or None for a fixed epsilon."""
        return self._eps if isinstance(self._eps, EpsilonSchedule) else None

    @property
    def eps(self) -> float:
        """The epsilon the next call uses (the schedule's current value)."""
        return self._eps.value if isinstance(self._eps, EpsilonSchedule) else self._eps

    @eps.setter
    def eps(self, value: EpsType) -> None:
        self._eps = value if isinstance(value, EpsilonSchedule) else check_weight(value, "eps")

    @contextlib.contextmanager
    def attribution_mode(self) -> Iterator[None]:
        """The module in eval mode (BatchNorm, Dropout) for a differentiable attribution pass,
        restored afterwards; ``eval_mode=False`` keeps the user's mode but runs the pass on copies
        of the buffers (:func:`unchanged_buffers`): BatchNorm uses the batch statistics and its
        running statistics stay as they were. Only the training forward through :attr:`model`
        (the -Adv and adversarial objectives') may update them."""
        if self.eval_mode:
            with preserved_model_state(self.module, train=False):
                yield
        else:
            # keep_model_mode: the attributions inside keep the user's train mode instead of the
            # library's eval-mode policy (batch statistics on purpose; the buffers are protected here)
            with preserved_model_state(self.module), unchanged_buffers(self.module), keep_model_mode():
                yield

    #: rows of the batch the model is probed on before the term runs (None: all of them, which also
    #: checks every output for NaN/inf; terms whose own first pass checks its outputs probe one row)
    _probe_rows: Optional[int] = None

    def _check_inputs(self, inputs: Any, target: Any) -> Tuple[Tensor, Tensor]:
        """``(inputs, labels)`` checked in order: the inputs' type, batch (at least one example and a
        feature dimension), device, finiteness and dtype against the model's, then the labels against
        the inputs' batch, then one probe pass of the model (:func:`probe_model`). Inputs created under
        ``torch.inference_mode()`` come back as a normal copy."""
        if not isinstance(inputs, Tensor):
            raise TypeError(
                f"inputs must be a floating-point tensor (batch first), got {type(inputs).__name__}; "
                "the regularizers take single-tensor inputs"
            )
        if not inputs.is_floating_point():
            raise TypeError(f"inputs must be a floating-point tensor, got dtype {inputs.dtype}")
        b = check_nonempty_batch((inputs,), "inputs")
        if inputs.dim() < 2:
            raise ValueError(
                f"inputs must be a batch B x ... with at least one feature dimension, got shape {tuple(inputs.shape)}"
            )
        check_finite(inputs, "inputs")
        check_model_dtype(self.module, (inputs,), "inputs")
        y = check_target(target, b, inputs.device, tuple(inputs.shape))
        inputs = fresh(inputs)
        probe_model(self.module, inputs, y, self._probe_rows)
        return inputs, y

    #: the module embedding token ids (``embedding_layer=`` of the terms that take token models), or None
    _embedding_layer: Optional[nn.Module] = None

    @property
    def embedding_layer(self) -> Optional[nn.Module]:
        """The module whose output the term works on for token-id inputs (None: float inputs); see
        :mod:`~captum_robust.robust.regularizers._tokens`."""
        return self._embedding_layer

    def _use_embedding_layer(self, embedding_layer: Any, surrogate: Any = None) -> None:
        """Check and keep ``embedding_layer`` (not a registered submodule, like the model)."""
        object.__setattr__(self, "_embedding_layer", check_embedding_layer(self.module, embedding_layer, surrogate))

    def _check_tokens(self, inputs: Any, target: Any, additional_forward_args: Any,
                      token_mask: Any) -> Tuple[TokenBatch, Tensor]:
        """Token ids, model arguments, padding mask and labels checked; the embeddings computed in the
        attribution mode with ``create_graph=True`` (the term reaches the embedding weights); one probe pass
        without a graph checks the class scores (their shape, the labels' range, NaN/inf)."""
        with self.attribution_mode():
            tokens = embed_tokens(self.module, self.embedding_layer, inputs, additional_forward_args, token_mask,
                                  create_graph=True)
            check_finite(tokens.embeddings.detach(), "the embeddings of the token ids")
            y = check_target(target, tokens.ids.shape[0], tokens.ids.device, tuple(tokens.ids.shape))
            with torch.no_grad():
                logits = class_scores(tokens.model(tokens.embeddings.detach(), *tokens.forward_args))
        check_num_classes(y, logits.shape[1])
        check_finite_outputs(logits, "the model's outputs")
        return tokens, y

    def forward(self, inputs: Tensor, target: Tensor, additional_forward_args: Any = None,  # type: ignore[override]
                token_mask: Any = None) -> Tensor:
        """The term (or objective) for a batch: a scalar, the batch mean.

        Args:
            inputs (Tensor): the batch, ``B x ...``, inside the data box; for a term built with
                ``embedding_layer=``, ``B x T`` integer token ids.
            target (Tensor): the labels, an integer tensor of shape ``(B,)``.
            additional_forward_args (Any, optional): the model's other arguments after the ids (e.g. a
                Hugging Face ``attention_mask``); only with ``embedding_layer=``.
            token_mask (Tensor, optional): ``B x T``, 1 (or True) for the real tokens, 0 for padding (an
                ``attention_mask`` works as it is); only with ``embedding_layer=``. None: all tokens real.

        Returns:
            Tensor: a 0-dim tensor, differentiable with respect to the model's parameters.
        """
        eps = self.eps
        if self.embedding_layer is None:
            refuse_token_arguments(additional_forward_args, token_mask)
            inputs, y = self._check_inputs(inputs, target)
            self.last_stats = {}
            value = self._forward(inputs, y, eps)
        else:
            tokens, y = self._check_tokens(inputs, target, additional_forward_args, token_mask)
            self.last_stats = {}
            value = self._forward_tokens(tokens, y, eps)
        self.last_stats = {"value": float(value.detach()), "eps": float(eps), **self.last_stats}
        if self.training and self.auto_step and isinstance(self._eps, EpsilonSchedule):
            self._eps.step()
        return value

    def _forward_tokens(self, tokens: TokenBatch, target: Tensor, eps: float) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"model={type(self.model).__name__}, eps={self._eps!r}"
