"""DAN (Long et al., ICML 2015): align feature distributions by multi-kernel MMD.

The squared maximum mean discrepancy between the source and target feature batches,
under a sum of Gaussian kernels whose bandwidths are multiples of the batch's mean
squared distance, is added to the source classification loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tlframe.methods.adaptation import AdaptationModule


def multi_kernel_mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.125, 0.25, 0.5, 1, 2)):
    """Biased estimate of MMD^2 between samples ``x`` and ``y`` (rows) under a kernel sum."""
    z = torch.cat([x, y])
    distances = torch.cdist(z, z).pow(2)
    scale = distances.detach().mean()
    kernel = sum(torch.exp(-distances / (scale * b)) for b in bandwidths)
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


class DAN(AdaptationModule):
    def __init__(self, *args, bandwidths: Sequence[float] = (0.125, 0.25, 0.5, 1, 2), **kwargs):
        super().__init__(*args, **kwargs)
        self.bandwidths = tuple(float(b) for b in bandwidths)

    def alignment_loss(self, f_s, f_t, logits_s, logits_t, factor: float) -> Tensor:
        return factor * multi_kernel_mmd(f_s, f_t, self.bandwidths)
