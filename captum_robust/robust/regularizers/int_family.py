r"""The Int family of Boopathy et al. (2020, sec. 4-5), terms to add to the user's cross-entropy:
:class:`Int` (eq. 8 with eq. 9), :class:`Int2` (eq. 8 with eq. 10) and :class:`IntOneClass`
(the Int-one-class ablation). Each penalizes the target-label-free interpretation discrepancy
of eq. 7 between the class activation maps of :math:`x` and of a worst-case :math:`x'` in the
:math:`\epsilon`-ball,
:math:`\tilde{\mathcal D}(x, x') = \tfrac12 \lVert I(x, y) - I(x', y) \rVert_1 + \tfrac12
\sum_{i \ne y} s_i(x') \lVert I(x, i) - I(x', i) \rVert_1`, :math:`s = \mathrm{softmax}(f(x'))`.
:class:`Int` documents the arguments the five classes share. The whole objectives Int-Adv and
Int2-Adv are in :mod:`~captum_robust.robust.regularizers.int_adversarial`.

**The inner maximization** of :class:`Int` is :class:`~captum_robust.robust.attacks.AttributionPGD`
(sign steps from a random start, each example keeping its best iterate), with the clean maps as
constants and the model in eval mode with frozen parameters. The returned term is then computed
on the detached :math:`x'` with a fresh pass in which the clean maps, the perturbed maps and the
softmax weights (through the logits at :math:`x'`) are all differentiable with respect to the
parameters, as in the authors' code; the dependence of :math:`x'` on the parameters is ignored
(sec. 4). CAM maps are linear in the feature map, so no second derivatives through ReLUs are
involved. The random start is the default because the discrepancy and its gradient vanish at
:math:`x' = x`; ``eps == 0`` gives :math:`x' = x` without an attack.

**Proposition 1** carries over to the term: for a complete interpreter and an :math:`x'`
classified :math:`y' \ne y`, :math:`\tilde{\mathcal D}(x, x') \ge \tfrac12 s_{y'}(x')
\big(f_y(x) - f_{y'}(x)\big)` with :math:`s_{y'}(x') \ge 1/C` (paper form; in the code form
with raw CAM, :math:`\ge u\, \tilde s_{y'}(x') (f_y(x) - f_{y'}(x))`; for two classes the
code form is exactly :math:`2u\, \mathcal D_{2,\ell_1}` of eq. 4).

**Conventions and** :math:`\gamma`. ``convention="paper"`` uses the CAM of eq. 1 and eq. 7
as printed; ``"code"`` the raw CAM (``u = H' W'`` times eq. 1) with the authors' code form
:math:`\lVert \Delta_y \rVert_1 + \sum_{i \ne y} \tilde s_i \lVert \Delta_i \rVert_1`,
:math:`\tilde s_i = s_i / (1 - s_y)`. For IG and callable interpreters the convention only
switches the form of eq. 7 (their maps have no raw variant). The paper's :math:`\gamma = 0.01`
(:data:`TUNED_GAMMA`) was tuned in the code convention; ``gamma=None`` uses 0.01 there and
:math:`2u \cdot 0.01` in the paper convention (``u = 1`` for interpreters other than CAM),
which gives exactly the code's true-class penalty
(:math:`2u \cdot 0.01 \cdot \tfrac12 \lVert \Delta_y^{\text{eq.1}} \rVert_1 = 0.01
\lVert \Delta_y^{\text{raw}} \rVert_1`); the other-class weights then differ by the
renormalisation (:math:`s_i` instead of :math:`\tilde s_i`), so the paper form penalizes
the other classes by the factor :math:`1 - s_y(x')` less. An explicit ``gamma`` is used as given.

**Batch mean.** The value is the mean over the batch; the authors' code also averaged
(``tf.reduce_mean``), so :math:`\gamma` carries over unchanged.

**Interpreters.** ``interpreter=`` takes, instead of ``layer``/``classifier``, any complete
interpreter giving the maps of every class: a :class:`~captum_robust.attr.CAM` (built on the
unwrapped model), a :class:`~captum_robust.attr.BatchedIntegratedGradients` (the maps are the IG
of every class, computed in one batched call over ``B * C`` rows, differentiable with
``create_graph``; ReLU networks have zero second derivatives almost everywhere, so the parameter
gradient of an IG term ignores how the ReLU pattern moves -- use a softplus model), or a
callable ``inputs -> B x C x ...`` all-class maps, differentiable with respect to the inputs and
the parameters. ``interpreter_kwargs`` are extra arguments of its ``attribute`` (e.g.
``n_steps``, ``method``, ``baselines`` for IG).

**Found layers.** With ``layer``/``classifier`` omitted, the library's models give
``model.feature_layer``/``model.classifier``; any other model (a torchvision-style ResNet, a
Hugging Face ``ResNetForImageClassification``, ...) gets ``CAM(model)``, whose layers
:func:`~captum_robust.attr.find_cam_layers` finds on the first call's inputs (one extra forward
pass, once; ``reg.interpreter.found_layers`` says which). A model without a global-average-pooling
-> linear head (a ConvNeXt, a VGG) then raises that function's ``ValueError`` naming the
candidates: pass ``interpreter=`` (e.g. a callable of all-class Grad-CAM maps) instead.

**Recipes.** MNIST: ``eps=0.3`` warmed up with ``EpsilonSchedule(0.3, 2000, 8000)``, 40 steps of
0.01; CIFAR-10: ``EpsilonSchedule(8/255, 5000, ...)``, 10 steps of 2/255. ``eval_mode`` applies to
the map passes and the attack; the classifier PGD of Int2 always runs in eval mode.

**Statistics.** ``last_stats`` holds ``"value"``, ``"eps"``, ``"discrepancy"`` (mean
:math:`\tilde{\mathcal D}` at :math:`x'`, without :math:`\gamma`), ``"gamma"`` (the strength used;
NaN for ``gamma=None`` in the paper convention on an ``eps == 0`` call before any map was
computed, ``u`` being unknown), ``"attack_changed_prediction"`` (fraction of :math:`x'` classified
differently from :math:`x`) and ``"attack_success"`` (fraction of :math:`x'` not classified as the
label; absent when ``eps == 0``); the -Adv objectives add ``"ce_adv"``.

**Errors.** ``ValueError`` for ``eps``/``gamma`` < 0, an unknown ``convention``, a model without a
GAP -> linear head and no ``interpreter=`` (at the first call when the layers are found, at once for
``has_gap_head=False``), labels of the wrong length or out of range; ``TypeError``
for a ``classifier`` that is not an ``nn.Linear`` or labels that are not integers.
"""

