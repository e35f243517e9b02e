"""Layer transfer: copy the first or last n blocks of the source backbone, freeze them and
train the rest (the other blocks and the head, freshly initialised) on the target.

Blocks are the backbone's ordered ``blocks``, so ``layers=2`` means the same for lenet,
mlp and resnet. Which layers transfer well is the question of Yosinski et al. (2014):
``experiment=layer_transfer_study`` sweeps n with frozen and with fine-tuned copies.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from tlframe.errors import ConfigError
from tlframe.methods.finetune import FineTune

SIDES = ("first", "last")


def check_block_count(value: object, names: list[str], option: str, allowed: str, low: int):
    """``method.<option>`` must count between ``low`` and all of the backbone's blocks."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= len(names):
        raise ConfigError(
            f"method.{option} must be {allowed} {low} to {len(names)} (the backbone's "
            f"blocks: {', '.join(names)}), got {value!r}"
        )


class FreezeCopiedBlocks(BaseFinetuning):
    """Freezes the copied blocks before training and unfreezes them at ``unfreeze_at_epoch``
    (``None``: never; ``0``: fine-tuned from the start).

    Frozen blocks run in eval mode: a fixed feature extractor, with no dropout and the
    source's batch-norm statistics, whose weights and buffers stay bit-identical.
    """

    def __init__(self, blocks: list[nn.Module], unfreeze_at_epoch: int | None):
        super().__init__()
        self.blocks = blocks
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.frozen = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1 and self.unfreeze_at_epoch not in (None, 0):
            # DDP synchronises only the parameters that are trainable when it wraps the model
            raise ConfigError(
                f"method.unfreeze_at_epoch={self.unfreeze_at_epoch} cannot run on "
                f"{trainer.world_size} processes (trainer=ddp): DDP would not synchronise the "
                "blocks unfrozen later; use null (frozen), 0 (fine-tuned throughout) or 1 device"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        if self.unfreeze_at_epoch == 0:  # trained from the first step: never frozen
            return
        self.freeze(self.blocks, train_bn=False)
        self.frozen = True

    def finetune_function(
        self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if self.frozen and epoch == self.unfreeze_at_epoch:
            # The copies are already in the optimizer (see LayerTransfer.parameter_groups),
            # so they follow its learning-rate schedule like the rest of the model.
            self.make_trainable(self.blocks)
            self.frozen = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        for block in self.blocks:
            block.train(not self.frozen)


class LayerTransfer(FineTune):
    """Copies ``layers`` blocks from the ``side`` of the source backbone; everything else
    keeps its fresh initialisation. The head is always new: it belongs to the part that is
    trained on the target, so source and target classes may differ."""

    def __init__(
        self,
        *,
        side: str = "first",
        layers: int = 2,
        unfreeze_at_epoch: int | None = None,
        inherited: Mapping[str, nn.Module] | None = None,
        **kwargs,
    ):
        super().__init__(keep_head=False, **kwargs)
        names = [name for name, _ in self.backbone.blocks.named_children()]
        if side not in SIDES:
            raise ConfigError(f"method.side must be first or last, got {side!r}")
        check_block_count(layers, names, "layers", "an integer from", low=0)
        if unfreeze_at_epoch is not None and (
            isinstance(unfreeze_at_epoch, bool)
            or not isinstance(unfreeze_at_epoch, int)
            or unfreeze_at_epoch < 0
        ):
            raise ConfigError(
                f"method.unfreeze_at_epoch must be null (never) or an epoch >= 0, "
                f"got {unfreeze_at_epoch!r}"
            )
        self.copied = names[:layers] if side == "first" else names[len(names) - layers :]
        self.unfreeze_at_epoch = unfreeze_at_epoch
        if inherited:
            self.inherit(inherited)

    def copied_blocks(self) -> list[nn.Module]:
        return [self.backbone.blocks.get_submodule(name) for name in self.copied]

    def inherit(self, parts: Mapping[str, nn.Module]) -> None:
        source, blocks = parts["backbone"].blocks, self.backbone.blocks
        for name in self.copied:
            blocks.get_submodule(name).load_state_dict(source.get_submodule(name).state_dict())
        self.built_on_source = True

    def configure_callbacks(self) -> list[pl.Callback]:
        # Only fitting needs it (Lightning asks again for trainer.test, and would report the
        # fit-time instance as overridden).
        if not self.copied or self.trainer.state.fn != "fit":
            return []
        return [FreezeCopiedBlocks(self.copied_blocks(), self.unfreeze_at_epoch)]

    def parameter_groups(self):
        """Copies that will be unfrozen join the optimizer now, so that one schedule covers
        them; until then they have no gradients, and the optimizer leaves them untouched."""
        if self.unfreeze_at_epoch is None:
            return super().parameter_groups()
        return list(self.parameters())
