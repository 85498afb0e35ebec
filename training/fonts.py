"""Typefaces on this machine for printed digits, split by whole family into training and held-out.

Printed digit strings are rendered with the machine's own TrueType fonts (Pillow's FreeType
binding). Which families exist depends on the machine, so the split is by name pattern: every
family whose name starts with one of `HELDOUT_FAMILY_PREFIXES` is held out for evaluation (all its
weights and slants), every other family may be used for training. On the reference machine that
holds out the four Liberation families (Sans, Sans Narrow, Serif, Mono) and trains on the DejaVu
ones, so the printed figure measures typefaces whose design the model never saw.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
HELDOUT_FAMILY_PREFIXES = ("Liberation",)


@dataclass(frozen=True)
class Face:
    path: Path
    family: str
    style: str

    @property
    def heldout(self) -> bool:
        return self.family.startswith(HELDOUT_FAMILY_PREFIXES)


@functools.cache
def faces() -> tuple[Face, ...]:
    """Every TrueType face that draws all ten digits, sorted by path (a stable order)."""
    from PIL import ImageFont

    found: list[Face] = []
    for root in FONT_DIRS:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.ttf")):
            try:
                font = ImageFont.truetype(str(path), 32)
            except OSError:
                continue
            family, style = font.getname()
            if "Math" in (family or ""):  # a maths face: its digits are another face's
                continue
            found.append(Face(path, family or path.stem, style or ""))
    return tuple(found)


def training_faces() -> tuple[Face, ...]:
    return tuple(face for face in faces() if not face.heldout)


def heldout_faces() -> tuple[Face, ...]:
    return tuple(face for face in faces() if face.heldout)
