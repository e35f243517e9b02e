"""Entropy minimisation (Grandvalet & Bengio, NeurIPS 2004) on the unlabeled target.

The mean entropy of the target predictions is added to the source cross-entropy, so the
decision boundaries move away from dense regions of target data:

    loss = CE(source) + trade_off * mean_i H(p(y | x_i^t))

A classic term to combine with an alignment method: ``+objectives=[entropy]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs, TargetTerm, addable, entropy
from tlframe.methods.alignment import adaptation_stage


@addable("entropy")
class EntropyMinimization(TargetTerm):
    """``trade_off`` times the mean prediction entropy on the target, as ``entropy``."""

    def __init__(
        self,
        *,
        trade_off: float = 0.1,
        **parts: Any,
    ):
        super().__init__()
        self.trade_off = trade_off

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        probs = out.logits("target").softmax(dim=1)
        return {"entropy": self.trade_off * entropy(probs).mean()}


@method
def entropy_minimization(
    minimization: Callable[..., Objective] = EntropyMinimization,
) -> Method:
    """Entropy minimisation: labeled source, unlabeled target, same classes."""
    return Method("entropy_minimization", [adaptation_stage({"entropy": minimization})])
