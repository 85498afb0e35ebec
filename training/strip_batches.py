"""The `ocr` training stream: handwritten and printed strips as the service would frame them.

Each batch mixes three kinds of strip, all from training material only:

- handwritten strips composed by `training.strips.compose_strips` from the training digits (gaps
  from overlapping to wide), then degraded (`training.augment`: stroke width, elastic wobble,
  slant, blur, resampling, noise, JPEG, uneven background);
- of those, most are then framed by the service's own `strip_input` (crop to the ink, median
  digit height to 21 px), the rest stay as composed (28-px MNIST digits), so the model reads both;
- printed strings (`training.printed`, training typeface families only), also framed by
  `strip_input`.

Every strip is then padded on the right with background to the batch width plus a random margin,
as the batcher pads narrower requests, so the text does not depend on what follows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from training import augment, fonts, printed
from training.strips import MAX_DIGITS, STRIP_HEIGHT, TRAINING_STYLE, compose_strips

PRINTED_SHARE = 0.15  # of the strips in a batch (none when the machine has no training fonts)
FRAMED_SHARE = 0.7  # of the handwritten strips, framed like an uploaded picture
RIGHT_MARGIN = (0, 48)
PRINTED_DEGRADATION = augment.Degradation(elastic=0.1, slant=0.15, thicker=0.1, thinner=0.1)
# Thicker and blurred strokes a little more often than the default mix: they close the gaps
# between crowded neighbours, the case the model read worst.
HANDWRITTEN_DEGRADATION = augment.Degradation(thicker=0.35, blur=0.3)


def training_batch(
    digits: np.ndarray,
    labels: np.ndarray,
    batch: int,
    rng: np.random.Generator,
    min_digits: int,
    max_digits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch: images float32 `[batch, 28, W]`, labels int32 `[batch, MAX_DIGITS]` padded with
    -1, label lengths int32 `[batch]`."""
    faces = fonts.training_faces()
    printed_count = int(rng.binomial(batch, PRINTED_SHARE)) if faces else 0
    style = replace(TRAINING_STYLE, min_digits=min_digits, max_digits=max_digits)
    strips = compose_strips(digits, labels, batch - printed_count, rng, style)
    handwritten = augment.degrade(strips.images[..., 0], rng, HANDWRITTEN_DEGRADATION)
    pictures: list[np.ndarray] = []
    for image in handwritten:
        pictures.append(_framed(image) if rng.random() < FRAMED_SHARE else image)
    out_labels = np.full((batch, MAX_DIGITS), -1, dtype=np.int32)
    out_labels[: len(handwritten), : strips.labels.shape[1]] = strips.labels
    lengths = np.zeros(batch, dtype=np.int32)
    lengths[: len(handwritten)] = strips.label_lengths
    for index in range(len(handwritten), batch):
        length = int(rng.integers(min_digits, max_digits + 1))
        values = rng.integers(0, 10, size=length)
        face = faces[int(rng.integers(len(faces)))]
        picture = printed.render(face, "".join(str(v) for v in values), rng)
        framed = _framed(picture)
        pictures.append(augment.degrade(framed[np.newaxis], rng, PRINTED_DEGRADATION)[0])
        out_labels[index, :length] = values
        lengths[index] = length
    width = max(p.shape[1] for p in pictures) + int(rng.integers(*RIGHT_MARGIN, endpoint=True))
    images = np.zeros((batch, STRIP_HEIGHT, max(width, STRIP_HEIGHT)), dtype=np.float32)
    for index, picture in enumerate(pictures):
        images[index, :, : picture.shape[1]] = picture
    order = rng.permutation(batch)
    return images[order], out_labels[order], lengths[order]


def _framed(picture: np.ndarray) -> np.ndarray:
    """The service's framing of an uploaded line of digits (a blank picture stays as it is)."""
    from app.errors import ServingError
    from app.tasks.images import strip_input

    try:
        return strip_input(picture)[0, :, :, 0]
    except (ServingError, IndexError, ValueError):
        return (
            picture
            if picture.shape[0] == STRIP_HEIGHT
            else np.zeros((STRIP_HEIGHT, 28), np.float32)
        )


def batches(
    digits: np.ndarray, labels: np.ndarray, batch: int, rng: np.random.Generator, spread: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Endless batches; each holds strips of similar length (`longest - spread` .. `longest`)."""
    while True:
        longest = int(rng.integers(1, MAX_DIGITS + 1))
        yield training_batch(digits, labels, batch, rng, max(1, longest - spread), longest)
