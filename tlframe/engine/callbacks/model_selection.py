"""Checkpoint selection that prefers the later of equally good epochs."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor


class ModelSelection(ModelCheckpoint):
    """``ModelCheckpoint`` whose ties go to the newer checkpoint, keeping ``last.ckpt`` current.

    Source validation accuracy saturates early on easy sources; with Lightning's strict
    comparison the first saturated epoch would win, before an adaptation schedule (which
    ramps up over training) has done its work. Among equal scores the later epoch is kept.

    Lightning rewrites ``last.ckpt`` only when a selected checkpoint is saved, so a run
    killed after epochs that scored worse would resume before them and train them again;
    here ``last.ckpt`` follows every validation.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._keep_last_current(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._keep_last_current(trainer)

    def _keep_last_current(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` where Lightning would have, had the epoch been selected."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def check_monitor_top_k(self, trainer: pl.Trainer, current: Tensor | None = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        at_least_as_good = {"min": torch.le, "max": torch.ge}[self.mode]
        decision = at_least_as_good(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(decision))
