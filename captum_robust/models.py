"""Reference architectures of the papers this library reproduces.

All models are plain :class:`torch.nn.Module` s that take images ``B x C x H x W``
and return logits ``B x num_classes``. Each one exposes

- ``features``: an :class:`torch.nn.Sequential` mapping the input to the last
  feature map ``A`` (``B x K x H' x W'``);
- ``feature_layer``: the submodule whose output is ``A`` (the last element of
  ``features``), to hand to Captum's layer methods and to :class:`~captum_robust.attr.CAM`;
- ``classifier``: the final :class:`torch.nn.Linear`;
- ``has_gap_head``: ``True`` when ``classifier`` consumes exactly the global average
  pool ``A.mean(dim=(2, 3))`` of the feature map, with no activation in between. Then
  the class activation map of Boopathy eq. 1,
  ``CAM(x, c)_i = (1/u) sum_k W[c, k] A_k,i``, satisfies completeness:
  ``sum_i CAM(x, c)_i + b_c = f_c(x)``.

Every activation is an :class:`torch.nn.ReLU` *module* (never ``F.relu``), so it can be
found and swapped; ``softplus=beta`` builds the model with :class:`torch.nn.Softplus`
``(beta=beta)`` in every place instead (a smooth surrogate with non-zero second
derivatives, useful for regularizers that differentiate through input gradients).
Parameter names do not depend on ``softplus``, so a ReLU model's ``state_dict`` loads
into its softplus twin.

One model takes token ids instead: :class:`TokenBagClassifier`, a small text classifier
(embedding -> per-token MLP -> masked mean -> linear) for the synthetic task of
:func:`captum_robust.data.make_token_task`, explained through its ``embedding`` module
(``embedding_layer=``).

Papers: Boopathy et al., "Proper Network Interpretability Helps Adversarial Robustness in
Classification", ICML 2020 (``Small``, ``Pool``, ``WResnet``); Madry et al., "Towards Deep
Learning Models Resistant to Adversarial Attacks", ICLR 2018 (the MNIST net used by Chen et
al., NeurIPS 2019); Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.

Example:
    >>> import torch
    >>> from captum_robust.models import build_model
    >>> model = build_model("small", in_channels=1, num_classes=10)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from collections import OrderedDict
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from captum_robust._utils.validation import Interval, check_int, check_number, check_positive

__all__ = [
    "GlobalAvgPool2d",
    "Small",
    "Pool",
    "MadryMNIST",
    "WideResNet",
    "TokenBagClassifier",
    "MODEL_NAMES",
    "build_model",
]


# --------------------------------------------------------------------------- helpers


def _check_common(in_channels: Any, num_classes: Any, softplus: Any) -> Tuple[int, int, Optional[float]]:
    """Validate the arguments every model takes; return ``(in_channels, num_classes, beta)``
    with ``beta`` None (ReLU) or the softplus beta as a positive finite float."""
    return (
        check_int(in_channels, "in_channels", 1),
        check_int(num_classes, "num_classes", 1),
        check_positive(softplus, "softplus", allow_none=True),
    )


def _activation(beta: Optional[float]) -> nn.Module:
    """``nn.ReLU()`` when ``beta`` is None, else ``nn.Softplus(beta=beta)``."""
    if beta is None:
        return nn.ReLU()
    return nn.Softplus(beta=beta)


class GlobalAvgPool2d(nn.Module):
    """Global average pooling that flattens: ``B x K x H x W -> B x K``.

    Computes exactly ``x.mean(dim=(2, 3))``, so a linear layer on its output is the
    CAM head of Boopathy eq. 1.

    Example:
        >>> import torch
        >>> GlobalAvgPool2d()(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3])
    """

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if x.dim() != 4:
            raise ValueError(
                f"GlobalAvgPool2d expects a B x K x H x W tensor, got shape {tuple(x.shape)}"
            )
        return x.mean(dim=(2, 3))


class _GapModel(nn.Module):
    """Shared head: ``features -> A -> A.mean((2, 3)) -> classifier``.

    Subclasses build ``features`` (whose last element outputs ``width`` channels) and hand it
    here; the pool and the linear classifier are created after it, in that order (the order
    of the random initialization).
    """

    has_gap_head = True

    def __init__(self, features: nn.Sequential, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.gap = GlobalAvgPool2d()
        self.classifier = nn.Linear(width, num_classes)

    @property
    def feature_layer(self) -> nn.Module:
        """The submodule whose output is the last feature map ``A`` (``B x K x H' x W'``)."""
        return self.features[-1]

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.classifier(self.gap(self.features(x)))


# --------------------------------------------------------------------------- models


class Small(_GapModel):
    """Boopathy et al.'s ``Small`` CNN: three convolutions (16, 32, 100 filters), GAP, linear.

    Architecture (B x C x H x W input)::

        conv(C->16, k4, s2, p1) -> act -> conv(16->32, k4, s2, p1) -> act
        -> conv(32->100, k3, s1, p1)            [feature_layer, no activation after it]
        -> A.mean((2, 3))  (B x 100)  -> Linear(100, num_classes)  [classifier]

    The paper gives only the filter counts (Boopathy et al., ICML 2020, sec. 5); kernel
    sizes, strides and padding are *our choice*, picked so that a 28 x 28 input gives the
    7 x 7 CAM resolution the authors used on MNIST (a 32 x 32 input gives 8 x 8; in general
    ``H' = H // 4`` for H divisible by 4). The feature map is taken before any activation,
    as in the authors' code, so CAM completeness holds exactly.

    Args:
        in_channels (int): input channels C (1 for MNIST, 3 for CIFAR-10). Default 1.
        num_classes (int): number of logits. Default 10.
        softplus (float, optional): None for ReLU activations, or a beta > 0 to use
            ``nn.Softplus(beta=beta)`` for every activation. Default None.

    Attributes:
        features (nn.Sequential): ``conv1, act1, conv2, act2, conv3``; ``features(x)`` is A.
        feature_layer (nn.Module): ``features.conv3`` (output ``B x 100 x H/4 x W/4``).
        gap (GlobalAvgPool2d): the global average pool.
        classifier (nn.Linear): ``Linear(100, num_classes)``.
        has_gap_head (bool): True.

    Example:
        >>> import torch
        >>> model = Small(in_channels=1, num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> model.features(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 100, 7, 7])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, softplus: Optional[float] = None):
        in_channels, num_classes, beta = _check_common(in_channels, num_classes, softplus)
        features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, 16, kernel_size=4, stride=2, padding=1)),
                    ("act1", _activation(beta)),
                    ("conv2", nn.Conv2d(16, 32, kernel_size=4, stride=2, padding=1)),
                    ("act2", _activation(beta)),
                    ("conv3", nn.Conv2d(32, 100, kernel_size=3, stride=1, padding=1)),
                ]
            )
        )
        super().__init__(features, 100, num_classes)


