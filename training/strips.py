"""OCR strips: MNIST digits placed side by side on one 28-px-high line, for the `ocr` model.

A strip holds 1 to 8 digits. Each digit is cut to its ink columns, jittered up or down, and pasted
after the previous one with a random gap; the line starts after a random left margin and is padded
on the right with background (0.0) up to the batch width, exactly what the server's batcher does
to narrower requests. That right padding is part of the training distribution on purpose, so the
decoded text does not depend on how much background follows the last digit.

Strips are composed *only* from the digits passed in: training strips from `split.x_train`,
held-out strips from `split.x_heldout`, so no held-out digit ever reaches training. Everything is
drawn from the `numpy.random.Generator` the caller passes, which makes a seed reproduce a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.transforms import transform

STRIP_HEIGHT = 28
MAX_DIGITS = 8
NO_LABEL = -1  # padding in `labels` and `spans` after a strip's last digit


@dataclass(frozen=True)
class StripStyle:
    """How strips are laid out. The defaults are the held-out distribution; training adds
    per-digit rotation/scale (`augment`) and wider padding on top of the same layout."""

    min_digits: int = 1
    max_digits: int = MAX_DIGITS
    gap: tuple[int, int] = (1, 8)  # columns of background between two digits' ink, inclusive
    left_margin: tuple[int, int] = (0, 8)
    right_margin: tuple[int, int] = (0, 8)  # minimum background after the widest strip's ink
    jitter: int = 3  # vertical shift of each digit, in pixels, either way
    augment: bool = False  # small random rotation (+-10 deg) and scale (0.85..1.15) per digit
    # Per-strip spacing: (weight, (low, high)) pairs; each strip draws one range for all its
    # gaps, so whole lines are crowded or spaced as real writers' lines are. Empty: `gap` only.
    gap_mix: tuple[tuple[float, tuple[int, int]], ...] = ()


HELDOUT_STYLE = StripStyle()
# Gaps from -6 (overlapping) to 10 columns, drawn per strip from a mix that leans to crowded
# lines (`gap` is then unused): touching and overlapping neighbours are common in real
# handwriting. Held-out overlapping strips: 0.21 read right by a model trained on gaps of 0 and
# more, 0.34 with gaps drawn per gap uniformly from -4 to 10 (a line rarely overlapping
# throughout), 0.77 after 34 epochs of this mix from that model.
TRAINING_STYLE = StripStyle(
    gap=(-6, 10),
    right_margin=(0, 48),
    augment=True,
    gap_mix=((0.35, (-6, -1)), (0.25, (-2, 1)), (0.4, (-1, 10))),
)


@dataclass(frozen=True)
class StripBatch:
    """A batch of strips and what is written on them.

    `images` float32 `[N, 28, W, 1]` in [0, 1]; `labels` int32 `[N, max_digits]` padded with
    `NO_LABEL`; `label_lengths` int32 `[N]`; `spans` int32 `[N, max_digits, 2]`: the first and
    one-past-last column of each digit's ink, padded with `NO_LABEL`.
    """

    images: np.ndarray
    labels: np.ndarray
    label_lengths: np.ndarray
    spans: np.ndarray

    def texts(self) -> list[str]:
        """The strings written on the strips, e.g. `"4071"`."""
        return [
            "".join(str(d) for d in row[:length])
            for row, length in zip(self.labels, self.label_lengths, strict=True)
        ]


def compose_strips(
    digits: np.ndarray,
    digit_labels: np.ndarray,
    count: int,
    rng: np.random.Generator,
    style: StripStyle = HELDOUT_STYLE,
    min_width: int = STRIP_HEIGHT,
) -> StripBatch:
    """Compose `count` strips from `digits` (uint8 `[M, 28, 28]`) and their labels.

    The batch width is the widest strip's ink plus its right margin, at least `min_width`.
    """
    if digits.ndim != 3 or digits.shape[1:] != (STRIP_HEIGHT, STRIP_HEIGHT):
        raise ValueError(f"digits must be [M, 28, 28], got {digits.shape}")
    if not 1 <= style.min_digits <= style.max_digits:
        raise ValueError("need 1 <= min_digits <= max_digits")
    lengths = rng.integers(style.min_digits, style.max_digits + 1, size=count)
    picks = rng.integers(0, len(digits), size=int(lengths.sum()))
    tiles = _prepare_tiles(digits[picks], rng, style)
    shifts = rng.integers(-style.jitter, style.jitter + 1, size=len(picks))

    labels = np.full((count, style.max_digits), NO_LABEL, dtype=np.int32)
    spans = np.full((count, style.max_digits, 2), NO_LABEL, dtype=np.int32)
    placements: list[tuple[int, int, int]] = []  # (strip, column, tile index)
    ends = np.zeros(count, dtype=np.int64)
    tile = 0
    gap_ranges = _strip_gap_ranges(count, rng, style)
    for strip, length in enumerate(lengths):
        low, high = gap_ranges[strip]
        column = int(rng.integers(style.left_margin[0], style.left_margin[1] + 1))
        for position in range(length):
            ink = tiles[tile]
            labels[strip, position] = digit_labels[picks[tile]]
            spans[strip, position] = (column, column + ink.shape[1])
            placements.append((strip, column, tile))
            column += ink.shape[1]
            if position < length - 1:
                # A negative gap overlaps the neighbours, but never by more than half the ink
                # width of this digit, so each digit keeps columns of its own.
                gap = int(rng.integers(low, high + 1))
                column += max(gap, -(ink.shape[1] // 2))
            tile += 1
        ends[strip] = column
    right = int(rng.integers(style.right_margin[0], style.right_margin[1] + 1))
    width = max(min_width, int(ends.max()) + right)

    images = np.zeros((count, STRIP_HEIGHT, width), dtype=np.float32)
    for strip, column, index in placements:
        ink = _shift_rows(tiles[index], int(shifts[index]))
        target = images[strip, :, column : column + ink.shape[1]]
        np.maximum(target, ink, out=target)  # touching digits (gap 0) must not erase each other
    return StripBatch(
        images=images[..., np.newaxis],
        labels=labels,
        label_lengths=lengths.astype(np.int32),
        spans=spans,
    )


def _strip_gap_ranges(
    count: int, rng: np.random.Generator, style: StripStyle
) -> list[tuple[int, int]]:
    """The gap range of each strip: `style.gap`, or one drawn from `style.gap_mix` per strip
    (no random draw at all without a mix, so plain styles reproduce their strips)."""
    if not style.gap_mix:
        return [style.gap] * count
    weights = np.array([weight for weight, _ in style.gap_mix], dtype=np.float64)
    picks = rng.choice(len(style.gap_mix), size=count, p=weights / weights.sum())
    return [style.gap_mix[int(pick)][1] for pick in picks]


def _prepare_tiles(
    images: np.ndarray, rng: np.random.Generator, style: StripStyle
) -> list[np.ndarray]:
    """Each digit in [0, 1], optionally rotated/scaled, cut to its ink columns (at least 1)."""
    scaled = images.astype(np.float32) / 255.0
    if style.augment and len(scaled):
        angles = rng.uniform(-10.0, 10.0, size=len(scaled))
        factors = rng.uniform(0.85, 1.15, size=len(scaled))
        scaled = np.clip(transform(scaled, angles, factors), 0.0, 1.0)
    tiles: list[np.ndarray] = []
    for image in scaled:
        columns = np.flatnonzero(image.max(axis=0) > 0.0)
        if len(columns) == 0:  # a blank digit still occupies a few columns
            tiles.append(image[:, 10:18])
            continue
        tiles.append(image[:, columns[0] : columns[-1] + 1])
    return tiles


def _shift_rows(ink: np.ndarray, shift: int) -> np.ndarray:
    """Move the ink down (`shift > 0`) or up, filling with background, keeping 28 rows."""
    if shift == 0:
        return ink
    moved = np.zeros_like(ink)
    if shift > 0:
        moved[shift:] = ink[:-shift]
    else:
        moved[:shift] = ink[-shift:]
    return moved
