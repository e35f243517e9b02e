"""Where and in which precision the benchmark's plain loops run: where Lightning runs tlframe.

The plain side of ``python -m tlframe.tools.bench`` is plain PyTorch (``torch.autocast``, a
``GradScaler``), but the device and the precision it uses are the ones Lightning picks for
the same trainer settings, so a comparison never pits a GPU against a CPU or bf16 against
fp32 (Lightning, for one, runs ``16-mixed`` as ``bf16-mixed`` on a CPU).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

# Lightning's precisions the plain loops reproduce: the autocast dtype of each (None: off).
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class Placement:
    """A device and a Lightning precision, as plain PyTorch applies them."""

    device: torch.device
    precision: str

    @property
    def dtype(self) -> torch.dtype | None:
        return AUTOCAST[self.precision]

    def autocast(self) -> torch.autocast:
        """The forward pass's autocast, as Lightning's MixedPrecision enters it (off at fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 losses are scaled as Lightning's ``16-mixed`` scales them; other precisions
        get a disabled scaler, which passes the loss and the step through unchanged."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype is torch.float16)


def lightning_placement(trainer_cfg: DictConfig) -> Placement:
    """The root device and precision of the Trainer that ``trainer_cfg`` builds (built, not
    fitted: Lightning resolves ``accelerator=auto`` and the precision's aliases itself)."""
    trainer = instantiate(trainer_cfg, logger=False, enable_progress_bar=False)
    if trainer.precision not in AUTOCAST:
        raise ValueError(
            f"the benchmark's plain loops run trainer.precision {', '.join(AUTOCAST)}, "
            f"not {trainer.precision}"
        )
    return Placement(trainer.strategy.root_device, trainer.precision)


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on ``device``: CUDA runs asynchronously, so a clock read
    without it would time the launches, not the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The device in the report's words: the GPU's name, or the CPU's architecture."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return platform.machine()
