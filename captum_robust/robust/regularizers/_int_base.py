r"""What the interpretability-aware robust training of Boopathy et al. (2020) shares: Int, Int2,
Int-one-class, Int-Adv and Int2-Adv (sec. 4, eq. 7-10; sec. 5 "Training methods"). The classes
live in :mod:`~captum_robust.robust.regularizers.int_family` (terms) and
:mod:`~captum_robust.robust.regularizers.int_adversarial` (whole objectives).

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

The two conventions (``convention=``: the paper's eq. 1 and eq. 7, or the authors' code) and
the paper's tuned strength :math:`\gamma` (:data:`TUNED_GAMMA`) are documented in
:mod:`~captum_robust.robust.regularizers.int_family`. Every term is the mean over the batch, as in the
authors' code.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from captum.attr import Attribution
from torch import Tensor, nn

from captum_robust._utils.geometry import BoundType
from captum_robust._utils.validation import check_kwargs
from captum_robust.attr import CAM, BatchedIntegratedGradients, find_cam_layers
from captum_robust.robust.discrepancy import lp_discrepancy, target_free_discrepancy
from captum_robust.robust.regularizers._base import (EpsType, check_adversarial, check_num_classes, check_weight,
                                                    class_scores)
from captum_robust.robust.regularizers._inner import AttackTerm

__all__ = ["TUNED_GAMMA"]

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


class _IntTerm(AttackTerm):
    """What the Int family shares: the interpreter, the all-class maps, the discrepancy of
    eq. 7, the inner attack and the differentiable term at its point. The public classes
    (:mod:`~captum_robust.robust.regularizers.int_family`,
    :mod:`~captum_robust.robust.regularizers.int_adversarial`) choose the variant with three
    class attributes."""

    _one_class = False  # only the true-class term of eq. 7
    _adversarial_loss = False  # whole objective CE(x', y) + term (the -Adv variants)
    _inner = "discrepancy"  # "discrepancy" (eq. 9), "pgd" (eq. 10) or "joint" (CE(x') + gamma * D)

    def _stationary_start(self) -> bool:
        return self._inner == "discrepancy"  # every discrepancy is 0, with its gradient, at x' = x

    def __init__(self, model: nn.Module, layer: Optional[nn.Module] = None, classifier: Optional[nn.Linear] = None, *,
                 interpreter: Any = None, interpreter_kwargs: Optional[Mapping[str, Any]] = None, eps: EpsType = 0.3,
                 gamma: Optional[float] = None, convention: str = "paper", step_size: float = 0.01,
                 n_iterations: int = 40, norm: str = "linf", random_start: Union[bool, str] = True,
                 auto_step: bool = True,
                 eval_mode: bool = True, generator: Optional[torch.Generator] = None, clip_min: BoundType = 0.0,
                 clip_max: BoundType = 1.0) -> None:
        super().__init__(model, eps, step_size=step_size, n_iterations=n_iterations, norm=norm, clip_min=clip_min,
                         clip_max=clip_max, random_start=random_start, auto_step=auto_step, eval_mode=eval_mode,
                         generator=generator)
        self.convention = _check_convention(convention)
        self._gamma = None if gamma is None else check_weight(gamma, "gamma")
        self.interpreter_kwargs: Dict[str, Any] = check_kwargs(
            interpreter_kwargs, "interpreter_kwargs", _RESERVED_KWARGS,
            "the regularizer passes inputs, target, create_graph (and raw, from convention=) itself")
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
        how = (
            "pass layer= (the module whose output is the last feature map) and classifier= (the nn.Linear "
            "after global average pooling), or interpreter= (a CAM, a BatchedIntegratedGradients or a callable "
            "inputs -> B x C x ... maps of every class)"
        )
        if not explicit and getattr(module, "has_gap_head", True) is False:
            raise ValueError(
                f"{type(module).__name__} has no global-average-pooling -> linear head (has_gap_head=False), so "
                f"CAM does not apply: {how}"
            )
        if classifier is not None and not isinstance(classifier, nn.Linear):
            raise TypeError(
                f"classifier must be the nn.Linear that follows global average pooling, got "
                f"{type(classifier).__name__}; or pass interpreter="
            )
        if layer is not None and not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be an nn.Module (the last feature map's module), got {type(layer).__name__}")
        if not explicit:
            # the library's models name their layers; use them only when both are there and usable
            named_layer = getattr(module, "feature_layer", None)
            named_classifier = getattr(module, "classifier", None)
            if isinstance(named_layer, nn.Module) and isinstance(named_classifier, nn.Linear):
                layer, classifier = named_layer, named_classifier
        # what is still None is found by find_cam_layers on the first call's inputs (_find_layers: one extra
        # forward pass, once); a model without a GAP -> linear head then raises a ValueError
        return "cam", CAM(module, layer, classifier)

    def _find_layers(self, x: Tensor) -> None:
        """Fill in the CAM's omitted layer/classifier with :func:`find_cam_layers` on ``x`` (once)."""
        cam = self.interpreter
        if self._kind != "cam" or (cam.layer is not None and cam.classifier is not None):
            return
        try:
            found = find_cam_layers(self.module, x[:2])
        except ValueError as err:
            raise ValueError(
                f"{err}. For {type(self).__name__}: pass layer= (the module whose output is the last feature map) "
                "and classifier= (the nn.Linear after global average pooling) of a GAP -> linear head, or "
                "interpreter= (a callable inputs -> B x C x ... maps of every class, e.g. all-class Grad-CAM)"
            ) from None
        cam.found_layers = found
        if cam.layer is None:
            cam.layer = found.layer
        cam.classifier = found.classifier

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
            return class_scores(self.module(x))

    def _all_class_maps(self, x: Tensor, create_graph: bool, need_logits: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """Maps of every class ``B x C x ...`` (and the logits at ``x`` if asked), differentiable
        with ``create_graph``; detached otherwise. Runs the model as it is (callers set the mode)."""
        b = x.shape[0]
        logits: Optional[Tensor] = None
        if self._kind == "cam":
            self._find_layers(x)
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
            ce = F.cross_entropy(class_scores(self.model(inputs_adv)), y)  # self.model: the (DDP) forward, the user's mode
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
        inputs, y = self._check_inputs(inputs, target)
        x_adv = check_adversarial(inputs, inputs_adv, strict=True)
        value, _ = self._term(inputs, y, x_adv)
        return value

    # ------------------------------------------------------------------ the inner maximization

    def _attack(self, x: Tensor, y: Tensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
        """``x'`` (detached) and the predictions at ``x`` and ``x'``."""
        if self._inner == "pgd":
            attack = self.pgd(eps, loss="ce")
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

        attack_d = self.attribution_pgd(objective, eps)
        with self.attribution_mode():
            x_adv, res = attack_d.perturb(x, target=y, generator=self.generator)
        return x_adv.detach(), res.clean_predictions, res.predictions

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        if eps == 0.0:
            # x' = x: every discrepancy is exactly 0 (no attack, no map pass)
            self.last_adversarial = inputs.detach()
            stats = {"discrepancy": 0.0, "gamma": self._gamma_stat(), "attack_changed_prediction": 0.0}
            if self._adversarial_loss:
                ce = F.cross_entropy(class_scores(self.model(inputs)), target)
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
