"""Task endpoints for people: send a picture, get an answer in words and numbers.

`curl -F file=@seven.png http://HOST/tasks/classify-digit` or
`curl --data-binary @seven.png -H 'Content-Type: image/png' http://HOST/tasks/classify-digit`.
The picture is converted the way its model's training data was made (`app.tasks.images`), sent
through the same data plane as every protocol (so batching, versions and errors behave the same),
and the tensors that come back are turned into readable JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from app.dependencies import DataPlaneDep, DecodePoolDep
from app.errors import InvalidInput, UnsupportedMediaType
from app.protocols.common import media_type
from app.tasks.decoding import DecodePool
from app.tasks.images import (
    IMAGE_MEDIA_TYPES,
    digit_input,
    frame_input,
    strip_input,
)

MNIST_MODEL = "mnist"
OCR_MODEL = "ocr"
DESKEW_MODEL = "deskew"
UPLOAD_FIELD = "file"
# Media types a browser or curl may give the multipart file part; the bytes decide the rest.
_GENERIC_PART_TYPES = ("application/octet-stream", "")


_MODEL_INPUT_DOC = (
    "Only with `include_input=true`: the picture exactly as the model received "
    "it after conversion, `[28, W]` values in [0, 1] (W = 28 for one digit)."
)
IncludeInput = Annotated[
    bool, Query(description="Also return `model_input`, the converted picture the model was given.")
]


class DigitProbability(BaseModel):
    digit: int = Field(description="A digit, 0 to 9.")
    probability: float = Field(description="The model's probability for it.")


class DigitClassification(BaseModel):
    """The most likely digit and the `top_k` most likely ones."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "digit": 7,
                "probabilities": [
                    {"digit": 7, "probability": 0.991},
                    {"digit": 1, "probability": 0.006},
                    {"digit": 9, "probability": 0.002},
                ],
                "model_version": 1,
            }
        },
        protected_namespaces=(),
    )

    digit: int
    probabilities: list[DigitProbability] = Field(description="Most likely first.")
    model_version: int
    model_input: list[list[float]] | None = Field(default=None, description=_MODEL_INPUT_DOC)


class DigitString(BaseModel):
    """The digits read from left to right."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"text": "4071", "confidence": 0.93, "model_version": 1}},
        protected_namespaces=(),
    )

    text: str = Field(description="The digits read, e.g. '4071' (empty if none were found).")
    confidence: float = Field(description="Probability of the whole reading, 0 to 1.")
    model_version: int
    model_input: list[list[float]] | None = Field(default=None, description=_MODEL_INPUT_DOC)
    step_probabilities: list[list[float]] | None = Field(
        default=None,
        description="Only with `include_steps=true`: per time step (one step per "
        "4 columns of `model_input`), the probability of each digit "
        "0-9 and, last, of the blank: `[T, 11]`.",
    )


class SkewEstimate(BaseModel):
    """How far the digit is turned and enlarged relative to an upright MNIST digit."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"angle_degrees": 12.5, "scale": 1.1, "model_version": 1}},
        protected_namespaces=(),
    )

    angle_degrees: float = Field(
        description="Counter-clockwise rotation as displayed; turning "
        "the picture back by this angle straightens it."
    )
    scale: float = Field(description="Size relative to an MNIST digit in the same frame.")
    model_version: int
    model_input: list[list[float]] | None = Field(default=None, description=_MODEL_INPUT_DOC)


_IMAGE_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A PNG or JPEG picture: a multipart upload in the `file` field, or the "
        "raw bytes with `Content-Type: image/png` or `image/jpeg`.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [UPLOAD_FIELD],
                    "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            **{
                image_type: {"schema": {"type": "string", "format": "binary"}}
                for image_type in IMAGE_MEDIA_TYPES
            },
        },
    },
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The upload is not a decodable picture, or it is blank."},
    413: {"description": "The picture has too many pixels or the body is too large."},
    415: {"description": "Neither multipart/form-data nor image/png or image/jpeg."},
    503: {"description": "The model is not ready."},
}


async def read_image_upload(request: Request) -> bytes:
    """The picture's bytes from a multipart `file` field or from a raw image body."""
    kind = media_type(request)
    if kind in IMAGE_MEDIA_TYPES:
        return await request.body()
    if kind != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected multipart/form-data with a '{UPLOAD_FIELD}' field, or an image/png or "
            f"image/jpeg body; got {kind or 'no Content-Type'}"
        )
    try:
        form = await request.form(max_files=1, max_fields=16)
    except HTTPException as exc:  # Starlette's answer to a malformed multipart body
        raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
    upload = form.get(UPLOAD_FIELD)
    if not isinstance(upload, UploadFile):
        raise InvalidInput(f"the multipart body needs a file in the '{UPLOAD_FIELD}' field")
    part_type = (upload.content_type or "").split(";")[0].strip().lower()
    if part_type not in IMAGE_MEDIA_TYPES and part_type not in _GENERIC_PART_TYPES:
        raise UnsupportedMediaType(
            f"the uploaded file is {part_type}; expected image/png or image/jpeg"
        )
    return await upload.read()


