"""Find the layers class activation maps need, by tracing one forward pass.

CAM (and the Int-family regularizers built on it) needs two modules of a network whose head
is ``feature map A -> global average pooling -> nn.Linear``: the module that produces ``A``
(the *feature layer*) and the linear *classifier*. Grad-CAM and Grad-CAM++ need only the
feature layer. :func:`find_cam_layers` finds both on any ``nn.Module`` from one forward pass
on a probe input, with forward hooks on every submodule; it reads numbers, not names, so it
works the same on the library's models, torchvision-style ResNets/DenseNets/MobileNets and
Hugging Face vision models.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import (
    check_bool,
    classification_outputs,
    format_additional_args,
    format_inputs,
)

__all__ = ["CAMLayers", "find_cam_layers"]

# relative tolerance of "the classifier's input equals the spatial mean of the feature map"
# (float32 sums over up to a few thousand cells; a real mismatch is of order 1)
_RTOL = 1e-4

# modules that pass a feature map on without computing a new one (for the 1 x 1 tie-break)
_PASS_THROUGH = (
    nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout,
    nn.Dropout2d,
)


class _CAMLayersBase(NamedTuple):
    layer: nn.Module
    classifier: Optional[nn.Linear]


class CAMLayers(_CAMLayersBase):
    """What :func:`find_cam_layers` found: a named tuple ``(layer, classifier)`` with more facts.

    Unpacks as ``layer, classifier = find_cam_layers(model, x)``.

    Attributes:
        layer (nn.Module): the feature layer (the module whose output ``A`` is B x K x H' x W').
        classifier (nn.Linear or None): the linear layer fed by the global average pool of
            ``A`` and producing the model's class scores; ``None`` when the head is not
            GAP -> linear (only with ``require_classifier=False``).
        layer_name (str): the dotted name of ``layer`` in ``model.named_modules()``.
        classifier_name (str or None): the dotted name of ``classifier``.
        gap_linear (bool): True when the head is global average pooling -> linear (CAM applies).
        feature_layer (nn.Module): the same module as ``layer``.
    """

    layer_name: str
    classifier_name: Optional[str]
    gap_linear: bool

    def __new__(
        cls, layer: nn.Module, classifier: Optional[nn.Linear], layer_name: str = "",
        classifier_name: Optional[str] = None, gap_linear: bool = False,
    ) -> "CAMLayers":
        self = super().__new__(cls, layer, classifier)
        self.layer_name = layer_name
        self.classifier_name = classifier_name
        self.gap_linear = gap_linear
        return self

    def __getnewargs__(self) -> Tuple[Any, ...]:  # copy/pickle keep the names
        return (self.layer, self.classifier, self.layer_name, self.classifier_name, self.gap_linear)

    @property
    def feature_layer(self) -> nn.Module:
        return self.layer

    def __repr__(self) -> str:
        return (
            f"CAMLayers(layer_name={self.layer_name!r}, classifier_name={self.classifier_name!r}, "
            f"gap_linear={self.gap_linear})"
        )


class _Record:
    __slots__ = ("name", "module", "calls", "done", "shape", "mean", "linear_in", "linear_out", "tokens")

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module = name, module
        self.calls = 0
        self.done = -1  # completion order of the last call
        self.shape: Optional[Tuple[int, ...]] = None  # of a 4-D tensor output
        self.mean: Optional[Tensor] = None  # its spatial mean, taken when the module returned
        self.linear_in: Optional[Tensor] = None
        self.linear_out: Optional[Tensor] = None
        self.tokens = False  # returned a 3-D float tensor (a token sequence B x N x D)


def _trace(model: nn.Module, inputs: Tuple[Tensor, ...], args: Tuple[Any, ...]) -> Tuple[Tensor, List[_Record]]:
    """One forward pass with hooks on every submodule; the records in completion order."""
    records: Dict[int, _Record] = {}
    counter = [0]
    widths = {m.in_features for m in model.modules() if isinstance(m, nn.Linear)}
    handles = []

    def hook(rec: _Record, module: nn.Module, hook_args: Tuple[Any, ...], output: Any) -> None:
        rec.calls += 1
        rec.done = counter[0]
        counter[0] += 1
        rec.shape, rec.mean = None, None
        rec.tokens = isinstance(output, Tensor) and output.dim() == 3 and output.is_floating_point()
        if isinstance(output, Tensor) and output.dim() == 4 and output.is_floating_point():
            # the mean is taken now: code after the module may modify its output in place
            rec.shape = tuple(output.shape)
            if output.shape[1] in widths:  # only a map with as many channels as some linear's inputs can feed it
                rec.mean = output.detach().mean(dim=(2, 3)).to(torch.float64)
        if isinstance(module, nn.Linear) and hook_args and isinstance(hook_args[0], Tensor):
            # only a B x K -> B x C linear can be the classifier; copies of those are small
            # (a ConvNeXt's per-pixel linear layers are not copied)
            two_d = hook_args[0].dim() == 2 and isinstance(output, Tensor)
            rec.linear_in = hook_args[0].detach().clone() if two_d else None
            rec.linear_out = output.detach().clone() if two_d else None

    for name, module in model.named_modules():
        if module is model or id(module) in records:
            continue
        rec = _Record(name, module)
        records[id(module)] = rec
        handles.append(module.register_forward_hook(lambda m, a, o, _r=rec: hook(_r, m, a, o)))
    try:
        with preserved_model_state(model, train=False), torch.no_grad():
            outputs = model(*inputs, *args)
    finally:
        for h in handles:
            h.remove()
    logits = classification_outputs(outputs)
    called = sorted((r for r in records.values() if r.calls), key=lambda r: r.done)
    return logits.detach(), called


def _close(a: Tensor, b: Tensor) -> bool:
    a, b = a.to(torch.float64), b.to(torch.float64)
    return a.shape == b.shape and bool((a - b).abs().max() <= _RTOL * (1.0 + b.abs().max()))


def _pick(candidates: List[_Record], declared: Any) -> _Record:
    """The largest feature map (pooling shrinks it), then the model's own ``feature_layer`` if
    it produces that map, else the last module to return it (the outermost module producing
    the same tensor: ``layer4`` rather than its last ReLU)."""
    cells = max(math.prod(r.shape[2:]) for r in candidates)  # type: ignore[index]
    largest = [r for r in candidates if math.prod(r.shape[2:]) == cells]  # type: ignore[index]
    for r in largest:
        if r.module is declared:
            return r
    # a map that is already 1 x 1 equals its own pool: prefer the module that computed it
    computed = [r for r in largest if not isinstance(r.module, _PASS_THROUGH)]
    return (computed or largest)[-1]


def _fallback_feature_layer(maps: List[_Record], records: List[_Record]) -> Tuple[Optional[_Record], str]:
    """The documented rule without a GAP -> linear head: the last module (called once) whose
    output is 4-D with more than one cell; the last 4-D one if every map is 1 x 1. None (and
    why) when there is no 4-D output, or when the map is turned into a token sequence later
    (a module after it returns a 3-D tensor: a vision transformer's patch embedding)."""
    if not maps:
        return None, "no submodule returns a 4-D feature map (B x K x H x W)"
    wide = [r for r in maps if math.prod(r.shape[2:]) > 1]  # type: ignore[index]
    found = (wide or maps)[-1]
    tokens = [r for r in records if r.done > found.done and r.tokens]
    if tokens:
        return None, (
            f"the last 4-D output ('{found.name}') becomes a token sequence later ('{tokens[-1].name}' returns "
            "B x N x D): a vision transformer"
        )
    return found, ""


def find_cam_layers(
    model: nn.Module, example_inputs: Any, additional_forward_args: Any = None, require_classifier: bool = True
) -> CAMLayers:
    r"""Find the feature layer and the linear classifier of a global-average-pooling head.

    Runs the model once on ``example_inputs`` (in eval mode, without gradients; the model's
    mode, parameters and the inputs are left as found) with a forward hook on every
    submodule, and decides from the numbers:

    * the **classifier** is the last ``nn.Linear`` called, if its output is the model's class
      scores (the tensor, or the ``.logits`` of a Hugging Face ``ImageClassifierOutput`` or
      the ``"logits"`` of a dict) and its input is the global average pool
      :math:`\frac{1}{HW}\sum_{h,w} A_{b,k,h,w}` of the B x K x H x W output ``A`` of a module
      called earlier (directly or through a pooling/flatten module, a ``Dropout`` in eval mode ...);
    * the **feature layer** is that module: among the modules called exactly once whose 4-D
      output averages to the classifier's input, the one with the largest feature map (so
      the pooling module's B x K x 1 x 1 output is skipped), and of those the last to return
      (the outermost module producing the map: a ResNet's ``layer4`` rather than its last
      block's ReLU), unless the model names its own ``feature_layer`` (the library's models)
      and that module produces the same map. Modules called more than once in a pass (torchvision's shared ``relu``
      inside a block) cannot be hooked unambiguously and are skipped.

    The head is then "GAP -> linear" and :class:`~captum_robust.attr.CAM` applies
    (``gap_linear=True``). What is found on common models:

    * torchvision-style ResNet: ``layer4`` and ``fc``; MobileNetV2/EfficientNet-like:
      ``features`` and ``classifier.1``; the library's models: ``feature_layer``/``classifier``.
    * Hugging Face ``ResNetForImageClassification``: ``resnet.encoder.stages.<last>`` and
      ``classifier.1`` (``classifier`` is ``Flatten -> Linear``); ``RegNetForImageClassification``
      likewise (``regnet.encoder.stages.<last>``); ``MobileNetV2ForImageClassification``:
      ``mobilenet_v2.conv_1x1`` and ``classifier``.
    * Hugging Face ``ConvNextForImageClassification``: the pooled features pass through a
      ``LayerNorm`` (``convnext.layernorm``) before the classifier, so the head is not
      GAP -> linear: CAM does not apply (refused), Grad-CAM uses the last stage.
    * DenseNet: ``features`` is followed by a functional ``F.relu`` before the pooling, so no
      module's output averages to the classifier's input: CAM does not apply (a CAM of
      ``features`` would miss the ReLU), Grad-CAM uses ``features``.
    * VGG-style ``flatten -> MLP`` heads: no GAP -> linear head; Grad-CAM uses the rule below.

    Without a GAP -> linear head the call raises a ``ValueError`` that names the candidates,
    unless ``require_classifier=False``: then the feature layer follows a documented rule,
    **the last module called once whose output is 4-D with more than one cell** (the last
    4-D one if all are 1 x 1), and ``classifier`` is None. This is what
    :class:`~captum_robust.attr.GradCAM` and :class:`~captum_robust.attr.GradCAMPlusPlus` use
    when ``layer`` is omitted. Vision transformers have no 4-D output at all: pass their
    block as ``layer=`` with ``reshape_transform=vit_reshape_transform()``.

    The cost is one forward pass (plus a B x K mean of every 4-D output); a batch of one or
    two examples is enough as probe.

    Args:
        model (nn.Module): the classifier, returning B x C scores (or an object with a
            ``.logits`` tensor, or a dict with ``"logits"``).
        example_inputs (Tensor or tuple[Tensor, ...]): inputs the model accepts (batch first).
        additional_forward_args (Any, optional): passed after the inputs, as in Captum.
        require_classifier (bool): raise when the head is not GAP -> linear (default True,
            what CAM needs); False returns the feature layer of the rule above with
            ``classifier=None``.

    Returns:
        CAMLayers: ``(layer, classifier)`` with ``layer_name``, ``classifier_name``,
        ``gap_linear`` and ``feature_layer`` (= ``layer``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: the model does not return B x C scores; no module outputs a 4-D feature
            map; or (with ``require_classifier``) the head is not GAP -> linear. The message
            names the last linear layer, the feature-map candidates and what to do.

    Example::

        >>> import torch
        >>> from captum_robust.models import Small
        >>> from captum_robust.attr import find_cam_layers
        >>> model = Small().eval()
        >>> found = find_cam_layers(model, torch.rand(1, 1, 28, 28))
        >>> found.layer is model.feature_layer, found.classifier is model.classifier
        (True, True)
        >>> layer, classifier = found
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be an nn.Module to find its layers, got {type(model).__name__}; "
            "pass layer= (and classifier=) explicitly"
        )
    check_bool(require_classifier, "require_classifier")
    _, inputs = format_inputs(example_inputs, "example_inputs")
    args = format_additional_args(additional_forward_args)
    logits, records = _trace(model, inputs, args)
    maps = [r for r in records if r.shape is not None and r.calls == 1]
    linears = [r for r in records if isinstance(r.module, nn.Linear)]
    last_linear = linears[-1] if linears else None

    classifier = None
    candidates: List[_Record] = []
    why = ""
    if last_linear is None:
        why = "the model calls no nn.Linear"
    elif last_linear.calls != 1:
        why = f"the last nn.Linear ('{last_linear.name}') is called {last_linear.calls} times in one forward pass"
    elif last_linear.linear_out is None or not _close(last_linear.linear_out, logits):
        why = f"the output of the last nn.Linear ('{last_linear.name}') is not the model's class scores"
    else:
        fed = last_linear.linear_in
        if fed is not None and fed.dim() == 2:
            candidates = [
                r for r in maps if r.done < last_linear.done and r.mean is not None and _close(r.mean, fed)
            ]
        if candidates:
            classifier = last_linear
        else:
            # the modules that returned between the last feature map and the classifier
            between = [r.name for r in records if maps and maps[-1].done < r.done < last_linear.done]
            shown = _innermost(between)
            why = (
                f"the input of the last nn.Linear ('{last_linear.name}') is not the global average pool of "
                "any module's 4-D output"
                + (f" (modules called in between: {', '.join(shown[:6])})" if shown else "")
                + "; e.g. a LayerNorm after the pooling (ConvNeXt), a functional ReLU before it (DenseNet), "
                "or a flatten -> MLP head (VGG)"
            )

    if classifier is not None:
        feature = _pick(candidates, getattr(model, "feature_layer", None))
        return CAMLayers(feature.module, classifier.module, feature.name, classifier.name, True)  # type: ignore[arg-type]

    fallback, no_map = _fallback_feature_layer(maps, records)
    if fallback is None:
        raise ValueError(
            f"{type(model).__name__} has no feature map for CAM or Grad-CAM on inputs of shape "
            f"{tuple(inputs[0].shape)}: {no_map}. For a vision transformer pass a block as layer= with "
            "reshape_transform=vit_reshape_transform() to GradCAM/GradCAMPlusPlus"
        )
    if require_classifier:
        listed = ", ".join(f"'{r.name}' {tuple(r.shape[1:])}" for r in maps[-4:])  # type: ignore[index]
        raise ValueError(
            f"{type(model).__name__} has no global-average-pooling -> linear head: {why}. CAM does not apply; "
            f"use GradCAM (feature-map candidates, last called last: {listed}; "
            f"find_cam_layers(model, inputs, require_classifier=False).layer is '{fallback.name}')"
        )
    return CAMLayers(fallback.module, None, fallback.name, None, False)


def _innermost(names: List[str]) -> List[str]:
    """Drop names that are the parent of another listed name (keep 'convnext.layernorm', not 'convnext')."""
    return [n for n in names if not any(m.startswith(n + ".") for m in names if m != n)]
