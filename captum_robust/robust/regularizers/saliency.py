r"""Saliency terms to add to the loss: teacher saliency alignment (Gali et al. eq. 7) and
saliency stability training (Levine et al. App. D, eq. D.1). Both compare input gradients of a
class logit (:func:`captum_robust.attr._core.saliency.input_gradient`, taken with
``create_graph=True`` where the term must be differentiable).

**Saliency alignment: the passes.** :math:`J_S` is taken with ``create_graph=True`` on the
unwrapped student in eval mode (BatchNorm/Dropout; restored afterwards; ``eval_mode=False`` keeps
your mode); :math:`J_T` is computed without a graph, the teacher in eval mode (its mode, ``.grad``
and ``requires_grad`` left as found). The teacher is not registered as a submodule and must be a
separate network (not the student, no shared parameter: ``TypeError`` for a teacher that is not an
``nn.Module``, ``ValueError`` for the student itself or a shared parameter). For a ReLU student the
parameter gradient of :math:`J_S` keeps only the terms that do not differentiate the activation
pattern (second derivatives through ReLU vanish); a softplus network makes it exact.

**Gali's full objective** (eq. 8-9) is :math:`\mathcal L_{CE}(x', y) + \lVert \mathrm{IG}^{\ell_y}(x, x')
\rVert_1 + \lambda \mathcal L_\text{diff}` with :math:`x'` maximizing the first two terms over an
:math:`\ell_\infty` ball from a random start, :math:`\lambda \approx 0.001`. The first two terms,
maximized together, are Chen et al.'s IG-Sum-Norm objective with :math:`\beta = 1`, so compose::

    objective = IGSumNorm(model, eps=0.3, beta=1.0)         # CE(x') + ||IG(x, x')||_1
    alignment = SaliencyAlignment(model, teacher, lam=1e-3)  # lam * ||J_S(x) - J_T(x)||^2
    loss = objective(x, y) + alignment(x, y)

**Saliency stability: the attack.** :math:`\tilde x` is Levine et al.'s :math:`\ell_2` top-k attack
(Alg. 1, :class:`~captum_robust.robust.attacks.L2TopKAttack`) on the map :math:`|\nabla_x f_y|` in the
ball :math:`\lVert \tilde x - x \rVert_2 \le \rho` (and the data box), keeping the prediction. Both
maps of the term are taken with ``create_graph=True`` in one pass, as in the authors' code;
:math:`\tilde x` is detached. Since both maps are non-negative unit vectors, each example's distance
lies in :math:`[0, 2]`. The attack always runs in eval mode; ``eval_mode`` applies to the
differentiable pass.

**Strength.** ``reduction="sum"`` (default) is eq. D.1 as written. The authors' code uses
``MSELoss``, the mean over the :math:`n` map elements *and* the batch: ``reduction="mean"`` (the
per-example sum divided by :math:`n`) reproduces it, so their :math:`\lambda \in [0, 1000]`
(:math:`\lambda = 200` in Fig. 7) on MNIST (:math:`n = 784`) is ``lam=200, reduction="mean"`` or
``lam=200/784, reduction="sum"``. The authors average only over the examples where the attack found
a start that keeps the class; here such examples keep :math:`\tilde x = x`, contribute 0 and count in
the batch mean.

**Softplus networks.** The attack ascends a function of the input gradient, i.e. uses second
derivatives in the input, which vanish almost everywhere through ReLU: Levine et al. train
softplus networks (:class:`~captum_robust.models.Small` ``(softplus=...)`` etc.). For a ReLU model
pass ``surrogate=softplus_surrogate(model)`` (it shares the weights, so it follows training): the
attack gradients then come from the smooth copy while predictions, acceptance and the reported
maps use the model. Without one, a model with ``nn.ReLU`` modules gets a warning at construction
(the attack would only try its random starts); functional ``relu`` calls cannot be seen. The
trained term itself is computed on the model (its parameter gradient does not vanish for ReLU,
but it ignores the activation pattern).

**Defaults** follow the MNIST experiment (App. E and the code): :math:`P = 15` steps, :math:`T = 3`
restarts, :math:`Q = 100` random draws, :math:`k = n/4` (``sparsity=0.25``; the code's ``7*28`` of
784), :math:`\rho = 3.08`: the paper's 10 standard deviations of the normalised MNIST pixels,
:math:`10 \times 0.3081` in :math:`[0, 1]` units. The radius is the base's epsilon (:attr:`eps`, also
:attr:`rho`) and may be an :class:`~captum_robust.robust.regularizers.EpsilonSchedule`; at
:math:`\rho = 0` (or :math:`\lambda = 0`) no attack runs and the term is a constant 0.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from captum_robust._utils.geometry import BoundType, Box
from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import (check_choice, check_finite_outputs, check_fraction, check_int,
                                             check_model_dtype)
from captum_robust.attr._core.saliency import input_gradient
from captum_robust.attr._core.tokens import TokenBatch, token_scores
from captum_robust.robust.attacks import L2TopKAttack
from captum_robust.robust.attacks._loop import check_random_start
from captum_robust.robust.regularizers._base import (
    EpsilonSchedule,
    EpsType,
    RobustTerm,
    check_adversarial,
    check_num_classes,
    check_surrogate,
    check_teacher,
    check_token_adversarial,
    check_weight,
    class_scores,
)
from captum_robust.robust.regularizers._inner import attack_state
from captum_robust.robust.regularizers._tokens import MaskedTokenModel, check_relative_eps, keep_padding, per_row
from captum_robust.robust.regularizers._tokens import eps_embedding, radius_scale, real_tokens, refuse_token_arguments

__all__ = ["SaliencyAlignment", "SaliencyStability"]


def _saliency(model: Any, inputs: Tensor, target: Tensor, create_graph: bool, who: str = "the model") -> Tensor:
    r"""The saliency :math:`J(x) = \nabla_x f_{y}(x)` of every example, at a fresh copy of
    ``inputs``, the model's output checked to be ``B x C`` class scores; with ``create_graph``
    differentiable with respect to the parameters."""
    def scores(x: Tensor) -> Tensor:
        out = class_scores(model(x), who)
        check_finite_outputs(out.detach(), f"{who}'s outputs")
        return out

    (grad,) = input_gradient(scores, (inputs.detach(),), target, create_graph=create_graph)
    return grad


# --------------------------------------------------------------------------- Gali


class SaliencyAlignment(RobustTerm):
    r"""Teacher saliency alignment (Gali, Sarkar, Balasubramanian, eq. 7), a term to add to the
    loss:

    .. math::

        R(x, y) = \lambda \cdot \frac1B \sum_{b=1}^B
            \big\lVert J_S(x_b) - J_T(x_b) \big\rVert_2^2,
        \qquad J(x) = \nabla_x f_{y}(x),

    :math:`J_S` and :math:`J_T` the gradients of the true-class logit (Gali's "true class index"
    saliency, eq. 5-6) of the student being trained and of a frozen teacher -- in the paper an
    adversarially trained model of the same architecture (e.g. one trained with
    :class:`~captum_robust.robust.regularizers.PGDAdversarialLoss`). The value is the *batch
    mean*, differentiable with respect to the student's parameters. The passes, the teacher's
    checks and Gali's full objective (eq. 8-9, composed with :class:`IGSumNorm`):
    :mod:`~captum_robust.robust.regularizers.saliency`. Common arguments: :class:`RobustTerm`.

    Args:
        teacher (nn.Module): the frozen teacher, taking the same inputs, with the same classes.
        lam (float): :math:`\lambda \ge 0`. Default 0.001 (Gali et al.).

    ``last_stats`` holds ``"distance"`` (the mean squared distance, without :math:`\lambda`).

    Example::

        >>> import copy, torch, torch.nn as nn
        >>> from captum_robust.robust.regularizers.saliency import SaliencyAlignment
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Softplus(), nn.Linear(16, 10))
        >>> teacher = copy.deepcopy(student)
        >>> reg = SaliencyAlignment(student, teacher, lam=1e-3)
        >>> x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
        >>> reg(x, y).item()                 # same weights, same saliency
        0.0
        >>> with torch.no_grad():
        ...     _ = student[1].weight.mul_(2.0)
        >>> loss = torch.nn.functional.cross_entropy(student(x), y) + reg(x, y)
        >>> loss.backward()
        >>> reg.last_stats["distance"] > 0, teacher[1].weight.grad is None
        (True, True)
    """

    _probe_rows = 1  # both saliency passes check their outputs

    def __init__(self, model: nn.Module, teacher: nn.Module, lam: float = 0.001, *, eval_mode: bool = True) -> None:
        super().__init__(model, 0.0, eval_mode=eval_mode)
        object.__setattr__(self, "_teacher", check_teacher(teacher, model))
        self.lam = check_weight(lam, "lam")

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (not a registered submodule)."""
        return self._teacher  # type: ignore[attr-defined]

    def teacher_saliency(self, inputs: Tensor, target: Tensor) -> Tensor:
        """:math:`J_T(x)`, detached, the teacher in eval mode with frozen parameters (restored)."""
        teacher = self.teacher
        with preserved_model_state(teacher, train=False):
            for p in teacher.parameters():
                p.requires_grad_(False)
            return _saliency(teacher, inputs, target, create_graph=False, who="the teacher")

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        self.last_adversarial = None
        check_model_dtype(self.teacher, (inputs,), "inputs")
        j_t = self.teacher_saliency(inputs, target)
        with self.attribution_mode():
            j_s = _saliency(self.module, inputs, target, create_graph=True)
        distance = (j_s - j_t.to(j_s.dtype)).reshape(j_s.shape[0], -1).pow(2).sum(dim=1).mean()
        self.last_stats = {"distance": float(distance.detach())}
        return self.lam * distance

    def extra_repr(self) -> str:
        return f"model={type(self.model).__name__}, teacher={type(self.teacher).__name__}, lam={self.lam}"


