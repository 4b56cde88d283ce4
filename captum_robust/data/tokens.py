r"""A seeded synthetic text-classification task whose important tokens are known.

Each example is a sequence of token ids of random length (padding with ``pad_id`` at the
end) made of random *filler* tokens plus one or a few *signal* tokens of its class, placed at
random positions. The vocabulary is split three ways: the padding id, ``n_classes`` disjoint
sets of ``n_signal_per_class`` signal ids, and the filler ids (every other id). A sequence of
class ``c`` holds only signal tokens of class ``c``, so the label is a function of the
signal tokens and the positions that hold them are the ground truth of an explanation: a
faithful attribution puts its top tokens there.

This is the text counterpart of the digits for the token-model side of the library
(``embedding_layer=`` in :mod:`captum_robust.attr`, the attacks and the regularizers):
:class:`captum_robust.models.TokenBagClassifier` learns it in a few seconds on one CPU core.

Example:
    >>> from captum_robust.data import make_token_task
    >>> task = make_token_task(100, n_classes=2, vocab_size=40, seq_len=12, seed=0)
    >>> task.ids.shape, task.labels.shape, task.signal_tokens.shape
    (torch.Size([100, 12]), torch.Size([100]), torch.Size([2, 4]))
    >>> bool((task.ids[task.important].unsqueeze(1) == task.signal_tokens.flatten()).any(1).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from captum_robust._utils.validation import check_int

__all__ = ["TokenTask", "make_token_task"]


@dataclass(frozen=True)
class TokenTask:
    """A synthetic token-classification data set (see :func:`make_token_task`).

    Attributes:
        ids (Tensor): ``N x T`` int64 token ids; the padding (``pad_id``) is at the end of each row.
        attention_mask (Tensor): ``N x T`` int64, 1 for real tokens and 0 for padding (the
            Hugging Face convention; pass it as ``token_mask=`` and as the model's second argument).
        labels (Tensor): ``N`` int64 classes in ``0 .. n_classes - 1``.
        important (Tensor): ``N x T`` bool, true at the positions that hold a signal token
            (the ground truth of an explanation); always inside the real tokens.
        signal_tokens (Tensor): ``n_classes x n_signal_per_class`` int64, the signal ids of each class.
        pad_id (int): the padding id.
        vocab_size (int): ids are in ``0 .. vocab_size - 1``.
        n_classes (int): number of classes.
    """

    ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    important: Tensor
    signal_tokens: Tensor
    pad_id: int
    vocab_size: int
    n_classes: int

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def lengths(self) -> Tensor:
        """``N`` int64: the number of real tokens of each example."""
        return self.attention_mask.sum(dim=1)

    @property
    def n_important(self) -> Tensor:
        """``N`` int64: the number of signal tokens of each example (the ``k`` of a top-k check)."""
        return self.important.sum(dim=1)

    def subset(self, index: Any) -> "TokenTask":
        """The examples selected by ``index`` (a slice, an index tensor or a bool mask), same vocabulary.

        Example:
            >>> task = make_token_task(10, seed=0)
            >>> len(task.subset(slice(0, 4)))
            4
        """
        return TokenTask(
            self.ids[index], self.attention_mask[index], self.labels[index], self.important[index],
            self.signal_tokens, self.pad_id, self.vocab_size, self.n_classes,
        )

    def dataset(self) -> TensorDataset:
        """A ``TensorDataset`` of ``(ids, attention_mask, labels)`` for a ``DataLoader``."""
        return TensorDataset(self.ids, self.attention_mask, self.labels)


def make_token_task(
    n_examples: int,
    n_classes: int = 2,
    vocab_size: int = 50,
    seq_len: int = 16,
    n_signal_per_class: int = 4,
    max_signal: int = 2,
    min_len: int = 6,
    seed: int = 0,
    pad_id: int = 0,
) -> TokenTask:
    r"""Draw a synthetic token-classification task with known important tokens.

    Vocabulary: the ids ``0 .. vocab_size - 1`` except ``pad_id``, in increasing order; the
    first ``n_classes * n_signal_per_class`` of them are the signal ids (class ``c`` gets the
    ``c``-th block of ``n_signal_per_class``), the rest are filler ids.

    Each example draws, independently and uniformly: its label ``c``; its length
    :math:`L \in [\text{min\_len}, \text{seq\_len}]`; its number of signal tokens
    :math:`m \in [1, \text{max\_signal}]`; :math:`m` distinct positions among the first
    :math:`L`; for each of them a signal id of class ``c`` (with replacement); and a filler
    id for each other real position. Positions ``L .. seq_len - 1`` hold ``pad_id``. All
    randomness comes from one ``torch.Generator`` seeded with ``seed``: same arguments, same task.

    Args:
        n_examples (int): number of examples N, >= 1.
        n_classes (int): number of classes, >= 2. Default 2.
        vocab_size (int): size of the vocabulary; it must leave at least ``n_classes *
            n_signal_per_class`` signal ids and one filler id besides the padding. Default 50.
        seq_len (int): padded length T, >= ``min_len``. Default 16.
        n_signal_per_class (int): signal ids per class, >= 1. Default 4.
        max_signal (int): most signal tokens in one example, in ``[1, min_len]``. Default 2.
        min_len (int): shortest real length, in ``[max_signal, seq_len]``. Default 6.
        seed (int): seed of the generator, in ``[0, 2**63 - 1]``. Default 0.
        pad_id (int): the padding id, in ``[0, vocab_size - 1]``. Default 0 (as
            ``nn.Embedding(padding_idx=0)`` and BERT).

    Returns:
        TokenTask: ids, attention mask, labels, the important-position mask and the signal ids.

    Raises:
        TypeError: an argument that is not an int.
        ValueError: an argument out of its range, or a vocabulary too small for the signal and filler ids.

    Example:
        >>> task = make_token_task(4, seq_len=8, min_len=4, seed=1)
        >>> task.ids.shape, int(task.attention_mask[0].sum()) >= 4
        (torch.Size([4, 8]), True)
        >>> bool((task.important & (task.attention_mask == 0)).any())  # signal only among real tokens
        False
    """
    n = check_int(n_examples, "n_examples", 1)
    n_classes = check_int(n_classes, "n_classes", 2)
    n_signal_per_class = check_int(n_signal_per_class, "n_signal_per_class", 1)
    seq_len = check_int(seq_len, "seq_len", 1)
    min_len = check_int(min_len, "min_len", 1, seq_len)
    max_signal = check_int(max_signal, "max_signal", 1, min_len)
    seed = check_int(seed, "seed", 0, 2**63 - 1)
    n_signal = n_classes * n_signal_per_class
    vocab_size = check_int(vocab_size, "vocab_size", 1)
    if vocab_size < n_signal + 2:
        raise ValueError(
            f"vocab_size must be at least n_classes * n_signal_per_class + 2 = {n_signal + 2} (the signal ids, "
            f"one filler id and the padding id), got vocab_size={vocab_size}"
        )
    pad_id = check_int(pad_id, "pad_id", 0, vocab_size - 1)

    g = torch.Generator().manual_seed(seed)
    vocab = torch.tensor([i for i in range(vocab_size) if i != pad_id], dtype=torch.long)
    signal_tokens = vocab[:n_signal].reshape(n_classes, n_signal_per_class)
    filler = vocab[n_signal:]

    labels = torch.randint(0, n_classes, (n,), generator=g)
    lengths = torch.randint(min_len, seq_len + 1, (n,), generator=g)
    n_sig = torch.randint(1, max_signal + 1, (n,), generator=g)
    real = torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)
    # a random order of the real positions of each row (padding sorted last); the first n_sig are signal
    keys = torch.rand(n, seq_len, generator=g).masked_fill(~real, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    important = rank < n_sig.unsqueeze(1)
    ids = filler[torch.randint(0, len(filler), (n, seq_len), generator=g)]
    which = torch.randint(0, n_signal_per_class, (n, seq_len), generator=g)
    ids = torch.where(important, signal_tokens[labels.unsqueeze(1), which], ids)
    ids = ids.masked_fill(~real, pad_id)
    return TokenTask(ids, real.long(), labels, important, signal_tokens, pad_id, vocab_size, n_classes)
