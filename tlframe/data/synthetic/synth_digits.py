"""Synthetic MNIST-style digits rendered from fonts: a labeled source domain with no download.

Digits 0-9 from the fonts in ``DIGIT_FONTS`` are randomly resized, moved, rotated, sheared
and thickened or thinned, so a model must learn digit shapes rather than one font's pixels.
Paired with ``hand_digits`` the domain shift is printed versus handwritten strokes; size,
position and contrast follow MNIST in both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tlframe.data.domain import Domain
from tlframe.data.synthetic.embedded import (
    CLASS_NAMES,
    cache_path,
    digits_domain,
    load_or_build,
    split_seed,
)
from tlframe.data.synthetic.fonts import DIGIT_FONTS, FILL, render_glyphs

VERSION = 1  # bump when the generator changes, so old caches are not reused

BANK_SIZE = 64  # glyphs are warped from this resolution...
OVERSAMPLE = 2  # ...onto a canvas this many times the image size, then area-downsampled
CHUNK = 2048  # images warped at once; bounds memory to ~100 MB
HEIGHT_RANGE = (0.58, 0.78)  # digit height as a fraction of the image (MNIST: ~20 of 28 px)
MAX_SHIFT = 0.06  # centre jitter as a fraction of the image side (~1.7 px at 28)
MAX_ROTATION = 15.0  # degrees
MAX_SHEAR = 0.2
ASPECT_RANGE = (0.8, 1.1)  # width stretch relative to the font's own proportions
STROKE_STEPS = (-2, -1, 0, 1, 2)  # pixels of erosion (<0) or dilation (>0) of a bank glyph
WEIGHT_RANGE = (0.9, 1.6)  # ink relative to the average font (hand_digits matches ~1.25)


def synth_digits(
    root: str,
    seed: int = 0,
    num_train: int = 10000,
    num_val: int = 2000,
    num_test: int = 2000,
    image_size: int = 28,
    fonts: list[str] | None = None,
    mean: float = 0.5,
    std: float = 0.5,
    channels: int | None = None,
) -> Domain:
    """Font-rendered digits, built once per argument set and cached under ``root/embedded``."""
    fonts = list(DIGIT_FONTS if fonts is None else fonts)
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    args = {"seed": seed, "sizes": sizes, "image_size": image_size, "fonts": fonts}
    path = cache_path(root, "synth_digits", VERSION, args)
    chars = "".join(CLASS_NAMES)
    data = load_or_build(
        path, lambda: render_splits("synth_digits", chars, seed, sizes, image_size, fonts)
    )
    return digits_domain("synth_digits", data, image_size, mean, std, path, channels)


def render_splits(
    name: str, chars: str, seed: int, sizes: dict[str, int], image_size: int, fonts: list[str]
) -> dict:
    """``{split: {"images", "labels"}}`` of randomly warped glyphs of ``chars`` (label i is
    ``chars[i]``), each split from its own stream of ``(name, seed, split)``. Shared by the
    font-rendered domains (``synth_digits``, ``synth_letters``)."""
    strokes, weights = _stroke_variants(render_glyphs(chars, fonts, BANK_SIZE))
    data = {}
    for split, n in sizes.items():
        generator = torch.Generator().manual_seed(split_seed(name, seed, split))
        images, labels = _sample(strokes, weights, n, image_size, generator)
        data[split] = {"images": images, "labels": labels}
    return data


def _stroke_variants(bank: Tensor) -> tuple[Tensor, Tensor]:
    """Each glyph eroded or dilated by each of ``STROKE_STEPS`` pixels, and its stroke weight.

    Returns glyphs ``[steps, fonts, classes, S, S]`` and weights ``[steps, fonts, classes]``:
    ink relative to the class's mean ink over the fonts as rendered. Sampling by weight
    rather than by step makes the thickness independent of the font (bold fonts get thinned).
    """
    variants = []
    for step in STROKE_STEPS:
        sign = 1 if step >= 0 else -1  # erosion is dilation of the background
        glyphs = bank
        for _ in range(abs(step)):
            glyphs = sign * _dilate(sign * glyphs)
        variants.append(glyphs)
    strokes = torch.stack(variants)
    ink = strokes.mean(dim=(-2, -1))
    return strokes, ink / ink[STROKE_STEPS.index(0)].mean(dim=0)


def _dilate(images: Tensor) -> Tensor:
    """3x3 maximum filter over the last two dims, as two 1-D passes (max_pool2d is slower)."""
    padded = F.pad(images, (1, 1))
    images = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    padded = F.pad(images, (0, 0, 1, 1))
    return torch.maximum(
        torch.maximum(padded[..., :-2, :], padded[..., 1:-1, :]), padded[..., 2:, :]
    )


def _sample(
    strokes: Tensor, weights: Tensor, n: int, image_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``n`` random digits as uint8 ``[n, 1, H, W]`` with exactly balanced int64 labels."""
    num_fonts, num_classes = strokes.shape[1:3]

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(shape or (n,), generator=generator)

    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    font = torch.randint(num_fonts, (n,), generator=generator)
    weight = uniform(*WEIGHT_RANGE)
    height = uniform(*HEIGHT_RANGE)
    aspect = uniform(*ASPECT_RANGE)
    angle = uniform(-MAX_ROTATION, MAX_ROTATION) * math.pi / 180
    shear = uniform(-MAX_SHEAR, MAX_SHEAR)
    shift = uniform(-2 * MAX_SHIFT, 2 * MAX_SHIFT, n, 2)  # normalised coordinates span 2
    blur = uniform(0.0, 1.0)
    stroke = (weights[:, font, labels] - weight).abs().argmin(dim=0)

    # Forward map glyph -> image (in grid_sample's [-1, 1] coordinates): scale, shear, rotate,
    # shift. grid_sample needs the inverse, image -> glyph.
    scale_y = height / FILL
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_scale = torch.zeros(n, 2, 2)
    shear_scale[:, 0, 0] = scale_y * aspect
    shear_scale[:, 0, 1] = shear * scale_y
    shear_scale[:, 1, 1] = scale_y
    inverse = torch.linalg.inv(rotate @ shear_scale)
    theta = torch.cat([inverse, -(inverse @ shift[:, :, None])], dim=2)

    canvas = OVERSAMPLE * image_size
    images = torch.empty(n, 1, image_size, image_size, dtype=torch.uint8)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        glyphs = strokes[stroke[part], font[part], labels[part]][:, None]
        grid = _affine_grid(theta[part], canvas)
        warped = F.grid_sample(glyphs, grid, mode="bilinear", align_corners=False)
        small = F.interpolate(warped, size=(image_size, image_size), mode="area")
        images[part] = _to_uint8(_soften(small, blur[part]))
    return images, labels


def _affine_grid(theta: Tensor, size: int) -> Tensor:
    """``F.affine_grid(theta, [N, 1, size, size], align_corners=False)``, ~15x faster on CPU.

    One matrix product over all images instead of torch's batch of tiny 3x2 products.
    """
    centres = (2 * torch.arange(size) + 1) / size - 1
    xy1 = torch.stack(
        [centres.repeat(size), centres.repeat_interleave(size), torch.ones(size * size)], dim=1
    )
    return torch.einsum("pk,nik->npi", xy1, theta).reshape(len(theta), size, size, 2)


def _soften(images: Tensor, amount: Tensor) -> Tensor:
    """Blend each image with a 3x3 blur by ``amount`` and stretch its peak to full white.

    Scanned digits have soft edges and saturated strokes; thin fonts would otherwise be grey.
    """
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3)
    blurred = F.conv2d(images, kernel, padding=1)
    amount = amount.view(-1, 1, 1, 1)
    images = (1 - amount) * images + amount * blurred
    return images / images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


def _to_uint8(images: Tensor) -> Tensor:
    return (images * 255).round().clamp(0, 255).to(torch.uint8)
