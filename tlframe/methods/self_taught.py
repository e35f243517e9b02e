"""Self-taught learning (Raina et al. 2007): features learned on unlabeled data, possibly of
other classes, then a classifier on a few labeled target examples.

``SelfTaughtPretrain`` is the label-free first stage: it trains the backbone with an
unsupervised objective (``objectives.py``) on the domains of its ``train_on``, which must
all be unlabeled, and selects its checkpoint by the objective's loss on the validation split
(``val/<role>/loss``). ``FrozenFeatures`` is the second stage: a new head on the inherited
backbone, frozen (``finetune=false``) or trained with it (``finetune=true``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tlframe.errors import ConfigError
from tlframe.methods.base import StageContext, TransferModule
from tlframe.methods.layer_transfer import LayerTransfer, check_block_count
from tlframe.models.backbones import Backbone

EVAL_SEED = 1234  # validation corruptions/views are the same every epoch: comparable losses


@dataclass(frozen=True)
class _UnlabeledContext(StageContext):
    """A label-free stage is built for its (first) training domain: its input shape."""

    @property
    def task_role(self) -> str:
        return next(iter(self.train_on))


class SelfTaughtPretrain(TransferModule):
    """Backbone trained by an unsupervised objective; it never sees a label."""

    needs_labels = False

    def __init__(self, *, objective: Callable[..., nn.Module], context: StageContext, **kwargs):
        labeled = [role for role in context.train_on if context.labeled(role)]
        if labeled or not context.train_on:
            raise ConfigError(
                f"stage {context.name!r} learns without labels; set its train_on to "
                f"{{<role>: none}} (labeled: {labeled or 'no domain at all'})"
            )
        context = _UnlabeledContext(context.domains, context.train_on, context.name)
        super().__init__(context=context, **kwargs)
        task = context.domains[context.task_role]
        self.objective = objective(
            in_features=self.backbone.out_features, input_shape=task.input_shape
        )

    def parts(self) -> dict[str, nn.Module]:
        """Only the backbone: the decoder or projection head serve the objective alone."""
        return {"backbone": self.backbone}

    def parameter_groups(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.objective.parameters()]

    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        losses = {}
        for role, (x, y) in batch.items():
            if y is not None:  # the data module's contract for label regime "none"
                raise RuntimeError(f"{role} labels reached the label-free stage")
            for name, value in self.objective(self.backbone, x).items():
                losses[f"{name}_{role}"] = value
        return losses

    def _evaluate_loss(self, batch: Mapping, batch_idx: int) -> None:
        role, split = batch["domain"], batch["split"]
        if role not in self.context.train_on:
            return
        generator = torch.Generator(device=batch["x"].device).manual_seed(EVAL_SEED + batch_idx)
        loss = sum(self.objective(self.backbone, batch["x"], generator).values())
        self.log(f"{split}/{role}/loss", loss, batch_size=len(batch["x"]), add_dataloader_idx=False)

    def validation_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate_loss(batch, batch_idx)

    def test_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate_loss(batch, batch_idx)


class FrozenFeatures(LayerTransfer):
    """A new head on the inherited backbone: frozen (in eval mode, weights and buffers
    unchanged) unless ``finetune``, which trains it with the head from the first epoch.
    Layer transfer with all layers copied.

    ``feature_blocks=n`` keeps only the first n blocks and puts the head on their flattened
    output: the later blocks of a self-supervised network grow specific to its pretext task
    (Gidaris et al. 2018 found RotNet's second conv block the best features).
    """

    def __init__(
        self,
        *,
        finetune: bool = False,
        feature_blocks: int | None = None,
        inherited: Mapping[str, nn.Module] | None = None,
        **kw,
    ):
        super().__init__(side="first", layers=0, unfreeze_at_epoch=0 if finetune else None, **kw)
        self.copied = list(self.backbone.blocks._modules)
        if feature_blocks is not None:
            self.copied = self._keep_first_blocks(feature_blocks, kw["head"])
        self.finetune = finetune
        if inherited:
            self.inherit(inherited)

    def _keep_first_blocks(self, n: int, head: Callable[..., nn.Module]) -> list[str]:
        """Cut the backbone after its n-th block, with a new head on it; the kept names."""
        names = list(self.backbone.blocks._modules)
        check_block_count(n, names, "feature_blocks", "null (all blocks) or", low=1)
        kept = OrderedDict((name, self.backbone.blocks.get_submodule(name)) for name in names[:n])
        kept["flatten"] = nn.Flatten()
        task = self.context.domains[self.context.task_role]
        with torch.no_grad():  # two examples: batch norm in training mode needs more than one
            width = nn.Sequential(kept)(torch.zeros(2, *task.input_shape)).shape[1]
        self.backbone = Backbone(kept, width)
        self.head = head(in_features=width, num_classes=task.num_classes)
        return names[:n]
