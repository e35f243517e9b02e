"""Synthetic letters A-Z rendered from fonts: unlabeled data of *other* classes, no download.

The letters are drawn exactly as ``synth_digits`` draws digits (same fonts, same random
size, position, rotation, shear and stroke weight; see ``synth_digits.render_splits``), so
paired with a digit domain the classes differ while the image statistics match. This is the
setting of self-taught learning (Raina et al. 2007): learn features from unlabeled data of
other classes, use them for a small labeled target set.

Every font in ``DIGIT_FONTS`` has all 26 capitals as distinct glyphs (checked in
``tests/test_self_taught.py``), so the letters use the same fonts.
"""

from __future__ import annotations

import string

from tlframe.data.domain import Domain
from tlframe.data.synthetic.embedded import cache_path, digits_domain, load_or_build
from tlframe.data.synthetic.fonts import DIGIT_FONTS
from tlframe.data.synthetic.synth_digits import render_splits

VERSION = 1  # bump when the generator changes, so old caches are not reused
LETTERS = string.ascii_uppercase


def synth_letters(
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
    """Font-rendered capitals (26 classes), built once per argument set and cached under
    ``root/embedded``."""
    fonts = list(DIGIT_FONTS if fonts is None else fonts)
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    args = {"seed": seed, "sizes": sizes, "image_size": image_size, "fonts": fonts}
    path = cache_path(root, "synth_letters", VERSION, args)
    data = load_or_build(
        path, lambda: render_splits("synth_letters", LETTERS, seed, sizes, image_size, fonts)
    )
    return digits_domain(
        "synth_letters", data, image_size, mean, std, path, channels, list(LETTERS)
    )
