"""A small, seeded training loop for the examples, the CLI and the benchmarks.

This is deliberately minimal: Adam on the cross-entropy loss, an optional wall-clock
budget and a tqdm progress bar (:func:`train_classifier`, :func:`evaluate_accuracy`). The
robust objectives of :mod:`captum_robust.robust.regularizers` are meant for the user's own
training loop; this helper only produces the plain ("natural") models the demos explain.
:func:`trained_digits_model` is the one such model the examples, tests and benchmarks
share: ``Small`` trained on the embedded digits, cached per process.

Example:
    >>> import torch
    >>> from captum_robust.data import digits_loaders
    >>> from captum_robust.models import Small
    >>> from captum_robust.training import evaluate_accuracy, train_classifier
    >>> train_loader, test_loader = digits_loaders(batch_size=32, seed=0)
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = Small()
    >>> stats = train_classifier(model, train_loader, epochs=2, generator=torch.Generator().manual_seed(0))
    >>> stats["epochs_completed"]
    2
    >>> 0.0 <= evaluate_accuracy(model, test_loader) <= 1.0
    True
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_robust._utils.state import preserved_model_state
from captum_robust._utils.validation import (
    InvalidParameterError,
    check_bool,
    check_int,
    check_nonnegative,
    check_positive,
    output_tensor,
)

__all__ = ["train_classifier", "evaluate_accuracy", "trained_digits_model", "TrainedDigits"]


def _resolve_device(model: nn.Module, device: Optional[Union[str, torch.device]]) -> torch.device:
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _batch(batch: Any, device: torch.device):
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            "the loader must yield (inputs, labels) pairs, got a batch of type "
            f"{type(batch).__name__}" + (f" with {len(batch)} element(s)" if isinstance(batch, (tuple, list)) else "")
        )
    x, y = batch[0], batch[1]
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"inputs and labels must be tensors, got {type(x).__name__} and {type(y).__name__}")
    return x.to(device), y.to(device)


def train_classifier(
    model: nn.Module,
    train_loader: Iterable,
    epochs: int = 10,
    lr: float = 1e-3,
    max_seconds: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    weight_decay: float = 0.0,
    regularizer: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
) -> Dict[str, Any]:
    """Train a classifier with Adam on the cross-entropy loss, in place.

    The model is put in training mode for the loop and every module's train/eval flag is
    restored afterwards (also on error). Training stops after ``epochs`` passes over
    ``train_loader`` or, if ``max_seconds`` is given, at the first batch boundary after that
    many wall-clock seconds -- whichever comes first. A run cut by the budget depends on the
    machine's speed; for reproducible models fix ``epochs`` and leave ``max_seconds`` unset.

    Randomness: the loader's shuffling is the loader's business (give it its own
    ``torch.Generator``). If ``generator`` is given, the loop runs inside
    :func:`torch.random.fork_rng` with the global RNG seeded from ``generator``, so random
    layers (Dropout) and loaders without their own generator draw from a reproducible stream
    and the caller's global RNG state is left exactly as it was. Without ``generator`` they
    use (and advance) the global RNG.

    Args:
        model (nn.Module): maps ``inputs`` to logits ``B x num_classes`` (or an output with
            ``.logits``, as Hugging Face models return); trained in place.
        train_loader (iterable): yields ``(inputs, labels)`` batches with int64 labels.
        epochs (int): maximum number of passes over the loader, >= 1. Default 10.
        lr (float): Adam learning rate, > 0. Default 1e-3.
        max_seconds (float, optional): wall-clock budget in seconds, > 0. Default None (no budget).
        generator (torch.Generator, optional): seeds the random draws made during training
            (see above). Default None.
        show_progress (bool): show a tqdm progress bar (on stderr). Default False.
        device (str or torch.device, optional): move the model and the batches there. Default:
            the device of the model's parameters.
        weight_decay (float): Adam's L2 penalty, >= 0. Default 0.
        regularizer (callable, optional): a term added to the cross-entropy of every batch,
            called as ``regularizer(inputs, labels)`` and returning a scalar -- for instance
            one of :mod:`captum_robust.robust.regularizers` (``IGNorm``, ``Int``, ...; an
            epsilon schedule is stepped by the regularizer itself). Default None.

    Returns:
        dict: ``epochs_completed`` (full passes), ``steps`` (optimizer steps), ``seconds``
        (wall time of the loop), ``stopped_by_time`` (True if the budget ended training),
        ``final_loss`` (mean loss of the last, possibly partial, epoch), and ``history``: one
        dict per epoch started with ``epoch``, ``loss`` (mean over its batches),
        ``train_accuracy`` (on the fly, while training), ``steps``, ``seconds`` (elapsed at
        its end) and ``complete``; with a ``regularizer`` also ``regularizer`` (the mean of the
        term over the epoch's batches; ``loss`` is then the cross-entropy plus the term).

    Raises:
        ValueError: ``epochs`` < 1, ``lr`` <= 0, ``max_seconds`` <= 0, an empty loader or a
            loader that does not yield ``(inputs, labels)``.
        TypeError: arguments of the wrong type.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from captum_robust.models import Small
        >>> ds = TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
        >>> loader = DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
        >>> stats = train_classifier(Small(), loader, epochs=1, generator=torch.Generator().manual_seed(0))
        >>> stats["steps"]
        4
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_int(epochs, "epochs", 1)
    check_positive(lr, "lr")
    check_nonnegative(weight_decay, "weight_decay")
    if max_seconds is not None and (  # inf is allowed (no budget), so not check_positive
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, numbers.Real)
        or not (max_seconds > 0)  # also rejects NaN
    ):
        raise ValueError(f"max_seconds must be None or a number > 0, got max_seconds={max_seconds!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidParameterError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if regularizer is not None and not callable(regularizer):
        raise TypeError(f"regularizer must be None or a callable (inputs, labels) -> scalar, got {type(regularizer).__name__}")

    dev = _resolve_device(model, device)
    if device is not None:
        model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require gradients; nothing to train")
    optimizer = torch.optim.Adam(params, lr=float(lr), weight_decay=float(weight_decay))
    try:
        steps_per_epoch: Optional[int] = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = None
    if steps_per_epoch == 0:
        raise ValueError("train_loader is empty")

    fork_devices: List[int] = []
    if generator is not None and dev.type == "cuda":
        fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()]

    history: List[Dict[str, Any]] = []
    modes = [(m, m.training) for m in model.modules()]
    start = time.perf_counter()
    deadline = None if max_seconds is None else start + max_seconds
    bar = tqdm(
        total=None if steps_per_epoch is None else epochs * steps_per_epoch,
        disable=not show_progress,
        desc="training",
        unit="batch",
        leave=True,
    )
    stopped_by_time = False
    try:
        with torch.random.fork_rng(devices=fork_devices, enabled=generator is not None):
            if generator is not None:
                seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
                torch.manual_seed(seed)
            model.train()
            for epoch in range(int(epochs)):
                record, stopped_by_time = _train_epoch(
                    model, train_loader, optimizer, dev, regularizer, bar, epoch + 1, deadline
                )
                term = record.pop("regularizer", None)  # keeps the documented key order
                record["seconds"] = time.perf_counter() - start
                record["complete"] = not stopped_by_time or record["steps"] == steps_per_epoch
                if term is not None:
                    record["regularizer"] = term
                history.append(record)
                if stopped_by_time:
                    break
    finally:
        bar.close()
        for m, mode in modes:
            m.training = mode

    return {
        "epochs_completed": sum(1 for h in history if h["complete"]),
        "steps": sum(h["steps"] for h in history),
        "seconds": time.perf_counter() - start,
        "stopped_by_time": stopped_by_time,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "history": history,
    }


