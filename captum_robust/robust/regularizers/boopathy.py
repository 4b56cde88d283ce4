r"""Interpretability-aware robust training of Boopathy et al. (2020): Int, Int2, Int-one-class,
Int-Adv and Int2-Adv (sec. 4, eq. 7-10; sec. 5 "Training methods").

Every class penalizes the *target-label-free interpretation discrepancy* (eq. 7) between the
maps of a clean input :math:`x` and a perturbed one :math:`x'`,

.. math::

    \tilde{\mathcal D}(x, x') = \tfrac12 \lVert I(x, y) - I(x', y) \rVert_1
        + \tfrac12 \sum_{i \ne y} s_i(x') \, \lVert I(x, i) - I(x', i) \rVert_1,
    \qquad s(x') = \mathrm{softmax}(f(x')),

where :math:`I(x, c)` is a complete interpretation map (CAM of eq. 1 by default), at a
worst-case :math:`x'` in the :math:`\epsilon`-ball (eq. 8):

* :class:`Int` -- :math:`x'` maximizes :math:`\tilde{\mathcal D}` itself (eq. 9);
* :class:`Int2` -- :math:`x'` is the PGD adversarial example of the cross-entropy (eq. 10);
* :class:`IntOneClass` -- only the true-class term, :math:`x'` maximizing it (the paper's
  *Int-one-class* ablation);
* :class:`IntAdv`, :class:`Int2Adv` -- whole objectives with the adversarial loss
  :math:`\mathrm{CE}(f(x'), y)` in place of the clean one (*Int-Adv*, *Int2-Adv*).

The first three are *terms* to add to the user's own loss; the last two *replace* it.

**Two conventions** (``convention=``). ``"paper"`` (default) uses the CAM of eq. 1 (which sums
to the logit minus the bias) and eq. 7 as printed. ``"code"`` reproduces what the authors'
code computed: the raw CAM (``u`` times eq. 1, ``u = H' W'`` the number of CAM cells), no
factors :math:`\tfrac12`, and the other-class weights renormalised over :math:`i \ne y`,
:math:`\tilde s_i = e^{f_i(x')} / \sum_{j \ne y} e^{f_j(x')}`. The paper's strength
:math:`\gamma = 0.01` (sec. 5, App. F) was tuned in the code convention; in the paper
convention the same true-class penalty needs :math:`\gamma = 2u \cdot 0.01` (the other-class
terms then differ by the renormalisation: :math:`s_i` instead of :math:`\tilde s_i =
s_i / (1 - s_y)`). ``gamma=None`` picks that tuned strength for the convention in use.

**Batch mean.** Every term is the mean over the batch. The authors' TensorFlow code also took
the batch mean (``tf.reduce_mean`` of both the cross-entropy and the discrepancy), so
:math:`\gamma` needs no conversion for the batch size.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from captum.attr import Attribution
from torch import Tensor, nn

from captum_robust._utils.validation import check_finite, check_int_range
from captum_robust.attr import CAM, BatchedIntegratedGradients
from captum_robust.robust.attacks import PGD, AttributionPGD
from captum_robust.robust.attacks.base import BoundType, Box, check_bool, check_norm, check_pos_float
from captum_robust.robust.discrepancy import lp_discrepancy, target_free_discrepancy
from captum_robust.robust.regularizers._base import EpsType, RobustTerm, check_num_classes, check_weight

__all__ = ["Int", "Int2", "IntOneClass", "IntAdv", "Int2Adv", "TUNED_GAMMA"]

#: The paper's regularization strength (Boopathy et al. sec. 5 and App. F), in the code convention.
TUNED_GAMMA = 0.01

_CONVENTIONS = ("paper", "code")
_RESERVED_KWARGS = ("inputs", "target", "create_graph", "raw", "upsample", "return_convergence_delta")


def _check_convention(value: Any) -> str:
    if value not in _CONVENTIONS:
        raise ValueError(
            f"convention must be 'paper' (eq. 1 CAM, eq. 7 as printed) or 'code' (the authors' raw CAM and "
            f"code form of eq. 7), got {value!r}"
        )
    return value


class _BoopathyTerm(RobustTerm):
    """Shared machinery: the interpreter, the all-class maps, the discrepancy, the attacks."""

    _one_class = False  # only the true-class term of eq. 7
    _adversarial_loss = False  # whole objective CE(x', y) + term (the -Adv variants)
    _inner = "discrepancy"  # "discrepancy" (eq. 9), "pgd" (eq. 10) or "joint" (CE(x') + gamma * D)

    def __init__(
        self,
        model: nn.Module,
        layer: Optional[nn.Module] = None,
        classifier: Optional[nn.Linear] = None,
        *,
        interpreter: Any = None,
        interpreter_kwargs: Optional[Mapping[str, Any]] = None,
        eps: EpsType = 0.3,
        gamma: Optional[float] = None,
        convention: str = "paper",
        step_size: float = 0.01,
        n_iterations: int = 40,
        norm: str = "linf",
        random_start: bool = True,
        auto_step: bool = True,
        eval_mode: bool = True,
        generator: Optional[torch.Generator] = None,
        clip_min: BoundType = 0.0,
        clip_max: BoundType = 1.0,
    ) -> None:
        super().__init__(model, eps, auto_step=auto_step, eval_mode=eval_mode, generator=generator)
        self.convention = _check_convention(convention)
        self._gamma = None if gamma is None else check_weight(gamma, "gamma")
        self.step_size = check_pos_float(step_size, "step_size")
        self.n_iterations = check_int_range(n_iterations, "n_iterations", 1)
        self.norm = check_norm(norm)
        self.random_start = check_bool(random_start, "random_start")
        Box(clip_min, clip_max)  # validates the data box now rather than at the first call
        self.clip_min = clip_min
        self.clip_max = clip_max
        if interpreter_kwargs is None:
            interpreter_kwargs = {}
        if not isinstance(interpreter_kwargs, Mapping):
            raise TypeError(f"interpreter_kwargs must be a dict or None, got {type(interpreter_kwargs).__name__}")
        bad = [k for k in interpreter_kwargs if k in _RESERVED_KWARGS]
        if bad:
            raise ValueError(
                f"interpreter_kwargs must not set {bad}: the regularizer passes inputs, target, create_graph "
                "(and raw, from convention=) itself"
            )
        self.interpreter_kwargs: Dict[str, Any] = dict(interpreter_kwargs)
        kind, interp = self._resolve_interpreter(layer, classifier, interpreter)
        self._kind = kind
        # never registered as a submodule (a callable interpreter may be an nn.Module)
        object.__setattr__(self, "_interpreter", interp)
        self._cells: Optional[int] = None  # u of the last maps seen (for last_stats["gamma"] at eps = 0)

    # ------------------------------------------------------------------ configuration

    def _resolve_interpreter(self, layer: Any, classifier: Any, interpreter: Any) -> Tuple[str, Any]:
        if interpreter is not None:
            if layer is not None or classifier is not None:
                raise ValueError("pass either interpreter= or layer=/classifier= (to build a CAM), not both")
            if isinstance(interpreter, CAM):
                return "cam", interpreter
            if isinstance(interpreter, BatchedIntegratedGradients):
                return "ig", interpreter
            if isinstance(interpreter, Attribution):
                raise TypeError(
                    f"interpreter must be a CAM, a BatchedIntegratedGradients or a callable inputs -> B x C x ... "
                    f"maps of every class, got {type(interpreter).__name__} (wrap it in such a callable; the bound "
                    "of Proposition 1 needs a complete interpreter)"
                )
            if not callable(interpreter):
                raise TypeError(
                    "interpreter must be a CAM, a BatchedIntegratedGradients or a callable inputs -> B x C x ... "
                    f"maps of every class, got {type(interpreter).__name__}"
                )
            return "callable", interpreter
        module = self.module
        explicit = layer is not None or classifier is not None
        if layer is None:
            layer = getattr(module, "feature_layer", None)
        if classifier is None:
            classifier = getattr(module, "classifier", None)
        how = (
            "pass layer= (the module whose output is the last feature map) and classifier= (the nn.Linear "
            "after global average pooling), or interpreter= (a CAM, a BatchedIntegratedGradients or a callable "
            "inputs -> B x C x ... maps of every class)"
        )
        if not isinstance(layer, nn.Module) or classifier is None:
            missing = [n for n, v in (("layer", layer), ("classifier", classifier)) if not isinstance(v, nn.Module)]
            raise ValueError(
                f"{type(module).__name__} has no CAM-able layer ({' and '.join(missing)} not given and the model has "
                f"no .feature_layer/.classifier): {how}"
            )
        if not explicit and getattr(module, "has_gap_head", True) is False:
            raise ValueError(
                f"{type(module).__name__} has no global-average-pooling -> linear head (has_gap_head=False), so "
                f"CAM does not apply: {how}"
            )
        if not isinstance(classifier, nn.Linear):
            raise TypeError(
                f"classifier must be the nn.Linear that follows global average pooling, got "
                f"{type(classifier).__name__}; or pass interpreter="
            )
        return "cam", CAM(module, layer, classifier)

    @property
    def interpreter(self) -> Any:
        """The interpreter giving the all-class maps (a CAM unless ``interpreter=`` said otherwise)."""
        return self._interpreter  # type: ignore[attr-defined]

    @property
    def gamma(self) -> Optional[float]:
        """The strength as given (None: the paper's tuned strength, see :meth:`resolved_gamma`)."""
        return self._gamma

    def resolved_gamma(self, cells: int = 1) -> float:
        r"""The strength used for maps of ``cells`` cells: the explicit ``gamma``, or for
        ``gamma=None`` the paper's tuned strength, :math:`0.01` in the code convention and
        :math:`2u \cdot 0.01` in the paper convention (``u = cells`` for CAM; ``u = 1`` for the
        other interpreters, whose maps have no raw variant)."""
        if self._gamma is not None:
            return self._gamma
        if self.convention == "code":
            return TUNED_GAMMA
        u = cells if self._kind == "cam" else 1
        return 2.0 * u * TUNED_GAMMA

    def _gamma_stat(self) -> float:
        """The strength for last_stats when no map was computed (NaN while u is unknown)."""
        if self._gamma is not None or self.convention == "code" or self._kind != "cam":
            return self.resolved_gamma()
        return self.resolved_gamma(self._cells) if self._cells is not None else float("nan")

    # ------------------------------------------------------------------ maps and discrepancy

    def _logits(self, x: Tensor, create_graph: bool) -> Tensor:
        with torch.set_grad_enabled(create_graph):
            out = self.module(x)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError(f"the model must return class scores B x C, got {type(out).__name__}")
        return out

    def _all_class_maps(self, x: Tensor, create_graph: bool, need_logits: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """Maps of every class ``B x C x ...`` (and the logits at ``x`` if asked), differentiable
        with ``create_graph``; detached otherwise. Runs the model as it is (callers set the mode)."""
        b = x.shape[0]
        logits: Optional[Tensor] = None
        if self._kind == "cam":
            captured = []

            def grab(module: nn.Module, args: Any, output: Any) -> None:
                captured.append(output)

            handle = self.module.register_forward_hook(grab) if need_logits else None
            try:
                maps = self.interpreter.attribute(
                    x, target=None, raw=self.convention == "code", create_graph=create_graph, **self.interpreter_kwargs
                )
            finally:
                if handle is not None:
                    handle.remove()
            if need_logits:
                # the logits of the CAM's own forward pass (one pass for both); else one more pass
                ok = len(captured) == 1 and isinstance(captured[0], Tensor) and captured[0].shape == maps.shape[:2]
                logits = captured[0] if ok else self._logits(x, create_graph)
            self._cells = math.prod(maps.shape[2:])
        elif self._kind == "ig":
            logits = self._logits(x, create_graph)
            c = logits.shape[1]
            kwargs = dict(self.interpreter_kwargs)
            base = kwargs.get("baselines")
            if isinstance(base, Tensor) and base.dim() == x.dim() and base.shape[0] == b and b > 1:
                kwargs["baselines"] = base.repeat_interleave(c, dim=0)
            rows = x.repeat_interleave(c, dim=0)  # example-major: row b * C + c is (x_b, class c)
            classes = torch.arange(c, device=x.device).repeat(b)
            maps = self.interpreter.attribute(rows, target=classes, create_graph=create_graph, **kwargs)
            maps = maps.reshape(b, c, *x.shape[1:])
        else:
            maps = self.interpreter(x)
            if not isinstance(maps, Tensor) or maps.dim() < 3 or maps.shape[0] != b:
                shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
                raise ValueError(
                    f"interpreter must return the maps of every class, B x C x ... with B = {b}, got {shape}"
                )
            if need_logits:
                logits = self._logits(x, create_graph)
        if not create_graph:
            maps = maps.detach()
            logits = None if logits is None else logits.detach()
        if logits is not None and logits.shape[1] != maps.shape[1]:
            raise ValueError(
                f"the interpreter returned maps of {maps.shape[1]} classes but the model has {logits.shape[1]}"
            )
        return maps, logits

    def _discrepancy(self, maps_x: Tensor, maps_adv: Tensor, logits_adv: Optional[Tensor], y: Tensor) -> Tensor:
        """Per-example discrepancy (B,) in the chosen convention (without gamma)."""
        if self._one_class:
            d = lp_discrepancy(maps_x, maps_adv, p=1, classes=y)
            return d if self.convention == "code" else 0.5 * d
        assert logits_adv is not None
        return target_free_discrepancy(maps_x, maps_adv, logits_adv, y, code_form=self.convention == "code")

    # ------------------------------------------------------------------ the term at a given x'

    def _check_adv(self, inputs: Tensor, inputs_adv: Any) -> Tensor:
        if not isinstance(inputs_adv, Tensor):
            raise TypeError(f"inputs_adv must be a tensor like inputs, got {type(inputs_adv).__name__}")
        if inputs_adv.shape != inputs.shape or inputs_adv.dtype != inputs.dtype or inputs_adv.device != inputs.device:
            raise ValueError(
                f"inputs_adv must match inputs in shape, dtype and device: got {tuple(inputs_adv.shape)}, "
                f"{inputs_adv.dtype}, {inputs_adv.device} for inputs {tuple(inputs.shape)}, {inputs.dtype}, "
                f"{inputs.device}"
            )
        check_finite(inputs_adv, "inputs_adv")
        return inputs_adv

    def _term(self, inputs: Tensor, y: Tensor, inputs_adv: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        with self.attribution_mode():
            maps_x, _ = self._all_class_maps(inputs, create_graph=True, need_logits=False)
            maps_adv, logits_adv = self._all_class_maps(inputs_adv, create_graph=True, need_logits=not self._one_class)
        if logits_adv is not None:
            check_num_classes(y, logits_adv.shape[1])
        else:
            check_num_classes(y, maps_adv.shape[1])
        d = self._discrepancy(maps_x, maps_adv, logits_adv, y)
        gamma = self.resolved_gamma(math.prod(maps_x.shape[2:]))
        value = gamma * d.mean()
        stats = {"discrepancy": float(d.detach().mean()), "gamma": gamma}
        if self._adversarial_loss:
            ce = F.cross_entropy(self.model(inputs_adv), y)  # self.model: the (DDP) forward, the user's mode
            stats["ce_adv"] = float(ce.detach())
            value = ce + value
        return value, stats

    def objective_at(self, inputs: Tensor, target: Any, inputs_adv: Tensor) -> Tensor:
        r"""The differentiable term (or objective) at a given perturbed input, without the attack.

        Args:
            inputs (Tensor): clean inputs ``x``, ``B x ...``.
            target (Tensor): labels ``y``, an integer tensor of shape ``(B,)``.
            inputs_adv (Tensor): the perturbed inputs ``x'``, same shape, dtype and device.

        Returns:
            Tensor: a 0-dim tensor, the batch mean, differentiable with respect to the model's
            parameters through the clean maps, the perturbed maps and the softmax weights
            (the logits at ``x'``); ``0`` exactly (and a zero gradient) when ``x' = x``.
        """
        y = self._check_inputs(inputs, target)
        x_adv = self._check_adv(inputs, inputs_adv)
        value, _ = self._term(inputs, y, x_adv)
        return value

    # ------------------------------------------------------------------ the inner maximization

    def _attack(self, x: Tensor, y: Tensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
        """``x'`` (detached) and the predictions at ``x`` and ``x'``."""
        if self._inner == "pgd":
            attack = PGD(
                self.module,
                eps=eps,
                step_size=self.step_size,
                n_iterations=self.n_iterations,
                norm=self.norm,
                loss="ce",
                random_start=self.random_start,
                clip_min=self.clip_min,
                clip_max=self.clip_max,
            )
            with self.attribution_mode():  # eval mode already, so PGD does not warn about BatchNorm
                x_adv, res = attack.perturb(x, target=y, generator=self.generator)
            return x_adv.detach(), res.clean_predictions, res.predictions

        with self.attribution_mode():
            maps_x, _ = self._all_class_maps(x.detach(), create_graph=False, need_logits=False)
        gamma = self.resolved_gamma(math.prod(maps_x.shape[2:]))
        joint = self._inner == "joint"

        def objective(x_adv: Tensor, x_clean: Tensor, target: Tensor, args: Any) -> Tensor:
            need = joint or not self._one_class
            maps_adv, logits_adv = self._all_class_maps(x_adv, create_graph=True, need_logits=need)
            d = self._discrepancy(maps_x, maps_adv, logits_adv, target)
            if joint:
                assert logits_adv is not None
                return F.cross_entropy(logits_adv, target, reduction="none") + gamma * d
            return d

        attack_d = AttributionPGD(
            self.module,
            objective,
            eps=eps,
            step_size=self.step_size,
            n_iterations=self.n_iterations,
            norm=self.norm,
            random_start=self.random_start,
            eval_mode=self.eval_mode,
            clip_min=self.clip_min,
            clip_max=self.clip_max,
        )
        with self.attribution_mode():
            x_adv, res = attack_d.perturb(x, target=y, generator=self.generator)
        return x_adv.detach(), res.clean_predictions, res.predictions

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        if eps == 0.0:
            # x' = x: every discrepancy is exactly 0 (no attack, no map pass)
            self.last_adversarial = inputs.detach()
            stats = {"discrepancy": 0.0, "gamma": self._gamma_stat(), "attack_changed_prediction": 0.0}
            if self._adversarial_loss:
                ce = F.cross_entropy(self.model(inputs), target)
                self.last_stats = {**stats, "ce_adv": float(ce.detach())}
                return ce
            self.last_stats = stats
            return inputs.new_zeros(())
        x_adv, pred_clean, pred_adv = self._attack(inputs, target, eps)
        self.last_adversarial = x_adv
        value, stats = self._term(inputs, target, x_adv)
        stats["attack_changed_prediction"] = float((pred_adv != pred_clean).float().mean())
        stats["attack_success"] = float((pred_adv != target).float().mean())
        self.last_stats = stats
        return value

    def extra_repr(self) -> str:
        g = "None (tuned)" if self._gamma is None else repr(self._gamma)
        return (
            f"{super().extra_repr()}, gamma={g}, convention={self.convention!r}, interpreter={self._kind}, "
            f"step_size={self.step_size}, n_iterations={self.n_iterations}, norm={self.norm!r}"
        )


_COMMON_ARGS = r"""
    Args:
        model (nn.Module): the model being trained (possibly wrapped in DistributedDataParallel;
            the map and attack passes use the module inside).
        layer (nn.Module, optional): the layer whose output is the last feature map ``A``.
            Default ``model.feature_layer`` (the models of :mod:`captum_robust.models`).
        classifier (nn.Linear, optional): the linear layer fed by the global average pool of
            ``A``. Default ``model.classifier``.
        interpreter (optional): instead of ``layer``/``classifier``, any complete interpreter
            giving the maps of every class: a :class:`~captum_robust.attr.CAM` (built on the
            unwrapped model), a :class:`~captum_robust.attr.BatchedIntegratedGradients` (the
            maps are the IG of every class, computed in one batched call over ``B * C`` rows,
            differentiable with ``create_graph``; note that ReLU networks have zero second
            derivatives almost everywhere, so the parameter gradient of an IG term ignores how
            the ReLU pattern moves -- use a softplus model), or a callable ``inputs -> B x C x
            ...`` all-class maps, differentiable with respect to the inputs and the parameters.
        interpreter_kwargs (dict, optional): extra arguments of the interpreter's
            ``attribute`` (e.g. ``n_steps``, ``method``, ``baselines`` for IG).
        eps (float or EpsilonSchedule): radius of the perturbation ball, >= 0. Default 0.3
            (MNIST; the paper warms it up: ``EpsilonSchedule(0.3, 2000, 8000)``, on CIFAR-10
            ``EpsilonSchedule(8/255, 5000, ...)``). ``eps == 0`` gives ``x' = x`` without an attack.
        gamma (float, optional): the strength :math:`\gamma \ge 0`. Default None: the paper's
            tuned strength, 0.01 in the code convention and :math:`2u \cdot 0.01` in the paper
            convention (``u`` = number of CAM cells; ``u = 1`` for other interpreters). An explicit
            value is used as given.
        convention (str): ``"paper"`` (eq. 1 CAM maps, eq. 7 as printed; default) or ``"code"``
            (raw CAM maps, ``u`` times larger, and the authors' code form of eq. 7). For IG and
            callable interpreters it only switches the form of eq. 7 (their maps have no raw variant).
        step_size (float): attack step, > 0. Default 0.01 (MNIST; CIFAR-10: 2/255).
        n_iterations (int): attack steps, >= 1. Default 40 (MNIST; CIFAR-10: 10).
        norm (str): ``"linf"`` (default, the paper's) or ``"l2"``.
        random_start (bool): start the attack at a uniform random point of the ball (default;
            the discrepancy and its gradient vanish at ``x' = x``).
        auto_step (bool): step an :class:`EpsilonSchedule` after every call in training mode.
        eval_mode (bool): run the map passes and the attack with BatchNorm/Dropout in eval mode
            (default), restoring the mode afterwards. (The classifier PGD of Int2 always runs
            in eval mode.)
        generator (torch.Generator, optional): randomness of the random starts.
        clip_min, clip_max (float, Tensor or None): the data box. Default [0, 1].
"""

_CONVENTION_NOTE = r"""
    **Conventions and** :math:`\gamma`. ``convention="paper"`` uses the CAM of eq. 1 and eq. 7
    as printed; ``"code"`` the raw CAM (``u = H' W'`` times eq. 1) with the authors' code form
    :math:`\lVert \Delta_y \rVert_1 + \sum_{i \ne y} \tilde s_i \lVert \Delta_i \rVert_1`,
    :math:`\tilde s_i = s_i / (1 - s_y)`. The paper's :math:`\gamma = 0.01` was tuned in the code
    convention; ``gamma=None`` uses 0.01 there and :math:`2u \cdot 0.01` in the paper
    convention, which gives exactly the code's true-class penalty
    (:math:`2u \cdot 0.01 \cdot \tfrac12 \lVert \Delta_y^{\text{eq.1}} \rVert_1 = 0.01
    \lVert \Delta_y^{\text{raw}} \rVert_1`); the other-class weights then differ by the
    renormalisation (:math:`s_i` instead of :math:`\tilde s_i`), so the paper form penalizes
    the other classes by the factor :math:`1 - s_y(x')` less.

    **Batch mean.** The value is the mean over the batch; the authors' code also averaged
    (``tf.reduce_mean``), so :math:`\gamma` carries over unchanged.
"""


def _with_args(cls: Any) -> Any:
    cls.__doc__ = cls.__doc__.replace("    <conventions>\n", _CONVENTION_NOTE).replace("    <args>\n", _COMMON_ARGS)
    return cls


@_with_args
class Int(_BoopathyTerm):
    r"""Int (Boopathy et al. 2020, eq. 8 with eq. 9): a term penalizing the worst-case
    target-label-free interpretation discrepancy, to add to the user's cross-entropy.

    .. math::

        \gamma \cdot \frac1B \sum_{b=1}^{B} \tilde{\mathcal D}(x_b, x'_b), \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert \delta \rVert_\infty \le \epsilon,\
            x_b + \delta \in \text{box}} \tilde{\mathcal D}(x_b, x_b + \delta),

    with :math:`\tilde{\mathcal D}` of eq. 7 computed on the all-class CAM maps
    (:func:`~captum_robust.robust.discrepancy.target_free_discrepancy`):
    :math:`\tilde{\mathcal D}(x, x') = \tfrac12 \lVert I(x, y) - I(x', y) \rVert_1 + \tfrac12
    \sum_{i \ne y} s_i(x') \lVert I(x, i) - I(x', i) \rVert_1`, :math:`s = \mathrm{softmax}(f(x'))`.
    ``CE(f(x), y) + Int(x, y)`` is the paper's objective (8) with (9).

    The inner maximization is :class:`~captum_robust.robust.attacks.AttributionPGD` (sign
    steps from a random start, each example keeping its best iterate), with the clean maps as
    constants and the model in eval mode with frozen parameters. The returned term is then
    computed on the detached :math:`x'` with a fresh pass in which the clean maps, the
    perturbed maps and the softmax weights (through the logits at :math:`x'`) are all
    differentiable with respect to the parameters, as in the authors' code; the dependence of
    :math:`x'` on the parameters is ignored (sec. 4). CAM maps are linear in the feature map,
    so no second derivatives through ReLUs are involved.

    Proposition 1 carries over to the term: for a complete interpreter and an :math:`x'`
    classified :math:`y' \ne y`, :math:`\tilde{\mathcal D}(x, x') \ge \tfrac12 s_{y'}(x')
    \big(f_y(x) - f_{y'}(x)\big)` with :math:`s_{y'}(x') \ge 1/C` (paper form; in the code form
    with raw CAM, :math:`\ge u\, \tilde s_{y'}(x') (f_y(x) - f_{y'}(x))`; for two classes the
    code form is exactly :math:`2u\, \mathcal D_{2,\ell_1}` of eq. 4).

    <conventions>

    <args>

    Attributes:
        last_adversarial (Tensor): :math:`x'` of the last call (detached).
        last_stats (dict): ``"value"``, ``"eps"``, ``"discrepancy"`` (mean
            :math:`\tilde{\mathcal D}` at :math:`x'`, without :math:`\gamma`), ``"gamma"`` (the
            strength used; NaN for ``gamma=None`` in the paper convention on an ``eps == 0`` call
            before any map was computed, ``u`` being unknown), ``"attack_changed_prediction"``
            (fraction of :math:`x'` classified differently from :math:`x`), ``"attack_success"``
            (fraction of :math:`x'` not classified as the label; absent when ``eps == 0``);
            the -Adv objectives add ``"ce_adv"``.

    Raises:
        ValueError: ``eps``/``gamma`` < 0, an unknown ``convention``, a model without a CAM-able
            layer and no ``interpreter=``, labels of the wrong length or out of range.
        TypeError: a ``classifier`` that is not an ``nn.Linear``, labels that are not integers.

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers.boopathy import Int
        >>> model = Small()
        >>> reg = Int(model, eps=0.3, n_iterations=5, generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> loss = F.cross_entropy(model(x), y) + reg(x, y)
        >>> loss.backward()
        >>> reg.last_stats["gamma"]            # 2 * u * 0.01, u = 7 * 7 CAM cells
        0.98
        >>> bool((reg.last_adversarial - x).abs().max() <= 0.3 + 1e-6)
        True
        >>> reg.objective_at(x, y, x).item()   # x' = x: no discrepancy
        0.0
    """

    _inner = "discrepancy"


@_with_args
class Int2(_BoopathyTerm):
    r"""Int2 (Boopathy et al. 2020, eq. 8 with eq. 10): the discrepancy term of :class:`Int`
    at the adversarial example of the classifier instead of the worst case of the discrepancy.

    .. math::

        \gamma \cdot \frac1B \sum_{b=1}^{B} \tilde{\mathcal D}(x_b, x'_b), \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert \delta \rVert_\infty \le \epsilon,\
            x_b + \delta \in \text{box}} \mathrm{CE}(f(x_b + \delta), y_b),

    :math:`x'` from :class:`~captum_robust.robust.attacks.PGD` on the cross-entropy (random
    start, each example keeping its best iterate: a misclassified one first, then the highest
    loss), :math:`\tilde{\mathcal D}` of eq. 7 on the all-class CAM maps. Add it to the user's
    cross-entropy; the outer minimization holds :math:`x'` fixed (sec. 4). Everything else --
    the differentiable outer pass, conventions, :math:`\gamma` -- is as in :class:`Int`.

    <conventions>

    <args>

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers.boopathy import Int2
        >>> model = Small()
        >>> reg = Int2(model, eps=0.3, n_iterations=5, generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> loss = F.cross_entropy(model(x), y) + reg(x, y)
        >>> loss.backward()
        >>> sorted(k for k in reg.last_stats)
        ['attack_changed_prediction', 'attack_success', 'discrepancy', 'eps', 'gamma', 'value']
    """

    _inner = "pgd"


@_with_args
class IntOneClass(_BoopathyTerm):
    r"""Int-one-class (Boopathy et al. 2020, sec. 5, the ablation of :class:`Int` without the
    other-class term of eq. 7): only the true-class discrepancy, at its worst case.

    .. math::

        \gamma \cdot \frac1B \sum_{b=1}^{B} \tfrac12 \lVert I(x_b, y_b) - I(x'_b, y_b) \rVert_1,
        \qquad x'_b \approx \operatorname*{arg\,max}_{\lVert \delta \rVert_\infty \le \epsilon}
            \lVert I(x_b, y_b) - I(x_b + \delta, y_b) \rVert_1 .

    **The factor.** In the paper convention the term is the *first term of eq. 7*,
    :math:`\tfrac12 \lVert \Delta_y \rVert_1` (eq. 1 CAM), so that at equal :math:`\gamma`,
    Int-one-class is exactly :class:`Int` with the other-class term dropped -- the ablation the
    paper uses to show that term matters (sec. 4, "Difference from Chen et al."; Fig. 3). The
    1-class measure of eq. 3 (:math:`\mathcal C = \{y\}`) has no :math:`\tfrac12`; pass
    ``gamma`` twice as large to get it. In the code convention the term is what the authors'
    code computed for ``oneclass=True``: :math:`\lVert \Delta_y^{\text{raw}} \rVert_1` on raw
    CAM, no :math:`\tfrac12`. With ``gamma=None`` (0.01 code, :math:`2u \cdot 0.01` paper) both
    conventions give *the same value exactly*: :math:`2u \cdot 0.01 \cdot \tfrac12
    \lVert \Delta_y \rVert_1 = 0.01 \lVert u \Delta_y \rVert_1`.

    The attack (:class:`~captum_robust.robust.attacks.AttributionPGD`) maximizes this
    one-class discrepancy, as the authors' code did; no logits are needed. The paper reports
    Int-one-class far less robust than Int (Table 1, Fig. 3).

    <args>

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers.boopathy import IntOneClass
        >>> model = Small()
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
        >>> paper = IntOneClass(model).objective_at(x, y, x_adv)
        >>> code = IntOneClass(model, convention="code").objective_at(x, y, x_adv)
        >>> bool(torch.isclose(paper, code, rtol=1e-5))   # gamma=None: the same penalty
        True
    """

    _one_class = True
    _inner = "discrepancy"


@_with_args
class IntAdv(_BoopathyTerm):
    r"""Int-Adv (Boopathy et al. 2020, sec. 5: "Int with adversarial loss"): a whole objective
    that *replaces* the user's loss,

    .. math::

        \frac1B \sum_{b=1}^{B} \Big[ \mathrm{CE}(f(x'_b), y_b)
            + \gamma\, \tilde{\mathcal D}(x_b, x'_b) \Big], \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert \delta \rVert_\infty \le \epsilon}
            \Big[ \mathrm{CE}(f(x_b + \delta), y_b) + \gamma\, \tilde{\mathcal D}(x_b, x_b + \delta) \Big]

    (``inner="joint"``, the default). The paper defines Int-Adv only in words; the authors'
    code (``train_int(..., adv=True)``) uses one :math:`x'` that maximizes the whole objective,
    as above -- the same structure as IG-Sum-Norm, "IG-Norm with adversarial loss" in the
    paper's list of baselines (sec. 5). ``inner="discrepancy"`` instead takes :math:`x'` from
    :class:`Int`'s attack (the discrepancy alone). The literal reading of eq. 8 with Madry's
    adversarial loss -- two separate maxima, :math:`\max_\delta \mathrm{CE} + \gamma
    \max_\delta \tilde{\mathcal D}` -- is ``PGDAdversarialLoss(model)(x, y) + Int(model)(x, y)``
    (two attacks) and is not what this class computes.

    The attack runs the model in eval mode with frozen parameters (the CE inside it uses the
    logits of the CAM pass). The returned objective's :math:`\mathrm{CE}(f(x'), y)` goes
    through ``model`` as passed (the DDP wrapper, in the user's train/eval mode, so DDP
    synchronises the gradients and BatchNorm sees the adversarial batch as in adversarial
    training); the map passes use the unwrapped module in eval mode. Conventions and
    :math:`\gamma` as in :class:`Int`.

    <conventions>

    <args>
        inner (str): ``"joint"`` (default, the authors' code) or ``"discrepancy"`` (:class:`Int`'s
            attack).

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers.boopathy import IntAdv
        >>> model = Small()
        >>> objective = IntAdv(model, eps=0.3, n_iterations=5, generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> loss = objective(x, y)             # the whole loss: no CE(x) to add
        >>> loss.backward()
        >>> s = objective.last_stats
        >>> abs(s["value"] - (s["ce_adv"] + s["gamma"] * s["discrepancy"])) < 1e-4
        True
    """

    _adversarial_loss = True

    def __init__(
        self,
        model: nn.Module,
        layer: Optional[nn.Module] = None,
        classifier: Optional[nn.Linear] = None,
        *,
        interpreter: Any = None,
        interpreter_kwargs: Optional[Mapping[str, Any]] = None,
        eps: EpsType = 0.3,
        gamma: Optional[float] = None,
        convention: str = "paper",
        step_size: float = 0.01,
        n_iterations: int = 40,
        norm: str = "linf",
        random_start: bool = True,
        auto_step: bool = True,
        eval_mode: bool = True,
        generator: Optional[torch.Generator] = None,
        clip_min: BoundType = 0.0,
        clip_max: BoundType = 1.0,
        inner: str = "joint",
    ) -> None:
        if inner not in ("joint", "discrepancy"):
            raise ValueError(
                f"inner must be 'joint' (the authors' code) or 'discrepancy' (Int's attack), got {inner!r}"
            )
        super().__init__(
            model,
            layer,
            classifier,
            interpreter=interpreter,
            interpreter_kwargs=interpreter_kwargs,
            eps=eps,
            gamma=gamma,
            convention=convention,
            step_size=step_size,
            n_iterations=n_iterations,
            norm=norm,
            random_start=random_start,
            auto_step=auto_step,
            eval_mode=eval_mode,
            generator=generator,
            clip_min=clip_min,
            clip_max=clip_max,
        )
        self._inner = inner

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inner={self._inner!r}"


@_with_args
class Int2Adv(_BoopathyTerm):
    r"""Int2-Adv (Boopathy et al. 2020, sec. 5: "Int2 with adversarial loss"): a whole
    objective that *replaces* the user's loss,

    .. math::

        \frac1B \sum_{b=1}^{B} \Big[ \mathrm{CE}(f(x'_b), y_b)
            + \gamma\, \tilde{\mathcal D}(x_b, x'_b) \Big], \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert \delta \rVert_\infty \le \epsilon}
            \mathrm{CE}(f(x_b + \delta), y_b),

    i.e. Madry's adversarial loss plus eq. 10's discrepancy at the same adversarial example
    (:class:`~captum_robust.robust.attacks.PGD`, random start), as in the paper and the
    authors' code (``train_int2(..., adv=True)``). The CE goes through ``model`` as passed (the
    DDP wrapper, in the user's mode); the map passes through the unwrapped module in eval mode.
    Conventions and :math:`\gamma` as in :class:`Int`.

    <conventions>

    <args>

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers.boopathy import Int2Adv
        >>> model = Small()
        >>> objective = Int2Adv(model, eps=0.3, n_iterations=5, generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> objective(x, y).backward()
    """

    _adversarial_loss = True
    _inner = "pgd"
