"""Embedded colour digit domains: ``synth_digits`` and ``hand_digits`` blended onto patches
of natural photos, as MNIST-M was made from MNIST (see ``color_blend``).

Against their grey originals the shift is in appearance (colour, texture, contrast) with the
digit shapes unchanged; against each other both appearance and stroke style shift. Built
from data the installed packages ship, they need no download, and are cached like the grey
domains under ``root/embedded``. ``synth_letters_color`` is the same for the letters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tlframe.data.domain import SPLITS, Domain
from tlframe.data.synthetic.color_blend import blend, sample_photos
from tlframe.data.synthetic.embedded import cache_path, digits_domain, load_or_build, split_seed
from tlframe.data.synthetic.hand_digits import hand_digits
from tlframe.data.synthetic.synth_digits import synth_digits
from tlframe.data.synthetic.synth_letters import LETTERS, synth_letters

VERSION = 1  # bump when the blending changes, so old caches are not reused


def synth_digits_color(
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
    """``synth_digits`` (same arguments, same digits) on colour photo patches."""
    grey = {
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "image_size": image_size,
        "fonts": fonts,
    }
    return _colored(
        "synth_digits_color", root, grey, lambda: synth_digits(root, mean=0.0, std=1.0, **grey),
        mean, std, channels,
    )  # fmt: skip


def synth_letters_color(
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
    """``synth_letters`` (same arguments, same letters) on colour photo patches: unlabeled
    data of other classes for the colour digit domains."""
    grey = {
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "image_size": image_size,
        "fonts": fonts,
    }
    return _colored(
        "synth_letters_color", root, grey, lambda: synth_letters(root, mean=0.0, std=1.0, **grey),
        mean, std, channels, class_names=list(LETTERS),
    )  # fmt: skip


def hand_digits_color(
    root: str,
    seed: int = 0,
    image_size: int = 28,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    mean: float = 0.5,
    std: float = 0.5,
    channels: int | None = None,
) -> Domain:
    """``hand_digits`` (same arguments, same scans and splits) on colour photo patches."""
    grey = {
        "seed": seed,
        "image_size": image_size,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    return _colored(
        "hand_digits_color", root, grey, lambda: hand_digits(root, mean=0.0, std=1.0, **grey),
        mean, std, channels,
    )  # fmt: skip


def _colored(
    name: str,
    root: str,
    grey_args: dict,
    grey: Callable[[], Domain],
    mean: float,
    std: float,
    channels: int | None,
    class_names: list[str] | None = None,
) -> Domain:
    path = cache_path(root, name, VERSION, grey_args)
    data = load_or_build(path, lambda: _build(name, grey(), grey_args["seed"]))
    return digits_domain(
        name, data, grey_args["image_size"], mean, std, path, channels, class_names
    )


def _build(name: str, grey: Domain, seed: int) -> dict:
    """Each split's grey digits (exactly their uint8 values: built with mean 0, std 1) on
    patches drawn from the split's own random stream."""
    photos = sample_photos()
    data = {}
    for split in SPLITS:
        part = grey.split(split)
        digits = (part.inputs * 255).round().to(torch.uint8)
        generator = torch.Generator().manual_seed(split_seed(name, seed, split))
        data[split] = {"images": blend(digits, photos, generator), "labels": part.labels}
    return data
