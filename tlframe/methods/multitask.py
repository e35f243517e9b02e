"""Multitask learning: one shared trunk, one head per task, trained on both tasks at once.

Two architectures:

* ``shared_input``: the whole backbone is shared (the inputs share a feature space); each
  task has its own head.
* ``separate_input``: the first ``input_blocks`` backbone blocks are built per task from
  that domain's own input shape (e.g. 1- vs 3-channel images) and project each input into
  the shared middle (the remaining blocks); then task-specific heads.

Each head sees only its own task's loss; the trunk sees the weighted sum. The sampling ratio
``target_share`` is the target's share of the examples in a training step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.engine.context import StageContext
from tlframe.engine.method import LABELED, Method, Stage, method
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.models.backbones import Backbone
from tlframe.models.modes import eval_mode

ARCHITECTURES = ("shared_input", "separate_input")


def labeled_tasks(context: StageContext) -> list[str]:
    tasks = [role for role in context.train_on if context.labeled(role)]
    if len(tasks) < 2:
        raise ConfigError(
            "multitask needs labeled source and target data; set data.target_labels "
            "to all or k (not none)"
        )
    return tasks


class MultiTaskModel(TransferModel):
    """A head per labeled training domain over a (partly) shared trunk.

    The trunk and the task heads are built after a backbone and a head for the first task,
    as tlframe's single-task model builds them, so a seed gives the same initial weights."""

    def __init__(
        self,
        *,
        backbone: Callable[..., Backbone],
        head: Callable[..., nn.Module],
        context: StageContext,
        architecture: str,
        input_blocks: int,
    ):
        if architecture not in ARCHITECTURES:
            raise ConfigError(
                f"method.architecture={architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        super().__init__()
        self.tasks = labeled_tasks(context)
        shapes = {role: context.domains[role].input_shape for role in self.tasks}
        self.architecture = architecture
        first = backbone(input_shape=context.task.input_shape)
        head(in_features=first.out_features, num_classes=context.task.num_classes)
        if architecture == "separate_input":
            self.inputs, self.trunk = _split_inputs(backbone, shapes, input_blocks)
        elif len(set(shapes.values())) > 1:
            raise ConfigError(
                f"method.architecture=shared_input reads every domain with one backbone, but "
                f"the input shapes differ ({shapes}); use method.architecture=separate_input"
            )
        else:
            self.backbone = first
        width = self.shared.out_features
        self.heads = nn.ModuleDict(
            {
                role: head(in_features=width, num_classes=context.domains[role].num_classes)
                for role in self.tasks
            }
        )

    @property
    def shared(self) -> Backbone:
        """The shared blocks: the whole backbone, or the middle after the input layers."""
        return self.trunk if self.architecture == "separate_input" else self.backbone

    @property
    def out_features(self) -> int:
        return self.shared.out_features

    def features(self, x: Tensor, role: str) -> Tensor:
        if self.architecture == "separate_input":
            x = self.inputs[role](x)
        return self.shared(x)

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor, Tensor]:
        """Each domain is classified by its own task's input layers and head."""
        features = self.features(x, role)
        return features, self.heads[role](features)

    def parts(self) -> dict[str, nn.Module]:
        parts = {"shared": self.shared, "head": self.heads["target"], "heads": self.heads}
        if self.architecture == "separate_input":
            parts["inputs"] = self.inputs
        else:
            parts["backbone"] = self.backbone
        return parts


class TaskCrossEntropy(Objective):
    """Weighted cross-entropy per task, each through its own head, on its share of the
    step: ``cls_<task>``."""

    needs_labels = True

    def __init__(
        self,
        *,
        model: TransferModel | None = None,
        context: StageContext,
        loss_weights: Mapping[str, float],
        target_share: float,
    ):
        if not 0.0 < target_share < 1.0:
            raise ConfigError(f"method.target_share={target_share} must lie strictly in (0, 1)")
        super().__init__()
        self.tasks = labeled_tasks(context)
        self.loss_weights = {role: float(loss_weights.get(role, 1.0)) for role in self.tasks}
        self.target_share = target_share

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        losses = {}
        counts = self.examples_per_task({role: len(out.x(role)) for role in self.tasks})
        for role in self.tasks:
            x, y = out.x(role)[: counts[role]], out.y(role)[: counts[role]]
            losses[f"cls_{role}"] = self.loss_weights[role] * F.cross_entropy(
                out.model.logits(x, role), y
            )
        return losses

    def examples_per_task(self, available: Mapping[str, int]) -> dict[str, int]:
        """Use all of the larger share's batch and a matching slice of the other's."""
        share = {"target": self.target_share, "source": 1.0 - self.target_share}
        scale = min(available[r] / share[r] for r in self.tasks)
        return {r: max(1, min(available[r], round(scale * share[r]))) for r in self.tasks}


def _split_inputs(
    backbone: Callable[..., Backbone], shapes: Mapping[str, tuple[int, ...]], input_blocks: int
) -> tuple[nn.ModuleDict, Backbone]:
    """Per-task copies of the first ``input_blocks`` blocks, and the shared rest."""
    built = {role: backbone(input_shape=shape) for role, shape in shapes.items()}
    first = next(iter(built.values()))
    names = [name for name, _ in first.blocks.named_children()]
    if not 1 <= input_blocks < len(names):
        raise ConfigError(
            f"method.input_blocks={input_blocks}: the backbone has blocks {names}; "
            f"choose 1..{len(names) - 1} task-specific input blocks"
        )
    inputs = nn.ModuleDict(
        {role: nn.Sequential(*list(b.blocks)[:input_blocks]) for role, b in built.items()}
    )
    outs = {}
    with torch.no_grad(), eval_mode(*inputs.values()):
        for role, layers in inputs.items():
            outs[role] = tuple(layers(torch.zeros(2, *shapes[role])).shape[1:])
    if len(set(outs.values())) > 1:
        raise ConfigError(
            f"the first {input_blocks} backbone blocks map the domains to different shapes "
            f"({outs}); give the domains one image size or raise method.input_blocks"
        )
    shared = OrderedDict(list(first.blocks.named_children())[input_blocks:])
    return inputs, Backbone(shared, first.out_features)


@method
def multitask(
    architecture: str = "shared_input",
    input_blocks: int = 1,
    source_weight: float = 1.0,
    target_weight: float = 1.0,
    target_share: float = 0.5,
) -> Method:
    """Multitask learning on the labeled source and the target labels the setting has.

    ``architecture``: shared_input (one backbone; the inputs share a feature space) or
    separate_input (the first ``input_blocks`` blocks per task, from its own input shape,
    into a shared middle). ``source_weight``, ``target_weight``: each task's cross-entropy
    weight. ``target_share``: the target's share of a step's examples (0.5: a full batch of
    each; 0.25: a full source batch and a third of a target batch). Each domain is tested
    through its own head."""
    model = partial(MultiTaskModel, architecture=architecture, input_blocks=input_blocks)
    weights = {"source": source_weight, "target": target_weight}
    loss = partial(TaskCrossEntropy, loss_weights=weights, target_share=target_share)
    stage = Stage(
        "joint", {"source": "all", "target": LABELED}, model=model, objectives={"cls": loss}
    )
    return Method("multitask", [stage], same_input_shape=False)
