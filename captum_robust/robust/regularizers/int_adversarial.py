r"""Boopathy et al.'s (2020, sec. 5) whole objectives with the adversarial loss, which *replace*
the user's loss: :class:`IntAdv` ("Int with adversarial loss") and :class:`Int2Adv` ("Int2 with
adversarial loss"). The discrepancy, the conventions and the arguments are those of
:class:`~captum_robust.robust.regularizers.Int` (see :mod:`~captum_robust.robust.regularizers.int_family`).

**Int-Adv's inner maximization.** The paper defines Int-Adv only in words; the authors' code
(``train_int(..., adv=True)``) uses one :math:`x'` that maximizes the whole objective
:math:`\mathrm{CE}(f(x'), y) + \gamma\, \tilde{\mathcal D}(x, x')` (``inner="joint"``, the default) --
the same structure as IG-Sum-Norm, "IG-Norm with adversarial loss" in the paper's list of baselines
(sec. 5). ``inner="discrepancy"`` instead takes :math:`x'` from :class:`Int`'s attack (the
discrepancy alone). The literal reading of eq. 8 with Madry's adversarial loss -- two separate
maxima, :math:`\max_\delta \mathrm{CE} + \gamma \max_\delta \tilde{\mathcal D}` -- is
``PGDAdversarialLoss(model)(x, y) + Int(model)(x, y)`` (two attacks) and is not what
:class:`IntAdv` computes. The attack runs the model in eval mode with frozen parameters (the CE
inside it uses the logits of the CAM pass).

**Which pass runs where.** In both objectives the returned :math:`\mathrm{CE}(f(x'), y)` goes
through ``model`` as passed (the DDP wrapper, in the user's train/eval mode, so DDP synchronises
the gradients and BatchNorm sees the adversarial batch as in adversarial training); the map passes
use the unwrapped module in eval mode. ``last_stats`` adds ``"ce_adv"``, the mean
:math:`\mathrm{CE}(f(x'), y)`, to :class:`Int`'s.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from captum_robust._utils.geometry import BoundType
from captum_robust.robust.regularizers._base import EpsType
from captum_robust.robust.regularizers._int_base import _IntTerm

__all__ = ["IntAdv", "Int2Adv"]


class IntAdv(_IntTerm):
    r"""Int-Adv (Boopathy et al. 2020, sec. 5: "Int with adversarial loss"): a whole objective
    that *replaces* the user's loss,

    .. math::

        \frac1B \sum_{b=1}^{B} \Big[ \mathrm{CE}(f(x'_b), y_b)
            + \gamma\, \tilde{\mathcal D}(x_b, x'_b) \Big], \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert \delta \rVert_\infty \le \epsilon}
            \Big[ \mathrm{CE}(f(x_b + \delta), y_b) + \gamma\, \tilde{\mathcal D}(x_b, x_b + \delta) \Big]

    (``inner="joint"``, the default, as the authors' code ``train_int(..., adv=True)``). Why one joint
    maximum, and which pass runs where: :mod:`~captum_robust.robust.regularizers.int_adversarial`.

    Args:
        inner (str): ``"joint"`` (default, the authors' code) or ``"discrepancy"`` (:class:`Int`'s
            attack).

    The other arguments (names and defaults), ``last_adversarial`` and ``last_stats`` (with
    ``"ce_adv"``, the mean :math:`\mathrm{CE}(f(x'), y)`): as in :class:`Int`.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers import IntAdv
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

    def __init__(self, model: nn.Module, layer: Optional[nn.Module] = None, classifier: Optional[nn.Linear] = None, *,
                 interpreter: Any = None, interpreter_kwargs: Optional[Mapping[str, Any]] = None, eps: EpsType = 0.3,
                 gamma: Optional[float] = None, convention: str = "paper", step_size: float = 0.01,
                 n_iterations: int = 40, norm: str = "linf", random_start: Union[bool, str] = True,
                 auto_step: bool = True,
                 eval_mode: bool = True, generator: Optional[torch.Generator] = None, clip_min: BoundType = 0.0,
                 clip_max: BoundType = 1.0, inner: str = "joint") -> None:
        if inner not in ("joint", "discrepancy"):
            raise ValueError(f"inner must be 'joint' (the authors' code) or 'discrepancy' (Int's attack), "
                             f"got {inner!r}")
        super().__init__(model, layer, classifier, interpreter=interpreter, interpreter_kwargs=interpreter_kwargs,
                         eps=eps, gamma=gamma, convention=convention, step_size=step_size, n_iterations=n_iterations,
                         norm=norm, random_start=random_start, auto_step=auto_step, eval_mode=eval_mode,
                         generator=generator, clip_min=clip_min, clip_max=clip_max)
        self._inner = inner

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inner={self._inner!r}"


class Int2Adv(_IntTerm):
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

    Arguments (names and defaults), ``last_adversarial`` and ``last_stats``: as in :class:`Int`.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers import Int2Adv
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> objective = Int2Adv(Small(), eps=0.3, n_iterations=5, generator=torch.Generator().manual_seed(0))
        >>> objective(x, y).backward()              # the whole loss: no CE(x) to add
        >>> s = objective.last_stats
        >>> s["value"] >= s["ce_adv"]               # CE at x' plus a non-negative discrepancy term
        True
    """

    _adversarial_loss = True
    _inner = "pgd"
