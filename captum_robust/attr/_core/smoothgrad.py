r"""The SmoothGrad family of Levine, Singla & Feizi, "Certifiably Robust Interpretation in Deep Learning".

Every method here is a Gaussian smoothing of a *bounded* base map :math:`h(x) \in [0, 1]^n`
computed from the input gradient :math:`g(x) = \partial f_c(x) / \partial x`:

.. math::

    \bar h(x) = \mathbb{E}_{\varepsilon \sim \mathcal{N}(0, \sigma^2 I)}\, h(x + \varepsilon)
    \approx \hat h(x) = \frac{1}{q} \sum_{j=1}^{q} h(x + \varepsilon_j)
    \qquad \text{(Levine eq. 1.1, 2.1)}

with one of four base maps (``n`` is the number of input elements of one example, all
input tensors together; ``|g|_[k]`` the k-th largest element of ``|g|``):

* :class:`ScaledSmoothGrad` -- :math:`h = |g| / \max |g|` (eq. 1.1);
* :class:`QuadraticSmoothGrad` -- :math:`h = g^2 / \max g^2` (sec. 2.2);
* :class:`SparsifiedSmoothGrad` -- :math:`h_i = 1` for the ``ceil(sparsity * n)`` largest
  :math:`|g_i|`, 0 elsewhere (eq. 2.4);
* :class:`RelaxedSparsifiedSmoothGrad` -- 1 above :math:`|g|_{[\lceil \gamma n\rceil]}`, 0 below
  :math:`|g|_{[\lceil \tau n\rceil]}`, :math:`|g_i| / |g|_{[\lceil \gamma n\rceil]}` in between (eq. 2.5).

Because every base map lies in ``[0, 1]``, the smoothed maps carry the top-K robustness
certificate of Levine's Theorem 2 (:class:`~captum_robust.attr.CertifiedTopK`,
:mod:`captum_robust.attr.certify`).

Differences from Captum's ``NoiseTunnel(Saliency)``: the noise comes from an own sampler
that takes ``generator=`` (a :class:`torch.Generator`) and does not depend on how the
samples are chunked, gradients are taken with autograd outside ``no_grad`` so the scaled,
quadratic and relaxed maps can be differentiated (``create_graph=True``), the target may
be the argmax class of each noisy sample (Levine's code), and memory is bounded by
``internal_batch_size`` whatever ``n_samples`` is.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_robust._utils.validation import (
    TargetType,
    TensorOrTuple,
    check_bool,
    check_fraction,
    check_int,
    check_model_dtype,
    check_nonnegative,
)
from captum_robust._utils.compiled import second_order_model
from captum_robust.attr._core._inputs import call_mode, input_shape_guard, prepare_inputs

# The sampling machinery lives in _smoothing; _NoiseStream, _kth_largest, top_count_mask,
# ceil_fraction and DEFAULT_INTERNAL_BATCH_SIZE are also importable from here, where they were.
from captum_robust.attr._core._smoothing import (  # noqa: F401
    DEFAULT_INTERNAL_BATCH_SIZE,
    SigmaType,
    _expand_args,
    _kth_largest,
    _kth_largest_pair,
    _mask_as,
    _check_finite_gradients,
    _NoiseStream,
    absolute_sigmas,
    ceil_fraction,
    check_sigma,
    effective_sigma,
    gradient_rows,
    row_target,
    check_token_call,
    smooth,
    token_inputs,
    token_maps,
    token_score_rows,
    token_sigmas,
    top_count_mask,
    unflatten,
)

__all__ = [
    "SmoothGradBase",
    "ScaledSmoothGrad",
    "QuadraticSmoothGrad",
    "SparsifiedSmoothGrad",
    "RelaxedSparsifiedSmoothGrad",
    "attribute_with_shared_noise",
]


class SmoothGradBase(GradientAttribution):
    r"""Base class: Gaussian smoothing of a bounded map of the input gradient (Levine eq. 1.1, 2.1).

    Subclasses define :meth:`map_from_abs` (a map of ``|g|``) or :meth:`map_from_gradients`
    (a map of the signed gradient), which turn the gradients of a set of noisy points
    (rows x n, all input tensors flattened and concatenated) into base maps in ``[0, 1]``;
    this class samples the noise, computes the gradients in chunks and averages. Subclass
    it to smooth (and certify with :class:`~captum_robust.attr.CertifiedTopK`) a bounded
    gradient map of your own; values outside ``[0, 1]`` raise ``ValueError``.

    The arguments below are those of every class of the family (the subclasses add
    ``sparsity`` and ``clip``), and :meth:`attribute` is theirs too.

    Args:
        forward_func (nn.Module or callable): the model; returns class scores B x C (or one
            score per example, B or B x 1).
        sigma (float, tensor or tuple): standard deviation of the Gaussian noise, > 0, in the
            units of the tensors given to the model. A float for every input tensor, a 1-D
            tensor with one value per example, or a tuple with one of those per input tensor.
            With ``relative_sigma=True`` it is a fraction of each example's range
            ``max(x) - min(x)`` (Levine used 0.2 on CIFAR-10). Noise is never clipped to the
            data range. For token ids (``embedding_layer=`` in :meth:`attribute`) it is in the
            units of the embedding output, or relative to its norm (not to a range).
        n_samples (int): number of noisy samples ``q`` (Levine used 8192 for certificates).
            Default 512.
        relative_sigma (bool): interpret ``sigma`` relative to each example's (and each input
            tensor's) value range. Default False.
    """

    #: whether ``create_graph=True`` gives meaningful (non-zero) gradients
    differentiable: bool = True
    #: the base map lies in [0, 1] by construction (otherwise every chunk is checked)
    _bounded_by_construction: bool = False

    def __init__(
        self, forward_func: Callable[..., Any], sigma: SigmaType, n_samples: int = 512, relative_sigma: bool = False
    ) -> None:
        GradientAttribution.__init__(self, forward_func)
        if isinstance(sigma, (tuple, list)):
            if len(sigma) == 0:
                raise ValueError("sigma as a tuple must hold one value per input tensor, got an empty tuple")
            self.sigma: SigmaType = tuple(check_sigma(s, f"sigma[{i}]") for i, s in enumerate(sigma))
        else:
            self.sigma = check_sigma(sigma, "sigma")
        self.n_samples = check_int(n_samples, "n_samples", 1)
        self.relative_sigma = check_bool(relative_sigma, "relative_sigma")

    def has_convergence_delta(self) -> bool:
        return False

    # ------------------------------------------------------------------ the base map
    def map_from_gradients(self, gradients: Tensor) -> Tensor:
        """Base map ``h`` in ``[0, 1]`` of each row of raw input gradients (rows x n -> rows x n).

        The default applies :meth:`map_from_abs` to ``|gradients|``. Subclasses override
        either this method (maps of the signed gradient) or :meth:`map_from_abs`.
        """
        return self.map_from_abs(gradients.abs())

    def map_from_abs(self, abs_gradients: Tensor) -> Tensor:
        """Base map ``h`` in ``[0, 1]`` of each row of absolute input gradients (rows x n -> rows x n)."""
        raise NotImplementedError(f"{type(self).__name__} must define map_from_gradients or map_from_abs")

    def _uses_abs(self) -> bool:
        return type(self).map_from_gradients is SmoothGradBase.map_from_gradients

    # ------------------------------------------------------------------ noise scale
    def absolute_sigmas(
        self, inputs: TensorOrTuple, additional_forward_args: Any = None, embedding_layer: Optional[nn.Module] = None,
        token_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, ...]:
        """The noise standard deviation actually used, one B-vector per input tensor.

        With ``relative_sigma=True`` this is ``sigma * (max(x_b) - min(x_b))`` per example
        (computed from the detached input). Raises ``ValueError`` if some example has a
        zero range (the noise would be zero). With ``embedding_layer=`` (token ids, as in
        :meth:`attribute`) it is the one B-vector of the noise on the embeddings: with
        ``relative_sigma=True``, ``sigma`` times the mean real-token embedding norm over
        ``sqrt(D)``.
        """
        check_token_call(embedding_layer, token_mask)
        if embedding_layer is not None:
            with token_inputs(self, inputs, additional_forward_args, embedding_layer, token_mask) as tb:
                return (token_sigmas(self.sigma, self.relative_sigma, tb.embeddings, tb.mask),)
        _, inputs_t, _, _ = prepare_inputs(inputs, None)
        return absolute_sigmas(self.sigma, self.relative_sigma, inputs_t)

    def smoothing_sigma(
        self, inputs: TensorOrTuple, additional_forward_args: Any = None, embedding_layer: Optional[nn.Module] = None,
        token_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Per example, the smallest noise standard deviation over the input tensors (B,).

        This is the sigma that enters the certificate: for noise with different standard
        deviations on different input tensors, the floor computed with the smallest one is
        sound because the whitened perturbation has norm at most ``rho / sigma_min``. Token
        ids: as :meth:`absolute_sigmas` with ``embedding_layer=``.
        """
        return effective_sigma(self.absolute_sigmas(inputs, additional_forward_args, embedding_layer, token_mask))

    @log_usage()
    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        n_samples: Optional[int] = None, internal_batch_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None, create_graph: bool = False,
        surrogate: Optional[Callable[..., Any]] = None, show_progress: bool = False,
        embedding_layer: Optional[nn.Module] = None, token_mask: Optional[Tensor] = None,
    ) -> TensorOrTuple:
        r"""Compute the smoothed map :math:`\hat h(x) = \frac1q \sum_j h(x + \varepsilon_j)`.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): floating-point model inputs, batch first
                (with ``embedding_layer``: one ``B x T`` tensor of token ids).
            target (int, list[int], Tensor or None): the class whose gradient is used, fixed
                per example (an int for all, or one per example). ``None`` uses the argmax
                class of each *noisy* sample, as Levine's code did (for models with one
                output per example, ``None`` uses that output). A fixed target (e.g. the
                clean prediction) is the usual SmoothGrad convention.
            additional_forward_args (Any, optional): extra model arguments; tensors whose
                first dimension is the batch size are repeated with the noisy copies.
            n_samples (int, optional): overrides the constructor's ``n_samples``.
            internal_batch_size (int, optional): number of rows (noisy copies of all the
                examples together) per forward/backward pass; at least one copy of every
                example is processed per pass. Memory is bounded by it, not by
                ``n_samples``. Default 256.
            generator (torch.Generator, optional): source of the noise, on the inputs'
                device. Same generator seed, same map -- whatever ``internal_batch_size``.
                Default: PyTorch's global generator.
            create_graph (bool): keep the graph so the map is differentiable with respect to
                the inputs and the model's parameters (not for the piecewise-constant
                :class:`SparsifiedSmoothGrad`). Memory then grows with ``n_samples``.
                Second derivatives through ReLU are zero almost everywhere: pass a smooth
                copy of the model as ``surrogate`` to differentiate through. Default False.
            surrogate (nn.Module or callable, optional): a model used instead of
                ``forward_func`` for the forward and backward passes (e.g.
                ``captum_robust.models.Small(softplus=10)`` with the same weights).
            show_progress (bool): a tqdm bar over the chunks. Default False.
            embedding_layer (nn.Module, optional): for token models: the module inside the
                model whose output are the ``B x T x D`` embeddings (e.g.
                ``model.bert.embeddings``). The noise is added to that output (every position,
                padding included) with the model's embedding output replaced by the noisy
                copy; ``sigma`` is in its units (``relative_sigma=True``: relative to the mean
                real-token embedding norm, ``sigma * mean_t ||e_t|| / sqrt(D)`` per example,
                :func:`~captum_robust.attr._core.tokens.embedding_sigma`). The base map is applied to one
                score per token, the sum over ``D`` of ``|g|`` (its l1 norm; of ``g`` for a
                subclass that overrides :meth:`map_from_gradients`), over the real tokens only.
                Model arguments such as the attention mask go through
                ``additional_forward_args``. Default None (float inputs).
            token_mask (Tensor, optional): ``B x T``, 1 (True) for real tokens and 0 for
                padding (a Hugging Face ``attention_mask`` fits); only with
                ``embedding_layer``. Padding entries are 0 in every sample map, never count in
                ``ceil(sparsity * n)`` (``n`` is each example's number of real tokens) nor in
                the maximum of the scaled maps. Default None (every token real).

        Returns:
            Tensor or tuple[Tensor, ...]: the smoothed maps, in ``[0, 1]``, shaped like the
            inputs, in the inputs' dtype (with ``embedding_layer``: ``B x T``, one value per
            token, in the embeddings' dtype).
        """
        check_token_call(embedding_layer, token_mask)
        if embedding_layer is not None:
            with token_inputs(self, inputs, additional_forward_args, embedding_layer, token_mask, create_graph,
                              surrogate) as tb:
                (mean,), _, _ = smooth(
                    (self,), (tb.embeddings,), target, None, n_samples, internal_batch_size, generator,
                    create_graph, None, show_progress, tokens=tb,
                )
            return mean
        is_tuple, inputs_t, _, args = prepare_inputs(inputs, self.forward_func, additional_forward_args)
        check_model_dtype(surrogate, inputs_t)
        (mean,), _, _ = smooth(
            (self,), inputs_t, target, args, n_samples, internal_batch_size, generator,
            create_graph, surrogate, show_progress,
        )
        return unflatten(mean, inputs_t, is_tuple)

    def base_map(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        create_graph: bool = False, surrogate: Optional[Callable[..., Any]] = None,
        embedding_layer: Optional[nn.Module] = None, token_mask: Optional[Tensor] = None,
    ) -> TensorOrTuple:
        """The un-smoothed base map ``h(x)`` at the given inputs (no noise), shaped like them.

        Arguments as in :meth:`attribute`; ``target=None`` uses each input's argmax class.
        With ``embedding_layer``, the ``B x T`` per-token map at the clean embeddings.
        """
        check_token_call(embedding_layer, token_mask)
        if create_graph and not self.differentiable:
            raise ValueError(f"{type(self).__name__} is piecewise constant; create_graph=True is meaningless")
        if embedding_layer is not None:
            with token_inputs(self, inputs, additional_forward_args, embedding_layer, token_mask, create_graph,
                              surrogate) as tb, torch.set_grad_enabled(create_graph):
                emb = tb.embeddings  # detached by embed_tokens unless create_graph
                target_t = row_target(target, (emb,), tb.model, tb.forward_args)
                grads = gradient_rows(tb.model, [emb], tb.forward_args, target_t, create_graph)
                _check_finite_gradients(grads, emb.shape[0])
                absolute, signed = token_score_rows((self,), grads, None, emb.shape[1])
                return token_maps(self, absolute, signed, tb.mask)
        is_tuple, inputs_t, _, args = prepare_inputs(inputs, self.forward_func, additional_forward_args)
        check_model_dtype(surrogate, inputs_t)
        who = type(self).__name__
        model = second_order_model(self.forward_func, who, create_graph) if surrogate is None else surrogate
        with call_mode(self.forward_func, who), call_mode(surrogate, f"{who} (surrogate)"), \
                input_shape_guard(model, inputs_t), torch.set_grad_enabled(create_graph):
            target_t = row_target(target, inputs_t, model, args)
            grads = gradient_rows(model, list(inputs_t), args, target_t, create_graph)
            _check_finite_gradients(grads, inputs_t[0].shape[0])
            maps = self.map_from_gradients(grads)
        return unflatten(maps, inputs_t, is_tuple)