# --------------------------------------------------------------------------- Levine


_REDUCTIONS = ("sum", "mean")
_CLASSES = ("label", "prediction")


def normalized_saliency(grad: Tensor) -> Tensor:
    r""":math:`g = |a| / \lVert a \rVert_2` per example (0 where :math:`a = 0`): Levine et al.'s
    ``normalize_each(abs(grad))``."""
    flat = grad.abs().reshape(grad.shape[0], -1)
    norm = flat.norm(dim=1, keepdim=True)
    tiny = torch.finfo(grad.dtype).tiny
    return (flat / norm.clamp_min(tiny)).reshape(grad.shape)


def _gradient_map(model: Any, inputs: Tensor, target: Tensor) -> Tensor:
    """The attack's map: the input gradient of the target logit (differentiable in the input)."""
    (grad,) = input_gradient(lambda x: class_scores(model(x)), (inputs,), target, create_graph=True)
    return grad


def token_saliency(model: Any, embeddings: Tensor, target: Tensor, forward_args: Tuple[Any, ...], mask: Tensor,
                   create_graph: bool) -> Tensor:
    r"""The per-token saliency of a token model, ``B x T``: :math:`s_t = \sum_d |\partial f_y / \partial e_{t,d}|`
    (the library's rule, :func:`~captum_robust.attr._core.tokens.token_scores` of the absolute gradient),
    0 at padding; ``embeddings`` that require grad are differentiated directly (the map stays attached
    to what produced them)."""
    def scores(e: Tensor, *args: Any) -> Tensor:
        out = class_scores(model(e, *args))
        check_finite_outputs(out.detach(), "the model's outputs")
        return out

    (grad,) = input_gradient(scores, (embeddings,), target, forward_args, create_graph=create_graph)
    return token_scores(grad.abs(), mask)


