r"""Input-gradient regularization (double backpropagation): :class:`InputGradientRegularizer`.

**Chen's Proposition 2**: IG-Norm with one path point at :math:`x` (``riemann_left``,
``n_steps=1``: :math:`\mathrm{IG}^{\ell_y}(x, x') = (x' - x) \odot \nabla_x \ell(x)`),
size :math:`\lVert\cdot\rVert_1^q`, an :math:`\ell_p` ball with :math:`1/p + 1/q = 1` and
:math:`\lambda = \lambda'/\epsilon^q` equals this term with ``lam`` = :math:`\lambda'`, by
Hölder's inequality: :math:`\max_{\lVert\delta\rVert_p \le \epsilon}
\lVert \delta \odot g \rVert_1^q = \epsilon^q \lVert g \rVert_q^q`. For :math:`q = 1`
(:math:`\ell_\infty` ball): ``IGNorm(model, eps, lam=lam / eps, n_steps=1,
method="riemann_left", ...)`` equals ``InputGradientRegularizer(model, lam, q=1)`` whenever
the ball lies inside the data box (tested).

**Batch mean**: the value is the mean over the batch (Chen's code sums its terms over the
batch, cross-entropy included, so the balance ``lam`` is the same; with a summed loss use
``lam`` times the batch size).

**ReLU networks**: the parameter gradient of :math:`R` goes through
:math:`\nabla_x \ell`; second derivatives through ReLU vanish almost everywhere, so it
keeps only the first-order terms of the network (the mixed derivatives in the weights and
the softmax curvature), not how the activation pattern would move. A softplus network
(``softplus=`` in :mod:`captum_robust.models`) gives a smooth penalty.

**Modes**: the model runs in eval mode for BatchNorm/Dropout during the pass (``eval_mode=False``
keeps its mode; BatchNorm in training mode then couples the examples, and the gradient is
that of the summed loss); its mode, parameters' ``.grad`` and ``requires_grad`` and the inputs are
left as found. If ``inputs`` require grad, the value is also differentiable with respect
to them.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.validation import Interval, check_finite_outputs, check_number, classification_outputs
from captum_robust.attr._core.saliency import input_gradient
from captum_robust.attr._core.tokens import TokenBatch
from captum_robust.robust.regularizers._base import RobustTerm, check_num_classes, check_weight
from captum_robust.robust.regularizers._tokens import real_tokens, refuse_token_arguments, zero_padding

__all__ = ["InputGradientRegularizer"]


class InputGradientRegularizer(RobustTerm):
    r"""Input-gradient regularization: the :math:`q`-th power of the :math:`\ell_q` norm of
    the gradient of the loss with respect to the input,

    .. math::

        R(x, y) = \lambda \cdot \frac1B \sum_{b=1}^B
            \big\lVert \nabla_x \ell(x_b, y_b) \big\rVert_q^q
          = \lambda \cdot \frac1B \sum_{b=1}^B \sum_i
            \Big|\frac{\partial \ell(x_b, y_b)}{\partial x_i}\Big|^q,
        \qquad \ell = \mathrm{CE},

    to add to the loss (Drucker & LeCun 1992, "double backpropagation"; Ross & Doshi-Velez
    2018 with :math:`q = 2`; Chen et al. 2019, Proposition 2 and appendix B.4; Zeng et al.,
    supplementary A2). The value is differentiable with respect to the parameters (the
    gradient is taken with ``create_graph=True``); no attack is run (its epsilon is fixed to 0).

    Chen's Proposition 2 (IG-Norm with one path point equals this term), the batch mean, ReLU
    networks and the model's mode: :mod:`~captum_robust.robust.regularizers.input_gradient`.

    Args:
        lam (float): :math:`\lambda \ge 0`. Default 1.
        q (int or float): the exponent :math:`q \ge 1`. Default 2.
        embedding_layer (nn.Module, optional): token models: the module embedding the ids (e.g.
            ``model.bert.embeddings``). The call then takes ``B x T`` ids (with ``additional_forward_args``
            and ``token_mask``) and the gradient is :math:`\nabla_e \ell` with respect to the embedding
            output :math:`e`, its padding rows excluded; the value reaches the embedding weights
            (:mod:`~captum_robust.robust.regularizers._tokens`).

    ``model`` and ``eval_mode``: as in :class:`RobustTerm`. ``last_stats`` holds ``"grad_norm"`` (mean
    :math:`\lVert \nabla_x \ell \rVert_q^q`, without :math:`\lambda`) and ``"loss"`` (mean :math:`\ell(x, y)`).

    Example::

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from captum_robust.robust.regularizers.input_gradient import InputGradientRegularizer
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 3))
        >>> reg = InputGradientRegularizer(model, lam=0.1, q=2)
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> loss = F.cross_entropy(model(x), y) + reg(x, y)
        >>> loss.backward()                     # double backpropagation
        >>> xr = x.clone().requires_grad_()
        >>> g, = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        >>> abs(reg.last_stats["grad_norm"] - float(g.pow(2).sum() / 4)) < 1e-6
        True
    """

    _probe_rows = 1  # the gradient pass checks its outputs

    def __init__(self, model: nn.Module, lam: float = 1.0, q: Union[int, float] = 2, *, eval_mode: bool = True,
                 embedding_layer: Optional[nn.Module] = None) -> None:
        super().__init__(model, 0.0, auto_step=False, eval_mode=eval_mode)
        self.lam = check_weight(lam, "lam")
        self.q = check_number(q, "q", Interval(1, None, closed="left"))
        self._use_embedding_layer(embedding_layer)

    def gradient_norm(self, inputs: Tensor, target: Any, additional_forward_args: Any = None,
                      token_mask: Any = None) -> Tensor:
        r"""Per-example :math:`\lVert \nabla_x \ell(x_b, y_b) \rVert_q^q`, shape ``(B,)``,
        differentiable with respect to the parameters (token models: :math:`\nabla_e \ell` over
        the real tokens; ``additional_forward_args`` and ``token_mask`` as in :meth:`forward`)."""
        if self.embedding_layer is not None:
            tokens, y = self._check_tokens(inputs, target, additional_forward_args, token_mask)
            return self._norms(tokens.embeddings, y, tokens)[0]
        refuse_token_arguments(additional_forward_args, token_mask)
        inputs, y = self._check_inputs(inputs, target)
        return self._norms(inputs, y)[0]

    def _norms(self, inputs: Tensor, y: Tensor, tokens: Optional[TokenBatch] = None) -> Tuple[Tensor, Tensor]:
        losses: List[Tensor] = []
        model = self.module if tokens is None else tokens.model
        args = () if tokens is None else tokens.forward_args

        def loss(x: Tensor, *rest: Any) -> Tensor:
            logits = classification_outputs(model(x, *rest))
            check_num_classes(y, logits.shape[1])
            check_finite_outputs(logits.detach(), "the model's outputs")
            losses.append(F.cross_entropy(logits, y, reduction="none"))
            return losses[-1]

        # the gradient of the summed loss (inputs that require grad are differentiated directly: the
        # token embeddings, attached to the embedding weights); zero where the loss does not depend on the input
        with self.attribution_mode():
            (grad,) = input_gradient(loss, (inputs,), None, args, create_graph=True)
        if tokens is not None:
            grad = zero_padding(grad, real_tokens(tokens))
        flat = grad.flatten(1)
        if self.q == 1:
            norms = flat.abs().sum(dim=1)
        elif self.q == 2:
            norms = (flat * flat).sum(dim=1)
        else:
            norms = flat.abs().pow(self.q).sum(dim=1)
        return norms, losses[0]

    def _forward(self, inputs: Tensor, target: Tensor, eps: float, tokens: Optional[TokenBatch] = None) -> Tensor:
        norms, loss = self._norms(inputs, target, tokens)
        self.last_adversarial = None
        self.last_stats = {"grad_norm": float(norms.detach().mean()), "loss": float(loss.detach().mean())}
        return self.lam * norms.mean()

    def _forward_tokens(self, tokens: TokenBatch, target: Tensor, eps: float) -> Tensor:
        return self._forward(tokens.embeddings, target, eps, tokens)

    def extra_repr(self) -> str:
        return f"model={type(self.model).__name__}, lam={self.lam}, q={self.q}"