def _scaled_to_max(abs_gradients: Tensor) -> Tensor:
    """Each row divided by its maximum (a row of zeros stays zero): Levine eq. 1.1's scaling."""
    m = abs_gradients.amax(dim=1, keepdim=True)
    return abs_gradients / torch.where(m > 0, m, torch.ones_like(m))


class ScaledSmoothGrad(SmoothGradBase):
    r"""Scaled SmoothGrad (Levine eq. 1.1): the smoothed absolute gradient, each sample scaled to max 1.

    .. math::

        h(x) = \frac{|\nabla_x f_c(x)|}{\max_i |\nabla_x f_c(x)|_i}, \qquad
        \hat h(x) = \frac1q \sum_{j=1}^q h(x + \varepsilon_j),\ \varepsilon_j \sim \mathcal N(0, \sigma^2 I).

    A sample whose gradient is zero everywhere contributes a zero map. The maps lie in
    ``[0, 1]``, so :class:`~captum_robust.attr.CertifiedTopK` applies, but Levine found its
    certificates vacuous; :class:`SparsifiedSmoothGrad` is the certifiable variant.
    Differentiable with ``create_graph=True``. See :class:`SmoothGradBase` for the arguments
    (``forward_func``, ``sigma``, ``n_samples``, ``relative_sigma``) and :meth:`~SmoothGradBase.attribute`.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import ScaledSmoothGrad
        >>> model = Small().eval()
        >>> sg = ScaledSmoothGrad(model, sigma=0.2, n_samples=64)
        >>> maps = sg.attribute(torch.rand(2, 1, 28, 28), target=3, generator=torch.Generator().manual_seed(0))
    """

    _bounded_by_construction = True

    def map_from_abs(self, abs_gradients: Tensor) -> Tensor:
        return _scaled_to_max(abs_gradients)


