"""Layers that transfer methods share: gradient reversal, the domain classifier, frozen copies."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: Tensor, coefficient: float = 1.0) -> Tensor:
    """Identity forward; backward multiplies the gradient by ``-coefficient`` (DANN's GRL)."""
    return _ReverseGradient.apply(x, coefficient)


class GradientReversal(nn.Module):
    """The gradient reversal layer as a module; ``coefficient`` may change every step."""

    def __init__(self, coefficient: float = 1.0):
        super().__init__()
        self.coefficient = coefficient

    def forward(self, x: Tensor) -> Tensor:
        return reverse_gradient(x, self.coefficient)


def domain_classifier(
    in_features: int,
    hidden_dims: Sequence[int] = (1024, 1024),
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> nn.Module:
    """An MLP that scores "is this feature from the source domain?" (one logit)."""
    layers: list[nn.Module] = []
    width = in_features
    for hidden in hidden_dims:
        layers.append(nn.Linear(width, hidden))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class Frozen(nn.Module):
    """A private copy of a trained model that never changes: no gradients, and it always
    evaluates in eval mode (no dropout, batch-norm running statistics), whatever mode the
    module around it is put in (LwF's teacher, L2-SP's starting point)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        self.model.eval()
        return self.model(x)


def fresh_copy(module: nn.Module) -> nn.Module:
    """The same architecture with its parameters initialised anew (a second classifier of
    the head's shape: MCD, MDD)."""
    copied = copy.deepcopy(module)
    for sub in copied.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return copied
