"""Held-out evaluation pictures, composed by routines of their own (not the training generators).

Everything here draws only on held-out material: the split's held-out MNIST rows and the
held-out typeface families (`training.fonts`). It shares no code with the training composition
(`training.strips`, the recipes' generators), so a bug or a bias there cannot make training and
evaluation agree by construction. Strips and printed strings become real picture files (PNG or
JPEG bytes) that go through the service's own decoding and framing (`app.tasks.images`), exactly
the path of `/tasks/read-digits`; digit sets for `mnist` and `deskew` are model inputs.

Every routine takes its own fixed seed, so two versions are measured on the same pictures.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from training import fonts, transforms

UPSCALE = 3  # strips are drawn at 3x MNIST's resolution, like a photo or scan of them
MARGIN = 6  # background around a strip, in MNIST pixels
#: Gaps between neighbouring digits' ink, in MNIST pixels (negative: the digits overlap).
SPACED_GAPS = (2, 8)
TOUCHING_GAPS = (-1, 1)
OVERLAPPING_GAPS = (-4, -2)
ORDINARY_GAPS = (0, 6)
HANDWRITTEN_CONDITIONS = (
    "spaced",
    "touching",
    "overlapping",
    "thick",
    "thin",
    "slant",
    "blur",
    "jpeg",
    "paper",
)


@dataclass(frozen=True)
class Picture:
    """An encoded picture file, what is written on it, and the condition it was made under."""

    data: bytes
    text: str
    condition: str


def handwritten_strips(
    digits: np.ndarray, labels: np.ndarray, per_condition: int, seed: int
) -> list[Picture]:
    """`per_condition` strips of 1-8 held-out digits for each of `HANDWRITTEN_CONDITIONS`.

    `spaced`, `touching` and `overlapping` differ only in the gaps; the others use ordinary
    handwriting gaps (0 to 6 px, some digits touching) and one change each: a stroke about a
    pixel thicker or thinner, a slant of up to 17 degrees either way, a blur of about a pixel,
    JPEG at quality 20-40, or dark ink on uneven, noisy paper. Every condition but `paper` is
    written in either polarity, half and half.
    """
    rng = np.random.default_rng(seed)
    pictures: list[Picture] = []
    for condition in HANDWRITTEN_CONDITIONS:
        gaps = {
            "spaced": SPACED_GAPS,
            "touching": TOUCHING_GAPS,
            "overlapping": OVERLAPPING_GAPS,
        }.get(condition, ORDINARY_GAPS)
        for _ in range(per_condition):
            length = int(rng.integers(1, 9))
            rows = rng.integers(0, len(digits), size=length)
            line = _handwritten_line(digits[rows], gaps, rng)
            picture = _degrade(_enlarge(line), condition, rng)
            text = "".join(str(int(labels[row])) for row in rows)
            pictures.append(Picture(picture, text, condition))
    return pictures


def _handwritten_line(
    digits: np.ndarray, gaps: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Held-out digits (uint8 `[k, 28, 28]`) side by side, each cut to its ink columns and moved
    up or down by up to 2 px, ink combined by maximum where neighbours overlap; float [0, 1]."""
    tiles = []
    for digit in digits.astype(np.float32) / 255.0:
        columns = np.flatnonzero(digit.max(axis=0) > 0.05)
        tile = digit[:, columns[0] : columns[-1] + 1] if len(columns) else digit[:, 10:18]
        tiles.append(np.roll(tile, int(rng.integers(-2, 3)), axis=0))
    offsets = [MARGIN]
    for tile in tiles[:-1]:
        offsets.append(offsets[-1] + tile.shape[1] + int(rng.integers(gaps[0], gaps[1] + 1)))
    width = max(o + t.shape[1] for o, t in zip(offsets, tiles, strict=True)) + MARGIN
    line = np.zeros((28 + 2 * MARGIN, width), dtype=np.float32)
    for offset, tile in zip(offsets, tiles, strict=True):
        target = line[MARGIN : MARGIN + 28, offset : offset + tile.shape[1]]
        np.maximum(target, tile, out=target)
    return line


def _enlarge(line: np.ndarray) -> Image.Image:
    image = Image.fromarray(np.rint(line * 255).astype(np.uint8))
    size = (image.width * UPSCALE, image.height * UPSCALE)
    return image.resize(size, Image.Resampling.BICUBIC)


