"""Deskew geometry: the angle and scale conventions the deskew model's outputs promise."""

from __future__ import annotations

import numpy as np
import pytest

from training import transforms


@pytest.fixture()
def digit_like() -> np.ndarray:
    """An asymmetric blob (an "L"), so a wrong rotation direction cannot pass unnoticed."""
    image = np.zeros((1, 28, 28), dtype=np.float32)
    image[0, 6:22, 10:13] = 1.0
    image[0, 19:22, 10:20] = 1.0
    return image


def test_zero_angle_unit_scale_is_identity(digit_like: np.ndarray) -> None:
    assert np.allclose(transforms.transform(digit_like, 0.0, 1.0), digit_like, atol=1e-6)


def test_positive_angle_turns_counter_clockwise_as_displayed(digit_like: np.ndarray) -> None:
    rotated = transforms.transform(digit_like, 90.0, 1.0)
    assert np.allclose(rotated[0], np.rot90(digit_like[0], k=1), atol=1e-4)


def test_scale_enlarges_about_the_centre() -> None:
    square = np.zeros((1, 28, 28), dtype=np.float32)
    square[0, 11:17, 11:17] = 1.0
    bigger = transforms.transform(square, 0.0, 2.0)
    assert bigger.sum() == pytest.approx(4 * square.sum(), rel=0.15)
    rows = np.flatnonzero(bigger[0].max(axis=1) > 0.5)
    assert rows.min() < 11 and rows.max() > 16 and rows.mean() == pytest.approx(13.5, abs=0.6)


def test_undo_restores_the_original(digit_like: np.ndarray) -> None:
    restored = transforms.undo(transforms.transform(digit_like, 30.0, 1.2), 30.0, 1.2)
    assert np.abs(restored - digit_like).mean() < 0.03
    assert np.corrcoef(restored.ravel(), digit_like.ravel())[0, 1] > 0.9


def test_channel_axis_and_batches_are_kept(digit_like: np.ndarray) -> None:
    batch = np.repeat(digit_like[..., np.newaxis], 4, axis=0)
    angles = np.array([-45.0, 0.0, 10.0, 45.0])
    out = transforms.transform(batch, angles, np.array([0.7, 1.0, 1.0, 1.3]))
    assert out.shape == (4, 28, 28, 1) and out.dtype == np.float32
    assert np.allclose(out[1], batch[1], atol=1e-6)


def test_random_parameters_cover_the_documented_ranges() -> None:
    angles, scales = transforms.random_parameters(np.random.default_rng(0), 5000)
    assert angles.min() >= -45 and angles.max() <= 45 and angles.std() > 20
    assert scales.min() >= 0.7 and scales.max() <= 1.3


def test_deskew_generator_yields_labelled_chunks_of_transformed_digits() -> None:
    from training.nets.deskew import GENERATOR_CHUNK, transformed_examples

    digits = np.zeros((3, 28, 28), dtype=np.float32)
    digits[:, 6:22, 12:16] = 1.0  # a vertical bar: its rotation is visible in the image
    images, targets = next(transformed_examples(digits, seed=5))
    assert images.shape == (GENERATOR_CHUNK, 28, 28, 1) and images.dtype == np.float32
    assert targets["angle"].shape == targets["scale"].shape == (GENERATOR_CHUNK, 1)
    assert np.abs(targets["angle"]).max() <= 45
    # Each image is the bar transformed by its own labels, then degraded (pen width, blur,
    # noise...) in ways that keep its angle: the bar's main axis leans by the label.
    lean, _ = transforms.principal_axes(images)
    assert np.median(np.abs(lean - targets["angle"][:, 0])) < 3.0
    assert images.max(axis=(1, 2, 3)).min() == 1.0  # stretched like an uploaded picture
    # Pairs: rows 2i and 2i+1 are the same bar at the same angle and scale, the first clean.
    for name in ("angle", "scale"):
        assert np.array_equal(targets[name][0::2], targets[name][1::2])
    assert np.median(np.abs(lean[0::2] - targets["angle"][0::2, 0])) < 1.0
    assert not np.array_equal(images[0::2], images[1::2])


def test_deskew_pair_losses_add_the_distance_between_partners() -> None:
    import tensorflow as tf

    from training.nets.deskew import (
        ANGLE_CONSISTENCY_WEIGHT,
        SCALE_CONSISTENCY_WEIGHT,
        paired_absolute_error,
        paired_squared_error,
    )

    weight = ANGLE_CONSISTENCY_WEIGHT
    truth = tf.constant([[10.0], [10.0], [-5.0], [-5.0]])
    agreeing = tf.constant([[12.0], [12.0], [-5.0], [-5.0]])
    assert paired_absolute_error(truth, agreeing).numpy() == pytest.approx([2, 2, 0, 0])
    # Rows 2i and 2i+1 are one pair: each pays its error and the distance to its partner.
    apart = tf.Variable([[12.0], [8.0], [-5.0], [-1.0]])
    with tf.GradientTape() as tape:
        loss = paired_absolute_error(truth, apart)
        total = tf.reduce_sum(loss)
    assert loss.numpy() == pytest.approx(
        [2 + 4 * weight, 2 + 4 * weight, 4 * weight, 4 + 4 * weight]
    )
    gradient = tape.gradient(total, apart).numpy()[:, 0]
    assert gradient == pytest.approx([1 + 2 * weight, -1 - 2 * weight, -2 * weight, 1 + 2 * weight])
    weight = SCALE_CONSISTENCY_WEIGHT
    squared = paired_squared_error(truth, apart).numpy()
    assert squared == pytest.approx(
        [4 + 16 * weight, 4 + 16 * weight, 16 * weight, 16 + 16 * weight]
    )


def test_upright_straightens_tall_digits_and_leaves_round_ones() -> None:
    bar = np.zeros((1, 28, 28), dtype=np.float32)
    bar[0, 4:24, 13:15] = 1.0
    leaning = transforms.transform(bar, 25.0, 1.0)
    lean, elongation = transforms.principal_axes(leaning)
    assert lean[0] == pytest.approx(25.0, abs=0.5) and elongation[0] > 2
    assert abs(transforms.principal_axes(transforms.upright(leaning))[0][0]) < 1.0

    rows, cols = np.mgrid[:28, :28]
    ring = (np.abs(np.hypot(rows - 13.5, cols - 13.5) - 8) < 1.5).astype(np.float32)[None]
    assert np.allclose(transforms.upright(ring), ring, atol=1e-5)
