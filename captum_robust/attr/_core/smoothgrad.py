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

import math
import numbers
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import (
    TargetType,
    TensorOrTuple,
    check_int_range,
    format_additional_args,
    format_inputs,
    resolve_target,
)

__all__ = [
    "SmoothGradBase",
    "ScaledSmoothGrad",
    "QuadraticSmoothGrad",
    "SparsifiedSmoothGrad",
    "RelaxedSparsifiedSmoothGrad",
    "attribute_with_shared_noise",
]

SigmaType = Union[float, Tensor, Sequence[Union[float, Tensor]]]

#: Default number of rows (noisy copies of all examples together) per forward/backward pass.
DEFAULT_INTERNAL_BATCH_SIZE = 256

# Noise is drawn in blocks of a fixed number of samples that depends only on the batch
# and the input size (never on internal_batch_size), so the same generator seed gives the
# same noisy points however the work is chunked.
_NOISE_BLOCK_ELEMENTS = 2**20
_MAX_NOISE_BLOCK_SAMPLES = 256


def ceil_fraction(fraction: float, n: int) -> int:
    """``ceil(fraction * n)``, robust to floating-point error (``0.07 * 100`` gives 7, not 8)."""
    return max(0, math.ceil(round(fraction * n, 9)))


def _check_fraction(value: Any, name: str) -> float:
    """A float in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


def _check_sigma_value(value: Any, name: str) -> Union[float, Tensor]:
    if isinstance(value, Tensor):
        if value.dim() > 1 or not value.is_floating_point():
            raise ValueError(
                f"{name} as a tensor must be a 0-dim or 1-dim (one value per example) floating tensor, "
                f"got shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        if not bool(torch.isfinite(value).all()) or bool((value <= 0).any()):
            raise ValueError(f"{name} must be finite and > 0, got {value.detach().cpu().tolist()}")
        return value.detach()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float > 0 or a tensor of them, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite float > 0, got {value!r}")
    return v


class _NoiseStream:
    """Standard normal noise for ``q`` samples of a batch, drawn block by block.

    Sample ``j`` always receives the same noise for a given generator state, batch shape,
    dtype and device, whatever sizes the caller takes it in.
    """

    def __init__(self, inputs: Tuple[Tensor, ...], generator: Optional[torch.Generator]) -> None:
        self.inputs = inputs
        self.generator = generator
        per_sample = sum(t.numel() for t in inputs)
        self.block = max(1, min(_MAX_NOISE_BLOCK_SAMPLES, _NOISE_BLOCK_ELEMENTS // max(1, per_sample)))
        self.buffer: Optional[List[Tensor]] = None
        self.pos = self.block

    def take(self, count: int) -> List[Tensor]:
        pieces: List[List[Tensor]] = []
        while count > 0:
            if self.pos == self.block:
                self.buffer = [
                    torch.randn(
                        (self.block,) + tuple(t.shape), generator=self.generator, dtype=t.dtype, device=t.device
                    )
                    for t in self.inputs
                ]
                self.pos = 0
            assert self.buffer is not None
            step = min(count, self.block - self.pos)
            pieces.append([b[self.pos : self.pos + step] for b in self.buffer])
            self.pos += step
            count -= step
        if len(pieces) == 1:
            return pieces[0]
        return [torch.cat([p[i] for p in pieces]) for i in range(len(self.inputs))]


def _expand_args(args: Tuple[Any, ...], batch: int, repeats: int) -> Tuple[Any, ...]:
    """Repeat tensor arguments with a leading batch dimension, sample-major like the noisy rows."""
    if repeats == 1:
        return args
    out = []
    for a in args:
        if isinstance(a, Tensor) and a.dim() >= 1 and a.shape[0] == batch:
            out.append(a.repeat((repeats,) + (1,) * (a.dim() - 1)))
        else:
            out.append(a)
    return tuple(out)


def _kth_largest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th largest value of each row of ``values`` (rows x n), shape rows x 1.

    On the CPU (float32/float64, no autograd graph) this uses NumPy's introselect
    (``np.partition``), about ten times faster than ``torch.topk``, which sorts index
    pairs; elsewhere, and when the result must be differentiable, ``torch.topk``.
    """
    n = values.shape[1]
    if k <= 1:
        return values.amax(dim=1, keepdim=True)
    if k >= n:
        return values.amin(dim=1, keepdim=True)
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64) and not values.requires_grad:
        part = np.partition(values.detach().numpy(), n - k, axis=1)
        return torch.from_numpy(np.ascontiguousarray(part[:, n - k : n - k + 1]))
    if k <= n // 2:
        return values.topk(k, dim=1, largest=True, sorted=False).values.amin(dim=1, keepdim=True)
    return values.topk(n - k + 1, dim=1, largest=False, sorted=False).values.amax(dim=1, keepdim=True)


