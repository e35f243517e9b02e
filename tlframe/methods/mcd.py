"""MCD (Saito et al., CVPR 2018): maximum classifier discrepancy.

Two classifiers F1 (the model's head) and F2 (a second head of the same architecture)
read the features of one generator G (the backbone). Both learn the labeled source;
on the target, the classifiers learn to disagree while the generator learns features on
which they cannot, which moves the target features inside the source's class regions:

    d(p1, p2) = mean |p1 - p2|                       (over the batch and the classes)
    step B: min_{F1, F2} CE(F1, source) + CE(F2, source) - trade_off * d(F1(G(x_t)), F2(G(x_t)))
    step C: min_G d(F1(G(x_t)), F2(G(x_t)))

Deviation: the paper alternates three optimisation steps per batch (A: all on the source,
B: the classifiers, C: the generator ``num_k`` = 4 times). Here one step does all three:
the discrepancy reaches the classifiers as it is and the generator through a gradient
reversal layer of coefficient ``generator_weight`` (1), so the classifiers ascend the
discrepancy while the generator descends it. Predictions are F1's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.methods.alignment import adaptation_stage
from tlframe.models.layers import fresh_copy, reverse_gradient


def classifier_discrepancy(logits_1: Tensor, logits_2: Tensor) -> Tensor:
    """The mean absolute difference of two classifiers' class probabilities."""
    return (logits_1.softmax(dim=1) - logits_2.softmax(dim=1)).abs().mean()


class ClassifierDiscrepancy(Objective):
    """The second classifier's source cross-entropy (``cls_source_2``) and the adversarial
    discrepancy on the target (``discrepancy``, negative: the classifiers maximise it)."""

    joint = True
    needs_roles = ("source", "target")

    def __init__(
        self,
        *,
        model: TransferModel,
        trade_off: float = 1.0,
        generator_weight: float = 1.0,
        **parts: Any,
    ):
        super().__init__()
        self.second_head = fresh_copy(model.head)
        self.trade_off, self.generator_weight = trade_off, generator_weight

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        f_t = reverse_gradient(out.features("target"), self.generator_weight)
        head = out.model.head
        discrepancy = classifier_discrepancy(head(f_t), self.second_head(f_t))
        second = F.cross_entropy(self.second_head(out.features("source")), out.y("source"))
        return {"cls_source_2": second, "discrepancy": -self.trade_off * discrepancy}


@method
def mcd(discrepancy: Callable[..., Objective] = ClassifierDiscrepancy) -> Method:
    """MCD: labeled source, unlabeled target, same classes."""
    return Method("mcd", [adaptation_stage({"discrepancy": discrepancy})])