def _train_epoch(
    model: nn.Module,
    train_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    dev: torch.device,
    regularizer: Optional[Callable[[Tensor, Tensor], Tensor]],
    bar: Any,
    epoch: int,
    deadline: Optional[float],
) -> Tuple[Dict[str, Any], bool]:
    """One pass of :func:`train_classifier` over the loader (cut at ``deadline``, a
    ``time.perf_counter()`` value). Returns the epoch's record (``epoch``, ``loss``,
    ``train_accuracy``, ``steps``, with a regularizer ``regularizer``) and whether the
    deadline stopped it."""
    loss_sum, reg_sum, correct, seen, batches = 0.0, 0.0, 0, 0, 0
    stopped_by_time = False
    for batch in train_loader:
        x, y = _batch(batch, dev)
        logits = output_tensor(model(x))  # a Hugging Face output's .logits
        loss = F.cross_entropy(logits, y)
        if regularizer is not None:
            term = regularizer(x, y)
            if not isinstance(term, Tensor) or term.dim() != 0:
                raise ValueError(
                    "regularizer must return a scalar tensor (the batch mean), got "
                    f"{tuple(term.shape) if isinstance(term, Tensor) else type(term).__name__}"
                )
            loss = loss + term
            reg_sum += float(term.detach()) * y.shape[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        batches += 1
        n = y.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += int((logits.detach().argmax(dim=1) == y).sum())
        seen += n
        bar.update(1)
        if batches % 10 == 0:
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.3f}", refresh=False)
        if deadline is not None and time.perf_counter() >= deadline:
            stopped_by_time = True
            break
    if batches == 0:
        raise ValueError("train_loader is empty")
    record: Dict[str, Any] = {"epoch": epoch, "loss": loss_sum / seen, "train_accuracy": correct / seen, "steps": batches}
    if regularizer is not None:
        record["regularizer"] = reg_sum / seen
    bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    return record, stopped_by_time


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, loader: Iterable, device: Optional[Union[str, torch.device]] = None
) -> float:
    """Fraction of examples whose arg-max logit is the label, with the model in eval mode.

    Every module's train/eval flag (and the parameters' ``.grad`` / ``requires_grad``) is
    restored afterwards, also on error. Runs under ``torch.no_grad()``.

    Args:
        model (nn.Module): maps inputs to logits ``B x num_classes``.
        loader (iterable): yields ``(inputs, labels)`` batches.
        device (str or torch.device, optional): where to send the batches. Default: the
            device of the model's parameters (the model itself is not moved).

    Returns:
        float: ``correct / total`` in [0, 1].

    Raises:
        ValueError: the loader yields no examples or not ``(inputs, labels)`` pairs.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from captum_robust.models import Small
        >>> loader = DataLoader(TensorDataset(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))
        >>> 0.0 <= evaluate_accuracy(Small(), loader) <= 1.0
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    dev = _resolve_device(model, device)
    correct, total = 0, 0
    with preserved_model_state(model, train=False):
        for batch in loader:
            x, y = _batch(batch, dev)
            correct += int((output_tensor(model(x)).argmax(dim=1) == y).sum())
            total += y.shape[0]
    if total == 0:
        raise ValueError("loader yielded no examples; cannot compute an accuracy")
    return correct / total


class TrainedDigits(NamedTuple):
    """What :func:`trained_digits_model` returns: the model and the data it was trained on.

    Attributes:
        model (nn.Module): the trained ``Small``, in eval mode (a fresh copy at every call).
        train (TensorDataset): the training split, ``(images, labels)``.
        test (TensorDataset): the test split.
        accuracy (float): the model's accuracy on ``test``.
    """

    model: nn.Module
    train: Any
    test: Any
    accuracy: float


@functools.lru_cache(maxsize=16)
def _train_digits(epochs: int, size: int, seed: int, lr: float, batch_size: int,
                  softplus: Optional[float], one_cycle: bool) -> TrainedDigits:
    from captum_robust.data import load_digits
    from captum_robust.models import Small

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one intra-op thread is fastest and does not oversubscribe
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            data = load_digits(size=size, seed=seed)
            x, y = data.train.tensors
            model = Small(softplus=softplus)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            steps_per_epoch = math.ceil(len(x) / batch_size)
            schedule = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
                        if one_cycle else None)
            g = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                perm = torch.randperm(len(x), generator=g)
                for i in range(0, len(x), batch_size):
                    idx = perm[i: i + batch_size]
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if schedule is not None:
                        schedule.step()
            model.eval()
            for p in model.parameters():
                p.grad = None
                p.requires_grad_(True)
            xt, yt = data.test.tensors
            with torch.no_grad():
                accuracy = float((model(xt).argmax(1) == yt).float().mean())
    finally:
        torch.set_num_threads(previous)
    return TrainedDigits(model, data.train, data.test, accuracy)


def trained_digits_model(
    epochs: int = 8,
    *,
    size: int = 28,
    seed: int = 0,
    lr: float = 5e-3,
    batch_size: int = 64,
    softplus: Optional[float] = None,
    one_cycle: bool = False,
) -> TrainedDigits:
    """``Small`` trained on the embedded digits: the one shared recipe of the examples, tests and benchmarks.

    Adam on the cross-entropy loss, mini-batches drawn by a seeded permutation every epoch,
    one intra-op thread (a few seconds for 8 epochs at 28 x 28). The result is cached per process
    and arguments; every call returns a fresh deep copy of the model, so callers may train or
    modify it freely (the data sets are shared: do not modify them in place). The global random
    state is left as found.

    Args:
        epochs (int): passes over the training split, >= 1. Default 8 (a test accuracy above 0.7 at the other defaults).
        size (int): image side passed to :func:`captum_robust.data.load_digits`. Default 28.
        seed (int): seeds the split, the initial weights and the batch order. Default 0.
        lr (float): Adam's learning rate, > 0. Default 5e-3.
        batch_size (int): >= 1. Default 64.
        softplus (float or None): ``Small(softplus=...)``'s beta (smooth activations), or None for ReLU.
        one_cycle (bool): follow :class:`torch.optim.lr_scheduler.OneCycleLR` with ``max_lr=lr``
            over all the steps (the recipe of the gallery examples: ``epochs=60, batch_size=32,
            lr=1e-2``). Default False (a constant learning rate).

    Returns:
        TrainedDigits: ``(model, train, test, accuracy)``; the model is in eval mode.

    Example:
        >>> from captum_robust.training import trained_digits_model
        >>> model, train, test, accuracy = trained_digits_model()
        >>> accuracy > 0.7
        True
    """
    check_int(epochs, "epochs", 1)
    check_int(size, "size", 1)
    check_int(seed, "seed", 0)
    check_positive(lr, "lr")
    check_int(batch_size, "batch_size", 1)
    check_positive(softplus, "softplus", allow_none=True)
    check_bool(one_cycle, "one_cycle")
    cached = _train_digits(int(epochs), int(size), int(seed), float(lr), int(batch_size),
                           None if softplus is None else float(softplus), one_cycle)
    return cached._replace(model=copy.deepcopy(cached.model))
