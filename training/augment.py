"""What real pictures do to digits, as batch operations for the training generators.

Each function takes a float batch `[N, H, W]` (ink bright, background 0, values in [0, 1]) and
returns a new one of the same shape; `degrade` draws a random mix of them per image. These are
used only by the training generators; the held-out pictures of `training.evalsets` are made by
other code (Pillow filters on 3x enlarged picture files), so the two cannot agree by
construction. Everything is NumPy (Pillow for JPEG), vectorised over the batch where it can be.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.transforms import sample_bilinear


@dataclass(frozen=True)
class Degradation:
    """Per-image probabilities (and strengths) of each change `degrade` may apply."""

    thicker: float = 0.25
    thinner: float = 0.15
    # How much of the original stroke `erode` keeps (per image, drawn from this range): 0.4 keeps
    # a faint trace of the full width, 0 is plain one-pixel erosion (a fine pen).
    thinner_keep: tuple[float, float] = (0.4, 0.4)
    elastic: float = 0.4
    slant: float = 0.4
    max_shear: float = 0.35  # column shift per row: tan of about 19 degrees
    blur: float = 0.25
    resample: float = 0.2
    noise: float = 0.25
    jpeg: float = 0.15
    background: float = 0.2


def dilate(images: np.ndarray) -> np.ndarray:
    """Strokes one pixel thicker: the maximum over each 2x2 neighbourhood."""
    padded = np.pad(images, ((0, 0), (1, 0), (1, 0)))
    return np.maximum(
        np.maximum(padded[:, 1:, 1:], padded[:, :-1, 1:]),
        np.maximum(padded[:, 1:, :-1], padded[:, :-1, :-1]),
    )


def erode(images: np.ndarray, keep: np.ndarray | float = 0.4) -> np.ndarray:
    """Strokes one pixel thinner (the minimum over each 2x2 neighbourhood), keeping `keep` (one
    value, or one per image) of the original ink where a thin stroke would vanish altogether."""
    padded = np.pad(images, ((0, 0), (1, 0), (1, 0)))
    thinner = np.minimum(
        np.minimum(padded[:, 1:, 1:], padded[:, :-1, 1:]),
        np.minimum(padded[:, 1:, :-1], padded[:, :-1, :-1]),
    )
    keep = np.asarray(keep, dtype=np.float32).reshape(-1, *([1] * (images.ndim - 1)))
    return np.maximum(thinner, keep * images)


def gaussian_blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur, one `sigma` (pixels) per image."""
    sigma = np.maximum(np.asarray(sigma, dtype=np.float32), 1e-3)
    radius = int(np.ceil(3 * float(sigma.max())))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)
    out = images
    for axis in (1, 2):
        padded = np.pad(out, [(0, 0)] + [(radius, radius) if a == axis else (0, 0) for a in (1, 2)])
        size = out.shape[axis]
        acc = np.zeros_like(out)
        for index in range(len(offsets)):
            window = np.take(padded, np.arange(index, index + size), axis=axis)
            acc += kernel[:, index, None, None] * window
        out = acc
    return out


def elastic(images: np.ndarray, rng: np.random.Generator, alpha: float = 1.6) -> np.ndarray:
    """Smooth random displacement of every pixel (about `alpha` px, smooth over ~4 px): the
    wobble of a real pen stroke that rotation and scaling do not produce."""
    count, height, width = images.shape
    sigma = np.full(count, 4.0, dtype=np.float32)
    fields = gaussian_blur(
        rng.normal(size=(2 * count, height, width)).astype(np.float32), sigma.repeat(2)
    )
    fields *= alpha / (fields.std(axis=(1, 2), keepdims=True) + 1e-6) / 2
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return sample_bilinear(images, rows[None] + fields[:count], cols[None] + fields[count:])


def shear(images: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """Slant: row `r` moves right by `amount * (centre - r)` columns (positive leans right)."""
    count, height, width = images.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    centre = (height - 1) / 2
    source_cols = cols[None] + np.asarray(amounts)[:, None, None] * (rows[None] - centre)
    return sample_bilinear(images, np.broadcast_to(rows, (count, height, width)), source_cols)


def resample(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Down to `factor` of the size and back up (bilinear): detail lost to a coarse sensor."""
    out = np.empty_like(images)
    for index, (image, factor) in enumerate(zip(images, factors, strict=True)):
        picture = Image.fromarray(image)
        small = picture.resize(
            (max(2, round(image.shape[1] * factor)), max(2, round(image.shape[0] * factor))),
            Image.Resampling.BOX,
        )
        out[index] = np.asarray(small.resize(picture.size, Image.Resampling.BILINEAR))
    return out


def jpeg(images: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    out = np.empty_like(images)
    for index, (image, quality) in enumerate(zip(images, qualities, strict=True)):
        buffer = io.BytesIO()
        pixels = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
        out[index] = np.asarray(Image.open(buffer), dtype=np.float32) / 255.0
    return out


def stretch(images: np.ndarray) -> np.ndarray:
    """Subtract a low background and scale the strongest ink to 1, per image: what the service's
    polarity step does to every uploaded picture."""
    floor = np.percentile(images, 20, axis=(1, 2), keepdims=True)
    ink = np.clip(images - floor, 0.0, None)
    return ink / np.maximum(ink.max(axis=(1, 2), keepdims=True), 1e-3)


def degrade(
    images: np.ndarray, rng: np.random.Generator, style: Degradation = Degradation()
) -> np.ndarray:
    """A random mix of the changes above for each image of the batch, then `stretch`."""
    out = np.asarray(images, dtype=np.float32).copy()
    count, height, width = out.shape

    def pick(probability: float) -> np.ndarray:
        return np.flatnonzero(rng.random(count) < probability)

    if len(rows := pick(style.elastic)):
        out[rows] = elastic(out[rows], rng)
    if len(rows := pick(style.slant)):
        out[rows] = shear(out[rows], rng.uniform(-style.max_shear, style.max_shear, len(rows)))
    thick = pick(style.thicker)
    out[thick] = dilate(out[thick])
    thin = np.setdiff1d(pick(style.thinner), thick)
    low, high = style.thinner_keep
    out[thin] = erode(out[thin], low if low == high else rng.uniform(low, high, len(thin)))
    if len(rows := pick(style.blur)):
        out[rows] = gaussian_blur(out[rows], rng.uniform(0.5, 1.3, len(rows)))
    if len(rows := pick(style.resample)):
        out[rows] = resample(out[rows], rng.uniform(0.4, 0.8, len(rows)))
    if len(rows := pick(style.background)):
        ramp = np.linspace(0, 1, width, dtype=np.float32)[None, None, :]
        tilt = rng.uniform(0.0, 0.25, (len(rows), 1, 1)).astype(np.float32)
        out[rows] = out[rows] + tilt * (ramp if rng.random() < 0.5 else 1 - ramp)
    if len(rows := pick(style.noise)):
        sigma = rng.uniform(0.02, 0.1, (len(rows), 1, 1))
        out[rows] = out[rows] + rng.normal(size=(len(rows), height, width)) * sigma
    out = np.clip(out, 0.0, 1.0)
    if len(rows := pick(style.jpeg)):
        out[rows] = jpeg(out[rows], rng.integers(15, 60, len(rows)))
    return stretch(out).astype(np.float32)
