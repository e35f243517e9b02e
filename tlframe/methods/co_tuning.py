"""Co-Tuning (You et al., NeurIPS 2020): fine-tuning that also trains the source head.

The source classifier is not discarded: the target labels are translated into soft source
labels through the category relationship p(y_s | y_t), and the source head (kept on the
shared backbone) learns them while a new head learns the target labels:

    loss = CE(target head(x), y_t) + trade_off * CE(source head(x), p(y_s | y_t))

with the paper's trade_off = 2.3. The relationship is measured once, before training, on
the labeled target examples with the source model as it was inherited: the "direct"
estimate, the mean of the source model's predicted distribution over each target class's
examples. Deviation: the paper calibrates the source predictions first (and offers a
"reverse" estimate for large target sets); the direct mean is its small-data variant.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from tlframe.data.domain import batches
from tlframe.engine.context import StageContext
from tlframe.engine.method import Method, method
from tlframe.engine.model import BackboneHead
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.methods.finetune import FineTuning, fine_tuning_stages
from tlframe.models.layers import Frozen


def category_relationship(source_probs: Tensor, target_labels: Tensor, classes: int) -> Tensor:
    """p(y_s | y_t): row t is the mean source distribution over target class t's examples
    (uniform for a class without examples)."""
    rows = torch.full((classes, source_probs.shape[1]), 1.0 / source_probs.shape[1])
    for label in range(classes):
        members = source_probs[target_labels == label]
        if len(members):
            rows[label] = members.mean(dim=0)
    return rows


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy with a distribution per example, averaged over the batch."""
    return -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()


class CoTuningLoss(Objective):
    """``trade_off`` times the source head's cross-entropy with the target labels' source
    distributions, as ``co_tuning``."""

    needs_labels = True

    def __init__(self, *, context: StageContext, trade_off: float = 2.3, **parts: Any):
        super().__init__()
        self.trade_off = trade_off
        self.classes = context.task.num_classes

    def inherit(self, parts: Mapping[str, nn.Module], model: BackboneHead) -> None:
        """The source model as inherited measures the relationship; a trainable copy of its
        head answers the source task on the shared backbone."""
        self.source = Frozen(nn.Sequential(parts["backbone"], parts["head"]))
        model.task_heads["source"] = copy.deepcopy(parts["head"])

    @torch.no_grad()
    def on_train_start(self, engine) -> None:
        split = engine.trainer.datamodule.labeled_train_split("target")
        self.source.to(engine.device)
        probs, labels = [], []
        for x, y in batches(split):
            probs.append(self.source(x.to(engine.device)).float().softmax(dim=1).cpu())
            labels.append(torch.as_tensor(y))
        relationship = category_relationship(torch.cat(probs), torch.cat(labels), self.classes)
        self.register_buffer("relationship", relationship.to(engine.device), persistent=False)

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        role = out.labeled_roles()[0]
        source_logits = out.model.task_heads["source"](out.features(role))
        targets = self.relationship[out.y(role)]
        return {"co_tuning": self.trade_off * soft_cross_entropy(source_logits, targets)}


@method
def co_tuning(
    tuning: FineTuning = FineTuning(keep_head=False),
    relationship: Callable[..., Objective] = CoTuningLoss,
) -> Method:
    """Co-Tuning: fine-tuning with a new target head, the source head trained alongside on
    the target labels translated into source labels."""
    stages = fine_tuning_stages(tuning, {"co_tuning": relationship})
    return Method(tuning.named("co_tuning"), stages, same_classes=tuning.keep_head)
