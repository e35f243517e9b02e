"""Running a module in eval mode for a moment, whatever mode it trains in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Runs the block with ``modules`` in eval mode (gradients still flow), then puts each
    of their submodules back in the mode it had."""
    modes = {sub: sub.training for module in modules for sub in module.modules()}
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for sub, training in modes.items():
            sub.training = training
