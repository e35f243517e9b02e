"""AFN (Xu et al., ICCV 2019): adaptive feature norm, the stepwise variant (SAFN).

Target features of small norm carry less information; SAFN enlarges every example's
feature norm step by step, on both domains, towards its current value plus delta r:

    loss = CE(source) + lambda * sum_domains mean_i (|h(x_i)| - (|h(x_i)|.detach() + dr))^2

with the paper's lambda = 0.05 and dr = 1. The features are the backbone's (after its
bottleneck), as AFN regularises the last hidden layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.methods.alignment import adaptation_stage


def stepwise_norm_loss(features: Tensor, delta: float) -> Tensor:
    """mean (|h| - (|h| detached + delta))^2 over a batch's feature vectors."""
    norms = features.norm(p=2, dim=1)
    return (norms - (norms.detach() + delta)).pow(2).mean()


class StepwiseFeatureNorm(Objective):
    """``trade_off`` times SAFN's loss on the source and the target features, as ``afn``."""

    joint = True
    needs_roles = ("source", "target")

    def __init__(self, *, trade_off: float = 0.05, delta: float = 1.0, **parts: Any):
        super().__init__()
        self.trade_off, self.delta = trade_off, delta

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        loss = sum(stepwise_norm_loss(out.features(r), self.delta) for r in ("source", "target"))
        return {"afn": self.trade_off * loss}


@method
def afn(norm: Callable[..., Objective] = StepwiseFeatureNorm) -> Method:
    """AFN (SAFN): labeled source, unlabeled target, same classes."""
    return Method("afn", [adaptation_stage({"afn": norm})])
