"""Random image augmentations applied to a whole batch at once (no per-sample Python).

Contrastive objectives compare two random views of each image, so the augmentations run
inside the training step: one affine warp (random resized crop, rotation, shear, shift) via
``affine_grid``/``grid_sample``, then resolution, contrast, brightness, colour and noise,
all as batched tensor operations on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """One random view per image of an ``[N, C, H, W]`` batch (normalised inputs)."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # crop area as a fraction of the image
    max_rotation: float = 15.0  # degrees
    max_shear: float = 0.15
    max_shift: float = 0.1  # fraction of the image side
    contrast: float = 0.4  # contrast factor drawn from [1 - c, 1 + c]
    brightness: float = 0.4  # added offset from [-b, b], in normalised units
    color: float = 0.4  # per-channel gain from [1 - c, 1 + c] (colour images only)
    grayscale: float = 0.2  # probability of averaging colour images to grey
    noise: float = 0.1  # standard deviation of added Gaussian noise
    downscale: float = 0.5  # probability of a low-resolution view (detail lost, then upsampled)
    low_sizes: tuple[int, int] = (7, 14)  # side of the low resolution, drawn per batch

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, channels = x.shape[:2]

        def uniform(low: float, high: float, *shape: int) -> Tensor:
            r = torch.rand(shape or (n,), generator=generator, device=generator_device(generator))
            return (low + (high - low) * r).to(x.device)

        # image -> source coordinates: a crop of side sqrt(area) is magnified to full size
        scale = uniform(*self.crop_scale).sqrt()
        angle = uniform(-self.max_rotation, self.max_rotation) * math.pi / 180
        shear = uniform(-self.max_shear, self.max_shear)
        cos, sin = torch.cos(angle), torch.sin(angle)
        linear = torch.stack(
            [torch.stack([cos, -sin + shear], -1), torch.stack([sin, cos], -1)], -2
        ) * scale.view(n, 1, 1)
        shift = uniform(-2 * self.max_shift, 2 * self.max_shift, n, 2)
        theta = torch.cat([linear, shift[:, :, None]], dim=2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

        if self.downscale:
            x = self._low_resolution(x, uniform(0.0, 1.0) < self.downscale, generator)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = uniform(1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1)
        brightness = uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)
        x = (x - mean) * contrast + mean + brightness
        if channels > 1:
            gain = uniform(1 - self.color, 1 + self.color, n, channels).view(n, channels, 1, 1)
            x = x * gain
            grey = (uniform(0.0, 1.0) < self.grayscale).view(n, 1, 1, 1)
            x = torch.where(grey, x.mean(dim=1, keepdim=True).expand_as(x), x)
        noise = torch.randn(x.shape, generator=generator, device=generator_device(generator))
        return x + self.noise * noise.to(x.device)

    def _low_resolution(
        self, x: Tensor, chosen: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """The chosen images area-downsampled to one random side and upsampled back."""
        low, high = self.low_sizes
        side = int(torch.randint(low, high + 1, (1,), generator=generator))
        small = F.interpolate(x, size=(side, side), mode="area")
        blurred = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.where(chosen.view(-1, 1, 1, 1), blurred, x)


def generator_device(generator: torch.Generator | None) -> torch.device | None:
    return generator.device if generator is not None else None
