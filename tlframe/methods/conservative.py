"""Conservative training: fine-tune on the target while staying close to the source model.

Two kinds, as the fine-tuning literature has them:

- output-level, ``LwF`` (Learning without Forgetting, Li & Hoiem 2016): the new model's
  outputs on the target inputs are distilled towards the frozen source model's outputs;
- parameter-level, ``L2SP`` (Li, Grandvalet & Davoine 2018): the weights are pulled back
  towards their source values (the starting point) instead of towards zero.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.errors import ConfigError
from tlframe.methods.finetune import FineTune
from tlframe.models.modes import eval_mode

STUDENT_MODES = ("eval", "train")


class Frozen(nn.Module):
    """A private copy of a trained model that never changes: no gradients, and it always
    evaluates in eval mode (no dropout, batch-norm running statistics), whatever mode the
    module around it is put in."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        self.model.eval()
        return self.model(x)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the temperature-softened class distributions.

    Equals LwF's soft cross-entropy up to the teacher's entropy (a constant), so it has the
    same gradient and is zero when the student reproduces the teacher.
    """
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )


class LwF(FineTune):
    """Cross-entropy of the target head on the labeled target examples plus
    ``distill_weight`` times the distillation loss between the frozen source model's outputs
    on the same inputs and those of an old-task head.

    As in LwF, the network has one head per task on the shared backbone: the old-task head
    (a trainable copy of the source head, θo) keeps answering the source task and is
    evaluated on the source domain; the target head (θn: a copy of the source head with
    ``keep_head``, else new) learns the target labels. With one head for both, the
    distillation would pull the target predictions back towards the source model's errors
    on the target inputs.

    ``student_mode="eval"`` computes the distilled old-task outputs in eval mode, as the
    teacher's are. In train mode, dropout and batch statistics make them differ from the
    teacher's even at the source weights; the distillation then fits that difference, and
    with a few target images it moves the weights away from the source model's.
    """

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        distill_weight: float = 1.0,
        student_mode: str = "eval",
        **kwargs,
    ):
        if student_mode not in STUDENT_MODES:
            raise ConfigError(
                f"method.student_mode={student_mode!r} is not a mode; use one of "
                f"{', '.join(STUDENT_MODES)}"
            )
        super().__init__(**kwargs)
        self.temperature = temperature
        self.distill_weight = distill_weight
        self.student_mode = student_mode

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        super().inherit(parts)
        self.source_model = Frozen(nn.Sequential(parts["backbone"], parts["head"]))
        self.source_task_head = copy.deepcopy(parts["head"])

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor, Tensor]:
        """Source examples are answered by the old-task head, target ones by the new."""
        head = self.source_task_head if role == "source" else self.head
        features = self.backbone(x)
        return features, head(features)

    def old_task_logits(self, x: Tensor, features: Tensor) -> Tensor:
        """The student's outputs that are distilled (``features``: the training pass's)."""
        if self.student_mode == "train":
            return self.source_task_head(features)
        with eval_mode(self.backbone, self.source_task_head):
            return self.source_task_head(self.backbone(x))

    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        x, y = batch["target"]
        features = self.backbone(x)
        distill = distillation_loss(
            self.old_task_logits(x, features), self.source_model(x), self.temperature
        )
        return {
            "cls_target": F.cross_entropy(self.head(features), y),
            "lwf": self.distill_weight * distill,
        }


class L2SP(FineTune):
    """Cross-entropy plus ``alpha/2 * ||w - w_source||^2`` over the inherited weights
    (backbone, and the head when kept) and ``beta/2 * ||w||^2`` over a new head.

    It replaces weight decay, which would pull the weights towards zero instead; the
    method config sets the stage's ``weight_decay`` to 0 accordingly.
    """

    def __init__(self, *, alpha: float = 0.1, beta: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha
        self.beta = beta

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        super().inherit(parts)
        start = {"backbone": parts["backbone"]}
        if self.head_inherited:
            start["head"] = parts["head"]
        self.starting_point = Frozen(nn.ModuleDict(start))

    def penalties(self) -> dict[str, Tensor]:
        """The two L2-SP terms, already weighted."""
        to_start = 0.0
        for part, start in self.starting_point.model.items():
            current = dict(getattr(self, part).named_parameters())
            for name, w0 in start.named_parameters():
                to_start = to_start + ((current[name] - w0) ** 2).sum()
        terms = {"l2sp": self.alpha / 2 * to_start}
        if not self.head_inherited:
            terms["l2_head"] = self.beta / 2 * sum((w**2).sum() for w in self.head.parameters())
        return terms

    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        return {**super().training_losses(batch), **self.penalties()}
