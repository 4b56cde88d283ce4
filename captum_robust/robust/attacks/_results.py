r"""The result dataclasses of the attacks: one ``(B,)`` tensor per field and example."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, List

import torch
from torch import Tensor

__all__ = ["AttackResult", "AttributionAttackResult", "ObjectiveResult", "PGDResult", "ISAResult", "TokenSwapResult"]


def _describe(t: Tensor) -> str:
    if t.dtype == torch.bool:
        return f"{int(t.sum())}/{t.numel()} True"
    if not t.is_floating_point():
        return f"ints in [{int(t.min())}, {int(t.max())}]" if t.numel() else "empty"
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return "no finite values"
    return f"mean {float(finite.mean()):.4g}"


class _PerExample:
    """``len``, ``as_dict`` and a short ``repr`` of a result dataclass whose fields are tensors
    with one row per example (the first field's rows are the examples)."""

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])

    def as_dict(self) -> Dict[str, List[Any]]:
        """The fields as JSON-serializable lists (one entry per example)."""
        return {f.name: getattr(self, f.name).detach().cpu().tolist() for f in fields(self)}

    def __repr__(self) -> str:
        parts = ", ".join(f"{f.name}=<{_describe(getattr(self, f.name))}>" for f in fields(self))
        return f"{type(self).__name__}(n={len(self)}, {parts})"


@dataclass(repr=False)
class AttackResult(_PerExample):
    """Per-example outcome of an attack: every field is a ``(B,)`` tensor on the inputs' device.

    Attributes:
        accepted (Tensor): bool. For attacks on attributions: an iterate other than the clean
            input was accepted (the prediction kept) and improved the attack's selection
            score; the returned input is the clean input where this is False (read it as
            ``prediction_kept``). For :class:`PGD` and :class:`ISA`: the attack succeeded
            (misclassified, or the target reached; read it as ``succeeded``). The naming rule
            is in the attacks package's docstring.
        norm (Tensor): the size of the returned perturbation in the attack's norm
            (:math:`\\ell_\\infty` or :math:`\\ell_2`, over all input tensors of an example).
        steps (Tensor): int64, gradient steps computed for the example in total.
        best_step (Tensor): int64, the step that produced the returned input (0: the start).
        predictions (Tensor): int64, the model's class at the returned input.
        clean_predictions (Tensor): int64, the model's class at the clean input.
    """

    accepted: Tensor
    norm: Tensor
    steps: Tensor
    best_step: Tensor
    predictions: Tensor
    clean_predictions: Tensor


@dataclass(repr=False)
class AttributionAttackResult(AttackResult):
    """Result of an attack on attribution maps (keeps the prediction): the fields of
    :class:`AttackResult` and two more.

    Attributes:
        similarity (Tensor): the attack's ``measure`` (e.g. top-k intersection or Kendall's
            tau) between the maps of the clean and the returned input, computed on the real
            model; lower means a stronger attack. It equals
            ``attack.similarity(inputs, x_adv, target)``.
        objective (Tensor): the attack's objective at the returned input on the real model's
            maps (the quantity the attack decreases, e.g. the map mass on the clean top-k).
    """

    similarity: Tensor
    objective: Tensor

    @property
    def prediction_kept(self) -> Tensor:
        """Alias of ``accepted`` (the naming rule of the attacks package): an iterate that kept
        the model's prediction and improved on the clean input was found and is returned."""
        return self.accepted


@dataclass(repr=False)
class ObjectiveResult(AttackResult):
    """Result of :class:`AttributionPGD`: ``objective`` is the (maximized) objective at the
    returned input; ``accepted`` is True where the returned input is a perturbed point (not the
    clean input) that, with ``keep_prediction``, kept the prediction."""

    objective: Tensor

    @property
    def prediction_kept(self) -> Tensor:
        """Alias of ``accepted``: a perturbed point is returned (that kept the prediction, with
        ``keep_prediction``)."""
        return self.accepted


