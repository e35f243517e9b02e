"""Lightning's rich progress bar, reading the logged metrics only when they change."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from tlframe.engine.log_steps import logs_this_step


class ProgressBar(RichProgressBar):
    """``RichProgressBar`` that advances every batch but re-reads the metrics it shows only
    on the steps that log them (every ``trainer.log_every_n_steps``, ``tlframe.engine.log_steps``)
    and after validation: reading them back after each batch costs ~0.15 ms for values
    that have not changed. ``refresh_rate`` is redraws per second, as in Lightning."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.train_progress_bar_id is None or logs_this_step(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        else:
            self._update(self.train_progress_bar_id, batch_idx + 1)
