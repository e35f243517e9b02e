"""Learning-rate schedules as ``builder(optimizer, total_steps, **options)``, stepped per batch."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def inverse_decay(
    optimizer: Optimizer,
    total_steps: int,
    alpha: float = 10.0,
    beta: float = 0.75,
    horizon_steps: int | None = 10_000,
) -> LRScheduler:
    """DANN's annealing mu_p = mu_0 / (1 + alpha p)^beta, with p = step / horizon_steps.

    A fixed horizon makes the decay per step, as in the DANN digit recipe that tllib
    publishes (mu_0 (1 + 0.001 i)^-0.75 is alpha=10 over 10,000 steps): a short run then
    keeps the learning rate its first steps need instead of annealing to a sixth of it.
    ``horizon_steps=None`` measures p against this run's own length (p in [0, 1]).
    """
    horizon = max(int(horizon_steps or total_steps), 1)
    return LambdaLR(optimizer, lambda step: (1.0 + alpha * min(step / horizon, 1.0)) ** -beta)


def cosine(optimizer: Optimizer, total_steps: int, final_fraction: float = 0.0) -> LRScheduler:
    """Cosine decay from the initial rate to ``final_fraction`` of it over the run."""
    total = max(int(total_steps), 1)

    def factor(step: int) -> float:
        progress = min(step / total, 1.0)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's adaptation factor lambda_p = 2 / (1 + exp(-gamma p)) - 1, from 0 to ~1.

    Keeps the noisy domain signal away from the features early in training.
    """
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0