@dataclass(repr=False)
class PGDResult(AttackResult):
    """Result of :class:`PGD`: ``accepted`` is the success flag (also :attr:`success`) and
    ``loss`` the attack loss at the returned input."""

    loss: Tensor

    @property
    def success(self) -> Tensor:
        """Alias of ``accepted``: the returned input is misclassified (or has the target class)."""
        return self.accepted

    @property
    def succeeded(self) -> Tensor:
        """Alias of ``accepted`` (the naming rule of the attacks package): the attack succeeded."""
        return self.accepted


@dataclass(repr=False)
class ISAResult(AttackResult):
    """Result of :class:`ISA` (``accepted`` = success, also :attr:`success`): the fields of
    :class:`AttackResult` and these.

    Attributes:
        eps_star (Tensor): the smallest successful perturbation size found by the first
            bisection and the checks below it (``inf`` where the attack fails even at ``eps_max``).
        eps (Tensor): the size the returned input was searched in (``eps_multiple * eps_star``).
        weight (Tensor): the largest discrepancy weight :math:`\\gamma = 1/\\lambda` with a
            successful attack found by the second bisection (0 if only the pure misclassification
            attack succeeded).
        discrepancy (Tensor): :math:`\\mathcal{D}_{2,\\ell_1}` (Boopathy eq. 4) between the clean
            and the returned input's maps of the two classes (NaN where the attack failed).
        nds (Tensor): the normalized discrepancy score of the same two maps (Boopathy App. B).
        non_monotone (Tensor): bool, True where a size *below* the first bisection's answer also
            succeeded (``n_monotone_checks``): success is not monotone in :math:`\\epsilon` for
            that example, so the bisection's answer was not the smallest; ``eps_star`` is then
            the smallest successful size found, which may still not be the smallest. False
            where no checked size succeeded (or the attack failed).
    """

    eps_star: Tensor
    eps: Tensor
    weight: Tensor
    discrepancy: Tensor
    nds: Tensor
    non_monotone: Tensor

    @property
    def success(self) -> Tensor:
        """Alias of ``accepted``."""
        return self.accepted

    @property
    def succeeded(self) -> Tensor:
        """Alias of ``accepted`` (the naming rule of the attacks package): the target class was
        reached with margin ``tau``."""
        return self.accepted


@dataclass(repr=False)
class TokenSwapResult(_PerExample):
    """Result of :class:`TokenSwapAttack` (one row per example, on the ids' device).

    Attributes:
        adversarial_ids (Tensor): ``B x T`` int64, the returned token ids (the clean ids where
            no swap was accepted).
        n_swaps (Tensor): ``(B,)`` int64, the number of positions swapped.
        swapped (Tensor): ``B x T`` bool, the swapped positions.
        clean_token_maps (Tensor): ``B x T`` token maps (the attribution summed over the
            embedding dimension, padding 0) at the clean ids.
        adversarial_token_maps (Tensor): ``B x T`` the same at the returned ids.
        similarity (Tensor): ``(B,)`` the attack's ``measure`` between the prepared token maps of
            the clean and the returned ids (padding masked); lower is a stronger attack.
        objective (Tensor): ``(B,)`` the attack's objective at the returned ids (the prepared
            map's mass on the clean top-``k`` tokens).
        topk_intersection (Tensor): ``(B,)`` top-``measure_k`` intersection of the prepared token
            maps (padding masked).
        kendall (Tensor): ``(B,)`` Kendall's tau-b of the prepared token maps (padding masked).
        labels (Tensor): ``(B,)`` int64, the class that must be kept (``target``, or the clean
            prediction).
        predictions (Tensor): ``(B,)`` int64, the model's class at the returned ids.
        clean_predictions (Tensor): ``(B,)`` int64, the model's class at the clean ids.
        prediction_kept (Tensor): ``(B,)`` bool, ``predictions == labels``.
    """

    adversarial_ids: Tensor
    n_swaps: Tensor
    swapped: Tensor
    clean_token_maps: Tensor
    adversarial_token_maps: Tensor
    similarity: Tensor
    objective: Tensor
    topk_intersection: Tensor
    kendall: Tensor
    labels: Tensor
    predictions: Tensor
    clean_predictions: Tensor
    prediction_kept: Tensor
