"""Real handwritten digits shipped with scikit-learn, upsampled to look like MNIST.

``load_digits`` holds 1,797 8x8 scans (values 0..16) inside the scikit-learn package, so this
target domain needs no download. Each scan is scaled to a 20x20 box centred in 28x28, as MNIST
digits are, so that against ``synth_digits`` the shift is in stroke style, not in framing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tlframe.data.domain import Domain
from tlframe.data.synthetic.embedded import cache_path, digits_domain, load_or_build

VERSION = 1  # bump when the preprocessing changes, so old caches are not reused


def hand_digits(
    root: str,
    seed: int = 0,
    image_size: int = 28,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    mean: float = 0.5,
    std: float = 0.5,
    channels: int | None = None,
) -> Domain:
    """scikit-learn's digits with a stratified train/val/test split, cached under ``root``."""
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need positive fractions summing below 1, got val={val_fraction} test={test_fraction}"
        )
    args = {
        "seed": seed,
        "image_size": image_size,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    path = cache_path(root, "hand_digits", VERSION, args)
    data = load_or_build(path, lambda: _build(**args))
    return digits_domain("hand_digits", data, image_size, mean, std, path, channels)


def _build(seed: int, image_size: int, val_fraction: float, test_fraction: float) -> dict:
    digits = load_digits()
    images = _mnist_like(torch.from_numpy(digits.images).float() / 16, image_size)
    labels = torch.from_numpy(digits.target).long()

    index = np.arange(len(labels))
    rest, test = train_test_split(
        index, test_size=test_fraction, stratify=labels.numpy(), random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=labels.numpy()[rest],
        random_state=seed,
    )
    return {
        split: {"images": images[idx], "labels": labels[idx]}
        for split, idx in (("train", train), ("val", val), ("test", test))
    }


def _mnist_like(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 ``[N, 1, S, S]``: each [0, 1] image resized to a 20/28 box, centred, on black."""
    box = round(image_size * 20 / 28)
    resized = F.interpolate(
        images[:, None], size=(box, box), mode="bicubic", antialias=True, align_corners=False
    ).clamp(0.0, 1.0)
    before = (image_size - box) // 2
    after = image_size - box - before
    padded = F.pad(resized, (before, after, before, after))
    return (padded * 255).round().to(torch.uint8)
