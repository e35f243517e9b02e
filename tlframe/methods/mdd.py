"""MDD (Zhang et al., ICML 2019): margin disparity discrepancy.

An adversarial head f' (a fresh copy of the classifier head's architecture) reads the
features through a gradient reversal layer. It learns to agree with the classifier f on
the source and to disagree on the target, while the features learn to make that
impossible:

    disparity = gamma * CE(f'(x_s), argmax f(x_s)) - log(1 - softmax(f'(x_t))[argmax f(x_t)])
    loss = CE(source) + trade_off * disparity

with the paper's margin gamma = 4 and the reversal coefficient ramping from 0 to
``max_reversal`` = 0.1 over training (DANN's lambda_p times 0.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.methods.alignment import Alignment, adaptation_stage
from tlframe.models.layers import fresh_copy, reverse_gradient


def margin_disparity(
    logits_s: Tensor, adversarial_s: Tensor, logits_t: Tensor, adversarial_t: Tensor, margin: float
) -> Tensor:
    """gamma * CE(f' vs f's labels) on the source - log(1 - f'(f's label)) on the target."""
    labels_s, labels_t = logits_s.argmax(dim=1), logits_t.argmax(dim=1)
    source = F.cross_entropy(adversarial_s, labels_s)
    agree_t = adversarial_t.softmax(dim=1).gather(1, labels_t[:, None]).squeeze(1)
    target = -torch.log((1.0 - agree_t).clamp_min(1e-6)).mean()
    return margin * source + target


class MarginDisparity(Alignment):
    """The margin disparity between the classifier and an adversarial head, as
    ``alignment``."""

    def __init__(
        self,
        *,
        model: TransferModel,
        trade_off: float = 1.0,
        schedule: str = "dann",
        gamma: float = 10.0,
        margin: float = 4.0,
        max_reversal: float = 0.1,
        **parts: Any,
    ):
        super().__init__(trade_off=trade_off, schedule=schedule, gamma=gamma)
        self.adversarial_head = fresh_copy(model.head)
        self.margin, self.max_reversal = margin, max_reversal

    def discrepancy(self, out: StepOutputs, factor: float) -> Tensor:
        coefficient = self.max_reversal * factor
        adversarial = {
            role: self.adversarial_head(reverse_gradient(out.features(role), coefficient))
            for role in ("source", "target")
        }
        return margin_disparity(
            out.logits("source").detach(),
            adversarial["source"],
            out.logits("target").detach(),
            adversarial["target"],
            self.margin,
        )

    def scalars(self, progress: float) -> dict[str, float]:
        return {"lambda": self.max_reversal * self.factor(progress)}


@method
def mdd(alignment: Callable[..., Objective] = MarginDisparity) -> Method:
    """MDD: labeled source, unlabeled target, same classes."""
    return Method("mdd", [adaptation_stage({"alignment": alignment})])