class QuadraticSmoothGrad(SmoothGradBase):
    r"""Scaled quadratic SmoothGrad (Levine sec. 2.2; Smilkov et al.'s SmoothGrad-squared, scaled).

    .. math::

        h(x) = \frac{(\nabla_x f_c(x))^2}{\max_i (\nabla_x f_c(x))_i^2}, \qquad
        \hat h(x) = \frac1q \sum_{j=1}^q h(x + \varepsilon_j).

    Same arguments as :class:`SmoothGradBase`; differentiable with ``create_graph=True``.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import QuadraticSmoothGrad
        >>> maps = QuadraticSmoothGrad(Small().eval(), sigma=0.2, n_samples=64).attribute(torch.rand(2, 1, 28, 28))
    """

    _bounded_by_construction = True

    def map_from_abs(self, abs_gradients: Tensor) -> Tensor:
        r = _scaled_to_max(abs_gradients)
        return r * r


class SparsifiedSmoothGrad(SmoothGradBase):
    r"""Sparsified SmoothGrad (Levine eq. 2.4): the frequency with which each element is in the top ``ceil(sparsity n)``.

    .. math::

        h_i(x) = \begin{cases} 1 & |g_i(x)| \ge |g(x)|_{[\lceil \tau n \rceil]} \\
                               0 & \text{otherwise} \end{cases}, \qquad
        \hat h(x) = \frac1q \sum_{j=1}^q h(x + \varepsilon_j),

    with :math:`\tau` = ``sparsity``, ``n`` the number of input elements of one example
    (all input tensors together) and :math:`|g|_{[k]}` the k-th largest absolute gradient.
    Every sample map has **exactly** ``ceil(sparsity * n)`` ones: among elements tied with
    the threshold, those with the lowest flat index (input tensors in order, each flattened
    in C order) are taken first. Hence each smoothed map sums to ``ceil(sparsity * n)``.

    This is the method whose top-K certificate (Levine Thm. 2) is not vacuous; see
    :class:`~captum_robust.attr.CertifiedTopK`. Its rank certificate (Thm. 3): an element
    whose smoothed value is at least 1/2 -- equivalently, whose median rank over the
    samples is at most ``ceil(sparsity n)`` -- has certified rank at most
    ``ceil(sparsity n) / L(1/2)`` (:func:`captum_robust.attr.certify.sparsified_rank_bound`).
    The map is piecewise constant in ``x``, so ``create_graph=True`` is refused; attacks use
    :class:`RelaxedSparsifiedSmoothGrad`.

    Args:
        sparsity (float): :math:`\tau` in (0, 1], the fraction of elements set to 1 per sample
            (Levine: 0.02 to 0.5). See :class:`SmoothGradBase` for ``forward_func``, ``sigma``,
            ``n_samples`` and ``relative_sigma``.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import SparsifiedSmoothGrad
        >>> model = Small().eval()
        >>> ssg = SparsifiedSmoothGrad(model, sparsity=0.1, sigma=0.2, n_samples=256)
        >>> maps = ssg.attribute(torch.rand(2, 1, 28, 28), target=[3, 1])
        >>> maps.sum(dim=(1, 2, 3))              # ceil(0.1 * 784) = 79 for every example
        tensor([79., 79.])
    """

    differentiable = False

    def __init__(
        self, forward_func: Callable[..., Any], sparsity: float, sigma: SigmaType, n_samples: int = 512,
        relative_sigma: bool = False,
    ) -> None:
        super().__init__(forward_func, sigma, n_samples, relative_sigma)
        self.sparsity = check_fraction(sparsity, "sparsity")

    _bounded_by_construction = True

    def map_from_abs(self, abs_gradients: Tensor) -> Tensor:
        n = abs_gradients.shape[1]
        return _mask_as(top_count_mask(abs_gradients, ceil_fraction(self.sparsity, n)), abs_gradients.dtype)


