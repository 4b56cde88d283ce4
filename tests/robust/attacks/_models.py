"""Models shared by the attack tests: a trained digits CNN (cached per session) and tiny nets."""

import contextlib
import functools

import torch
from torch import nn

from captum_robust.training import trained_digits_model


@contextlib.contextmanager
def one_thread():
    """These tests are many small passes: one intra-op thread avoids oversubscribing busy cores
    (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.lru_cache(maxsize=None)
def trained_digits(epochs: int = 8):
    """``Small`` trained on the embedded digits at 28x28: the shared recipe of
    :func:`captum_robust.training.trained_digits_model` (a few seconds on one thread).

    Returns (model, test inputs, test labels) with the model in eval mode; the caller must
    not modify them (the tests check that the attacks do not).
    """
    model, _, test, accuracy = trained_digits_model(epochs)
    assert accuracy > 0.7, accuracy
    xt, yt = test.tensors
    return model, xt, yt


def correct_examples(n: int, offset: int = 0):
    """The first ``n`` correctly classified test examples (after ``offset``)."""
    model, xt, yt = trained_digits()
    with torch.no_grad():
        ok = torch.nonzero(model(xt).argmax(1) == yt).squeeze(1)[offset : offset + n]
    return model, xt[ok].clone(), yt[ok].clone()


def gradient_map(model, inputs, target):
    """The plain input gradient of the target logit, differentiable (create_graph)."""
    x = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
    out = model(x).gather(1, target[:, None]).sum()
    (g,) = torch.autograd.grad(out, x, create_graph=True)
    return g


class LinearNet(nn.Module):
    """A linear classifier on flattened 1 x 5 x 5 images (its gradient map is constant)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(25, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
