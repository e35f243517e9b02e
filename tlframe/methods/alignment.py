"""The unsupervised domain-adaptation setting: labeled source, unlabeled target.

An adaptation stage trains on ``{source: all, target: none}`` with the source
cross-entropy and an alignment objective: ``trade_off * discrepancy(source, target)``, the
discrepancy between the two domains' features (or features and predictions), computed on
one forward pass over both batches (``joint``), its strength following DANN's schedule
lambda_p or staying 1. Target labels are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from tlframe.engine.method import Stage
from tlframe.engine.objective import CrossEntropy, Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.models.schedules import dann_lambda

SCHEDULES = ("dann", "constant")
ADAPT = {"source": "all", "target": "none"}


class Alignment(Objective):
    """``trade_off * discrepancy(out, lambda_p)`` between the source and target batches,
    logged as the loss term ``alignment`` and the scalar ``lambda``."""

    joint = True
    needs_roles = ("source", "target")

    def __init__(self, *, trade_off: float, schedule: str, gamma: float):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"method.alignment.schedule must be one of {SCHEDULES}, got {schedule!r}"
            )
        if trade_off < 0:
            raise ConfigError(f"method.alignment.trade_off must be >= 0, got {trade_off}")
        self.trade_off = trade_off
        self.schedule = schedule
        self.gamma = gamma

    def factor(self, progress: float) -> float:
        """lambda_p: ramps from 0 to 1 over training (``dann``) or stays 1 (``constant``)."""
        return dann_lambda(progress, self.gamma) if self.schedule == "dann" else 1.0

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        return {"alignment": self.trade_off * self.discrepancy(out, self.factor(progress))}

    def discrepancy(self, out: StepOutputs, factor: float) -> Tensor:
        raise NotImplementedError

    def scalars(self, progress: float) -> dict[str, float]:
        return {"lambda": self.factor(progress)}


def adaptation_stage(objectives: Mapping[str, Callable[..., Objective]]) -> Stage:
    """The one stage of an adaptation method: the source cross-entropy and ``objectives``."""
    return Stage("adapt", ADAPT, objectives={"cls": CrossEntropy, **objectives})
