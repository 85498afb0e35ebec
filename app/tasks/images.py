"""Uploaded pictures -> the arrays the models were trained on (MNIST framing and polarity).

People send photos, scans and drawings: any size, colour or grey, dark ink on white paper or
light ink on a dark screen, with or without transparency. The models only ever saw MNIST: 28 px
high, white ink on a black background, values in [0, 1], a single digit fitted into a 20x20 box
centred by its centre of mass. Each function here makes one kind of upload look like that, and
each conversion matches how its model's training data was made:

- `digit_input` (mnist): crop to the ink, fit into 20x20, centre of mass at the middle of 28x28,
  which is how MNIST itself was built.
- `strip_input` (ocr): crop to the ink, scale so the typical digit is 20 px high like an MNIST
  digit (the training strips are MNIST digits side by side), keep the aspect ratio.
- `frame_input` (deskew): the whole picture is the frame. Cropping to the ink would normalise
  away exactly the scale (and part of the rotation) the model is asked to measure, so the picture
  is only padded to a square and resized to 28x28.

All pure functions on numpy arrays (float32, `[H, W]`), apart from `decode_grayscale`.

What a picture may cost is decided from its header, before a pixel is decoded (`ImageLimits`):
bytes, pixels, longest side, aspect ratio and the memory the decode takes in the mode Pillow
decodes it to. A 133-byte PNG of 20000 x 2 cost 1.5 GB and 13 s in `frame_input` (padded to a
20000-pixel square); a 150 KB RGBA PNG of 6000 x 6000 cost 0.9 GB. Pictures are then worked
on at most `WORK_SIDE` pixels on their longest side (JPEG: decoded at that scale directly; the
models see 28 px anyway), so the float pipeline never costs more than a few `WORK_SIDE`-square
float32 copies.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.limits import ImageLimits

#: Media types the task endpoints read, and the Pillow formats they correspond to.
IMAGE_MEDIA_TYPES: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG"}
#: Bigger pictures are refused with 413 before their pixels are decoded (a 40 MP photo fits).
MAX_IMAGE_PIXELS = ImageLimits().max_pixels
#: Longest side a picture is worked on after decoding (larger ones are reduced by box
#: averaging); the largest conversion, `strip_input`, ends at most 2048 px wide.
WORK_SIDE = 2048
EXIF_ORIENTATION = 0x0112
#: Bytes per pixel Pillow stores for a mode (one byte for 1/L/P, two for 16-bit, else four).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_ALPHA_MODES = ("RGBA", "LA", "PA")


MNIST_SIZE = 28
DIGIT_BOX = 20  # MNIST fits each digit into 20x20 before centring it in 28x28
STRIP_DIGIT_HEIGHT = 21  # median digit ink height; MNIST is ~20, 21 read best on held-out strips
STRIP_SIDE_MARGIN = 4
MAX_STRIP_WIDTH = 2048  # about 100 digits; a longer line is more likely a mistake than a number
INK_THRESHOLD = 0.2  # after background removal and contrast stretch, what counts as ink
MIN_INK_CONTRAST = 0.1  # below this the picture is considered blank
BORDER_FRACTION = 0.05  # the border ring used to tell background from ink


def decode_grayscale(
    data: bytes, max_pixels: int | None = None, limits: ImageLimits | None = None
) -> np.ndarray:
    """Decode a PNG or JPEG into MNIST polarity: float32 `[H, W]`, ink bright, background 0.

    Raises InvalidInput for bytes that are no decodable picture, UnsupportedMediaType for a
    picture in another format, PayloadTooLarge for one over `limits` (`max_pixels` overrides
    its pixel count), all checked from the header, before any pixel is decoded. Pictures
    larger than `WORK_SIDE` come back reduced to it.
    """
    limits = limits or ImageLimits()
    if max_pixels is not None:
        limits = replace(limits, max_pixels=max_pixels)
    if not data:
        raise InvalidInput("the image is empty; send a PNG or JPEG file")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"the image has {len(data)} bytes; the limit is {limits.max_bytes} bytes"
        )
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # Pillow's own guard fires first for giant headers; its limit is above ours anyway.
        raise PayloadTooLarge(
            f"the image has too many pixels; the limit is {limits.max_pixels} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(
            f"cannot decode the image ({type(exc).__name__}); expected a PNG or JPEG file"
        ) from None
    with image:
        if image.format not in IMAGE_MEDIA_TYPES.values():
            raise UnsupportedMediaType(f"expected a PNG or JPEG image, got {image.format}")
        _check_header(image, limits)
        try:
            gray = _to_gray(_upright(image))
        except (OSError, ValueError, SyntaxError) as exc:
            raise InvalidInput(
                f"cannot decode the image ({type(exc).__name__}: {exc}); the "
                "file is truncated or corrupt"
            ) from None
    return to_mnist_polarity(gray)


def _check_header(image: Image.Image, limits: ImageLimits) -> None:
    """Pixels, longest side, aspect ratio and decode memory, from the header alone."""
    width, height = image.size
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"the image has {width}x{height} pixels; the limit is {limits.max_pixels} pixels"
        )
    if max(width, height) > limits.max_side:
        raise PayloadTooLarge(
            f"the image is {width}x{height} pixels; the longest side may be "
            f"{limits.max_side} pixels"
        )
    if max(width, height) > limits.max_aspect * max(1, min(width, height)):
        raise PayloadTooLarge(
            f"the image is {width}x{height} pixels; the longer side may be at "
            f"most {limits.max_aspect:g} times the shorter one"
        )
    if image.format == "JPEG" and max(width, height) > WORK_SIDE:
        # JPEG decodes at 1/2, 1/4 or 1/8 scale directly: only that much is ever decoded.
        factor = max(width, height) / WORK_SIDE
        image.draft(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    cost = decode_bytes(image)
    if cost > limits.max_decode_bytes:
        raise PayloadTooLarge(
            f"the image is {width}x{height} pixels in mode {image.mode}: "
            f"decoding it takes {cost} bytes; the limit is "
            f"{limits.max_decode_bytes} bytes (send a smaller or greyscale "
            "picture)"
        )


def decode_bytes(image: Image.Image) -> int:
    """Memory a decode takes at full size: the decoded mode, plus the 4-byte-per-pixel copy
    that modes `Image.reduce` cannot take (palette, 1-bit, 16-bit) are converted to first."""
    width, height = image.size
    stored = _MODE_BYTES.get(image.mode, 4)
    converted = 4 if image.mode in ("P", "1") or image.mode.startswith("I;16") else 0
    return width * height * (stored + converted)


# EXIF orientation -> the transpose that puts the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image) -> Image.Image:
    """The decoded picture, reduced (`_reduced`) and turned upright by its EXIF orientation.

    The orientation is read before reducing: the reduced copy has no EXIF of its own.
    """
    reduced = _reduced(image)
    if reduced is image:
        return ImageOps.exif_transpose(image)
    method = _UPRIGHT.get(image.getexif().get(EXIF_ORIENTATION, 1))
    return reduced if method is None else reduced.transpose(method)


def _reduced(image: Image.Image) -> Image.Image:
    """The decoded picture, reduced by box averaging to at most `WORK_SIDE` on its longest
    side (the models see 28 px; the conversions below cost a few float32 copies of it)."""
    factor = math.ceil(max(image.size) / WORK_SIDE)
    if factor <= 1:
        return image
    if image.mode in ("P", "1") or image.mode.startswith("I;16"):
        alpha = image.mode == "P" and "transparency" in image.info
        image = image.convert("RGBA" if alpha else ("I" if image.mode.startswith("I") else "L"))
    try:
        return image.reduce(factor)
    except ValueError:  # a rarer mode reduce does not take (PA, ...): via RGBA
        return image.convert("RGBA").reduce(factor)


def _to_gray(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 1]; transparent areas count as white paper (ink on a clear canvas)."""
    if image.mode.startswith("I"):  # 16-bit greyscale PNG: scale, do not clip, to 8 bits
        values = np.asarray(image, dtype=np.float32)
        return values / (65535.0 if values.max() > 255 else 255.0)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    values = np.array(image.convert("L"), dtype=np.float32)
    values /= 255.0  # in place: the float copies of a large picture are what a request costs
    return values


