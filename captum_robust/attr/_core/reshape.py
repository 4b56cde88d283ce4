"""Reshape transforms for ``GradCAM(..., reshape_transform=...)``: layer outputs that are not
feature maps (a vision transformer's tokens) laid out as B x K x h x w."""

from __future__ import annotations

import math
from typing import Callable, Optional

from torch import Tensor

from captum_robust._utils.validation import check_int

__all__ = ["vit_reshape_transform"]


def vit_reshape_transform(
    height: Optional[int] = None, width: Optional[int] = None, skip_tokens: int = 1
) -> Callable[[Tensor], Tensor]:
    r"""A ``reshape_transform`` for vision transformers: tokens B x N x D -> B x D x h x w.

    Drops the first ``skip_tokens`` tokens (the class token; 2 for DeiT's class and
    distillation tokens, 0 for models without), then lays the remaining ``h * w`` patch
    tokens out row by row on the patch grid, as a ViT's patch embedding orders them
    (``Conv2d(..., stride=patch).flatten(2).transpose(1, 2)``) and as pytorch-grad-cam's
    ``reshape_transform`` does. The grid is square (``h = w = sqrt(N - skip_tokens)``)
    unless ``height`` and/or ``width`` are given.

    Args:
        height (int, optional): rows of the patch grid (image height / patch size).
        width (int, optional): columns of the patch grid.
        skip_tokens (int): leading tokens that are not patches. Default 1.

    Returns:
        Callable[[Tensor], Tensor]: the transform, for ``GradCAM(model, block,
        reshape_transform=...)``.

    Example::

        >>> import torch
        >>> from captum_robust.attr import vit_reshape_transform
        >>> tokens = torch.rand(2, 1 + 16, 8)          # class token + a 4 x 4 grid, 8 features
        >>> vit_reshape_transform()(tokens).shape
        torch.Size([2, 8, 4, 4])
    """
    check_int(height, "height", 1, allow_none=True)
    check_int(width, "width", 1, allow_none=True)
    check_int(skip_tokens, "skip_tokens", 0)

    def transform(tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 3:
            got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"vit_reshape_transform expects tokens B x N x D, got {got}")
        n = tokens.shape[1] - skip_tokens
        h, w = height, width
        if h is None and w is None:
            side = math.isqrt(max(n, 0))
            h = w = side
        elif h is None:
            h = n // w if w and n % w == 0 else -1  # type: ignore[operator]
        elif w is None:
            w = n // h if n % h == 0 else -1
        if n <= 0 or h * w != n:  # type: ignore[operator]
            raise ValueError(
                f"vit_reshape_transform: {tokens.shape[1]} tokens minus skip_tokens={skip_tokens} leave {n} patch "
                f"tokens, which do not fill a {h} x {w} grid; pass height= and width= (image size / patch "
                "size) or the right skip_tokens"
            )
        grid = tokens[:, skip_tokens:, :].reshape(tokens.shape[0], h, w, tokens.shape[2])  # type: ignore[arg-type]
        return grid.permute(0, 3, 1, 2)

    return transform