class RelaxedSparsifiedSmoothGrad(SmoothGradBase):
    r"""Relaxed Sparsified SmoothGrad (Levine eq. 2.5): clipped, sparsified and linearly scaled.

    With :math:`m_\gamma = |g|_{[\lceil \gamma n \rceil]}` and :math:`m_\tau = |g|_{[\lceil \tau n \rceil]}`
    (k-th largest absolute gradient; :math:`\gamma` = ``clip``, :math:`\tau` = ``sparsity``):

    .. math::

        h_i(x) = \begin{cases} 0 & |g_i| < m_\tau \\ 1 & |g_i| \ge m_\gamma \\
                               |g_i| / m_\gamma & \text{otherwise} \end{cases}

    evaluated literally (elements tied with a threshold take that threshold's value, so a
    sample can have more than ``ceil(tau n)`` non-zeros when gradients tie). ``clip = 0``
    means no clipping (:math:`m_\gamma` = the largest value, only it maps to 1); with
    ``sparsity = 1`` the map is then exactly :class:`ScaledSmoothGrad`. A sample whose
    gradient is zero everywhere contributes a zero map (eq. 2.5 is undefined there).
    Levine used :math:`\gamma = 0.01`, :math:`\tau \in \{0.05, 0.1, 0.2\}`. Differentiable with
    ``create_graph=True`` (through :math:`|g_i|` and :math:`m_\gamma`); this is the map
    Levine's attacks differentiate, through a softplus copy of the model (``surrogate=``).

    Args:
        sparsity (float): :math:`\tau` in (0, 1].
        clip (float): :math:`\gamma` in [0, sparsity). See :class:`SmoothGradBase` for
            ``forward_func``, ``sigma``, ``n_samples`` and ``relative_sigma``.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import RelaxedSparsifiedSmoothGrad
        >>> model = Small(softplus=10).eval()
        >>> rsg = RelaxedSparsifiedSmoothGrad(model, sparsity=0.1, clip=0.01, sigma=0.2, n_samples=32)
        >>> x = torch.rand(2, 1, 28, 28, requires_grad=True)
        >>> maps = rsg.attribute(x, target=0, create_graph=True)
        >>> maps.sum().backward()                # gradients of the map with respect to x
    """

    def __init__(
        self, forward_func: Callable[..., Any], sparsity: float, clip: float, sigma: SigmaType, n_samples: int = 512,
        relative_sigma: bool = False,
    ) -> None:
        super().__init__(forward_func, sigma, n_samples, relative_sigma)
        self.sparsity = check_fraction(sparsity, "sparsity")
        clip = check_nonnegative(clip, "clip")
        if not clip < self.sparsity:
            raise ValueError(f"clip must be in [0, sparsity) = [0, {self.sparsity}), got {clip!r}")
        self.clip = clip

    _bounded_by_construction = True

    def map_from_abs(self, abs_gradients: Tensor) -> Tensor:
        a = abs_gradients
        n = a.shape[1]
        # m_tau is only compared with; m_gamma divides, so gradients flow through it
        m_tau, m_gamma = _kth_largest_pair(a, ceil_fraction(self.sparsity, n), max(1, ceil_fraction(self.clip, n)))
        # |g| / m_gamma clipped at 1 is eq. 2.5's "1 if |g| >= m_gamma, else |g| / m_gamma"; the tiny
        # divisor makes the all-but-few-zero case (m_gamma = 0) map positives to 1 and zeros to 0
        h = (a / m_gamma.clamp_min(torch.finfo(a.dtype).tiny)).clamp(max=1.0)
        return h * _mask_as(a >= m_tau, a.dtype)


