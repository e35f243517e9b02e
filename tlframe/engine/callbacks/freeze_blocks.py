"""Freezing a model's blocks for part of its training (Lightning's fine-tuning callback)."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from tlframe.errors import ConfigError


class FreezeBlocks(BaseFinetuning):
    """Freezes the copied blocks before training and unfreezes them at ``unfreeze_at_epoch``
    (``None``: never; ``0``: fine-tuned from the start).

    Frozen blocks run in eval mode: a fixed feature extractor, with no dropout and the
    source's batch-norm statistics, whose weights and buffers stay bit-identical.
    ``batch_norm_eval``: unfrozen blocks keep their batch-norm layers in eval mode too (a
    model that keeps the source's statistics throughout, ``freeze_bn_stats``).
    """

    def __init__(
        self,
        blocks: list[nn.Module],
        unfreeze_at_epoch: int | None,
        batch_norm_eval: bool = False,
    ):
        super().__init__()
        self.blocks = blocks
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.batch_norm_eval = batch_norm_eval
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
            # The blocks are already in the optimizer (see CopiedBlocks.trainable_parameters),
            # so they follow its learning-rate schedule like the rest of the model.
            self.make_trainable(self.blocks)
            self.frozen = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        for block in self.blocks:
            block.train(not self.frozen)
            if self.batch_norm_eval:
                for module in block.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
