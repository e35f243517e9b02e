"""JAN (Long et al., ICML 2017): joint adaptation networks, joint MMD.

The joint distributions of the task-specific layers' activations are aligned: the kernel
of (features, predictions) pairs is the product of a kernel on the features (a sum of
Gaussians, multipliers 2^-3 .. 2^1 of the mean squared distance) and a Gaussian of fixed
bandwidth 0.92 on the softmax predictions (the reference implementation's), and

    loss = CE(source) + trade_off * lambda_p * JMMD^2((f_s, g_s), (f_t, g_t))

with the unbiased linear-time estimator (``tlframe.models.kernels``), and lambda_p ramping
from 0 to 1 over training as in the paper (DANN's schedule, ``schedule=dann``), which
suppresses the noisy discrepancy of the early, untrained predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.methods.alignment import Alignment, adaptation_stage
from tlframe.models.kernels import ESTIMATORS, joint_mmd


class JointMMD(Alignment):
    """lambda * JMMD^2 of (features, softmax predictions) between source and target."""

    def __init__(
        self,
        *,
        trade_off: float = 1.0,
        schedule: str = "dann",
        gamma: float = 10.0,
        multipliers: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0),
        prediction_bandwidth: float = 0.92,
        estimator: str = "linear",
        **parts: Any,
    ):
        super().__init__(trade_off=trade_off, schedule=schedule, gamma=gamma)
        if estimator not in ESTIMATORS:
            raise ConfigError(f"method.alignment.estimator must be one of {ESTIMATORS}")
        self.kernels = (tuple(float(m) for m in multipliers), float(prediction_bandwidth))
        self.estimator = estimator

    def discrepancy(self, out: StepOutputs, factor: float) -> Tensor:
        source = (out.features("source"), out.logits("source").softmax(dim=1))
        target = (out.features("target"), out.logits("target").softmax(dim=1))
        return factor * joint_mmd(source, target, self.kernels, self.estimator)


@method
def jan(alignment: Callable[..., Objective] = JointMMD) -> Method:
    """JAN: labeled source, unlabeled target, same classes."""
    return Method("jan", [adaptation_stage({"alignment": alignment})])
