"""BSS (Chen et al., NeurIPS 2019): batch spectral shrinkage, for safer fine-tuning.

Fine-tuning on a few target labels transfers the source features' spectral components
that do not fit the target (negative transfer); BSS shrinks the k smallest singular
values of each batch's target feature matrix:

    loss = CE(target) + eta * sum_{i <= k} sigma_{-i}(F)^2

with the paper's eta = 0.001 and k = 1, on the stages of fine-tuning (``method.tuning``).
Any fine-tuning method may add it: ``method=l2sp +objectives=[bss]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs, addable
from tlframe.methods.finetune import FineTuning, fine_tuning_stages


def spectral_shrinkage(features: Tensor, k: int) -> Tensor:
    """The sum of the squares of the k smallest singular values of a batch's features."""
    singular = torch.linalg.svdvals(features)  # in descending order
    return singular[-k:].pow(2).sum()


@addable("bss")
class BatchSpectralShrinkage(Objective):
    """``trade_off`` times the shrinkage of the labeled domains' features, as ``bss``."""

    def __init__(self, *, trade_off: float = 0.001, k: int = 1, **parts: Any):
        super().__init__()
        self.trade_off, self.k = trade_off, k

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        shrink = sum(spectral_shrinkage(out.features(r), self.k) for r in out.labeled_roles())
        return {"bss": self.trade_off * shrink}


@method
def bss(
    tuning: FineTuning = FineTuning(), shrinkage: Callable[..., Objective] = BatchSpectralShrinkage
) -> Method:
    """BSS: fine-tuning with batch spectral shrinkage of the target features."""
    stages = fine_tuning_stages(tuning, {"bss": shrinkage})
    return Method(tuning.named("bss"), stages, same_classes=tuning.keep_head)
