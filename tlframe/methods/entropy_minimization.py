"""Entropy minimisation (Grandvalet & Bengio, NeurIPS 2004) on the unlabeled target.

The mean entropy of the target predictions is added to the source cross-entropy, so the
decision boundaries move away from dense regions of target data:

    loss = CE(source) + trade_off * mean_i H(p(y | x_i^t))

A classic term to combine with an alignment method: ``+objectives=[entropy]``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from tlframe.engine.context import StageContext
from tlframe.engine.method import Method, method
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs, addable, entropy
from tlframe.methods.alignment import adaptation_stage


@addable("entropy")
class EntropyMinimization(Objective):
    """``trade_off`` times the mean prediction entropy on the target, as ``entropy``."""

    joint = True
    needs_roles = ("target",)

    def __init__(
        self,
        *,
        model: TransferModel | None = None,
        context: StageContext | None = None,
        trade_off: float = 0.1,
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
