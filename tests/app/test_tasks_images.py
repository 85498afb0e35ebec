"""Picture conversion without a server: every common PNG/JPEG flavour ends up in MNIST form."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.tasks.images import (
    DIGIT_BOX,
    MNIST_SIZE,
    STRIP_DIGIT_HEIGHT,
    decode_grayscale,
    digit_input,
    frame_input,
    strip_input,
)

# A bright vertical bar on black, off centre: a "1" in the top-left part of a 40x60 picture.
BAR = np.zeros((40, 60), np.uint8)
BAR[5:25, 10:14] = 255


def _encode(picture: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format)
    return buffer.getvalue()


def _dark_on_light() -> Image.Image:
    return Image.fromarray(255 - BAR)


PICTURES = {
    "grey": lambda: _encode(Image.fromarray(BAR)),
    "rgb": lambda: _encode(Image.fromarray(BAR).convert("RGB")),
    "16-bit": lambda: _encode(Image.fromarray(BAR.astype(np.uint16) * 257)),
    "palette": lambda: _encode(Image.fromarray(BAR).convert("P")),
    "dark on light": lambda: _encode(_dark_on_light()),
    "jpeg dark on light": lambda: _encode(_dark_on_light().convert("RGB"), "JPEG"),
    "black ink on transparent": lambda: _encode(
        Image.merge("RGBA", [Image.new("L", BAR.T.shape, 0)] * 3 + [Image.fromarray(BAR)])
    ),
}


@pytest.mark.parametrize("flavour", sorted(PICTURES))
def test_every_flavour_decodes_to_bright_ink_on_zero(flavour: str) -> None:
    ink = decode_grayscale(PICTURES[flavour]())
    assert ink.shape == BAR.shape and ink.dtype == np.float32
    assert ink[15, 12] > 0.95  # on the bar
    assert ink[35, 50] < 0.05  # background
    assert float(ink.max()) == pytest.approx(1.0)


def test_digit_is_fitted_into_20x20_with_centre_of_mass_in_the_middle() -> None:
    image = digit_input(decode_grayscale(PICTURES["dark on light"]()))
    assert image.shape == (1, MNIST_SIZE, MNIST_SIZE, 1)
    pixels = image[0, :, :, 0]
    rows = np.flatnonzero(pixels.max(axis=1) > 0.5)
    assert rows[-1] - rows[0] + 1 == DIGIT_BOX  # the bar is taller than wide: 20 px high
    weights = pixels / pixels.sum()
    row_centre = float((np.arange(MNIST_SIZE)[:, None] * weights).sum())
    col_centre = float((np.arange(MNIST_SIZE)[None, :] * weights).sum())
    assert row_centre == pytest.approx(MNIST_SIZE / 2, abs=1.0)
    assert col_centre == pytest.approx(MNIST_SIZE / 2, abs=1.0)


def test_strip_digits_are_brought_to_mnist_height_keeping_jitter_and_aspect() -> None:
    line = np.zeros((100, 400), np.uint8)
    for left, top in ((40, 25), (140, 35), (240, 30)):  # three 40x60 "digits", jittered
        line[top : top + 40, left : left + 60] = 255
    image = strip_input(decode_grayscale(_encode(Image.fromarray(line))))
    assert image.shape[:2] == (1, MNIST_SIZE) and image.shape[3] == 1
    pixels = image[0, :, :, 0]
    scale = STRIP_DIGIT_HEIGHT / 40
    first_digit = pixels[:, : pixels.shape[1] // 3]
    rows = np.flatnonzero(first_digit.max(axis=1) > 0.5)
    assert rows[-1] - rows[0] + 1 == pytest.approx(STRIP_DIGIT_HEIGHT, abs=1)
    all_rows = np.flatnonzero(pixels.max(axis=1) > 0.5)
    assert all_rows[-1] - all_rows[0] + 1 == pytest.approx(50 * scale, abs=1)  # jitter kept
    cols = np.flatnonzero(pixels.max(axis=0) > 0.5)
    assert cols[-1] - cols[0] + 1 == pytest.approx(260 * scale, abs=2)  # aspect kept


def test_a_strip_too_long_to_be_a_number_is_refused() -> None:
    line = np.zeros((10, 2000), np.uint8)
    line[2:8, 5:1995] = 255
    with pytest.raises(InvalidInput, match="wider than 2048 px"):
        strip_input(decode_grayscale(_encode(Image.fromarray(line))))


def test_frame_keeps_the_picture_whole() -> None:
    frame = np.zeros((280, 140), np.uint8)
    frame[70:210, 35:105] = 255  # centred block, half of each side
    image = frame_input(decode_grayscale(_encode(Image.fromarray(frame))))
    assert image.shape == (1, MNIST_SIZE, MNIST_SIZE, 1)
    pixels = image[0, :, :, 0]
    rows = np.flatnonzero(pixels.max(axis=1) > 0.5)
    cols = np.flatnonzero(pixels.max(axis=0) > 0.5)
    # Padded to a square 280x280 and scaled by 0.1: the block is 14 x 7, not stretched.
    assert rows[-1] - rows[0] + 1 == pytest.approx(14, abs=1)
    assert cols[-1] - cols[0] + 1 == pytest.approx(7, abs=1)


def test_decoding_errors_have_their_own_kinds() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_grayscale(b"")
    with pytest.raises(InvalidInput, match="cannot decode"):
        decode_grayscale(b"GIF89a? no")
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_grayscale(PICTURES["grey"]()[:60])
    with pytest.raises(UnsupportedMediaType, match="got GIF"):
        decode_grayscale(_encode(Image.fromarray(BAR), "GIF"))
    with pytest.raises(PayloadTooLarge, match="60x40 pixels; the limit is 1000 pixels"):
        decode_grayscale(PICTURES["grey"](), max_pixels=1000)
    with pytest.raises(InvalidInput, match="blank"):
        decode_grayscale(_encode(Image.new("L", (30, 30), 128)))