def _degrade(image: Image.Image, condition: str, rng: np.random.Generator) -> bytes:
    """Apply `condition` to a bright-ink picture and encode it (PNG, or JPEG for `jpeg`)."""
    if condition == "thick":
        image = image.filter(ImageFilter.MaxFilter(5))  # +4 px at 3x: about 1.3 MNIST pixels
    elif condition == "thin":
        image = image.filter(ImageFilter.MinFilter(3))  # -2 px at 3x: about 0.7 MNIST pixels
    elif condition == "slant":
        shear = float(rng.uniform(0.15, 0.3)) * (1 if rng.random() < 0.5 else -1)
        extra = int(abs(shear) * image.height)
        wider = Image.new("L", (image.width + extra, image.height))
        wider.paste(image, (extra // 2, 0))
        # Output (x, y) reads input (x + shear * (y - h/2), y): columns lean like italics.
        image = wider.transform(
            wider.size,
            Image.Transform.AFFINE,
            (1, shear, -shear * image.height / 2, 0, 1, 0),
            Image.Resampling.BILINEAR,
        )
    elif condition == "blur":
        image = image.filter(ImageFilter.GaussianBlur(UPSCALE * float(rng.uniform(0.8, 1.2))))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if condition == "paper":
        pixels = _on_paper(pixels, rng)
    elif rng.random() < 0.5:
        pixels = 1.0 - pixels  # dark ink on white
    out = Image.fromarray(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    if condition == "jpeg":
        out.save(buffer, format="JPEG", quality=int(rng.integers(20, 41)))
    else:
        out.save(buffer, format="PNG")
    return buffer.getvalue()


def _on_paper(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark ink (70-95 % contrast) on paper whose brightness drifts across it, with noise."""
    height, width = ink.shape
    ramp_x = np.linspace(0.0, 1.0, width)[None, :] * rng.uniform(-0.15, 0.15)
    ramp_y = np.linspace(0.0, 1.0, height)[:, None] * rng.uniform(-0.1, 0.1)
    paper = rng.uniform(0.8, 0.95) + ramp_x + ramp_y
    contrast = rng.uniform(0.7, 0.95)
    noise = rng.normal(0.0, 0.03, size=ink.shape)
    return paper - contrast * ink * paper + noise


def printed_strings(faces: tuple[fonts.Face, ...], per_face: int, seed: int) -> list[Picture]:
    """`per_face` strings of 1-8 digits in each face: dark type on white, ordinary spacing (the
    face's own advance widths and kerning), 20 to 72 px type, PNG; condition = the face's family."""
    rng = np.random.default_rng(seed)
    pictures = []
    for face in faces:
        for _ in range(per_face):
            text = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(1, 9))))
            font = ImageFont.truetype(str(face.path), int(rng.integers(20, 73)))
            left, top, right, bottom = (int(v) for v in font.getbbox(text))
            margin = int(rng.integers(6, 30))
            size = (right - left + 2 * margin, bottom - top + 2 * margin)
            canvas = Image.new("L", size, 255)
            ImageDraw.Draw(canvas).text((margin - left, margin - top), text, fill=0, font=font)
            buffer = io.BytesIO()
            canvas.save(buffer, format="PNG")
            pictures.append(Picture(buffer.getvalue(), text, face.family))
    return pictures


def shifted_turned_digits(
    digits: np.ndarray, seed: int, max_shift: int = 2, max_angle: float = 10.0
) -> np.ndarray:
    """Held-out digits turned by up to `max_angle` degrees and shifted by up to `max_shift` px in
    each direction; float32 `[N, 28, 28, 1]`, the `mnist` model's input."""
    rng = np.random.default_rng(seed)
    count = len(digits)
    angles = rng.uniform(-max_angle, max_angle, size=count)
    turned = transforms.transform(digits.astype(np.float32) / 255.0, angles, 1.0)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(count, 2))
    moved = np.zeros_like(turned)
    for index, (dy, dx) in enumerate(shifts):
        moved[index] = _shift(turned[index], int(dy), int(dx))
    return np.clip(moved, 0.0, 1.0)[..., np.newaxis]


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    height, width = image.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


@dataclass(frozen=True)
class TurnedDigits:
    """Held-out digits in their upright pose, turned and scaled by known amounts."""

    images: np.ndarray  # float32 [N, 28, 28]
    angles: np.ndarray
    scales: np.ndarray


def turned_digits(
    digits: np.ndarray, seed: int, angle_range: float, scale_range: tuple[float, float]
) -> TurnedDigits:
    rng = np.random.default_rng(seed)
    upright = transforms.upright(digits.astype(np.float32) / 255.0)
    angles = rng.uniform(-angle_range, angle_range, size=len(digits))
    scales = rng.uniform(*scale_range, size=len(digits))
    images = np.clip(transforms.transform(upright, angles, scales), 0.0, 1.0)
    return TurnedDigits(images, angles, scales)


def thicker(images: np.ndarray) -> np.ndarray:
    """Each stroke one pixel thicker: the maximum over every 2x2 neighbourhood."""
    padded = np.pad(images, ((0, 0), (1, 0), (1, 0)))
    return np.maximum.reduce(
        [padded[:, 1:, 1:], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, :-1, :-1]]
    )


def thinner(images: np.ndarray) -> np.ndarray:
    """Each stroke one pixel thinner: the minimum over every 2x2 neighbourhood."""
    padded = np.pad(images, ((0, 0), (1, 0), (1, 0)))
    return np.minimum.reduce(
        [padded[:, 1:, 1:], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, :-1, :-1]]
    )


def blurred(images: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """Gaussian blur of about `radius` pixels (Pillow's, on 8-bit greys)."""
    return np.stack([_filtered(image, ImageFilter.GaussianBlur(radius)) for image in images])


def enlarged_then_framed(images: np.ndarray, factor: int = 3) -> np.ndarray:
    """Each picture enlarged `factor` times (bicubic) and sent through the service's framing for
    `/tasks/estimate-skew` (which reduces it back to 28 x 28)."""
    from app.tasks.images import frame_input

    out = []
    for image in images:
        big = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize(
            (28 * factor, 28 * factor), Image.Resampling.BICUBIC
        )
        out.append(frame_input(np.clip(np.asarray(big, dtype=np.float32), 0.0, 1.0))[0, :, :, 0])
    return np.stack(out)


def _filtered(image: np.ndarray, kind: ImageFilter.Filter) -> np.ndarray:
    pixels = Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pixels.filter(kind), dtype=np.float32) / 255.0
