r"""Defensive distillation (Papernot et al. 2016; Zeng et al., supplementary App. A1): a whole
objective that trains a student on a frozen teacher's soft labels at a temperature.

**No** :math:`T^2` **factor.** Hinton et al. multiply the soft-label loss by :math:`T^2` so
that its gradients keep their size when it is *mixed* with a hard-label loss at
:math:`T = 1`; defensive distillation trains on the soft labels alone, and Papernot et al.
(and Zeng et al., who used :math:`T = 100`) do not scale. Multiply the value by ``T ** 2``
yourself to get Hinton's scaling. As in Papernot et al., the student is trained at
temperature :math:`T` and *deployed at* :math:`T = 1` (use its raw logits).

**The teacher** (typically the same architecture trained normally at temperature :math:`T`)
is frozen: its logits are computed without a graph, with the teacher in eval mode, its mode,
``.grad`` and ``requires_grad`` left as found. It is held as a plain attribute (not a
registered submodule: the regularizer's ``parameters()``, ``state_dict()`` and
``train()``/``eval()`` never touch it) and must be a separate network. The student's
forward pass goes through :attr:`model` as given, in its current mode. ``target`` is only
checked and used for ``last_stats["accuracy"]``; there is no perturbation (epsilon is 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.validation import check_finite_outputs, check_model_dtype, check_positive
from captum_robust.robust.regularizers._base import (RobustTerm, check_num_classes, check_teacher, class_scores,
                                                    teacher_logits)

__all__ = ["DistillationLoss"]


class DistillationLoss(RobustTerm):
    r"""Defensive distillation (Papernot et al. 2016; Zeng et al., supplementary App. A1), a
    *whole* objective that replaces the loss: the cross-entropy between the teacher's soft labels
    at temperature :math:`T` and the student's softmax at the same temperature,

    .. math::

        \mathcal L(\theta) = -\frac1B \sum_{b=1}^B \sum_{c=1}^C
            \mathrm{softmax}\big(z^T(x_b) / T\big)_c \,
            \log \mathrm{softmax}\big(z^S_\theta(x_b) / T\big)_c,

    :math:`z^T` the teacher's and :math:`z^S_\theta` the student's logits; the value is the
    *batch mean*. Its gradient with respect to the student's logits is
    :math:`\big(\mathrm{softmax}(z^S/T) - \mathrm{softmax}(z^T/T)\big) / (T B)`.

    Hinton's :math:`T^2` factor is not applied, the student is deployed at :math:`T = 1`, and the
    teacher is frozen and held apart: :mod:`~captum_robust.robust.regularizers.distillation`.

    Args:
        model (nn.Module): the student being trained, possibly wrapped in DDP.
        teacher (nn.Module): the frozen teacher (``B x C`` logits, the student's ``C``); a ``TypeError``
            if not an ``nn.Module``, a ``ValueError`` if it is the student or shares a parameter with it.
        temperature (float): :math:`T > 0`. Default 100 (Zeng et al.; Papernot et al. used values up to 100).

    Example::

        >>> import copy, torch, torch.nn as nn
        >>> from captum_robust.robust.regularizers.distillation import DistillationLoss
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> objective = DistillationLoss(student, teacher, temperature=100.0)
        >>> x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
        >>> loss = objective(x, y)
        >>> loss.backward()
        >>> teacher[1].weight.grad is None, student[1].weight.grad is not None
        (True, True)
        >>> same = DistillationLoss(copy.deepcopy(teacher), teacher, temperature=1.0)
        >>> soft = torch.softmax(teacher(x), 1)     # the minimum is the soft labels' entropy
        >>> bool(torch.isclose(same(x, y), -(soft * soft.log()).sum(1).mean()))
        True
    """

    _probe_rows = 1  # the student's and the teacher's outputs are checked where they are computed

    _second_order = False  # one forward pass of the student: a compiled model runs compiled

    def __init__(self, model: nn.Module, teacher: nn.Module, temperature: float = 100.0) -> None:
        super().__init__(model, 0.0)
        object.__setattr__(self, "_teacher", check_teacher(teacher, model))
        self.temperature = check_positive(temperature, "temperature")

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (not a registered submodule)."""
        return self._teacher  # type: ignore[attr-defined]

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        check_model_dtype(self.teacher, (inputs,), "inputs")
        student = class_scores(self.model(inputs))
        check_num_classes(target, student.shape[1])
        check_finite_outputs(student.detach(), "the model's outputs")
        teacher = teacher_logits(self.teacher, inputs)
        check_finite_outputs(teacher, "the teacher's outputs")
        if teacher.shape != student.shape:
            raise ValueError(
                f"the teacher returns logits of shape {tuple(teacher.shape)} but the student {tuple(student.shape)}; "
                "both must classify into the same classes"
            )
        t = self.temperature
        soft = torch.softmax(teacher.to(student.dtype) / t, dim=1)
        loss = -(soft * F.log_softmax(student / t, dim=1)).sum(dim=1).mean()
        pred = student.detach().argmax(dim=1)
        self.last_adversarial = None
        self.last_stats = {
            "accuracy": float((pred == target).double().mean()),
            "teacher_agreement": float((pred == teacher.argmax(dim=1)).double().mean()),
        }
        return loss

    def extra_repr(self) -> str:
        return (
            f"model={type(self.model).__name__}, teacher={type(self.teacher).__name__}, "
            f"temperature={self.temperature}"
        )