async def _prepared(request: Request, pool: DecodePool, convert: Any) -> np.ndarray:
    """Decode and convert off the event loop (a large photo takes tens of milliseconds), in the
    bounded decode pool (`app.tasks.decoding`), within the configured picture limits."""
    return await pool.decode(await read_image_upload(request), convert)


async def classify_digit(
    request: Request,
    dataplane: DataPlaneDep,
    pool: DecodePoolDep,
    top_k: Annotated[int, Query(ge=1, le=10, description="How many digits to list.")] = 3,
    include_input: IncludeInput = False,
) -> DigitClassification:
    """Classify a picture of one handwritten digit (any size, dark-on-light or light-on-dark)."""
    image = await _prepared(request, pool, digit_input)
    result = await dataplane.infer(MNIST_MODEL, {"image": image})
    probabilities = np.asarray(result.outputs["probabilities"][0], dtype=np.float64)
    ranked = np.argsort(-probabilities, kind="stable")[:top_k]
    answer = DigitClassification(
        digit=int(result.outputs["class_id"][0]),
        probabilities=[
            DigitProbability(digit=int(d), probability=float(probabilities[d])) for d in ranked
        ],
        model_version=result.model_version,
    )
    if include_input:
        answer.model_input = _as_rows(image)
    return answer


async def read_digits(
    request: Request,
    dataplane: DataPlaneDep,
    pool: DecodePoolDep,
    include_input: IncludeInput = False,
    include_steps: Annotated[
        bool,
        Query(
            description="Also return `step_probabilities`, "
            "where along the line each digit was "
            "read."
        ),
    ] = False,
) -> DigitString:
    """Read a line of handwritten digits (one to several, left to right)."""
    image = await _prepared(request, pool, strip_input)
    result = await dataplane.infer(OCR_MODEL, {"image": image})
    text = result.outputs["text"][0]
    answer = DigitString(
        text=text.decode("utf-8") if isinstance(text, bytes) else str(text),
        confidence=float(result.outputs["confidence"][0]),
        model_version=result.model_version,
    )
    if include_input:
        answer.model_input = _as_rows(image)
    if include_steps and "probabilities" in result.outputs:
        answer.step_probabilities = np.asarray(
            result.outputs["probabilities"][0], dtype=np.float64
        ).tolist()
    return answer


async def estimate_skew(
    request: Request,
    dataplane: DataPlaneDep,
    pool: DecodePoolDep,
    include_input: IncludeInput = False,
) -> SkewEstimate:
    """Estimate how far a digit is rotated and scaled; the whole picture is the frame."""
    image = await _prepared(request, pool, frame_input)
    result = await dataplane.infer(DESKEW_MODEL, {"image": image})
    answer = SkewEstimate(
        angle_degrees=float(np.ravel(result.outputs["angle"])[0]),
        scale=float(np.ravel(result.outputs["scale"])[0]),
        model_version=result.model_version,
    )
    if include_input:
        answer.model_input = _as_rows(image)
    return answer


def _as_rows(image: np.ndarray) -> list[list[float]]:
    """A `[1, 28, W, 1]` model input as `[28, W]` rows: exact float32 values, not rounded, so
    sending them back through `/v2/.../infer` reproduces the answer bit for bit."""
    return np.asarray(image[0, :, :, 0], dtype=np.float64).tolist()


def build_router() -> APIRouter:
    """The `/tasks` routes; `app.main.create_app` includes them."""
    router = APIRouter(prefix="/tasks", tags=["Tasks"])
    common: dict[str, Any] = {
        "methods": ["POST"],
        "openapi_extra": _IMAGE_BODY_OPENAPI,
        "responses": _ERROR_RESPONSES,
    }
    # Unset opt-in fields (`model_input`, ...) are left out: default answers stay as they were.
    common["response_model_exclude_unset"] = True
    router.add_api_route(
        "/classify-digit",
        classify_digit,
        response_model=DigitClassification,
        summary="Which digit is in this picture?",
        **common,
    )
    router.add_api_route(
        "/read-digits",
        read_digits,
        response_model=DigitString,
        summary="Which digits are written on this line?",
        **common,
    )
    router.add_api_route(
        "/estimate-skew",
        estimate_skew,
        response_model=SkewEstimate,
        summary="How far is this digit turned and scaled?",
        **common,
    )
    return router
