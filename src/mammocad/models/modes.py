"""Switching modules to evaluation mode for a while, and back to the mode they were in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluation_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode inside the block; each gets its own training flag back on exit.

    For dry runs and measurements in the middle of training: BatchNorm must use (and not update) its
    running statistics, dropout must be off, and the caller's train mode must survive, also on error.
    """
    were_training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, was_training in zip(modules, were_training, strict=True):
            module.train(was_training)


__all__ = ["evaluation_mode"]
