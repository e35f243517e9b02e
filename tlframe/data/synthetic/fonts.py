"""Glyph images rendered from the TrueType fonts that matplotlib ships.

These fonts are installed with matplotlib, so data sets built from them need no download.
Glyphs are rendered with FreeType directly (no figure, no canvas), which takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ft2font import FT2Font, LoadFlags
from torch import Tensor

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"

# Fonts whose digits are real, distinct glyphs (the symbol fonts map them to other shapes).
DIGIT_FONTS: list[str] = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
    "cmmi10.ttf",
]

FILL = 0.8  # the larger side of a glyph's bounding box, as a fraction of its square


def _render_one(font: FT2Font, ch: str, font_file: str) -> np.ndarray:
    """The glyph's antialiased coverage in [0, 1], cropped to its bounding box."""
    if font.get_char_index(ord(ch)) == 0:  # FreeType would draw the "missing glyph" box
        raise ValueError(f"font {font_file!r} has no glyph for {ch!r}")
    font.set_text(ch, 0.0, flags=LoadFlags.NO_HINTING)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(image > 0)
    if len(rows) == 0:
        raise ValueError(f"glyph {ch!r} renders empty in font {font_file!r}")
    return image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _fit_to_square(glyph: np.ndarray, size: int) -> Tensor:
    """Scale the glyph so its larger side fills ``FILL`` of the square, centred by its box."""
    height, width = glyph.shape
    scale = FILL * size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.interpolate(
        torch.from_numpy(glyph)[None, None],
        size=(new_h, new_w),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0, 0].clamp(0.0, 1.0)
    out = torch.zeros(size, size)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def render_glyphs(chars: str, fonts: Sequence[str], size: int = 64) -> Tensor:
    """Glyphs of ``chars`` in each font, as float ``[len(fonts), len(chars), size, size]``.

    White (1) on black (0). Each glyph is centred by its bounding box and scaled so its
    larger side fills 80% of the square, so fonts differ in shape, not in size or position.
    Rendering happens at twice ``size`` and is then downsampled, which keeps thin strokes.
    """
    bank = torch.zeros(len(fonts), len(chars), size, size)
    for i, font_file in enumerate(fonts):
        path = FONT_DIR / font_file
        if not path.is_file():
            raise ValueError(f"font file {font_file!r} not found in {FONT_DIR}")
        font = FT2Font(str(path))
        font.set_size(2 * size, 72)  # 72 dpi: one point is one pixel
        for j, ch in enumerate(chars):
            bank[i, j] = _fit_to_square(_render_one(font, ch, font_file), size)
    return bank
