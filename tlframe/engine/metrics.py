"""Metrics the evaluators add to torchmetrics' own."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ClassAccuracy(Metric):
    """Correct and total predictions per true class; ``compute`` gives per-class accuracy
    (NaN for classes without examples)."""

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.add_state("correct", torch.zeros(num_classes), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_classes), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        n = self.num_classes
        self.correct += torch.bincount(target[preds == target], minlength=n).float()
        self.total += torch.bincount(target, minlength=n).float()

    def compute(self) -> Tensor:
        return self.correct / self.total  # NaN where total is 0
