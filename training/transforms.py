"""Rotation and scaling of digit images about their centre: the geometry behind `deskew`.

Convention (what the `deskew` model's `angle` and `scale` outputs mean): `transform(image, a, s)`
turns the picture counter-clockwise by `a` degrees *as displayed* (row 0 at the top) and enlarges it
by `s` about the image centre. `undo(image, a, s)` is the inverse, so a client straightens an
image with the model's own predictions. Pure NumPy and vectorised over the batch, so the deskew
generator can make thousands of examples a second without TensorFlow ops in Python loops.
"""

from __future__ import annotations

import numpy as np

MAX_ANGLE_DEG = 45.0
SCALE_RANGE = (0.7, 1.3)
UPRIGHT_MIN_ELONGATION = 2.0


def transform(
    images: np.ndarray, angles_deg: np.ndarray | float, scales: np.ndarray | float
) -> np.ndarray:
    """Rotate each image by its angle (degrees, counter-clockwise) and scale it by its factor.

    `images` is `[N, H, W]` or `[N, H, W, 1]`, any real dtype; the result is float32 of the same
    shape, sampled bilinearly, with zero (the black background) outside the source image.
    """
    batch = np.asarray(images, dtype=np.float32)
    channel = batch.ndim == 4
    if channel:
        batch = batch[..., 0]
    count, height, width = batch.shape
    angles = np.broadcast_to(np.asarray(angles_deg, dtype=np.float64), (count,))
    factors = np.broadcast_to(np.asarray(scales, dtype=np.float64), (count,))
    if np.any(factors <= 0):
        raise ValueError("scale factors must be positive")

    centre_y, centre_x = (height - 1) / 2.0, (width - 1) / 2.0
    out_y, out_x = np.meshgrid(
        np.arange(height) - centre_y, np.arange(width) - centre_x, indexing="ij"
    )
    theta = np.deg2rad(angles)[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    inverse_scale = 1.0 / factors[:, None, None]
    # Output pixel (x', y') comes from source (x, y) = R(-a) (x', y') / s, in display coordinates
    # where y grows downwards, which flips the sign of the usual counter-clockwise matrix.
    source_x = (cos * out_x[None] - sin * out_y[None]) * inverse_scale + centre_x
    source_y = (sin * out_x[None] + cos * out_y[None]) * inverse_scale + centre_y
    result = sample_bilinear(batch, source_y, source_x)
    return result[..., np.newaxis] if channel else result


def undo(
    images: np.ndarray, angles_deg: np.ndarray | float, scales: np.ndarray | float
) -> np.ndarray:
    """Inverse of `transform`: straighten images given the angle and scale that were applied."""
    return transform(
        images,
        -np.asarray(angles_deg, dtype=np.float64),
        1.0 / np.asarray(scales, dtype=np.float64),
    )


def principal_axes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per digit: lean of the principal axis (degrees, counter-clockwise as displayed) and
    elongation (major over minor second moment), from the image's central moments.

    The lean is `0.5 * atan2(2 mu11, mu02 - mu20)`: 0 for an upright stroke, `a` for one turned
    by `a`. Elongation says whether that lean means anything (a round 0 has no axis to speak of).
    """
    batch = np.asarray(images, dtype=np.float64)
    if batch.ndim == 4:
        batch = batch[..., 0]
    _, height, width = batch.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    mass = batch.sum(axis=(1, 2)) + 1e-9
    dy = rows[None] - ((batch * rows).sum(axis=(1, 2)) / mass)[:, None, None]
    dx = cols[None] - ((batch * cols).sum(axis=(1, 2)) / mass)[:, None, None]
    mu20 = (batch * dx * dx).sum(axis=(1, 2)) / mass
    mu02 = (batch * dy * dy).sum(axis=(1, 2)) / mass
    mu11 = (batch * dx * dy).sum(axis=(1, 2)) / mass
    spread = np.sqrt((mu02 - mu20) ** 2 + 4 * mu11**2)
    elongation = (mu02 + mu20 + spread) / np.maximum(mu02 + mu20 - spread, 1e-9)
    lean = np.rad2deg(0.5 * np.arctan2(2 * mu11, mu02 - mu20))
    return lean.astype(np.float32), elongation.astype(np.float32)


def upright(images: np.ndarray, min_elongation: float = UPRIGHT_MIN_ELONGATION) -> np.ndarray:
    """The reference pose of `deskew`: elongated digits turned so their main axis is vertical.

    Handwriting comes slanted by its writer, so "the angle a digit was rotated by" needs a
    reference pose; without one the writer's slant (tens of degrees) is label noise no model
    can remove. Digits that are tall and leaning by at most 45 degrees are straightened; round
    or wide ones keep the pose they were written in.
    """
    lean, elongation = principal_axes(images)
    correct = (elongation >= min_elongation) & (np.abs(lean) <= MAX_ANGLE_DEG)
    return transform(images, np.where(correct, -lean, 0.0), 1.0)


def random_parameters(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Angles uniform in [-45, 45] degrees and scales uniform in [0.7, 1.3], as float32."""
    angles = rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG, size=count).astype(np.float32)
    scales = rng.uniform(*SCALE_RANGE, size=count).astype(np.float32)
    return angles, scales


def sample_bilinear(batch: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`batch[n, rows[n, i, j], cols[n, i, j]]` at fractional positions; zero outside."""
    count, height, width = batch.shape
    row0 = np.floor(rows).astype(np.int64)
    col0 = np.floor(cols).astype(np.int64)
    row_weight = (rows - row0).astype(np.float32)
    col_weight = (cols - col0).astype(np.float32)
    index = np.arange(count)[:, None, None]

    def tap(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        values = batch[index, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
        return np.where(inside, values, 0.0)

    top = tap(row0, col0) * (1 - col_weight) + tap(row0, col0 + 1) * col_weight
    bottom = tap(row0 + 1, col0) * (1 - col_weight) + tap(row0 + 1, col0 + 1) * col_weight
    return (top * (1 - row_weight) + bottom * row_weight).astype(np.float32)
