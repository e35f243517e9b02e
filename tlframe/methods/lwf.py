"""Learning without Forgetting (Li & Hoiem 2016), output-level conservative training.

Fine-tuning (``method.tuning``: the same stages and options) with one head per task on the
shared backbone. The new-task head (fresh, ``tuning.keep_head=false``) learns the target
labels; an old-task head (a trainable copy of the source head) answers the source task (it
gives ``test/source/acc``) and is trained to keep the frozen source model's outputs on the
target inputs:

    loss = CE(new-task head) + weight * KL(teacher / T || old-task head / T)

As in the paper, a warm-up trains the new head alone first (``warmup_epochs``, the
backbone and the old head frozen), and the distilled outputs are those of the training
pass (``student_mode=train``), with the paper's T = 2 and weight 1.

tlframe's earlier variant, which keeps the source model better one-shot
(docs/RESULTS.md): ``method.tuning.keep_head=true method.warmup_epochs=0
method.distillation.student_mode=eval``: a copy of the source head as the new head, no
warm-up, and the old-task outputs distilled in eval mode, as the teacher's are: in train
mode, dropout and batch statistics make them differ from the teacher's even at the source
weights, and the distillation fits that difference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.engine.method import Method, method
from tlframe.engine.model import BackboneHead
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.methods.finetune import FineTuning, fine_tuning_stages
from tlframe.models.layers import Frozen
from tlframe.models.modes import eval_mode

STUDENT_MODES = ("eval", "train")


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


class Distillation(Objective):
    """``weight`` times the distillation of the frozen source model's outputs on the target
    inputs into the old-task head, softened by ``temperature`` (the paper's T=2, λ=1)."""

    needs_roles = ("target",)

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        weight: float = 1.0,
        student_mode: str = "train",
        **parts: Any,
    ):
        if student_mode not in STUDENT_MODES:
            raise ConfigError(
                f"method.distillation.student_mode={student_mode!r} is not a mode; use one "
                f"of {', '.join(STUDENT_MODES)}"
            )
        super().__init__()
        self.temperature = temperature
        self.weight = weight
        self.student_mode = student_mode

    def inherit(self, parts: Mapping[str, nn.Module], model: BackboneHead) -> None:
        """The frozen source model is the teacher; a copy of its head answers the source
        task on the shared backbone."""
        self.teacher = Frozen(nn.Sequential(parts["backbone"], parts["head"]))
        model.task_heads["source"] = copy.deepcopy(parts["head"])

    def old_task_logits(self, out: StepOutputs) -> Tensor:
        """The student's outputs that are distilled."""
        model, x = out.model, out.x("target")
        if self.student_mode == "train":
            return model.task_heads["source"](out.features("target"))
        with eval_mode(model.backbone, model.task_heads["source"]):
            return model.task_heads["source"](model.backbone(x))

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        student = self.old_task_logits(out)
        teacher = self.teacher(out.x("target"))
        return {"lwf": self.weight * distillation_loss(student, teacher, self.temperature)}


@method
def lwf(
    tuning: FineTuning = FineTuning(keep_head=False),
    distillation: Callable[..., Objective] = Distillation,
    warmup_epochs: int = 1,
) -> Method:
    """LwF: fine-tuning that keeps answering the source task through its own head.
    ``warmup_epochs``: of the target stage's epochs, how many train the new head alone."""
    stages = fine_tuning_stages(tuning, {"lwf": distillation}, warmup_epochs=warmup_epochs)
    return Method(tuning.named("lwf"), stages, same_classes=tuning.keep_head)