def _conv_pool_block(in_ch: int, out_ch: int, beta: Optional[float]) -> nn.Sequential:
    """``conv(k5, p2) -> act -> maxpool2``, Madry et al.'s MNIST block ('SAME' padding)."""
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(in_ch, out_ch, kernel_size=5, padding=2)),
                ("act", _activation(beta)),
                ("pool", nn.MaxPool2d(2)),
            ]
        )
    )


def _madry_features(in_channels: int, beta: Optional[float]) -> nn.Sequential:
    """``block1, block2``: Madry et al.'s two conv + max-pool blocks (32, 64 filters)."""
    return nn.Sequential(
        OrderedDict([("block1", _conv_pool_block(in_channels, 32, beta)), ("block2", _conv_pool_block(32, 64, beta))])
    )


class Pool(_GapModel):
    """Boopathy et al.'s ``Pool`` CNN: two conv + max-pool blocks (32, 64 filters), GAP, linear.

    Architecture::

        block1 = conv(C->32, k5, p2) -> act -> maxpool2
        block2 = conv(32->64, k5, p2) -> act -> maxpool2      [feature_layer]
        -> A.mean((2, 3))  (B x 64)  -> Linear(64, num_classes)  [classifier]

    Adapted, as in the paper, from Madry et al.'s MNIST network (see :class:`MadryMNIST`)
    by replacing the 1024-unit fully connected layer with a GAP -> linear head. The paper
    gives only the filter counts; 5 x 5 kernels with 'same' padding (Madry's) are *our
    choice*. A 28 x 28 input gives a 7 x 7 map, 32 x 32 gives 8 x 8 (``H' = H // 4``).
    The feature map is the output of the last max-pool (after the block's activation).

    Args:
        in_channels (int), num_classes (int), softplus (float, optional): as in :class:`Small`.

    Attributes:
        features (nn.Sequential): ``block1, block2``; each is ``conv, act, pool``.
        feature_layer (nn.Module): ``features.block2`` (output ``B x 64 x H/4 x W/4``).
        classifier (nn.Linear): ``Linear(64, num_classes)``; ``gap`` and ``has_gap_head``
            (True) as in :class:`Small`.

    Example:
        >>> import torch
        >>> model = Pool()
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> model.features(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64, 7, 7])
        >>> model.feature_layer is model.features.block2
        True
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, softplus: Optional[float] = None):
        in_channels, num_classes, beta = _check_common(in_channels, num_classes, softplus)
        super().__init__(_madry_features(in_channels, beta), 64, num_classes)


class MadryMNIST(nn.Module):
    """Madry et al.'s MNIST network (used by Chen et al. and Gali et al.): conv 32/64 + fc 1024.

    Architecture::

        block1 = conv(C->32, k5, p2) -> act -> maxpool2
        block2 = conv(32->64, k5, p2) -> act -> maxpool2      [feature_layer]
        -> flatten (B x 64*(input_size//4)**2) -> Linear(., 1024) -> act
        -> Linear(1024, num_classes)                          [classifier]

    There is no global-average-pool head, so ``has_gap_head`` is False: CAM does not
    apply, Grad-CAM / Grad-CAM++ on ``feature_layer`` do.

    Args:
        in_channels (int), num_classes (int): as in :class:`Small`.
        input_size (int): side of the square input (28 for MNIST); fixes the width of the
            first fully connected layer. Must be >= 4. Default 28.
        softplus (float, optional): as in :class:`Small`.

    Attributes:
        features (nn.Sequential): ``block1, block2``; each is ``conv, act, pool``.
        feature_layer (nn.Module): ``features.block2`` (output ``B x 64 x s x s`` with
            ``s = input_size // 4``).
        fc1 (nn.Linear), act (nn.Module): the hidden 1024-unit layer and its activation.
        classifier (nn.Linear): ``Linear(1024, num_classes)``.
        has_gap_head (bool): False.

    Example:
        >>> import torch
        >>> model = MadryMNIST(input_size=28)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> model.features(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64, 7, 7])
    """

    has_gap_head = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        softplus: Optional[float] = None,
    ):
        super().__init__()
        in_channels, num_classes, beta = _check_common(in_channels, num_classes, softplus)
        self.input_size = check_int(input_size, "input_size", 4)
        self._map_side = self.input_size // 4
        self.features = _madry_features(in_channels, beta)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * self._map_side**2, 1024)
        self.act = _activation(beta)
        self.classifier = nn.Linear(1024, num_classes)

    @property
    def feature_layer(self) -> nn.Module:
        """The submodule whose output is the last feature map ``A`` (``features.block2``)."""
        return self.features[-1]

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        a = self.features(x)
        if a.shape[-2:] != (self._map_side, self._map_side):
            raise ValueError(
                f"MadryMNIST was built with input_size={self.input_size} (feature map "
                f"{self._map_side}x{self._map_side}) but got input of spatial size "
                f"{tuple(x.shape[-2:])}; build it with the matching input_size"
            )
        return self.classifier(self.act(self.fc1(self.flatten(a))))


class _WideBasic(nn.Module):
    """Pre-activation wide residual block: BN-act-conv3x3-BN-act-(dropout)-conv3x3 + shortcut.

    When the shape changes (stride != 1 or channels differ) the shortcut is a 1x1 conv
    applied to the pre-activated input ``act(bn1(x))``, as in Zagoruyko & Komodakis' code.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, beta: Optional[float], dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = _activation(beta)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = _activation(beta)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: Optional[nn.Module] = nn.Conv2d(
                in_ch, out_ch, kernel_size=1, stride=stride, padding=0, bias=False
            )
        else:
            self.shortcut = None

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        o = self.act1(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.dropout(self.act2(self.bn2(y))))
        skip = x if self.shortcut is None else self.shortcut(o)
        return y + skip


class WideResNet(_GapModel):
    """Pre-activation Wide ResNet (Zagoruyko & Komodakis, BMVC 2016), WRN-``depth``-``widen_factor``.

    Architecture::

        conv3x3(C->16)
        -> group1: n blocks, 16k channels, stride 1
        -> group2: n blocks, 32k channels, stride 2
        -> group3: n blocks, 64k channels, stride 2
        -> final = BN -> act                                  [feature_layer]
        -> A.mean((2, 3))  (B x 64k)  -> Linear(64k, num_classes)   [classifier]

    with ``n = (depth - 4) / 6`` pre-activation basic blocks per group and a 1x1 conv
    shortcut where the shape changes. The defaults (depth 10, k = 1: filters
    (16, 16, 32, 64), one block per group) are the "WResnet" of Boopathy et al., appendix D
    ("scale x1 ... (16, 16, 32, 64) filters"); the depth is not stated there, so depth 10 is
    *our choice*. The feature map is the output of the final BN -> activation, which feeds
    the pool directly. A 28 x 28 input gives 7 x 7, 32 x 32 gives 8 x 8 (``ceil(H / 4)``).

    Args:
        depth (int): total depth; ``(depth - 4) % 6 == 0`` and ``depth >= 10``. Default 10.
        widen_factor (int): width multiplier k. Default 1.
        in_channels (int): input channels C. Default 3.
        num_classes (int), softplus (float, optional): as in :class:`Small`.
        dropout (float): dropout probability between the two convs of each block, in
            [0, 1). Default 0 (none).

    Attributes:
        features (nn.Sequential): ``conv1, group1, group2, group3, final``.
        feature_layer (nn.Module): ``features.final`` = ``nn.Sequential(bn, act)``
            (output ``B x 64k x ceil(H/4) x ceil(W/4)``).
        classifier (nn.Linear): ``Linear(64 * widen_factor, num_classes)``; ``gap`` and
            ``has_gap_head`` (True) as in :class:`Small`.

    Example:
        >>> import torch
        >>> model = WideResNet(depth=10, widen_factor=1, in_channels=3).eval()
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> model.features(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        depth: int = 10,
        widen_factor: int = 1,
        in_channels: int = 3,
        num_classes: int = 10,
        softplus: Optional[float] = None,
        dropout: float = 0.0,
    ):
        depth = check_int(depth, "depth", 1)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"depth must satisfy (depth - 4) % 6 == 0 and depth >= 10 "
                f"(10, 16, 22, 28, ...), got depth={depth}"
            )
        widen_factor = check_int(widen_factor, "widen_factor", 1)
        in_channels, num_classes, beta = _check_common(in_channels, num_classes, softplus)
        dropout = check_number(dropout, "dropout", Interval(0, 1, closed="left"))
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        def group(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
            blocks = [_WideBasic(in_ch, out_ch, stride, beta, dropout)]
            blocks += [_WideBasic(out_ch, out_ch, 1, beta, dropout) for _ in range(n - 1)]
            return nn.Sequential(*blocks)

        final = nn.Sequential(
            OrderedDict([("bn", nn.BatchNorm2d(widths[3])), ("act", _activation(beta))])
        )
        features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)),
                    ("group1", group(widths[0], widths[1], 1)),
                    ("group2", group(widths[1], widths[2], 2)),
                    ("group3", group(widths[2], widths[3], 2)),
                    ("final", final),
                ]
            )
        )
        super().__init__(features, widths[3], num_classes)
        self.depth = depth
        self.widen_factor = widen_factor

    @property
    def final(self) -> nn.Sequential:
        """The final ``BN -> act`` block (same module as :attr:`feature_layer`)."""
        return self.features.final


# --------------------------------------------------------------------------- token models


class TokenBagClassifier(nn.Module):
    r"""A tiny text classifier: embedding -> per-token MLP -> masked mean over the tokens -> linear.

    Architecture (``B x T`` token ids, attention mask :math:`m_{b,t} \in \{0, 1\}`)::

        e_t = embedding(ids_t)                                  (B x T x D)  [embedding]
        h_t = act(Linear(D, hidden)(e_t))                        per token, the same MLP
        z   = sum_t m_t h_t / sum_t m_t                          masked mean  (B x hidden)
        logits = Linear(hidden, n_classes)(z)                    [classifier]

    The logit is a sum of per-token terms :math:`f_c = b_c + \frac{1}{L} \sum_{t:\,m_t=1} g_c(e_t)`
    with a nonlinear :math:`g_c`, so Integrated Gradients through ``embedding`` has a closed form
    per token: :math:`\sum_d \mathrm{IG}_{t,d} = (g_c(e_t) - g_c(e'_t)) / L` for baseline
    embeddings :math:`e'` (exact, as :math:`f_c` is separable across tokens). The padding row of
    the embedding is zero and gets no gradient (``nn.Embedding(padding_idx=...)``).

    Args:
        vocab_size (int): number of token ids, >= 1.
        embedding_dim (int): embedding width D, >= 1. Default 16.
        n_classes (int): number of logits, >= 1. Default 2.
        hidden (int): width of the per-token MLP, >= 1. Default 32.
        padding_idx (int, optional): id of the padding token (its embedding row is zero), in
            ``[0, vocab_size - 1]``, or None for no padding row. Default 0.
        softplus (float, optional): None for a ReLU in the MLP, or a beta > 0 for
            ``nn.Softplus(beta=beta)`` (non-zero second derivatives, for attacks and
            regularizers that differentiate through input gradients). Default None.

    Attributes:
        embedding (nn.Embedding): the token embedding; pass it as ``embedding_layer=``.
        mlp (nn.Sequential): ``Linear(D, hidden)``, activation.
        classifier (nn.Linear): ``Linear(hidden, n_classes)``.

    Example:
        >>> import torch
        >>> model = TokenBagClassifier(vocab_size=50, embedding_dim=16, n_classes=2)
        >>> ids = torch.tensor([[5, 7, 9, 0], [3, 4, 0, 0]])
        >>> mask = (ids != 0).long()
        >>> model(ids, mask).shape
        torch.Size([2, 2])
        >>> torch.equal(model(ids, mask), model(ids))  # no mask: the non-padding ids are the real ones
        True
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 16,
        n_classes: int = 2,
        hidden: int = 32,
        padding_idx: Optional[int] = 0,
        softplus: Optional[float] = None,
    ):
        super().__init__()
        vocab_size = check_int(vocab_size, "vocab_size", 1)
        self.padding_idx = check_int(padding_idx, "padding_idx", 0, vocab_size - 1, allow_none=True)
        beta = check_positive(softplus, "softplus", allow_none=True)
        self.embedding = nn.Embedding(vocab_size, check_int(embedding_dim, "embedding_dim", 1),
                                      padding_idx=self.padding_idx)
        hidden = check_int(hidden, "hidden", 1)
        self.mlp = nn.Sequential(OrderedDict([("fc", nn.Linear(embedding_dim, hidden)), ("act", _activation(beta))]))
        self.classifier = nn.Linear(hidden, check_int(n_classes, "n_classes", 1))

    def forward(self, ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        """Logits ``B x n_classes`` of ``B x T`` token ids.

        ``attention_mask`` (``B x T``, 1/true = real token, 0 = padding) selects the tokens the
        mean runs over; None takes the ids other than ``padding_idx`` (all ids when there is none).
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must be a B x T tensor of token ids, got shape {tuple(ids.shape)}")
        if attention_mask is None:
            attention_mask = ids != self.padding_idx if self.padding_idx is not None else torch.ones_like(ids)
        elif tuple(attention_mask.shape) != tuple(ids.shape):
            raise ValueError(
                f"attention_mask must have the ids' shape {tuple(ids.shape)}, got {tuple(attention_mask.shape)}"
            )
        h = self.mlp(self.embedding(ids))
        w = attention_mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return self.classifier(pooled)


# --------------------------------------------------------------------------- registry

_REGISTRY = {
    "small": Small,
    "pool": Pool,
    "madry": MadryMNIST,
    "wrn": WideResNet,
}

#: Names accepted by :func:`build_model` (case-insensitive).
MODEL_NAMES = tuple(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a reference architecture by name.

    Args:
        name (str): one of ``"small"`` (:class:`Small`), ``"pool"`` (:class:`Pool`),
            ``"madry"`` (:class:`MadryMNIST`), ``"wrn"`` (:class:`WideResNet`);
            case-insensitive.
        **kwargs: passed to the class (``in_channels``, ``num_classes``, ``softplus``, ...).

    Returns:
        nn.Module: the freshly initialized model.

    Raises:
        ValueError: if ``name`` is not one of :data:`MODEL_NAMES`.

    Example:
        >>> import torch
        >>> model = build_model("WRN", in_channels=1, softplus=10.0)
        >>> model.eval()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    key = name.lower() if isinstance(name, str) else None
    if key not in _REGISTRY:
        raise ValueError(f"name must be one of {list(MODEL_NAMES)} (case-insensitive), got name={name!r}")
    return _REGISTRY[key](**kwargs)