from __future__ import annotations

from captum_robust.robust.regularizers._int_base import TUNED_GAMMA, _IntTerm

__all__ = ["Int", "Int2", "IntOneClass", "TUNED_GAMMA"]


class Int(_IntTerm):
    r"""Int (Boopathy et al. 2020, eq. 8 with eq. 9): a term penalizing the worst-case
    target-label-free interpretation discrepancy, to add to the user's cross-entropy.

    .. math::

        \gamma \cdot \frac1B \sum_{b=1}^{B} \tilde{\mathcal D}(x_b, x'_b), \qquad
        x'_b \approx \operatorname*{arg\,max}_{\lVert \delta \rVert_\infty \le \epsilon,\
            x_b + \delta \in \text{box}} \tilde{\mathcal D}(x_b, x_b + \delta),

    :math:`\tilde{\mathcal D}` of eq. 7 on the all-class CAM maps
    (:func:`~captum_robust.robust.discrepancy.target_free_discrepancy`). ``CE(f(x), y) + Int(x, y)``
    is the paper's objective (8) with (9). The attack, Proposition 1, the conventions, :math:`\gamma`,
    the batch mean and ``last_stats``: :mod:`~captum_robust.robust.regularizers.int_family`. Common
    arguments: :class:`RobustTerm` (defaults: MNIST, ``eps=0.3``, 40 steps of 0.01, ``"linf"``).

    Args:
        layer (nn.Module, optional): the layer giving the last feature map. Default ``model.feature_layer``,
            else found on the first call (:func:`~captum_robust.attr.find_cam_layers`).
        classifier (nn.Linear, optional): the linear layer after global average pooling of that map.
            Default ``model.classifier``, else found on the first call.
        interpreter (optional): instead of ``layer``/``classifier``, a :class:`~captum_robust.attr.CAM`, a
            :class:`~captum_robust.attr.BatchedIntegratedGradients` or a callable giving all-class maps.
        interpreter_kwargs (dict, optional): extra arguments of the interpreter's ``attribute``.
        gamma (float, optional): :math:`\gamma \ge 0`. Default None: the paper's tuned strength, 0.01
            in the code convention and :math:`2u \cdot 0.01` in the paper convention (``u`` CAM cells).
        convention (str): ``"paper"`` (eq. 1 CAM, eq. 7 as printed; default) or ``"code"`` (raw CAM, the
            authors' code form of eq. 7).

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers import Int
        >>> model = Small()
        >>> reg = Int(model, eps=0.3, n_iterations=5, generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
        >>> loss = F.cross_entropy(model(x), y) + reg(x, y)
        >>> loss.backward()
        >>> reg.last_stats["gamma"], bool((reg.last_adversarial - x).abs().max() <= 0.3 + 1e-6)
        (0.98, True)
        >>> reg.objective_at(x, y, x).item()   # x' = x: no discrepancy; gamma = 2 * u * 0.01, u = 7 * 7
        0.0
    """

    _inner = "discrepancy"


class Int2(_IntTerm):
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

    Arguments (names and defaults), ``last_adversarial`` and ``last_stats``: as in :class:`Int`.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers import Int2
        >>> reg = Int2(Small(), eps=0.3, n_iterations=5, generator=torch.Generator().manual_seed(0))
        >>> term = reg(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))   # add it to the cross-entropy
        >>> sorted(k for k in reg.last_stats)
        ['attack_changed_prediction', 'attack_success', 'discrepancy', 'eps', 'gamma', 'value']
    """

    _inner = "pgd"


class IntOneClass(_IntTerm):
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

    Arguments (names and defaults), ``last_adversarial`` and ``last_stats``: as in :class:`Int`.

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from captum_robust.models import Small
        >>> from captum_robust.robust.regularizers import IntOneClass
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