def _kth_largest_pair(values: Tensor, k1: int, k2: int) -> Tuple[Tensor, Tensor]:
    """The ``k1``-th (as a constant) and ``k2``-th (differentiable) largest values of each row.

    Two single selections: NumPy's multi-``kth`` partition is several times slower than two
    separate ones.
    """
    return _kth_largest(values.detach(), k1), _kth_largest(values, k2)


def _mask_as(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask as 0/1 values of ``dtype`` (through uint8, which converts faster than bool)."""
    return mask.view(torch.uint8).to(dtype)


def top_count_mask(values: Tensor, count: int) -> Tensor:
    """Boolean rows x n mask with exactly ``count`` True per row: the ``count`` largest values.

    Ties at the threshold go to the lowest column index (the order of the flattened
    inputs), so the mask is deterministic.
    """
    n = values.shape[1]
    if count >= n:
        return torch.ones_like(values, dtype=torch.bool)
    if count <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    thr = _kth_largest(values, count)
    mask = values >= thr
    counts = mask.sum(dim=1)
    tied = counts != count
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        v, t = values[rows], thr[rows]
        above = v > t
        need = count - above.sum(dim=1, keepdim=True)
        equal = v == t
        mask[rows] = above | (equal & (equal.cumsum(dim=1) <= need))
    return mask


class SmoothGradBase(GradientAttribution):
    r"""Base class: Gaussian smoothing of a bounded map of the input gradient.

    Subclasses define :meth:`map_from_abs` (a map of ``|g|``) or :meth:`map_from_gradients`
    (a map of the signed gradient), which turn the gradients of a set of noisy points
    (rows x n, all input tensors flattened and concatenated) into base maps in ``[0, 1]``;
    this class samples the noise, computes the gradients in chunks and averages. Subclass
    it to smooth (and certify with :class:`~captum_robust.attr.CertifiedTopK`) a bounded
    gradient map of your own; values outside ``[0, 1]`` raise ``ValueError``.

    Args:
        forward_func (nn.Module or callable): the model; returns class scores B x C (or one
            score per example, B or B x 1).
        sigma (float, tensor or tuple): standard deviation of the Gaussian noise, > 0, in the
            units of the tensors given to the model. A float for every input tensor, a 1-D
            tensor with one value per example, or a tuple with one of those per input tensor.
            With ``relative_sigma=True`` it is a fraction of each example's range
            ``max(x) - min(x)`` (Levine used 0.2 on CIFAR-10). Noise is never clipped to the
            data range.
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
        self,
        forward_func: Callable[..., Any],
        sigma: SigmaType,
        n_samples: int = 512,
        relative_sigma: bool = False,
    ) -> None:
        GradientAttribution.__init__(self, forward_func)
        if isinstance(sigma, (tuple, list)):
            if len(sigma) == 0:
                raise ValueError("sigma as a tuple must hold one value per input tensor, got an empty tuple")
            self.sigma: SigmaType = tuple(_check_sigma_value(s, f"sigma[{i}]") for i, s in enumerate(sigma))
        else:
            self.sigma = _check_sigma_value(sigma, "sigma")
        self.n_samples = check_int_range(n_samples, "n_samples", 1)
        if not isinstance(relative_sigma, bool):
            raise TypeError(f"relative_sigma must be a bool, got {type(relative_sigma).__name__}")
        self.relative_sigma = relative_sigma

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
    def absolute_sigmas(self, inputs: TensorOrTuple) -> Tuple[Tensor, ...]:
        """The noise standard deviation actually used, one B-vector per input tensor.

        With ``relative_sigma=True`` this is ``sigma * (max(x_b) - min(x_b))`` per example
        (computed from the detached input). Raises ``ValueError`` if some example has a
        zero range (the noise would be zero).
        """
        _, inputs_t = format_inputs(inputs)
        return self._absolute_sigmas(inputs_t)

    def smoothing_sigma(self, inputs: TensorOrTuple) -> Tensor:
        """Per example, the smallest noise standard deviation over the input tensors (B,).

        This is the sigma that enters the certificate: for noise with different standard
        deviations on different input tensors, the floor computed with the smallest one is
        sound because the whitened perturbation has norm at most ``rho / sigma_min``.
        """
        _, inputs_t = format_inputs(inputs)
        return self._effective_sigma(self._absolute_sigmas(inputs_t))

    @staticmethod
    def _effective_sigma(sigmas: Tuple[Tensor, ...]) -> Tensor:
        out = sigmas[0]
        for s in sigmas[1:]:
            out = torch.minimum(out, s)
        return out

    def _absolute_sigmas(self, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        batch = inputs[0].shape[0]
        spec = self.sigma
        if isinstance(spec, tuple):
            if len(spec) != len(inputs):
                raise ValueError(
                    f"sigma has {len(spec)} entries but there are {len(inputs)} input tensors; "
                    "give one sigma per input tensor or a single value"
                )
            specs = spec
        else:
            specs = (spec,) * len(inputs)
        out = []
        for i, (s, x) in enumerate(zip(specs, inputs)):
            if not x.is_floating_point():
                raise TypeError(f"inputs[{i}] must be a floating-point tensor to add Gaussian noise, got {x.dtype}")
            if isinstance(s, Tensor):
                st = s.to(device=x.device, dtype=x.dtype)
                if st.dim() == 1 and st.shape[0] != batch:
                    raise ValueError(f"sigma has {st.shape[0]} per-example values but the batch has {batch} examples")
                st = st.expand(batch).clone()
            else:
                st = torch.full((batch,), s, device=x.device, dtype=x.dtype)
            if self.relative_sigma:
                flat = x.detach().reshape(batch, -1)
                rng = flat.amax(dim=1) - flat.amin(dim=1)
                if bool((rng <= 0).any()):
                    bad = int((rng <= 0).nonzero()[0])
                    raise ValueError(
                        f"relative_sigma=True but example {bad} of input {i} is constant (range 0), so the "
                        "noise would be zero; pass an absolute sigma"
                    )
                st = st * rng
            out.append(st)
        return tuple(out)

    # ------------------------------------------------------------------ gradients
    @staticmethod
    def _gradient_rows(
        model: Callable[..., Any],
        points: List[Tensor],
        args: Tuple[Any, ...],
        target_rows: Optional[Tensor],
        create_graph: bool,
    ) -> Tensor:
        """Gradients of the selected score at every row of ``points``, flattened to rows x n."""
        rows = points[0].shape[0]
        with torch.enable_grad():
            if not create_graph:
                points = [p.detach().requires_grad_() for p in points]
            else:
                points = [p if p.requires_grad else p.requires_grad_() for p in points]
            out = model(*points, *args)
            if not isinstance(out, Tensor):
                raise ValueError(f"the forward function must return a tensor of scores, got {type(out).__name__}")
            if out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1):
                if target_rows is not None and bool((target_rows != 0).any()):
                    raise ValueError("the model returns one score per example; target must be None or 0")
                selected = out.reshape(rows)
            elif out.dim() == 2:
                if target_rows is None:
                    target_rows = out.detach().argmax(dim=1)
                elif int(target_rows.max()) >= out.shape[1]:
                    raise ValueError(
                        f"target holds class index {int(target_rows.max())}, outside the model's range "
                        f"[0, {out.shape[1] - 1}]"
                    )
                selected = out.gather(1, target_rows.unsqueeze(1))
            else:
                raise ValueError(
                    f"the forward function must return scores of shape (batch,) or (batch, classes), "
                    f"got {tuple(out.shape)}"
                )
            grads = torch.autograd.grad(selected.sum(), points, create_graph=create_graph)
        if len(grads) == 1:
            return grads[0].reshape(rows, -1)
        return torch.cat([g.reshape(rows, -1) for g in grads], dim=1)

    def _resolve_target(self, target: TargetType, inputs: Tuple[Tensor, ...]) -> Optional[Tensor]:
        if target is None:
            return None
        # the class count is checked against the model's output at the first chunk
        return resolve_target(target, inputs[0].shape[0], 2**62, inputs[0].device)

    # ------------------------------------------------------------------ smoothing
    def _smooth(
        self,
        inputs: Tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        n_samples: Optional[int],
        internal_batch_size: Optional[int],
        generator: Optional[torch.Generator],
        create_graph: bool,
        surrogate: Optional[Callable[..., Any]],
        show_progress: bool,
    ) -> Tuple[Tensor, Tensor, int]:
        """Return ``(mean map B x n, effective sigma B, n_samples)``."""
        means, sigma, q = self._smooth_many(
            (self,),
            inputs,
            target,
            additional_forward_args,
            n_samples,
            internal_batch_size,
            generator,
            create_graph,
            surrogate,
            show_progress,
        )
        return means[0], sigma, q

    def _smooth_many(
        self,
        methods: Sequence["SmoothGradBase"],
        inputs: Tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        n_samples: Optional[int],
        internal_batch_size: Optional[int],
        generator: Optional[torch.Generator],
        create_graph: bool,
        surrogate: Optional[Callable[..., Any]],
        show_progress: bool,
    ) -> Tuple[List[Tensor], Tensor, int]:
        """Smooth the base maps of several ``methods`` over this method's noisy samples (one gradient pass)."""
        q = self.n_samples if n_samples is None else check_int_range(n_samples, "n_samples", 1)
        ibs = DEFAULT_INTERNAL_BATCH_SIZE if internal_batch_size is None else internal_batch_size
        check_int_range(ibs, "internal_batch_size", 1)
        for method in methods:
            if create_graph and not method.differentiable:
                raise ValueError(
                    f"{type(method).__name__} is piecewise constant in the input (its gradient is zero almost "
                    "everywhere), so create_graph=True is meaningless; attack RelaxedSparsifiedSmoothGrad instead"
                )
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
            if generator.device.type != inputs[0].device.type:
                raise ValueError(
                    f"generator is on device {generator.device} but the inputs are on {inputs[0].device}; "
                    "create it with torch.Generator(device=inputs.device)"
                )
        args = format_additional_args(additional_forward_args)
        batch = inputs[0].shape[0]
        sigmas = self._absolute_sigmas(inputs)
        target_t = self._resolve_target(target, inputs)
        model = self.forward_func if surrogate is None else surrogate
        per_chunk = max(1, ibs // batch)
        n_features = sum(t[0].numel() for t in inputs)
        dtype = inputs[0].dtype
        acc_dtype = torch.float64 if inputs[0].device.type != "mps" else dtype
        accs = [torch.zeros(batch, n_features, dtype=acc_dtype, device=inputs[0].device) for _ in methods]
        stream = _NoiseStream(inputs, generator)
        sig_shapes = [s.view((1, batch) + (1,) * (x.dim() - 1)) for s, x in zip(sigmas, inputs)]
        base = [x.unsqueeze(0) if create_graph else x.detach().unsqueeze(0) for x in inputs]
        n_chunks = -(-q // per_chunk)
        lows: List[Optional[Tensor]] = [None] * len(methods)
        highs: List[Optional[Tensor]] = [None] * len(methods)
        with preserved_model_state(self.forward_func), preserved_model_state(surrogate), torch.set_grad_enabled(
            create_graph
        ):
            done = 0
            for _ in tqdm(range(n_chunks), disable=not show_progress, desc=type(self).__name__, leave=False):
                s = min(per_chunk, q - done)
                noise = stream.take(s)
                points = [
                    (b + sg * e).reshape((s * batch,) + tuple(x.shape[1:]))
                    for b, sg, e, x in zip(base, sig_shapes, noise, inputs)
                ]
                t_rows = None if target_t is None else target_t.repeat(s)
                grads = self._gradient_rows(model, points, _expand_args(args, batch, s), t_rows, create_graph)
                abs_grads = grads.abs() if any(m._uses_abs() for m in methods) else None
                for i, method in enumerate(methods):
                    if method._uses_abs():
                        maps = method.map_from_abs(abs_grads)  # type: ignore[arg-type]
                    else:
                        maps = method.map_from_gradients(grads)
                    if not method._bounded_by_construction or not bool(torch.isfinite(grads.detach().sum())):
                        low, high = maps.detach().amin(), maps.detach().amax()
                    else:
                        low = high = torch.zeros((), dtype=maps.dtype, device=maps.device)
                    lows[i] = low if lows[i] is None else torch.minimum(lows[i], low)  # type: ignore[arg-type]
                    highs[i] = high if highs[i] is None else torch.maximum(highs[i], high)  # type: ignore[arg-type]
                    accs[i] = accs[i] + maps.reshape(s, batch, n_features).sum(dim=0).to(acc_dtype)
                done += s
        means = []
        for method, acc, low_t, high_t in zip(methods, accs, lows, highs):
            lo, hi = float(low_t), float(high_t)  # type: ignore[arg-type]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(
                    "the smoothed map contains NaN: the model's gradient is not finite at some noisy points"
                )
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{type(method).__name__}.map_from_gradients returned values in [{lo}, {hi}]; base maps must "
                    "lie in [0, 1] (the certificate holds for smoothed maps of bounded functions)"
                )
            means.append((acc / q).clamp(0.0, 1.0).to(dtype))
        return means, self._effective_sigma(sigmas), q

    @staticmethod
    def _unflatten(flat: Tensor, inputs: Tuple[Tensor, ...], is_tuple: bool) -> TensorOrTuple:
        outs = []
        start = 0
        for x in inputs:
            size = x[0].numel()
            outs.append(flat[:, start : start + size].reshape(x.shape))
            start += size
        return tuple(outs) if is_tuple else outs[0]

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_samples: Optional[int] = None,
        internal_batch_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        create_graph: bool = False,
        surrogate: Optional[Callable[..., Any]] = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        r"""Compute the smoothed map :math:`\hat h(x) = \frac1q \sum_j h(x + \varepsilon_j)`.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): floating-point model inputs, batch first.
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

        Returns:
            Tensor or tuple[Tensor, ...]: the smoothed maps, in ``[0, 1]``, shaped like the
            inputs, in the inputs' dtype.
        """
        is_tuple, inputs_t = format_inputs(inputs)
        mean, _, _ = self._smooth(
            inputs_t,
            target,
            additional_forward_args,
            n_samples,
            internal_batch_size,
            generator,
            create_graph,
            surrogate,
            show_progress,
        )
        return self._unflatten(mean, inputs_t, is_tuple)

    def base_map(
        self,
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Any = None,
        create_graph: bool = False,
        surrogate: Optional[Callable[..., Any]] = None,
    ) -> TensorOrTuple:
        """The un-smoothed base map ``h(x)`` at the given inputs (no noise), shaped like them.

        Arguments as in :meth:`attribute`; ``target=None`` uses each input's argmax class.
        """
        is_tuple, inputs_t = format_inputs(inputs)
        if create_graph and not self.differentiable:
            raise ValueError(f"{type(self).__name__} is piecewise constant; create_graph=True is meaningless")
        args = format_additional_args(additional_forward_args)
        target_t = self._resolve_target(target, inputs_t)
        model = self.forward_func if surrogate is None else surrogate
        with preserved_model_state(self.forward_func), preserved_model_state(surrogate), torch.set_grad_enabled(
            create_graph
        ):
            grads = self._gradient_rows(model, list(inputs_t), args, target_t, create_graph)
            maps = self.map_from_gradients(grads)
        return self._unflatten(maps, inputs_t, is_tuple)


