"""Random generators' states in checkpoints, so a resumed run continues exactly."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

KEY = "tlframe_random_state"


class RandomState(pl.Callback):
    """Save torch/numpy/python generator states with each checkpoint; restore on resume.

    Lightning restores weights, optimiser, schedule and loop position, but not the
    generators that draw dropout masks and augmentations (batch order is seeded per epoch,
    tlframe.data.loaders.EpochSampler); without them a
    resumed run would drift from an uninterrupted one with the same seed.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        kind, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint[KEY] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(KEY)
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
