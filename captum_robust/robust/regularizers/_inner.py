r"""The inner maximization of the attack-based regularizers: one place holds its settings
(step size, iterations, norm, random start, data box), checks them and builds the attack,
:class:`~captum_robust.robust.attacks.PGD` on a loss or
:class:`~captum_robust.robust.attacks.AttributionPGD` on any per-example objective.

**Random start** (issue 18; the attacks' rule, applied to the inner attacks). ``random_start``
is ``True`` (default), ``"always"`` or ``False``:

* objectives with a useful gradient at :math:`x' = x` (the cross-entropy of
  :class:`PGDAdversarialLoss`, :class:`Int2`, :class:`Int2Adv`, :class:`IntAdv`'s joint objective,
  :class:`IGSumNorm`'s bracket): ``True`` is the attacks' default -- the first run starts at the
  clean input, further runs (``n_restarts``) at uniform random points -- so the default is never
  weaker than the attack without random start (a uniform point of a high-dimensional
  :math:`\ell_2` ball lies almost on its sphere, and the steps cannot undo it). ``"always"``
  starts every run at a random point: Madry et al.'s uniform start, the default before issue 18
  (use it to reproduce their training);
* objectives that are zero with a zero gradient at :math:`x' = x` (:class:`IGNorm`'s
  :math:`\lVert\mathrm{IG}\rVert_1`, :class:`TRADESLoss`' KL, :class:`Int`'s and
  :class:`IntOneClass`' discrepancies): a start at the clean input never moves, so ``True``
  means ``"always"``. That is never weaker than no random start either: without one the attack
  returns :math:`x' = x` and the term is 0, the smallest value a non-negative objective takes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, Optional

import torch
from torch import Tensor, nn

from captum_robust._utils.geometry import BoundType, Box, check_norm
from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import check_int, check_positive
from captum_robust.robust.attacks import PGD, AttributionPGD
from captum_robust.robust.attacks._loop import check_random_start
from captum_robust.robust.regularizers._base import EpsType, RobustTerm

__all__ = ["AttackTerm", "attack_state"]


@contextlib.contextmanager
def attack_state(module: nn.Module, eval_mode: bool) -> Iterator[None]:
    """The model during an inner attack: frozen parameters and eval mode (``eval_mode=True``),
    or its own mode with every buffer (BatchNorm running statistics) restored afterwards, so
    the attack's forward passes leave no trace; mode, ``.grad`` and ``requires_grad`` restored
    on exit, also on exceptions."""
    with preserved_model_state(module, train=False if eval_mode else None):
        saved = [] if eval_mode else [(b, b.detach().clone()) for b in module.buffers()]
        for p in module.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            with torch.no_grad():
                for b, value in saved:
                    b.copy_(value)


class AttackTerm(RobustTerm):
    r"""A :class:`~captum_robust.robust.regularizers.RobustTerm` whose value needs a worst-case
    point :math:`x'` of the :math:`\epsilon`-ball: it checks and holds the inner attack's
    settings (plain attributes, read at every call) and builds the attack from them. The
    arguments (``step_size``, ``n_iterations``, ``norm``, ``random_start``, ``clip_min``,
    ``clip_max`` and the common ones) are documented on
    :class:`~captum_robust.robust.regularizers.RobustTerm`.
    """

    def __init__(self, model: nn.Module, eps: EpsType, *, step_size: float, n_iterations: int, norm: str,
                 clip_min: BoundType, clip_max: BoundType, random_start: Any = True, auto_step: bool = True,
                 eval_mode: bool = True, generator: Optional[torch.Generator] = None) -> None:
        super().__init__(model, eps, auto_step=auto_step, eval_mode=eval_mode, generator=generator)
        self.step_size = check_positive(step_size, "step_size")
        self.n_iterations = check_int(n_iterations, "n_iterations", 1)
        self.norm = check_norm(norm)
        self.random_start = check_random_start(random_start)
        Box(clip_min, clip_max)  # validates the data box now rather than at the first call
        self.clip_min = clip_min
        self.clip_max = clip_max

    def _stationary_start(self) -> bool:
        """True where the attack objective and its gradient vanish at ``x' = x`` (then a random
        start is required: ``random_start=True`` means ``"always"``)."""
        return False

    def inner_random_start(self) -> Any:
        """The ``random_start`` the inner attack gets (see the module docstring)."""
        if self.random_start is True and self._stationary_start():
            return "always"
        return self.random_start

    def _attack_settings(self, box: bool = True) -> Dict[str, Any]:
        """The keyword arguments every inner attack takes from these settings (``box=False``: no
        data box, for perturbations of token embeddings)."""
        return dict(norm=self.norm, random_start=self.inner_random_start(), clip_min=self.clip_min if box else None,
                    clip_max=self.clip_max if box else None)

    def pgd(self, eps: float, model: Any = None, **kwargs: Any) -> PGD:
        """:class:`~captum_robust.robust.attacks.PGD` with these settings on ``model`` (default:
        the unwrapped module); ``kwargs`` add PGD's other arguments (``loss``, ``n_restarts``...)."""
        model = self.module if model is None else model
        return PGD(model, eps, self.step_size, self.n_iterations, **self._attack_settings(), **kwargs)

    def attribution_pgd(self, objective: Callable[..., Tensor], eps: float, model: Any = None, box: bool = True,
                        **kwargs: Any) -> AttributionPGD:
        """:class:`~captum_robust.robust.attacks.AttributionPGD` with these settings on ``model``
        (default: the unwrapped module), ascending ``objective(x_adv, x, target, args) -> (B,)``, in the
        regularizer's ``eval_mode``; ``box=False`` drops the data box (token embeddings); ``kwargs`` add
        its other arguments (``keep_best``...)."""
        model = self.module if model is None else model
        return AttributionPGD(model, objective, eps, self.step_size, self.n_iterations, eval_mode=self.eval_mode,
                              **self._attack_settings(box), **kwargs)
