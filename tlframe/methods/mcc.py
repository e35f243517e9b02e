"""MCC (Jin et al., ECCV 2020): minimum class confusion on the unlabeled target.

The target predictions, softened by a temperature T, are reweighted by their certainty
(W_ii ∝ 1 + exp(-H(y_i)), summing to the batch size); the class correlation matrix
C = Y^T W Y is normalised per row (category normalisation), and its off-diagonal mass, the
confusion between classes, is minimised:

    L_MCC = 1/|C| * sum_j sum_{j' != j} C~_jj',   loss = CE(source) + trade_off * L_MCC

It needs no domain classifier, so any method may add it: ``+objectives=[mcc]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs, TargetTerm, addable, entropy
from tlframe.errors import ConfigError
from tlframe.methods.alignment import adaptation_stage


def class_confusion(logits: Tensor, temperature: float) -> Tensor:
    """L_MCC of a batch of logits (rows: examples)."""
    probs = (logits / temperature).softmax(dim=1)
    weights = 1.0 + torch.exp(-entropy(probs.detach()))
    weights = (len(probs) * weights / weights.sum()).unsqueeze(1)
    correlation = (probs * weights).T @ probs
    correlation = correlation / correlation.sum(dim=1, keepdim=True)
    return (correlation.sum() - correlation.trace()) / len(correlation)


@addable("mcc")
class MinimumClassConfusion(TargetTerm):
    """``trade_off * L_MCC`` of the target predictions, as ``mcc``; T = 2.5 (the paper's)."""

    def __init__(
        self,
        *,
        trade_off: float = 1.0,
        temperature: float = 2.5,
        **parts: Any,
    ):
        if temperature <= 0:
            raise ConfigError(f"mcc temperature must be positive, got {temperature}")
        super().__init__()
        self.trade_off = trade_off
        self.temperature = temperature

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        return {"mcc": self.trade_off * class_confusion(out.logits("target"), self.temperature)}


@method
def mcc(confusion: Callable[..., Objective] = MinimumClassConfusion) -> Method:
    """MCC: labeled source, unlabeled target, same classes; the source cross-entropy and
    the target's class confusion."""
    return Method("mcc", [adaptation_stage({"mcc": confusion})])
