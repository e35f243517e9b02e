"""Classifier heads: ``builder(in_features, num_classes, **options) -> nn.Module``."""

from __future__ import annotations

from torch import nn

from tlframe.models.registry import HEADS


@HEADS.register
def linear(in_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(in_features, num_classes)


@HEADS.register
def mlp(
    in_features: int, num_classes: int, hidden_dim: int = 256, dropout: float = 0.5
) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, num_classes),
    )