def _token_gradient_map(model: Any, inputs: Tensor, target: Tensor, args: Tuple[Any, ...]) -> Tensor:
    """The attack's map in token mode: :func:`token_saliency` of a :class:`MaskedTokenModel`, whose
    arguments are ``(e0, mask, scale, ids, *args)`` (the map in ``u`` is the map in ``e`` times the
    example's scale: the same top-k and the same normalised map)."""
    return token_saliency(model, inputs, target, tuple(args), args[1], create_graph=True)


def _has_relu(module: nn.Module) -> bool:
    return any(isinstance(m, nn.ReLU) for m in module.modules())


class SaliencyStability(RobustTerm):
    r"""Saliency stability training (Levine, Singla, Feizi, App. D, eq. D.1), a term to add to
    the cross-entropy (eq. D.1 is :math:`\mathrm{CE}(x, y) + R`):

    .. math::

        R(x, y) = \lambda \cdot \frac1B \sum_{b=1}^B
            \big\lVert g(\tilde x_b) - g(x_b) \big\rVert_2^2,
        \qquad g(x) = \frac{|\nabla_x f_y(x)|}{\lVert \nabla_x f_y(x) \rVert_2},

    :math:`g` the :math:`\ell_2`-normalised absolute gradient of the class logit, :math:`\tilde x`
    Levine et al.'s :math:`\ell_2` top-k attack (:class:`~captum_robust.robust.attacks.L2TopKAttack`)
    in the ball of radius :math:`\rho` (``rho``, the base's ``eps``). The value is the *batch mean*,
    differentiable with respect to the parameters through both maps. The attack, the strength of
    the authors' code, ReLU networks (pass ``surrogate=``) and the MNIST defaults:
    :mod:`~captum_robust.robust.regularizers.saliency`. Common arguments: :class:`RobustTerm`.

    Args:
        lam (float): :math:`\lambda \ge 0`. Default 1.0.
        rho (float or EpsilonSchedule): the :math:`\ell_2` radius :math:`\rho \ge 0`. Default 3.08.
        sparsity (float): :math:`k = \lceil \text{sparsity} \cdot n \rceil`, in (0, 1]. Default 0.25.
        k (int, optional): the attacked top-k size directly (overrides ``sparsity``).
        n_iterations, n_restarts, random_budget (int): :math:`P`, :math:`T`, :math:`Q \ge 1`. Default 15, 3, 100.
        max_backtracks (int): step halvings before a step is given up, >= 0. Default 20.
        surrogate (nn.Module, optional): a smooth copy for the attack gradients.
        reduction (str): ``"sum"`` (eq. D.1, default) or ``"mean"`` (the authors' ``MSELoss``).
        target_class (str): whose logit's gradient is the map: ``"label"`` (default) or ``"prediction"``.
        random_start (bool or str): :class:`~captum_robust.robust.attacks.L2TopKAttack`'s: ``True``
            (default) starts the first restart at the clean input and the others at random points of
            the sphere (never weaker than no random start, issue 18); ``"always"``: every restart at a
            random point (Algorithm 1 as published, the default before issue 18).
        embedding_layer (nn.Module, optional): token models: the module embedding the ids (e.g.
            ``model.bert.embeddings``). The call then takes ``B x T`` ids (with ``additional_forward_args``
            and ``token_mask``); the map is per token, :math:`s_t = \sum_d |\partial f_y / \partial e_{t,d}|`
            (0 at padding), :math:`g = s / \lVert s \rVert_2`; :math:`\tilde e = e + \delta` with
            :math:`\lVert \delta \rVert_2 \le \rho` on the ``T x D`` embedding tensor (absolute, embedding
            units), zero at padding, no data box; :math:`k` (``sparsity``) counts the real tokens of the
            shortest example; ``reduction="mean"`` divides by each example's number of real tokens
            (:mod:`~captum_robust.robust.regularizers._tokens`). ``last_adversarial`` holds :math:`\tilde e`.
        relative_eps (bool): token models: ``rho`` as a fraction of each example's embedding size
            (about the norm of its real tokens' embeddings); ``last_stats["eps_embedding"]`` holds the
            mean absolute radius. Default False (absolute).

    ``last_stats`` holds ``"distance"`` (mean :math:`\lVert g(\tilde x) - g(x) \rVert^2`, without :math:`\lambda`),
    ``"attack_success"`` (fraction perturbed) and ``"topk_overlap"`` (mean top-k overlap, as the attack reports).

    Example::

        >>> import torch, torch.nn as nn
        >>> from captum_robust.robust.regularizers.saliency import SaliencyStability
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Softplus(), nn.Linear(16, 10))
        >>> reg = SaliencyStability(model, lam=1.0, rho=1.0, n_iterations=3, n_restarts=1,
        ...                         generator=torch.Generator().manual_seed(0))
        >>> x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
        >>> loss = torch.nn.functional.cross_entropy(model(x), y) + reg(x, y)   # eq. D.1
        >>> loss.backward()
        >>> bool(((reg.last_adversarial - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all())
        True
    """

    def __init__(self, model: nn.Module, lam: float = 1.0, rho: EpsType = 3.08, *, sparsity: float = 0.25,
                 k: Optional[int] = None, n_iterations: int = 15, n_restarts: int = 3, random_budget: int = 100,
                 max_backtracks: int = 20, surrogate: Optional[nn.Module] = None, reduction: str = "sum",
                 target_class: str = "label", random_start: Union[bool, str] = True, auto_step: bool = True,
                 eval_mode: bool = True,
                 generator: Optional[torch.Generator] = None, clip_min: BoundType = 0.0,
                 clip_max: BoundType = 1.0, embedding_layer: Optional[nn.Module] = None,
                 relative_eps: bool = False) -> None:
        if not isinstance(rho, EpsilonSchedule):
            rho = check_weight(rho, "rho")
        super().__init__(model, rho, auto_step=auto_step, eval_mode=eval_mode, generator=generator)
        self.lam = check_weight(lam, "lam")
        self.sparsity = check_fraction(sparsity, "sparsity")
        self.k = check_int(k, "k", 1, allow_none=True)
        self.n_iterations = check_int(n_iterations, "n_iterations", 1)
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
        self.random_budget = check_int(random_budget, "random_budget", 1)
        self.max_backtracks = check_int(max_backtracks, "max_backtracks", 0)
        self.random_start = check_random_start(random_start)
        object.__setattr__(self, "_surrogate", check_surrogate(surrogate))
        self.reduction = check_choice(reduction, "reduction", _REDUCTIONS)
        self.target_class = check_choice(target_class, "target_class", _CLASSES)
        Box(clip_min, clip_max)  # validates the bounds
        self.clip_min = clip_min
        self.clip_max = clip_max
        self._use_embedding_layer(embedding_layer, surrogate)
        self.relative_eps = check_relative_eps(relative_eps, embedding_layer)
        if surrogate is None and _has_relu(self.module):
            warnings.warn(
                f"{type(self.module).__name__} has nn.ReLU modules: the L2 top-k attack differentiates the input "
                "gradient, whose derivative vanishes almost everywhere through ReLU, so it would only try random "
                + ("starts. Train a smooth network (GELU, softplus); surrogate= is not supported with "
                   "embedding_layer=." if embedding_layer is not None else
                   "starts. Pass surrogate=softplus_surrogate(model) (shares the weights) or train a softplus network "
                   "(as Levine et al. did)."),
                UserWarning,
                stacklevel=2,
            )

    @property
    def surrogate(self) -> Optional[nn.Module]:
        """The smooth copy used for the attack gradients (None: the model itself)."""
        return self._surrogate  # type: ignore[attr-defined]

    @property
    def rho(self) -> float:
        """The :math:`\\ell_2` radius the next call uses (alias of :attr:`eps`)."""
        return self.eps

    def _k(self, inputs: Tensor) -> int:
        if self.k is not None:
            return self.k
        n = inputs[0].numel()
        return max(1, min(n, math.ceil(self.sparsity * n - 1e-9)))

    def _classes(self, inputs: Tensor, target: Tensor) -> Tensor:
        if self.target_class == "label":
            return target
        with self.attribution_mode(), torch.no_grad():
            logits = class_scores(self.module(inputs.detach()))
        check_num_classes(target, logits.shape[1])
        return logits.argmax(dim=1)

    def _attack(self, inputs: Tensor, classes: Tensor, rho: float) -> Tuple[Tensor, Any]:
        module, surrogate = self.module, self.surrogate
        attack = L2TopKAttack(
            module, _gradient_map, k=self._k(inputs), rho=rho, n_iterations=self.n_iterations,
            n_restarts=self.n_restarts, random_budget=self.random_budget, max_backtracks=self.max_backtracks,
            surrogate=surrogate, clip_min=self.clip_min, clip_max=self.clip_max, random_start=self.random_start,
        )
        # eval mode before the attack's own guard, so that it has nothing to warn about
        with attack_state(module, True), preserved_model_state(surrogate, train=False):
            x_adv, result = attack.perturb(inputs.detach(), target=classes, generator=self.generator)
        return x_adv.detach(), result

    def _term(self, inputs: Tensor, classes: Tensor, inputs_adv: Tensor) -> Tuple[Tensor, Tensor]:
        b = inputs.shape[0]
        both = torch.cat([inputs_adv.detach(), inputs.detach()])
        with self.attribution_mode():
            grads = _saliency(self.module, both, torch.cat([classes, classes]), create_graph=True)
        g = normalized_saliency(grads)
        sq = (g[:b] - g[b:]).reshape(b, -1).pow(2)
        distance = sq.sum(dim=1) if self.reduction == "sum" else sq.mean(dim=1)
        return self.lam * distance.mean(), distance

    def _forward(self, inputs: Tensor, target: Tensor, eps: float) -> Tensor:
        if eps == 0 or self.lam == 0:
            self.last_adversarial = inputs.detach().clone()
            self.last_stats = {"distance": 0.0, "attack_success": 0.0, "topk_overlap": 1.0}
            return torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        classes = self._classes(inputs, target)
        x_adv, result = self._attack(inputs, classes, eps)
        self.last_adversarial = x_adv
        value, distance = self._term(inputs, classes, x_adv)
        self.last_stats = {
            "distance": float(distance.detach().mean()),
            "attack_success": float(result.accepted.double().mean()),
            "topk_overlap": float(result.similarity.double().mean()),
        }
        return value

    # ----------------------------------------------------------------- token models

    def _token_k(self, mask: Tensor) -> int:
        r"""``k`` in token mode: at most the shortest example's number of real tokens (``sparsity`` of it)."""
        lengths = mask.sum(dim=1)
        n = int(lengths.min())
        if self.k is None:
            return max(1, min(n, math.ceil(self.sparsity * n - 1e-9)))
        if self.k > n:
            short = int(torch.argmin(lengths))
            raise ValueError(
                f"k={self.k} exceeds the number of real tokens ({n}) of example {short}; pass k <= {n} or sparsity="
            )
        return self.k

    def _token_classes(self, tokens: TokenBatch, target: Tensor) -> Tensor:
        if self.target_class == "label":
            return target
        with self.attribution_mode(), torch.no_grad():
            logits = class_scores(tokens.model(tokens.embeddings.detach(), *tokens.forward_args))
        return logits.argmax(dim=1)

    def _token_attack(self, tokens: TokenBatch, classes: Tensor, rho: float) -> Tuple[Tensor, Any]:
        r"""The :math:`\ell_2` top-k attack on the per-token maps, on the embeddings: the ball on the
        ``T x D`` tensor, no data box, the padding neither moved nor seen (:class:`MaskedTokenModel`); in
        the coordinates ``e / scale`` (``scale``: ones, or :func:`radius_scale` with ``relative_eps``)."""
        mask, e0 = real_tokens(tokens), tokens.embeddings.detach()
        scale = radius_scale(e0, mask, "l2") if self.relative_eps else e0.new_ones(e0.shape[0])
        masked = MaskedTokenModel(tokens.model)
        attack = L2TopKAttack(
            masked, _token_gradient_map, k=self._token_k(mask), rho=rho, n_iterations=self.n_iterations,
            n_restarts=self.n_restarts, random_budget=self.random_budget, max_backtracks=self.max_backtracks,
            clip_min=None, clip_max=None, random_start=self.random_start,
        )
        with attack_state(self.module, True), preserved_model_state(masked, train=False):
            u_adv, result = attack.perturb(e0 / per_row(scale, e0), target=classes,
                                           additional_forward_args=(e0, mask, scale, *tokens.forward_args),
                                           generator=self.generator)
        return keep_padding(u_adv.detach() * per_row(scale, e0), e0, mask), result

    def _token_term(self, tokens: TokenBatch, classes: Tensor, embeddings_adv: Tensor) -> Tuple[Tensor, Tensor]:
        r"""The term on per-token maps: both at :math:`e` and :math:`e + \delta` (:math:`\delta`
        detached), attached to the embedding weights through :math:`e`."""
        mask, e = real_tokens(tokens), tokens.embeddings
        delta = (embeddings_adv - e).detach()
        with self.attribution_mode():
            s_adv = token_saliency(tokens.model, e + delta, classes, tokens.forward_args, mask, create_graph=True)
            s = token_saliency(tokens.model, e, classes, tokens.forward_args, mask, create_graph=True)
        sq = (normalized_saliency(s_adv) - normalized_saliency(s)).pow(2)
        distance = sq.sum(dim=1) if self.reduction == "sum" else sq.sum(dim=1) / mask.sum(dim=1).to(sq.dtype)
        return self.lam * distance.mean(), distance

    def _forward_tokens(self, tokens: TokenBatch, target: Tensor, eps: float) -> Tensor:
        e0 = tokens.embeddings.detach()
        if eps == 0 or self.lam == 0:
            self.last_adversarial = e0.clone()
            self.last_stats = {"distance": 0.0, "attack_success": 0.0, "topk_overlap": 1.0, "eps_embedding": 0.0}
            return torch.zeros((), dtype=e0.dtype, device=e0.device)
        classes = self._token_classes(tokens, target)
        e_adv, result = self._token_attack(tokens, classes, eps)
        self.last_adversarial = e_adv
        value, distance = self._token_term(tokens, classes, e_adv)
        self.last_stats = {
            "distance": float(distance.detach().mean()),
            "attack_success": float(result.accepted.double().mean()),
            "topk_overlap": float(result.similarity.double().mean()),
            "eps_embedding": eps_embedding(eps, tokens, "l2", self.relative_eps),
        }
        return value

    def objective_at(self, inputs: Tensor, target: Tensor, inputs_adv: Tensor, additional_forward_args: Any = None,
                     token_mask: Any = None) -> Tensor:
        r"""The term at a given :math:`\tilde x`: :math:`\lambda` times the batch mean of
        :math:`\lVert g(\tilde x) - g(x) \rVert^2` (with the reduction), differentiable with
        respect to the parameters; 0 at :math:`\tilde x = x`.

        Args:
            inputs (Tensor): the clean batch :math:`x` (token models: ``B x T`` ids).
            target (Tensor): the labels, ``(B,)`` integers.
            inputs_adv (Tensor): :math:`\tilde x`, shaped like ``inputs`` (token models: the
                ``B x T x D`` embeddings :math:`\tilde e`; their padding positions are ignored).
            additional_forward_args, token_mask: as in :meth:`forward` (token models only).

        Returns:
            Tensor: a 0-dim tensor.
        """
        if self.embedding_layer is not None:
            tokens, y = self._check_tokens(inputs, target, additional_forward_args, token_mask)
            e_adv = check_token_adversarial(tokens, inputs_adv)
            return self._token_term(tokens, self._token_classes(tokens, y), e_adv)[0]
        refuse_token_arguments(additional_forward_args, token_mask)
        inputs, y = self._check_inputs(inputs, target)
        x_adv = check_adversarial(inputs, inputs_adv)
        return self._term(inputs, self._classes(inputs, y), x_adv)[0]

    def extra_repr(self) -> str:
        k = f"k={self.k}" if self.k is not None else f"sparsity={self.sparsity}"
        return (
            f"model={type(self.model).__name__}, lam={self.lam}, rho={self._eps!r}, {k}, "
            f"n_iterations={self.n_iterations}, n_restarts={self.n_restarts}, reduction={self.reduction!r}"
        )