def attribute_with_shared_noise(
    methods: Sequence[SmoothGradBase], inputs: TensorOrTuple, target: TargetType = None,
    additional_forward_args: Any = None, n_samples: Optional[int] = None, internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None, show_progress: bool = False,
    embedding_layer: Optional[nn.Module] = None, token_mask: Optional[Tensor] = None,
) -> List[TensorOrTuple]:
    """Several smoothed maps from the *same* noisy samples, with one gradient pass per sample.

    Comparing methods (or sparsity levels) on the same noise is both fairer and much cheaper:
    the gradients, which dominate the cost, are computed once and every method's base map
    is applied to them. Each returned map equals ``method.attribute(inputs, ...)`` called
    with a generator in the same state.

    Args:
        methods (sequence of SmoothGradBase): the smoothed methods; they must share the
            model (the same ``forward_func`` object), ``sigma`` and ``relative_sigma``.
        inputs (Tensor or tuple[Tensor, ...]): as in :meth:`SmoothGradBase.attribute`, and so are
            ``target``, ``additional_forward_args``, ``internal_batch_size``, ``generator`` and
            ``show_progress``.
        n_samples (int, optional): number of samples; default the first method's.
        embedding_layer, token_mask: token models, as in :meth:`SmoothGradBase.attribute`
            (the maps are then ``B x T``).

    Returns:
        list: one map (shaped like the inputs) per method, in order.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import ScaledSmoothGrad, SparsifiedSmoothGrad, attribute_with_shared_noise
        >>> model = Small().eval()
        >>> methods = [ScaledSmoothGrad(model, 0.2, 256)] + [SparsifiedSmoothGrad(model, t, 0.2, 256) for t in (0.05, 0.1)]
        >>> scaled, sparse5, sparse10 = attribute_with_shared_noise(methods, torch.rand(2, 1, 28, 28), target=0)
    """
    methods = list(methods)
    if not methods or not all(isinstance(m, SmoothGradBase) for m in methods):
        raise TypeError("methods must be a non-empty sequence of SmoothGradBase instances (the SmoothGrad family)")
    first = methods[0]

    def same_sigma(a: SigmaType, b: SigmaType) -> bool:
        if isinstance(a, tuple) or isinstance(b, tuple):
            return (
                isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and all(same_sigma(x, y) for x, y in zip(a, b))
            )
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool((a == b).all())
        return a == b

    for m in methods[1:]:
        if m.forward_func is not first.forward_func:
            raise ValueError("all methods must explain the same model (the same forward_func object)")
        if not same_sigma(m.sigma, first.sigma) or m.relative_sigma != first.relative_sigma:
            raise ValueError(
                f"all methods must use the same noise: {type(m).__name__} has sigma={m.sigma!r}, "
                f"relative_sigma={m.relative_sigma} but {type(first).__name__} has sigma={first.sigma!r}, "
                f"relative_sigma={first.relative_sigma}"
            )
    check_token_call(embedding_layer, token_mask)
    if embedding_layer is not None:
        with token_inputs(first, inputs, additional_forward_args, embedding_layer, token_mask) as tb:
            means, _, _ = smooth(methods, (tb.embeddings,), target, None, n_samples, internal_batch_size, generator,
                                 False, None, show_progress, tokens=tb)
        return list(means)
    is_tuple, inputs_t, _, args = prepare_inputs(inputs, first.forward_func, additional_forward_args)
    means, _, _ = smooth(
        methods, inputs_t, target, args, n_samples, internal_batch_size, generator,
        False, None, show_progress,
    )
    return [unflatten(m, inputs_t, is_tuple) for m in means]
