"""The unsupervised domain-adaptation setting: labeled source, unlabeled target.

``AdaptationModule`` computes features of the source and target batch in one pass,
the classification loss on the source, and a method-specific alignment loss between the
two feature distributions, weighted by a trade-off that can follow DANN's schedule.
Target labels are never read: the stage trains on ``{source: all, target: none}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.errors import ConfigError
from tlframe.methods.base import TransferModule
from tlframe.models.schedules import dann_lambda

SCHEDULES = ("dann", "constant")


class AdaptationModule(TransferModule):
    """Source cross-entropy + ``trade_off * schedule(p) * alignment_loss``."""

    def __init__(
        self,
        *args,
        trade_off: float = 1.0,
        schedule: str = "dann",
        gamma: float = 10.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if schedule not in SCHEDULES:
            raise ConfigError(f"method.schedule must be one of {SCHEDULES}, got {schedule!r}")
        if trade_off < 0:
            raise ConfigError(f"method.trade_off must be >= 0, got {trade_off}")
        self.trade_off = trade_off
        self.schedule = schedule
        self.gamma = gamma

    def adaptation_factor(self) -> float:
        """lambda_p: ramps from 0 to 1 over training (``dann``) or stays 1 (``constant``)."""
        return dann_lambda(self.progress, self.gamma) if self.schedule == "dann" else 1.0

    def training_losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        (x_s, y_s), (x_t, _) = batch["source"], batch["target"]  # target labels unused
        features = self.backbone(torch.cat([x_s, x_t]))
        logits = self.head(features)
        n = len(x_s)
        factor = self.adaptation_factor()
        alignment = self.alignment_loss(features[:n], features[n:], logits[:n], logits[n:], factor)
        return {
            "cls_source": F.cross_entropy(logits[:n], y_s),
            "alignment": self.trade_off * alignment,
        }

    def training_scalars(self) -> dict[str, float]:
        return {"lambda": self.adaptation_factor()}  # logged as train/lambda

    def alignment_loss(
        self, f_s: Tensor, f_t: Tensor, logits_s: Tensor, logits_t: Tensor, factor: float
    ) -> Tensor:
        """The method's discrepancy between source and target; ``factor`` is lambda_p."""
        raise NotImplementedError
