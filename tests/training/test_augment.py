"""The training degradations and the `ocr` training stream (handwritten and printed strips)."""

from __future__ import annotations

import numpy as np
import pytest

from training import augment, fonts, printed, strip_batches
from training.strips import MAX_DIGITS


def _bar_images(count: int = 4, width: int = 28) -> np.ndarray:
    images = np.zeros((count, 28, width), np.float32)
    images[:, 6:22, 12:15] = 1.0
    return images


def test_dilate_and_erode_change_stroke_width_by_about_a_pixel() -> None:
    images = _bar_images()
    columns = lambda batch: (batch[0].max(axis=0) > 0.5).sum()  # noqa: E731
    assert columns(augment.dilate(images)) == 4
    assert columns(augment.erode(images)) == 2
    assert augment.erode(images).max() == 1.0  # the centre of a 3-px stroke stays full
    # What is kept of the original stroke: 0.4 by default, per image when asked.
    eroded = augment.erode(images, np.array([0.0, 0.4, 0.0, 0.4]))
    assert eroded[0, 10, 12] == 0.0 and eroded[1, 10, 12] == pytest.approx(0.4)


def test_blur_keeps_the_mass_and_spreads_the_ink() -> None:
    images = _bar_images(2)
    blurred = augment.gaussian_blur(images, np.array([0.8, 1.2]))
    assert blurred.shape == images.shape
    assert blurred.sum(axis=(1, 2)) == pytest.approx(images.sum(axis=(1, 2)), rel=0.02)
    assert (blurred[1] > 0.01).sum() > (blurred[0] > 0.01).sum() > (images[0] > 0).sum()


def test_shear_leans_the_stroke_and_elastic_moves_it_a_little() -> None:
    images = _bar_images(1)
    leaned = augment.shear(images, np.array([0.3]))
    top = np.argmax(leaned[0, 7])
    bottom = np.argmax(leaned[0, 20])
    assert top != bottom
    wobbled = augment.elastic(images, np.random.default_rng(0))
    assert 0.5 < wobbled.sum() / images.sum() < 1.5
    assert not np.allclose(wobbled, images)


def test_degrade_keeps_shape_and_range_and_stretches_the_ink() -> None:
    rng = np.random.default_rng(1)
    images = _bar_images(64, 60) * 0.6
    out = augment.degrade(images, rng)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max(axis=(1, 2)) == pytest.approx(1.0)
    again = augment.degrade(images, np.random.default_rng(1))
    assert np.array_equal(out, again)  # one seed, one batch


def test_training_batch_is_labelled_padded_and_mixes_printed_strips() -> None:
    digits = np.zeros((10, 28, 28), np.uint8)
    for digit in range(10):
        digits[digit, 4:24, 8 + digit : 12 + digit] = 255
    rng = np.random.default_rng(2)
    images, labels, lengths = strip_batches.training_batch(digits, np.arange(10), 32, rng, 2, 5)
    assert images.shape[:2] == (32, 28) and images.shape[2] >= 28
    assert labels.shape == (32, MAX_DIGITS) and lengths.min() >= 2 and lengths.max() <= 5
    for row, length in zip(labels, lengths, strict=True):
        assert (row[:length] >= 0).all() and (row[length:] == -1).all()
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_printed_strings_are_rendered_with_training_families_only() -> None:
    faces = fonts.training_faces()
    if not faces:
        pytest.skip("no training typefaces on this machine")
    assert not any(face.heldout for face in faces)
    picture = printed.render(faces[0], "4071", np.random.default_rng(3))
    assert picture.ndim == 2 and picture.max() == 1.0 and picture[0].max() == 0.0


def test_mnist_stream_leaves_a_share_of_digits_as_drawn() -> None:
    from training.nets.mnist import CLEAN_FRACTION, GENERATOR_CHUNK, degraded_digits
    from training.recipe import MnistSplit

    digits = (_bar_images(8) * 255).astype(np.uint8)
    labels = np.arange(8, dtype=np.int64)
    split = MnistSplit(digits, labels, digits[:1], labels[:1], "test", 0)
    images, chunk_labels = next(degraded_digits(split, seed=3))
    assert images.shape == (GENERATOR_CHUNK, 28, 28, 1) and len(chunk_labels) == GENERATOR_CHUNK
    unchanged = np.array(
        [
            np.array_equal(image[..., 0], digits[label] / 255.0)
            for image, label in zip(images, chunk_labels, strict=True)
        ]
    )
    # The clean share, give or take sampling, plus the few degraded digits that drew no change.
    assert CLEAN_FRACTION - 0.08 < unchanged.mean() < CLEAN_FRACTION + 0.25
