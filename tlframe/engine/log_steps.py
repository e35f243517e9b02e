"""Which training steps Lightning writes to the loggers.

Lightning writes a training step's logged values every ``trainer.log_every_n_steps``
steps and keeps only the latest of the others, but each ``LightningModule.log`` call costs
a fixed ~0.6 ms of Python and reading the logged metrics back (as a progress bar does)
~0.15 ms: on a small model that is a tenth of the step. tlframe therefore logs its
training values, and its progress bar re-reads them, only on the steps that are written.
"""

from __future__ import annotations

import pytorch_lightning as pl


def logs_this_step(trainer: pl.Trainer | None) -> bool:
    """Whether the loggers receive the current training step's values (the same rule,
    ``should_update_logs``, by which Lightning writes them and its LearningRateMonitor
    logs; always in a ``fast_dev_run``; never without a Trainer)."""
    if trainer is None:
        return False
    connector = getattr(trainer, "_logger_connector", None)
    if trainer.fast_dev_run or connector is None:
        return True
    return bool(connector.should_update_logs)
