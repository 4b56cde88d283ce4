"""Class activation maps: CAM, Grad-CAM and Grad-CAM++ as Captum layer attributions.

All three read the feature map ``A`` (K channels, ``u`` cells) produced by ``layer``:

* CAM (Zhou et al. 2016; Boopathy et al. 2020, eq. 1) needs a network that ends in
  ``A -> global average pooling -> nn.Linear(W, b)`` and is then a pure forward computation:
  ``CAM(x, c)_i = (1/u) sum_k W[c, k] A_k,i``, which sums to ``f_c(x) - b_c``.
* Grad-CAM (Selvaraju et al. 2017) replaces ``W[c, k]`` by the mean over cells of
  ``df_c / dA_k,i`` and works on any network; on a GAP -> linear head it equals CAM.
* Grad-CAM++ (Chattopadhay et al. 2018) weights the positive gradients per cell.

Unlike Captum's ``LayerGradCam`` these return the maps of every class at once when
``target=None`` (one forward pass and one batched backward pass), and with
``create_graph=True`` they are differentiable with respect to the inputs and the model
parameters, which attacks and regularizers on attributions need.

**Grad-CAM of vision transformers.** A block's output is a token sequence B x N x D, not a feature map;
pass ``reshape_transform`` (as in pytorch-grad-cam), e.g.
:func:`~captum_robust.attr.vit_reshape_transform` (class token dropped, square patch
grid), which turns it into B x D x h x w before the weighting. The transform is applied
to the layer's output and, in the same way, to the gradients with respect to it, so it
must only move, select or reshape entries (a reshape, a permutation, dropping tokens),
which makes the transformed gradients the gradients with respect to the transformed
activation; it must work on any leading batch size (for ``target=None`` it also
receives the gradients of C x B rows). A layer whose output is not 4-D without a
transform is an error (a 1-D feature map B x K x L: pass ``lambda a: a.unsqueeze(2)``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_robust._utils.compiled import uncompiled, warn_uncompiled
from captum_robust._utils.layers import forward_with_layer
from captum_robust._utils.validation import (
    TargetType,
    TensorOrTuple,
    check_choice,
    check_finite_outputs,
    check_int,
    check_submodule,
    classification_outputs,
    resolve_target,
)
from captum_robust.attr._core._inputs import call_mode, check_output_rows, input_shape_guard, prepare_inputs
from captum_robust.attr._core.layer_finder import find_cam_layers

__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus"]


def _spatial_dims(activation: Tensor, offset: int = 0) -> Tuple[int, ...]:
    return tuple(range(2 + offset, activation.dim() + offset))


def _upsample(maps: Tensor, inputs: Tuple[Tensor, ...], mode: str) -> Tensor:
    """Interpolate B x C x H' x W' maps to the spatial size of the first input."""
    if maps.dim() != 4 or inputs[0].dim() != 4:
        raise ValueError(
            "upsample=True needs 4-D maps (B x C x H' x W') and 4-D image inputs (B x C x H x W), "
            f"got maps of shape {tuple(maps.shape)} and inputs of shape {tuple(inputs[0].shape)}"
        )
    align = None if mode in ("nearest", "area") else False
    return F.interpolate(maps, size=inputs[0].shape[2:], mode=mode, align_corners=align)


def _hooked(model: Any, who: str) -> Any:
    """The model a layer-hook pass runs: a ``torch.compile``d model's ``_orig_mod`` (hooks added after
    compiling never fire in the compiled graph), with one warning; any other model as it is."""
    warn_uncompiled(model, who, what="its layer hooks")
    return uncompiled(model)


def _class_gradients(
    outputs: Tensor, activation: Tensor, target: Optional[Tensor], create_graph: bool, class_batch_size: Optional[int]
) -> Iterator[Tensor]:
    """Gradients of class scores with respect to ``activation``, yielded in chunks.

    With a per-example ``target`` (B,), yields ``d f_{target_b}(x_b) / dA_b`` (B x K x ...) once.
    With ``target=None``, yields the gradients of ``class_batch_size`` classes at a time stacked in
    front (c' x B x K x ...), from batched vector-Jacobian products (``is_grads_batched``); the caller
    reduces each chunk to its maps before asking for the next, so memory holds one chunk.
    """
    n, c = outputs.shape
    if target is not None:
        grad_out = F.one_hot(target, c).to(outputs.dtype)
        yield torch.autograd.grad(outputs, activation, grad_outputs=grad_out, create_graph=create_graph)[0]
        return
    eye = torch.eye(c, dtype=outputs.dtype, device=outputs.device)
    step = c if class_batch_size is None else class_batch_size
    for start in range(0, c, step):
        rows = eye[start : start + step]  # c' x C
        grad_out = rows[:, None, :].expand(rows.shape[0], n, c)
        last = start + step >= c
        yield torch.autograd.grad(
            outputs,
            activation,
            grad_outputs=grad_out,
            is_grads_batched=True,
            retain_graph=create_graph or not last,
            create_graph=create_graph,
        )[0]


def _combine(weights: Tensor, activation: Tensor, all_classes: bool, attr_dim_summation: bool) -> Tensor:
    """``sum_k weights_k * A_k`` (or the per-channel products), classes in dimension 1.

    ``weights`` is C x B x K (every class) or B x K (one class per example). The channel sum
    is an einsum (a batched matrix product), never a broadcast product followed by a sum,
    which would be several times slower for all classes.
    """
    spatial = (None,) * (activation.dim() - 2)
    if all_classes:
        if attr_dim_summation:
            return torch.einsum("cbk,bk...->bc...", weights, activation)
        return (weights[(...,) + spatial] * activation.unsqueeze(0)).movedim(0, 1)
    if attr_dim_summation:
        return torch.einsum("bk,bk...->b...", weights, activation).unsqueeze(1)
    return weights[(...,) + spatial] * activation


def _checked_outputs(outputs: Any, activation: Tensor, batch: int, inputs: Tuple[Tensor, ...]) -> Tensor:
    """B x C finite class scores (a tensor, or the ``.logits`` / ``["logits"]`` of a structured
    output), and a layer output with one row per example."""
    check_output_rows(outputs, batch, inputs)
    outputs = classification_outputs(outputs)
    check_output_rows(outputs, batch, inputs)
    if activation.dim() == 0 or activation.shape[0] != batch:
        raise ValueError(
            f"the layer's output has shape {tuple(activation.shape)} but the inputs (shape "
            f"{tuple(inputs[0].shape)}) have {batch} examples: layer attributions need a batch-first "
            "layer output; do the inputs lack their batch dimension?"
        )
    check_finite_outputs(outputs)
    return outputs


class _CAMBase(LayerAttribution):
    def __init__(self, forward_func: Callable[..., Any], layer: Optional[nn.Module]) -> None:
        if layer is None:
            if not isinstance(forward_func, nn.Module):
                raise TypeError(
                    f"layer= is required when forward_func is not an nn.Module (got {type(forward_func).__name__}): "
                    "the layers can only be found in a module"
                )
        else:
            check_submodule(forward_func, layer, "layer")
        LayerAttribution.__init__(self, forward_func, layer)
        self.found_layers: Optional[Any] = None  # the CAMLayers of find_cam_layers, once used

    def has_convergence_delta(self) -> bool:
        return False

    @staticmethod
    def _check_common(class_batch_size: Optional[int], interpolate_mode: str) -> None:
        check_int(class_batch_size, "class_batch_size", 1, allow_none=True)
        check_choice(interpolate_mode, "interpolate_mode", ("nearest", "bilinear", "bicubic", "area"))


class CAM(_CAMBase):
    r"""Class activation map (Zhou et al. 2016) in the complete form of Boopathy et al. (2020), eq. 1.

    For a network whose last feature map ``A`` (K channels, ``u`` cells) is globally average
    pooled and fed to a linear ``classifier`` with weights ``W`` and bias ``b``:

    .. math::

        \mathrm{CAM}(x, c)_i = \frac{1}{u} \sum_{k=1}^{K} W_{c,k} A_{k,i}(x),
        \qquad \sum_i \mathrm{CAM}(x, c)_i + b_c = f_c(x).

    The map therefore satisfies completeness like Integrated Gradients, and equals Grad-CAM
    without its ReLU on such a head. ``raw=True`` returns the map the authors' code used
    (``u`` times larger, so its *mean* is ``f_c(x) - b_c``). CAM is one forward pass; with
    ``create_graph=True`` the map is differentiable with respect to the inputs and the
    parameters (Boopathy's Int regularizers and AAI attacks differentiate it).

    Args:
        forward_func (nn.Module or callable): the model, returning class scores B x C (a
            tensor, or an object with a ``.logits`` tensor such as a Hugging Face
            ``ImageClassifierOutput``, or a dict with ``"logits"``).
        layer (nn.Module, optional): the module whose output is the feature map ``A``; for
            the models in :mod:`captum_robust.models` ``model.feature_layer``.
        classifier (nn.Linear, optional): the linear layer that receives the global average
            pool of ``A`` (``model.classifier``). When ``layer`` or ``classifier`` is omitted
            (``CAM(model)``), both are found on the first :meth:`attribute` call by
            :func:`~captum_robust.attr.find_cam_layers` on that call's inputs (one extra
            forward pass, once) and kept in ``self.layer``, ``self.classifier`` and
            ``self.found_layers``; a given ``layer`` is kept.

    Raises:
        TypeError: ``classifier`` is not an ``nn.Linear``, ``layer`` not a module, or a
            layer is omitted and ``forward_func`` is not an ``nn.Module``.
        ValueError: ``layer``/``classifier`` is not a submodule of the model; at
            attribution time, the classifier's input is not the global average pool of
            the layer's output, or (layers omitted) the model has no GAP -> linear head,
            e.g. a ConvNeXt (LayerNorm after the pooling) or a VGG: then CAM does not
            apply; use :class:`GradCAM`.

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import CAM
        >>> model = Small().eval()
        >>> cam = CAM(model, model.feature_layer, model.classifier)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> maps = cam.attribute(x)                  # every class: 4 x 10 x 7 x 7
        >>> mine = cam.attribute(x, target=[3, 1, 4, 1])   # 4 x 1 x 7 x 7
        >>> same = CAM(model).attribute(x)           # layers found on the first call
    """

    def __init__(
        self, forward_func: Callable[..., Any], layer: Optional[nn.Module] = None, classifier: Optional[nn.Linear] = None
    ) -> None:
        super().__init__(forward_func, layer)
        if classifier is not None:
            if not isinstance(classifier, nn.Linear):
                raise TypeError(
                    f"classifier must be an nn.Linear fed by global average pooling, got "
                    f"{type(classifier).__name__}; for other heads use GradCAM"
                )
            check_submodule(forward_func, classifier, "classifier")
        elif not isinstance(forward_func, nn.Module):
            raise TypeError(
                f"classifier= is required when forward_func is not an nn.Module (got {type(forward_func).__name__})"
            )
        self.classifier = classifier

    def _find_layers(self, inputs_t: Tuple[Tensor, ...], args: Tuple[Any, ...]) -> None:
        """Fill in an omitted layer and classifier with :func:`find_cam_layers` (once)."""
        if self.layer is not None and self.classifier is not None:
            return
        found = find_cam_layers(_hooked(self.forward_func, "CAM"), inputs_t, args)  # type: ignore[arg-type]
        self.found_layers = found
        if self.layer is None:
            self.layer = found.layer
        self.classifier = found.classifier

    @log_usage()
    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None, raw: bool = False,
        create_graph: bool = False, upsample: bool = False, interpolate_mode: str = "bilinear",
    ) -> Tensor:
        r"""Compute class activation maps.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): model inputs, batch first.
            target (int, list[int], Tensor or None): the class of each example (an int for
                all, or one per example) giving a B x 1 x H' x W' map; ``None`` returns the
                maps of every class, B x C x H' x W', in one pass.
            additional_forward_args (Any, optional): extra arguments passed to the model
                after the inputs, as in Captum.
            raw (bool): return the authors' raw map (u times eq. 1; its mean plus the bias
                is the logit) instead of eq. 1. Default False.
            create_graph (bool): keep the graph so the maps are differentiable with respect
                to the inputs and the parameters. Default False (computed under no_grad).
            upsample (bool): interpolate the maps to the input's spatial size (for display
                only; the upsampled map no longer sums to the logit). Default False.
            interpolate_mode (str): ``"bilinear"`` (default), ``"bicubic"``, ``"nearest"`` or ``"area"``.

        Returns:
            Tensor: B x 1 x H' x W' (one target) or B x C x H' x W' (``target=None``).
        """
        self._check_common(None, interpolate_mode)
        _, inputs_t, batch, args = prepare_inputs(inputs, self.forward_func, additional_forward_args)
        with call_mode(self.forward_func, "CAM"):
            self._find_layers(inputs_t, args)
            return self._attribute(inputs_t, batch, args, target, raw, create_graph, upsample, interpolate_mode)

    def _attribute(
        self, inputs_t: Tuple[Tensor, ...], batch: int, args: Tuple[Any, ...], target: TargetType, raw: bool,
        create_graph: bool, upsample: bool, interpolate_mode: str,
    ) -> Tensor:
        fed: List[Tensor] = []

        def grab(module: nn.Module, hook_args: Tuple[Any, ...]) -> None:
            fed.append(hook_args[0])

        assert self.classifier is not None
        handle = self.classifier.register_forward_pre_hook(grab)
        try:
            with input_shape_guard(self.forward_func, inputs_t):
                outputs, activation = forward_with_layer(
                    _hooked(self.forward_func, "CAM"), self.layer, inputs_t, args, grad_enabled=create_graph
                )
        finally:
            handle.remove()
        outputs = _checked_outputs(outputs, activation, batch, inputs_t)
        self._check_gap_head(activation, fed)
        weight = self.classifier.weight
        if weight.shape[0] != outputs.shape[1]:
            raise ValueError(
                f"classifier has {weight.shape[0]} outputs but the model returns {outputs.shape[1]} classes; "
                "pass the final linear layer as classifier"
            )
        weight = weight.to(activation.dtype)
        if not create_graph:
            weight = weight.detach()
        with torch.set_grad_enabled(create_graph):
            flat = activation.flatten(2)  # B x K x u, a view: no copy of the feature map
            if target is None:
                # an explicit bmm: torch.matmul takes a slower path (2.5x here) when the
                # weight requires grad, even under no_grad
                maps = torch.bmm(weight.expand(flat.shape[0], -1, -1), flat)  # B x C x u
            else:
                t = resolve_target(target, outputs.shape[0], outputs.shape[1], outputs.device)
                maps = torch.bmm(weight[t].unsqueeze(1), flat)  # B x 1 x u
            maps = maps.view(*maps.shape[:2], *activation.shape[2:])
            if not raw:
                maps = maps / math.prod(activation.shape[2:])
            if upsample:
                maps = _upsample(maps, inputs_t, interpolate_mode)
        return maps

    def _check_gap_head(self, activation: Tensor, fed: List[Tensor]) -> None:
        name = self.classifier.__class__.__name__
        if len(fed) != 1:
            raise ValueError(
                f"classifier ({name}) was called {len(fed)} times in one forward pass; "
                "CAM needs the final linear layer, called once"
            )
        pooled_in = fed[0]
        if activation.dim() < 3:
            raise ValueError(
                f"layer output has shape {tuple(activation.shape)}; CAM needs a feature map "
                "B x K x H' x W' (or B x K x L); use GradCAM for other layers"
            )
        # A head that is not GAP -> linear (max pooling, a flatten, another layer) breaks the
        # identity for every example, so checking the first one costs 1/B of a full check.
        with torch.no_grad():
            expected = activation[:1].mean(dim=_spatial_dims(activation))
            matches = pooled_in.shape == (activation.shape[0], activation.shape[1]) and bool(
                (pooled_in[:1] - expected).abs().max() <= 1e-4 * (1.0 + expected.abs().max())
            )
        if not matches:
            raise ValueError(
                f"the classifier's input (shape {tuple(pooled_in.shape)}) is not the global average pool "
                f"of the layer's output (shape {tuple(activation.shape)}), so CAM does not apply to this "
                "model: use GradCAM, which works on any head"
            )


class GradCAM(_CAMBase, GradientAttribution):
    r"""Grad-CAM (Selvaraju et al. 2017), equal to Captum's ``LayerGradCam``, batched over classes
    and differentiable.

    .. math::

        \alpha_k^c = \frac{1}{u} \sum_i \frac{\partial f_c(x)}{\partial A_{k,i}}, \qquad
        \mathrm{GradCAM}(x, c) = \mathrm{ReLU}^{?}\Big(\sum_k \alpha_k^c A_k\Big)

    (Boopathy et al. 2020, sec. 2). As in Captum, the ReLU is applied only with
    ``relu_attributions=True``. On a global-average-pooling -> linear head the unrectified
    map equals :class:`CAM` exactly.

    ``target=None`` returns every class's map from one forward pass and one batched
    backward pass (Captum needs one call per class). With ``create_graph=True`` the map
    is differentiable with respect to inputs and parameters; note that for ReLU networks
    the second derivatives through the ReLUs are zero almost everywhere, so gradients of
    the map ignore how the ReLU pattern would move (use a softplus copy of the model).

    Vision transformers: pass ``reshape_transform`` (module docstring), e.g.
    :func:`~captum_robust.attr.vit_reshape_transform`.

    Args:
        forward_func (nn.Module or callable): the model, returning class scores B x C (a
            tensor, an object with a ``.logits`` tensor such as a Hugging Face
            ``ImageClassifierOutput``, or a dict with ``"logits"``).
        layer (nn.Module, optional): the layer whose output (or input) is explained. When
            omitted, found on the first :meth:`attribute` call by
            :func:`~captum_robust.attr.find_cam_layers` with ``require_classifier=False``
            (the feature map of a GAP -> linear head, else the last module called once
            with a 4-D output of more than one cell), kept in ``self.layer``.
        reshape_transform (callable, optional): maps the layer's output to B x K x h x w
            (see above). Default None (the output must be 4-D).

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import GradCAM
        >>> model = Small().eval()
        >>> gc = GradCAM(model, model.feature_layer)
        >>> maps = gc.attribute(torch.rand(4, 1, 28, 28), target=0, relu_attributions=True)
        >>> found = GradCAM(model).attribute(torch.rand(4, 1, 28, 28))   # layer found: 4 x 10 x 7 x 7
    """

    def __init__(
        self, forward_func: Callable[..., Any], layer: Optional[nn.Module] = None,
        reshape_transform: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> None:
        super().__init__(forward_func, layer)
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(
                f"reshape_transform must be a callable (tokens -> B x K x h x w) or None, "
                f"got {type(reshape_transform).__name__}"
            )
        self.reshape_transform = reshape_transform

    def _find_layer(self, inputs_t: Tuple[Tensor, ...], args: Tuple[Any, ...]) -> None:
        if self.layer is None:
            self.found_layers = find_cam_layers(_hooked(self.forward_func, type(self).__name__), inputs_t, args,
                                                 require_classifier=False)  # type: ignore[arg-type]
            self.layer = self.found_layers.layer

    def _spatial(self, grads: Tensor, activation: Tensor, all_classes: bool) -> Tuple[Tensor, Tensor]:
        """Apply ``reshape_transform`` to the activation and the gradients; check for 4-D maps."""
        if self.reshape_transform is not None:
            lead = grads.shape[:2] if all_classes else grads.shape[:1]
            activation = self.reshape_transform(activation)
            grads = self.reshape_transform(grads.flatten(0, 1) if all_classes else grads)
            ok = isinstance(activation, Tensor) and activation.dim() == 4 and isinstance(grads, Tensor)
            if not ok or activation.shape[0] != lead[-1] or grads.shape[1:] != activation.shape[1:]:
                got = tuple(activation.shape) if isinstance(activation, Tensor) else type(activation).__name__
                raise ValueError(
                    f"reshape_transform must return B x K x h x w with the batch ({lead[-1]} examples) first, "
                    f"got {got}; it must only reshape/select entries and accept any leading batch size"
                )
            if all_classes:
                grads = grads.unflatten(0, lead)
        elif activation.dim() != 4:
            raise ValueError(
                f"the layer's activation has shape {tuple(activation.shape)}, not a feature map "
                "B x K x H' x W': for a vision transformer's tokens pass reshape_transform="
                "vit_reshape_transform() (class token dropped, square patch grid); for a 1-D map B x K x L pass "
                "reshape_transform=lambda a: a.unsqueeze(2); or choose a convolutional layer"
            )
        return grads, activation

    def _outputs_and_activation(
        self, inputs: TensorOrTuple, target: TargetType, additional_forward_args: Any, attribute_to_layer_input: bool,
    ) -> Tuple[Tuple[Tensor, ...], Tensor, Tensor, Optional[Tensor]]:
        """The checked inputs, class scores, layer activation and target (None: every class)."""
        _, inputs_t, batch, args = prepare_inputs(inputs, self.forward_func, additional_forward_args)
        self._find_layer(inputs_t, args)
        with input_shape_guard(self.forward_func, inputs_t):
            outputs, activation = forward_with_layer(
                _hooked(self.forward_func, type(self).__name__), self.layer, inputs_t, args,
                attribute_to_layer_input=attribute_to_layer_input,
                require_grad=True,
            )
        outputs = _checked_outputs(outputs, activation, batch, inputs_t)
        t = None if target is None else resolve_target(target, outputs.shape[0], outputs.shape[1], outputs.device)
        return inputs_t, outputs, activation, t

    @log_usage()
    def attribute(
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False, relu_attributions: bool = False, attr_dim_summation: bool = True,
        create_graph: bool = False, class_batch_size: Optional[int] = None, upsample: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> Tensor:
        r"""Compute Grad-CAM maps.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): model inputs, batch first.
            target (int, list[int], Tensor or None): class per example (B x 1 x ... output),
                or ``None`` for every class (B x C x ... output).
            additional_forward_args (Any, optional): extra model arguments, as in Captum.
            attribute_to_layer_input (bool): explain the layer's input instead of its output.
            relu_attributions (bool): apply a ReLU to the map (Captum's option). Default False.
            attr_dim_summation (bool): sum over channels (default). If False, return the
                per-channel products, B x 1 x K x ... (or B x C x K x ... for all classes).
            create_graph (bool): keep the graph so the map is differentiable. Default False.
            class_batch_size (int, optional): with ``target=None``, how many classes share
                one batched backward pass; each chunk is reduced to its maps before the next, so
                the gradients held at once are class_batch_size x the size of the feature map;
                default all.
            upsample (bool): interpolate to the input's spatial size (display only).
            interpolate_mode (str): interpolation for ``upsample``.

        Returns:
            Tensor: the maps, classes in dimension 1.
        """
        return self._maps(
            inputs, target, additional_forward_args, attribute_to_layer_input, relu_attributions,
            attr_dim_summation, create_graph, class_batch_size, upsample, interpolate_mode,
        )

    def _channel_weights(self, grads: Tensor, activation: Tensor, all_classes: bool) -> Tensor:
        """Grad-CAM's weights: the mean gradient over the cells (C x B x K or B x K)."""
        if activation.dim() <= 2:
            return grads
        return grads.mean(dim=_spatial_dims(activation, 1 if all_classes else 0))

    def _maps(
        self, inputs: TensorOrTuple, target: TargetType, additional_forward_args: Any, attribute_to_layer_input: bool,
        relu_attributions: bool, attr_dim_summation: bool, create_graph: bool, class_batch_size: Optional[int],
        upsample: bool, interpolate_mode: str,
    ) -> Tensor:
        """The shared pipeline: gradients, channel weights (per subclass), channel sum, ReLU, upsampling."""
        self._check_common(class_batch_size, interpolate_mode)
        if upsample and not attr_dim_summation:
            raise ValueError("upsample=True needs attr_dim_summation=True (per-channel maps are 5-D)")
        who = "Grad-CAM++" if isinstance(self, GradCAMPlusPlus) else "Grad-CAM"
        chunks = []
        with call_mode(self.forward_func, who), torch.enable_grad():
            inputs_t, outputs, activation, t = self._outputs_and_activation(
                inputs, target, additional_forward_args, attribute_to_layer_input
            )
            all_classes = t is None
            kept = activation if create_graph else activation.detach()
            for grads in _class_gradients(outputs, activation, t, create_graph, class_batch_size):
                grads, act = self._spatial(grads, kept, all_classes)
                with torch.set_grad_enabled(create_graph):  # each class chunk becomes maps before the next
                    chunks.append(_combine(self._channel_weights(grads, act, all_classes), act, all_classes,
                                           attr_dim_summation))
        with torch.set_grad_enabled(create_graph):
            maps = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
            if relu_attributions:
                maps = F.relu(maps)
            if upsample:
                maps = _upsample(maps, inputs_t, interpolate_mode)
        return maps


class GradCAMPlusPlus(GradCAM):
    r"""Grad-CAM++ (Chattopadhay et al. 2018), in the closed form used by its authors.

    With :math:`g = \partial f_c / \partial A` (per channel k and cell i):

    .. math::

        a_{k,i} = \frac{g_{k,i}^2}{2 g_{k,i}^2 + \sum_j A_{k,j}\, g_{k,i}^3}
        \quad (0 \text{ where the denominator is } 0), \qquad
        w_k = \sum_i a_{k,i}\, \mathrm{ReLU}(g_{k,i}), \qquad
        \mathrm{map} = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big).

    The powers :math:`g^2, g^3` stand for the second and third derivatives of
    :math:`\exp(f_c)` divided by :math:`\exp(f_c)`; this is exact only when the score is
    passed through an exponential and is linear in ``A`` (e.g. a global-average-pooling ->
    linear head), and a heuristic otherwise. The exact map for the network
    :math:`\exp(f_c)` is then :math:`\exp(f_c(x))` times this one (Boopathy et al. 2020, sec. 2).

    Takes the same arguments as :class:`GradCAM`; ``relu_attributions`` defaults to True
    (the method's definition).

    Example::

        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import GradCAMPlusPlus
        >>> model = Small().eval()
        >>> maps = GradCAMPlusPlus(model, model.feature_layer).attribute(torch.rand(2, 1, 28, 28))
    """

    @log_usage()
    def attribute(  # type: ignore[override]
        self, inputs: TensorOrTuple, target: TargetType = None, additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False, relu_attributions: bool = True, attr_dim_summation: bool = True,
        create_graph: bool = False, class_batch_size: Optional[int] = None, upsample: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> Tensor:
        r"""Compute Grad-CAM++ maps. Arguments and output as in :meth:`GradCAM.attribute`,
        except that ``relu_attributions`` defaults to True and the layer's activation must have
        spatial dimensions (B x K x H' x W' or B x K x L)."""
        return self._maps(
            inputs, target, additional_forward_args, attribute_to_layer_input, relu_attributions,
            attr_dim_summation, create_graph, class_batch_size, upsample, interpolate_mode,
        )

    def _channel_weights(self, grads: Tensor, activation: Tensor, all_classes: bool) -> Tensor:
        """Grad-CAM++'s weights ``w_k = sum_i a_k,i ReLU(g_k,i)`` (C x B x K or B x K)."""
        if activation.dim() < 3:
            raise ValueError(
                f"Grad-CAM++ needs a layer with spatial dimensions, got activation shape {tuple(activation.shape)}"
            )
        # a * ReLU(g) = g^2 ReLU(g) / (g^2 (2 + S g)) = ReLU(g) / (2 + S g) with S = sum_j A_j:
        # the g^2 cancels (where g = 0 both sides are 0), which saves most of the
        # elementwise passes over the C x B x K x H' x W' gradients. Gradients through a
        # pooling head come back as expanded (stride-0) views; elementwise work on a
        # contiguous copy is several times faster.
        g = grads.contiguous()
        a_sum = activation.sum(dim=_spatial_dims(activation), keepdim=True)
        denom = torch.addcmul(torch.full_like(g, 2.0), a_sum, g)
        nonzero = denom != 0
        ratio = F.relu(g) / torch.where(nonzero, denom, 1.0)
        return torch.where(nonzero, ratio, 0.0).sum(dim=_spatial_dims(activation, 1 if all_classes else 0))
