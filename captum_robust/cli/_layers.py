"""The layers of the user's model that ``--attribution cam|gradcam|gradcam++``,
``--layer``/``--classifier`` and ``--representation-layer`` name: names are resolved against
the factory's module (``UserRun.user_model``), not the CLI's wrappers, and omitted ones are
found with :func:`~captum_robust.attr.find_cam_layers`; every failure is a one-line
:class:`~captum_robust.cli._runtime.UsageError`."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from captum_robust.cli._runtime import UsageError

__all__ = ["named_submodule", "module_name", "feature_layer", "cam_parts", "gradcam_parts"]


def named_submodule(model: torch.nn.Module, name: str, option: str) -> torch.nn.Module:
    """The submodule ``name`` (dotted, as in ``model.named_modules()``) or a UsageError listing some."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        names = [n for n in modules if n]
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise UsageError(f"{option} {name!r} is not a submodule of the model; submodules include: {shown}")
    return modules[name]


def module_name(model: torch.nn.Module, module: Optional[torch.nn.Module]) -> str:
    """``module``'s dotted name in ``model`` ('?' when it is not one of its submodules)."""
    return next((n for n, m in model.named_modules() if m is module), "?")


def _find(run_model: torch.nn.Module, x1: torch.Tensor, require_classifier: bool) -> Any:
    """:func:`find_cam_layers` on the model the library runs (tensor outputs, normalised inputs)."""
    from captum_robust.attr import find_cam_layers

    return find_cam_layers(run_model, x1, require_classifier=require_classifier)


def feature_layer(user_model: torch.nn.Module, run_model: torch.nn.Module, name: Optional[str], option: str,
                  x1: torch.Tensor) -> Tuple[torch.nn.Module, str]:
    """``(module, how it was chosen)``: ``name``, else ``user_model.feature_layer``, else
    :func:`find_cam_layers`' feature layer (the GAP -> linear head's, or its rule without such a head)."""
    if name is not None:
        return named_submodule(user_model, name, option), option
    if isinstance(getattr(user_model, "feature_layer", None), torch.nn.Module):
        return user_model.feature_layer, "model.feature_layer"
    try:
        found = _find(run_model, x1, require_classifier=False)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{option} is needed: no feature layer found automatically ({str(exc).splitlines()[0]}); "
                         f"pass {option} NAME (a name from model.named_modules())") from None
    return found.layer, "found by find_cam_layers"


def cam_parts(user_model: torch.nn.Module, run_model: torch.nn.Module, args: Any, x1: torch.Tensor,
              y1: torch.Tensor) -> Tuple[Any, str, str]:
    """The CAM of ``--layer``/``--classifier`` (each: the option, ``model.feature_layer`` /
    ``model.classifier``, else found), tried on one image; with the layer and classifier names."""
    from captum_robust.attr import CAM

    layer = classifier = None
    if args.layer is not None:
        layer = named_submodule(user_model, args.layer, "--layer")
    elif isinstance(getattr(user_model, "feature_layer", None), torch.nn.Module):
        layer = user_model.feature_layer
    if args.classifier is not None:
        classifier = named_submodule(user_model, args.classifier, "--classifier")
        if not isinstance(classifier, torch.nn.Linear):
            raise UsageError(f"--classifier {args.classifier!r} is a {type(classifier).__name__}, not the nn.Linear "
                             "fed by global average pooling that CAM needs")
    elif isinstance(getattr(user_model, "classifier", None), torch.nn.Linear):
        classifier = user_model.classifier
    if layer is None or classifier is None:
        try:
            found = _find(run_model, x1, require_classifier=True)
        except (ValueError, TypeError) as exc:
            raise UsageError(
                f"--attribution cam needs a global average pooling -> nn.Linear head: {str(exc).splitlines()[0]}; "
                "pass --layer NAME --classifier NAME, or use another --attribution (gradcam for any CNN; ig, saliency "
                "or sparsified-smoothgrad for any model)"
            ) from None
        layer = found.layer if layer is None else layer
        classifier = found.classifier if classifier is None else classifier
    names = module_name(user_model, layer), module_name(user_model, classifier)
    try:
        cam = CAM(run_model, layer, classifier)
        cam.attribute(x1, target=y1)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"--attribution cam does not apply with layer {names[0]!r} and classifier {names[1]!r} "
            f"({str(exc).splitlines()[0]}); pass --layer NAME --classifier NAME (names from model.named_modules()) "
            "for a feature map followed by global average pooling and a linear layer, or use another --attribution"
        ) from None
    return cam, names[0], names[1]


def gradcam_parts(user_model: torch.nn.Module, run_model: torch.nn.Module, args: Any, x1: torch.Tensor,
                  y1: torch.Tensor) -> Tuple[Any, str, str]:
    """Grad-CAM or Grad-CAM++ (``args.attribution``) of ``--layer`` (else found), tried on one
    image; with the layer's name and how it was chosen."""
    from captum_robust.attr import GradCAM, GradCAMPlusPlus

    layer, how = feature_layer(user_model, run_model, args.layer, "--layer", x1)
    name = module_name(user_model, layer)
    method = GradCAMPlusPlus if args.attribution == "gradcam++" else GradCAM
    try:
        attribution = method(run_model, layer)
        attribution.attribute(x1, target=y1)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"--attribution {args.attribution} does not apply with layer {name!r} ({str(exc).splitlines()[0]}); pass "
            "--layer NAME (a module of model.named_modules() whose output is a B x C x H x W feature map)"
        ) from None
    return attribution, name, how
