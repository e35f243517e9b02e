"""Kernel two-sample statistics that the MMD-based adaptation methods share (DAN, JAN).

Gaussian kernels follow the multiplier convention of the MMD literature (and of the
widely used reference implementation): k(a, b) = exp(-|a - b|^2 / (2 sigma^2)) with
sigma^2 = multiplier * the mean squared distance between the batch's points.

Two estimators of MMD^2 (Gretton et al. 2012) between samples x and y of one size n:

- ``linear``: the unbiased linear-time estimate over n/2 disjoint quads
  (x_2i, x_2i+1, y_2i, y_2i+1): mean of k(x, x') + k(y, y') - k(x, y') - k(x', y);
- ``quadratic``: the biased estimate over all pairs, diagonal included.

A joint MMD (JAN) multiplies the kernels of several layers before estimating; a layer's
kernel is a sum of Gaussians with bandwidth multipliers, or one Gaussian of a fixed
bandwidth (JAN's prediction layer: sigma = 0.92).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

ESTIMATORS = ("linear", "quadratic")


def gaussian_kernels(z: Tensor, multipliers: Sequence[float]) -> Tensor:
    """The sum over ``multipliers`` of Gaussian kernel matrices of the rows of ``z``."""
    distances = torch.cdist(z, z).pow(2)
    scale = distances.detach().mean()
    return sum(torch.exp(-distances / (2 * m * scale)) for m in multipliers)


def mmd_from_kernel(kernel: Tensor, n: int, estimator: str = "linear") -> Tensor:
    """MMD^2 from the kernel matrix of [x; y] (n rows each)."""
    if estimator == "quadratic":
        return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()
    if estimator != "linear":
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    pairs = n // 2
    if pairs == 0:
        return kernel.new_zeros(())
    a = torch.arange(pairs, device=kernel.device) * 2
    b = a + 1
    h = kernel[a, b] + kernel[n + a, n + b] - kernel[a, n + b] - kernel[b, n + a]
    return h.mean()


def multi_kernel_mmd(
    x: Tensor,
    y: Tensor,
    multipliers: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0),
    estimator: str = "linear",
) -> Tensor:
    """MK-MMD^2 of the rows of ``x`` and ``y`` under a sum of Gaussian kernels."""
    return mmd_from_kernel(gaussian_kernels(torch.cat([x, y]), multipliers), len(x), estimator)


def fixed_gaussian(z: Tensor, sigma: float) -> Tensor:
    """One Gaussian kernel matrix of the rows of ``z`` with bandwidth ``sigma``."""
    return torch.exp(-torch.cdist(z, z).pow(2) / (2 * sigma**2))


def joint_mmd(
    xs: Sequence[Tensor],
    ys: Sequence[Tensor],
    kernels: Sequence[Sequence[float] | float],
    estimator: str = "linear",
) -> Tensor:
    """JMMD^2: the MMD under the product over layers of each layer's kernel (a list of
    bandwidth multipliers, or a fixed bandwidth)."""
    kernel = None
    for x, y, spec in zip(xs, ys, kernels, strict=True):
        z = torch.cat([x, y])
        layer = (
            fixed_gaussian(z, spec) if isinstance(spec, int | float) else gaussian_kernels(z, spec)
        )
        kernel = layer if kernel is None else kernel * layer
    return mmd_from_kernel(kernel, len(xs[0]), estimator)
