"""Checkpoint selection that prefers the later of equally good epochs."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor


class ModelSelection(ModelCheckpoint):
    """``ModelCheckpoint`` whose ties go to the newer checkpoint.

    Source validation accuracy saturates early on easy sources; with Lightning's strict
    comparison the first saturated epoch would win, before an adaptation schedule (which
    ramps up over training) has done its work. Among equal scores the later epoch is kept.
    """

    def check_monitor_top_k(self, trainer: pl.Trainer, current: Tensor | None = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        at_least_as_good = {"min": torch.le, "max": torch.ge}[self.mode]
        decision = at_least_as_good(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(decision))
