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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.errors import ConfigError
from tlframe.methods.base import StageContext, TransferModule
from tlframe.models.backbones import Backbone
from tlframe.models.modes import eval_mode

ARCHITECTURES = ("shared_input", "separate_input")


class MultiTask(TransferModule):
    """A head per labeled training domain over a (partly) shared trunk."""

    def __init__(
        self,
        *,
        backbone: Callable[..., nn.Module],
        head: Callable[..., nn.Module],
        context: StageContext,
        architecture: str = "shared_input",
        input_blocks: int = 1,
        loss_weights: Mapping[str, float] | None = None,
        target_share: float = 0.5,
        **kwargs,
    ):
        if architecture not in ARCHITECTURES:
            raise ConfigError(
                f"method.architecture={architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        if not 0.0 < target_share < 1.0:
            raise ConfigError(f"method.target_share={target_share} must lie strictly in (0, 1)")
        super().__init__(backbone=backbone, head=head, context=context, **kwargs)
        self.tasks = [role for role in context.train_on if context.labeled(role)]
        if len(self.tasks) < 2:
            raise ConfigError(
                "multitask needs labeled source and target data; set data.target_labels "
                "to all or k (not none)"
            )
        shapes = {role: context.domains[role].input_shape for role in self.tasks}
        self.architecture = architecture
        if architecture == "separate_input":
            self.inputs, self.trunk = _split_inputs(backbone, shapes, input_blocks)
            del self.backbone  # no one backbone reads both domains (feature plots skip it)
        elif len(set(shapes.values())) > 1:
            raise ConfigError(
                f"method.architecture=shared_input reads every domain with one backbone, but "
                f"the input shapes differ ({shapes}); use method.architecture=separate_input"
            )
        del self.head  # replaced by one head per task
        width = self.shared.out_features
        self.heads = nn.ModuleDict(
            {
                role: head(in_features=width, num_classes=context.domains[role].num_classes)
                for role in self.tasks
            }
        )
        self.loss_weights = {
            role: float((loss_weights or {}).get(role, 1.0)) for role in self.tasks
        }
        self.target_share = target_share

    @property
    def shared(self) -> Backbone:
        """The shared blocks: the whole backbone, or the middle after the input layers."""
        return self.trunk if self.architecture == "separate_input" else self.backbone

    def features(self, x: Tensor, role: str) -> Tensor:
        if self.architecture == "separate_input":
            x = self.inputs[role](x)
        return self.shared(x)

    def features_and_logits(self, x: Tensor, role: str) -> tuple[Tensor, Tensor]:
        """Each domain is classified by its own task's input layers and head."""
        features = self.features(x, role)
        return features, self.heads[role](features)

    def forward(self, x: Tensor) -> Tensor:
        """The target task's prediction (the task a transfer method is judged on)."""
        return self.logits_for(x, "target")

    def parts(self) -> dict[str, nn.Module]:
        parts = {"shared": self.shared, "head": self.heads["target"], "heads": self.heads}
        if self.architecture == "separate_input":
            parts["inputs"] = self.inputs
        else:
            parts["backbone"] = self.backbone
        return parts

    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        """Weighted cross-entropy per task, each through its own head, on its share of the step."""
        losses = {}
        counts = self._examples_per_task({role: len(batch[role][0]) for role in self.tasks})
        for role in self.tasks:
            x, y = batch[role]
            x, y = x[: counts[role]], y[: counts[role]]
            losses[f"cls_{role}"] = self.loss_weights[role] * F.cross_entropy(
                self.logits_for(x, role), y
            )
        return losses

    def _examples_per_task(self, available: Mapping[str, int]) -> dict[str, int]:
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
