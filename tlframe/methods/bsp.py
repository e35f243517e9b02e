"""BSP (Chen et al., ICML 2019): batch spectral penalization, on top of DANN.

Adversarial alignment can shrink the features' spectrum to a few dominant directions and
lose discriminability; BSP penalises the k largest singular values of the source and the
target feature matrices of each batch:

    loss = DANN's loss + beta * sum_{i <= k} (sigma_i(F_s)^2 + sigma_i(F_t)^2)

with the paper's beta = 1e-4 and k = 1. Any method may add the penalty:
``+objectives=[bsp]`` (e.g. to CDAN, as the paper does too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs, addable
from tlframe.methods.alignment import adaptation_stage
from tlframe.methods.dann import DomainAdversarial


def spectral_penalty(features: Tensor, k: int) -> Tensor:
    """The sum of the squares of the k largest singular values of a batch's features."""
    singular = torch.linalg.svdvals(features)
    return singular[:k].pow(2).sum()


@addable("bsp")
class BatchSpectralPenalization(Objective):
    """``trade_off`` times the spectral penalty of both domains' features, as ``bsp``."""

    joint = True
    needs_roles = ("source", "target")

    def __init__(self, *, trade_off: float = 1e-4, k: int = 1, **parts: Any):
        super().__init__()
        self.trade_off, self.k = trade_off, k

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        penalty = sum(spectral_penalty(out.features(role), self.k) for role in ("source", "target"))
        return {"bsp": self.trade_off * penalty}


@method
def bsp(
    alignment: Callable[..., Objective] = DomainAdversarial,
    penalty: Callable[..., Objective] = BatchSpectralPenalization,
) -> Method:
    """BSP + DANN: labeled source, unlabeled target, same classes."""
    return Method("bsp", [adaptation_stage({"alignment": alignment, "bsp": penalty})])