def to_mnist_polarity(gray: np.ndarray) -> np.ndarray:
    """Make the ink bright on a zero background, whatever the picture's polarity and exposure.

    The border ring decides: a mostly light border means dark ink on paper, so the picture is
    inverted. The border's median is then the background level, which is subtracted, and the
    result is stretched so the strongest ink is 1.0 (grey pencil on grey paper looks like MNIST).
    """
    height, width = gray.shape
    ring = max(1, round(BORDER_FRACTION * min(height, width)))
    border = np.concatenate(
        [gray[:ring].ravel(), gray[-ring:].ravel(), gray[:, :ring].ravel(), gray[:, -ring:].ravel()]
    )
    # One float32 copy, then every step in place (the same float32 arithmetic as the plain
    # expressions): a 2000 x 1500 working picture is 12 MB a copy, and the expressions made
    # five of them.
    ink = np.array(gray, dtype=np.float32)
    if float(border.mean()) > 0.5:
        np.subtract(1.0, ink, out=ink)
        border = 1.0 - border
    ink -= float(np.median(border))
    np.maximum(ink, 0.0, out=ink)
    peak = float(ink.max())
    if peak < MIN_INK_CONTRAST:
        raise InvalidInput("the image looks blank: no ink stands out from the background")
    ink /= peak
    return ink


