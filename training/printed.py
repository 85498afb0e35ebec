"""Printed digit strings for training `ocr`, rendered with the training typeface families.

Only `fonts.training_faces()` are used (never the held-out families). A string is drawn one digit
at a time with the face's own advance widths plus a random tracking, which is zero half the time
(ordinary spacing) and otherwise squeezes the digits until they touch or overlap, or spreads
them; a fifth of the strings are emboldened. The result is a picture with the ink bright on 0,
ready for the service's framing (`app.tasks.images.strip_input`), which brings it to the
model's 28 px high strip the same way as any uploaded picture.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from training import fonts

SIZES = tuple(range(22, 60, 4))  # font sizes in px, a handful so the font objects can be cached


@functools.cache
def _font(path: str, size: int) -> Any:
    return ImageFont.truetype(path, size)


def render(face: fonts.Face, text: str, rng: np.random.Generator) -> np.ndarray:
    """`text` in `face` at a random size and tracking: float32 `[H, W]`, ink 1.0 on 0.0."""
    size = int(rng.choice(SIZES))
    font = _font(str(face.path), size)
    tracking = 0.0 if rng.random() < 0.5 else float(rng.uniform(-0.14, 0.15)) * size
    advances = [font.getlength(char) for char in text]
    margin = size // 2
    width = int(sum(advances) + tracking * (len(text) - 1)) + 2 * margin + size
    canvas = Image.new("L", (max(width, size), 2 * size), 0)
    draw = ImageDraw.Draw(canvas)
    x = float(margin)
    for char, advance in zip(text, advances, strict=True):
        draw.text((x, size // 2), char, fill=255, font=font)
        x += advance + tracking
    if rng.random() < 0.2:
        canvas = canvas.filter(ImageFilter.MaxFilter(3))
    return np.asarray(canvas, dtype=np.float32) / 255.0
