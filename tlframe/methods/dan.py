"""DAN (Long et al., ICML 2015): align feature distributions by multi-kernel MMD.

The squared maximum mean discrepancy between the source and target feature batches,
under a sum of Gaussian kernels whose bandwidths are multiples of the batch's mean
squared distance, is added to the source classification loss:

    loss = CE(source) + trade_off * lambda * MK-MMD^2(source features, target features)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tlframe.engine.method import Method, method
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.methods.alignment import Alignment, adaptation_stage


def multi_kernel_mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.125, 0.25, 0.5, 1, 2)):
    """Biased estimate of MMD^2 between samples ``x`` and ``y`` (rows) under a kernel sum."""
    z = torch.cat([x, y])
    distances = torch.cdist(z, z).pow(2)
    scale = distances.detach().mean()
    kernel = sum(torch.exp(-distances / (scale * b)) for b in bandwidths)
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


class MultiKernelMMD(Alignment):
    """lambda * MK-MMD^2 of the features; ``bandwidths`` are the kernel widths as multiples
    of the batch's mean squared distance."""

    def __init__(
        self,
        *,
        trade_off: float = 1.0,
        schedule: str = "constant",
        gamma: float = 10.0,
        bandwidths: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0),
        **parts: Any,
    ):
        super().__init__(trade_off=trade_off, schedule=schedule, gamma=gamma)
        self.bandwidths = tuple(float(b) for b in bandwidths)

    def discrepancy(self, out: StepOutputs, factor: float) -> Tensor:
        f_s, f_t = out.features("source"), out.features("target")
        return factor * multi_kernel_mmd(f_s, f_t, self.bandwidths)


@method
def dan(alignment: Callable[..., Objective] = MultiKernelMMD) -> Method:
    """DAN: labeled source, unlabeled target, same classes."""
    return Method("dan", [adaptation_stage({"alignment": alignment})])