def _ink_box(ink: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(ink.max(axis=1) > INK_THRESHOLD)
    cols = np.flatnonzero(ink.max(axis=0) > INK_THRESHOLD)
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resize(ink: np.ndarray, width: int, height: int) -> np.ndarray:
    """Shrink by area averaging (what a coarser sensor would have seen: no aliasing and the
    least blur; the deskew model reads blur as a larger scale), enlarge bilinearly."""
    picture = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32))
    width, height = max(1, width), max(1, height)
    shrinking = width <= picture.width and height <= picture.height
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = picture.resize((width, height), method)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def digit_input(ink: np.ndarray) -> np.ndarray:
    """One digit framed like MNIST: `[1, 28, 28, 1]` float32."""
    box = _ink_box(ink)
    height, width = box.shape
    factor = DIGIT_BOX / max(height, width)
    digit = _resize(box, round(width * factor), round(height * factor))
    canvas = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    top, left = _centre_of_mass_offset(digit)
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas[np.newaxis, :, :, np.newaxis]


def _centre_of_mass_offset(digit: np.ndarray) -> tuple[int, int]:
    """Top-left corner that puts the digit's centre of mass at the canvas centre, inside it."""
    total = float(digit.sum())
    rows, cols = np.indices(digit.shape)
    centre = MNIST_SIZE / 2.0  # where MNIST digits have their centre of mass (14, 14)
    top = round(centre - float((rows * digit).sum()) / total)
    left = round(centre - float((cols * digit).sum()) / total)
    top = min(max(top, 0), MNIST_SIZE - digit.shape[0])
    left = min(max(left, 0), MNIST_SIZE - digit.shape[1])
    return top, left


def strip_input(ink: np.ndarray) -> np.ndarray:
    """A line of digits, 28 px high, aspect ratio kept: `[1, 28, W, 1]` float32, W >= 28.

    The scale comes from the digits, not from the line: each run of inked columns (a digit, or
    touching digits) is measured and the median height is brought to MNIST's 20 px. The line's
    own height also holds the digits' up-and-down jitter, which training strips have too, so it
    is kept as it is (and only shrunk further when it would not fit in 28 rows).
    """
    box = _ink_box(ink)
    height, width = box.shape
    factor = min(STRIP_DIGIT_HEIGHT / _median_digit_height(box), MNIST_SIZE / height)
    line_height, line_width = max(1, round(height * factor)), max(1, round(width * factor))
    if line_width + 2 * STRIP_SIDE_MARGIN > MAX_STRIP_WIDTH:
        raise InvalidInput(
            f"the line of ink is {width}x{height} pixels: at 28 px high it would be "
            f"wider than {MAX_STRIP_WIDTH} px; send one line of digits"
        )
    line = _resize(box, line_width, line_height)
    canvas_width = max(MNIST_SIZE, line_width + 2 * STRIP_SIDE_MARGIN)
    canvas = np.zeros((MNIST_SIZE, canvas_width), dtype=np.float32)
    top = (MNIST_SIZE - line_height) // 2
    left = (canvas_width - line_width) // 2
    canvas[top : top + line_height, left : left + line_width] = line
    return canvas[np.newaxis, :, :, np.newaxis]


def _median_digit_height(box: np.ndarray) -> float:
    """Median ink height of the runs of inked columns; specks under a quarter of the line's
    height are left out so that a stray dot does not shrink the estimate."""
    inked = np.concatenate([[False], box.max(axis=0) > INK_THRESHOLD, [False]])
    edges = np.flatnonzero(inked[1:] != inked[:-1])
    heights = []
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        rows = np.flatnonzero(box[:, start:stop].max(axis=1) > INK_THRESHOLD)
        heights.append(rows[-1] - rows[0] + 1)
    tall_enough = [h for h in heights if h >= box.shape[0] / 4]
    return float(np.median(tall_enough or heights))


def frame_input(ink: np.ndarray) -> np.ndarray:
    """The whole picture padded to a square around its centre and resized: `[1, 28, 28, 1]`.

    The square costs side-squared memory, so a picture longer than `WORK_SIDE` is first
    reduced to it (box averaging, as the final resize does anyway).
    """
    height, width = ink.shape
    if max(height, width) > WORK_SIDE:
        factor = WORK_SIDE / max(height, width)
        ink = _resize(ink, round(width * factor), round(height * factor))
        height, width = ink.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = ink
    return _resize(square, MNIST_SIZE, MNIST_SIZE)[np.newaxis, :, :, np.newaxis]