class ScaledSmoothGrad(SmoothGradBase):
    r"""Scaled SmoothGrad (Levine eq. 1.1): the smoothed absolute gradient, each sample scaled to max 1.

    .. math::

        h(x) = \frac{|\nabla_x f_c(x)|}{\max_i |\nabla_x f_c(x)|_i}, \qquad
        \hat h(x) = \frac1q \sum_{j=1}^q h(x + \varepsilon_j),\ \varepsilon_j \sim \mathcal N(0, \sigma^2 I).

    A sample whose gradient is zero everywhere contributes a zero map. The maps lie in
    ``[0, 1]``, so :class:`~captum_robust.attr.CertifiedTopK` applies, but Levine found its
    certificates vacuous; :class:`SparsifiedSmoothGrad` is the certifiable variant.
    Differentiable with ``create_graph=True``.

    Args:
        forward_func (nn.Module or callable): the model.
        sigma (float, tensor or tuple): noise standard deviation (see :class:`SmoothGradBase`).
        n_samples (int): number of noisy samples. Default 512.
        relative_sigma (bool): sigma relative to each example's range. Default False.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import ScaledSmoothGrad
        >>> model = Small().eval()
        >>> sg = ScaledSmoothGrad(model, sigma=0.2, n_samples=64)
        >>> maps = sg.attribute(torch.rand(2, 1, 28, 28), target=3, generator=torch.Generator().manual_seed(0))
    """

    _bounded_by_construction = True

    def map_from_abs(self, abs_gradients: Tensor) -> Tensor:
        m = abs_gradients.amax(dim=1, keepdim=True)
        return abs_gradients / torch.where(m > 0, m, torch.ones_like(m))


