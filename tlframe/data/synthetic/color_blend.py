"""Digits on natural colour patches, the way MNIST-M was made from MNIST.

Ganin & Lempitsky (2015) blended each MNIST digit with a random patch of a BSDS500 photo
by the absolute difference ``|patch - digit|``: the stroke inverts the photo's colours, so
the digit stays readable while colour and texture vary from image to image. The photos
here are any list of RGB images; by default the two that scikit-learn ships
(``load_sample_images``), so colour domains need no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torch import Tensor
from torchvision.ops import roi_align

from tlframe.errors import DataError

PATCH_SCALE = (1.0, 4.0)  # a patch covers this many times the digit's side of the photo
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def sample_photos() -> list[Tensor]:
    """scikit-learn's sample photos (china.jpg, flower.jpg) as uint8 ``[3, H, W]``."""
    return [
        torch.tensor(image).permute(2, 0, 1).contiguous() for image in load_sample_images().images
    ]


def folder_photos(folder: str | Path) -> list[Tensor]:
    """Every image in ``folder`` (e.g. BSDS500's images/train, MNIST-M's original source)."""
    paths = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not paths:
        raise DataError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {folder}")
    photos = []
    for path in paths:
        with Image.open(path) as image:
            photos.append(torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1))
    return photos


def random_patches(photos: list[Tensor], n: int, size: int, generator: torch.Generator) -> Tensor:
    """``n`` uint8 ``[3, size, size]`` crops of random photos at random places and scales,
    half of them mirrored; a crop larger than ``size`` is area-averaged down to it."""
    photo = torch.randint(len(photos), (n,), generator=generator)
    scale = PATCH_SCALE[0] + (PATCH_SCALE[1] - PATCH_SCALE[0]) * torch.rand(n, generator=generator)
    patches = torch.empty(n, 3, size, size)
    for index, image in enumerate(photos):
        chosen = (photo == index).nonzero().flatten()
        if len(chosen) == 0:
            continue
        height, width = image.shape[1:]
        side = (scale[chosen] * size).clamp(max=min(height, width))
        x0 = torch.rand(len(chosen), generator=generator) * (width - side)
        y0 = torch.rand(len(chosen), generator=generator) * (height - side)
        boxes = torch.stack([torch.zeros_like(x0), x0, y0, x0 + side, y0 + side], dim=1)
        patches[chosen] = roi_align(
            image[None].float(), boxes, output_size=size, sampling_ratio=4, aligned=True
        )
    flip = torch.rand(n, generator=generator) < 0.5
    patches[flip] = patches[flip].flip(-1)
    return patches.round().clamp(0, 255).to(torch.uint8)


def blend(digits: Tensor, photos: list[Tensor], generator: torch.Generator) -> Tensor:
    """uint8 ``[N, 3, S, S]``: each grey uint8 digit ``[N, 1, S, S]`` on its own photo patch,
    ``|patch - digit|`` per channel."""
    patches = random_patches(photos, len(digits), digits.shape[-1], generator)
    return (patches.short() - digits.short()).abs().to(torch.uint8)