class QuadraticSmoothGrad(SmoothGradBase):
    r"""Scaled quadratic SmoothGrad (Levine sec. 2.2; Smilkov et al.'s SmoothGrad-squared, scaled).

    .. math::

        h(x) = \frac{(\nabla_x f_c(x))^2}{\max_i (\nabla_x f_c(x))_i^2}, \qquad
        \hat h(x) = \frac1q \sum_{j=1}^q h(x + \varepsilon_j).

    Same arguments as :class:`ScaledSmoothGrad`; differentiable with ``create_graph=True``.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import QuadraticSmoothGrad
        >>> maps = QuadraticSmoothGrad(Small().eval(), sigma=0.2, n_samples=64).attribute(torch.rand(2, 1, 28, 28))
    """

    _bounded_by_construction = True

    def map_from_abs(self, abs_gradients: Tensor) -> Tensor:
        m = abs_gradients.amax(dim=1, keepdim=True)
        r = abs_gradients / torch.where(m > 0, m, torch.ones_like(m))
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
        forward_func (nn.Module or callable): the model.
        sparsity (float): :math:`\tau` in (0, 1], the fraction of elements set to 1 per sample
            (Levine: 0.02 to 0.5).
        sigma (float, tensor or tuple): noise standard deviation (see :class:`SmoothGradBase`).
        n_samples (int): number of noisy samples. Default 512.
        relative_sigma (bool): sigma relative to each example's range. Default False.

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
        self,
        forward_func: Callable[..., Any],
        sparsity: float,
        sigma: SigmaType,
        n_samples: int = 512,
        relative_sigma: bool = False,
    ) -> None:
        super().__init__(forward_func, sigma, n_samples, relative_sigma)
        self.sparsity = _check_fraction(sparsity, "sparsity")

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
        forward_func (nn.Module or callable): the model.
        sparsity (float): :math:`\tau` in (0, 1].
        clip (float): :math:`\gamma` in [0, sparsity).
        sigma (float, tensor or tuple): noise standard deviation (see :class:`SmoothGradBase`).
        n_samples (int): number of noisy samples. Default 512.
        relative_sigma (bool): sigma relative to each example's range. Default False.

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
        self,
        forward_func: Callable[..., Any],
        sparsity: float,
        clip: float,
        sigma: SigmaType,
        n_samples: int = 512,
        relative_sigma: bool = False,
    ) -> None:
        super().__init__(forward_func, sigma, n_samples, relative_sigma)
        self.sparsity = _check_fraction(sparsity, "sparsity")
        if isinstance(clip, bool) or not isinstance(clip, numbers.Real):
            raise TypeError(f"clip must be a float, got {type(clip).__name__} {clip!r}")
        if not (math.isfinite(float(clip)) and 0.0 <= float(clip) < self.sparsity):
            raise ValueError(f"clip must be in [0, sparsity) = [0, {self.sparsity}), got {clip!r}")
        self.clip = float(clip)

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
    methods: Sequence[SmoothGradBase],
    inputs: TensorOrTuple,
    target: TargetType = None,
    additional_forward_args: Any = None,
    n_samples: Optional[int] = None,
    internal_batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
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
    is_tuple, inputs_t = format_inputs(inputs)
    means, _, _ = first._smooth_many(
        methods,
        inputs_t,
        target,
        additional_forward_args,
        n_samples,
        internal_batch_size,
        generator,
        False,
        None,
        show_progress,
    )
    return [SmoothGradBase._unflatten(m, inputs_t, is_tuple) for m in means]
