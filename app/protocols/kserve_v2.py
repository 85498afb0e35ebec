"""KServe v2 / Open Inference Protocol over HTTP: the routes Triton's clients expect.

Only HTTP lives here: paths, headers, status codes. Tensors are converted by
`app.protocols.v2_codec` and every question about models goes to the transport-free data plane,
so this module knows nothing of TensorFlow. Errors are raised as `ServingError`s and turned into
`{"error": "..."}` responses by the one handler in `app.main`.

The two `infer` routes are the hot path. They are plain Starlette routes taking the raw `Request`
and returning a ready-made `Response`: no pydantic validation of tensor payloads, no dependency
solving, no response serialisation; the body goes straight to orjson/numpy and the bytes come
straight back.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.dataplane import DataPlane, ModelMetadata
from app.dependencies import DataPlaneDep, dataplane_of, settings_of
from app.errors import Unavailable
from app.observability import note_served_version
from app.protocols.common import client_gone, parse_version
from app.protocols.large_json import parse_off_loop
from app.protocols.v2_codec import (
    HEADER_LENGTH_HEADER,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    v2_datatype,
)
from app.servable import TensorSpec

_INFER_EXAMPLE = {
    "id": "42",
    "inputs": [
        {
            "name": "image",
            "shape": [1, 28, 28, 1],
            "datatype": "FP32",
            "data": ["... 784 numbers in [0, 1], row-major ..."],
        }
    ],
    "outputs": [
        {"name": "class_id"},
        {"name": "probabilities", "parameters": {"binary_data": False}},
    ],
}
_INFER_RESPONSE_EXAMPLE = {
    "model_name": "mnist",
    "model_version": "1",
    "id": "42",
    "outputs": [
        {"name": "class_id", "datatype": "INT64", "shape": [1], "data": [7]},
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [1, 10],
            "data": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.99, 0.0, 0.01],
        },
    ],
}
INFER_PATH = "/models/{model_name}/infer"
VERSION_INFER_PATH = "/models/{model_name}/versions/{version}/infer"
_INFER_BODY: dict[str, Any] = {
    "required": True,
    "description": (
        "A v2 inference request. With the binary tensor data extension the JSON header is "
        f"followed by raw little-endian tensor bytes, `{HEADER_LENGTH_HEADER}` gives the "
        "header's length and each binary input has `parameters.binary_data_size`. "
        "`parameters.signature_name` (request level) runs another signature of the model than "
        "`serving_default` (the model metadata's `signatures` lists them)."
    ),
    "content": {
        "application/json": {"schema": {"type": "object"}, "example": _INFER_EXAMPLE},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs, as JSON or (when any output was asked for in binary) a "
        f"JSON header of `{HEADER_LENGTH_HEADER}` bytes followed by raw data.",
        "content": {
            "application/json": {"example": _INFER_RESPONSE_EXAMPLE},
            "application/octet-stream": {},
        },
    },
    400: {"description": "Malformed request: JSON, datatype, shape, binary sizes, names."},
    404: {"description": "Unknown model or version."},
    503: {"description": "The model is not ready."},
}


def _infer_openapi(path: str) -> dict[str, Any]:
    """The request body and path parameters, which FastAPI cannot see on a raw-Request route."""
    names = [name for name in ("model_name", "version") if "{" + name + "}" in path]
    return {
        "requestBody": _INFER_BODY,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names
        ],
    }


def _v2_tensors(specs: dict[str, TensorSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "datatype": v2_datatype(spec.tf_dtype),
            "shape": spec.shape_with_minus_one,
        }
        for spec in specs.values()
    ]


def _v2_model_metadata(metadata: ModelMetadata) -> dict[str, Any]:
    """v2 model metadata: `serving_default`'s inputs and outputs, plus `signatures`, an
    extension: every signature's inputs, outputs and TF Serving method by name (a request picks
    one with `parameters.signature_name`)."""
    return {
        "name": metadata.name,
        "versions": [str(version) for version in metadata.versions],
        "platform": metadata.platform,
        "inputs": _v2_tensors(metadata.inputs),
        "outputs": _v2_tensors(metadata.outputs),
        "signatures": {
            key: {
                "inputs": _v2_tensors(signature.inputs),
                "outputs": _v2_tensors(signature.outputs),
                "method_name": signature.method_name,
            }
            for key, signature in metadata.signatures.items()
        },
    }


async def server_metadata(dataplane: DataPlaneDep) -> dict[str, Any]:
    """Server name, version, supported extensions and the effective device configuration."""
    return dataplane.server_metadata()


async def server_live(dataplane: DataPlaneDep) -> dict[str, bool]:
    """200 while the process serves HTTP at all."""
    return {"live": dataplane.live()}


async def server_ready(dataplane: DataPlaneDep) -> dict[str, bool]:
    """200 once every model that loaded has been warmed up; 503 before or while draining."""
    if not dataplane.ready():
        raise Unavailable("the server is not ready")
    return {"ready": True}


async def model_metadata(dataplane: DataPlaneDep, model_name: str) -> dict[str, Any]:
    """Name, versions, platform and the signature's inputs and outputs in v2 datatypes."""
    return _v2_model_metadata(dataplane.model_metadata(model_name, None))


async def model_version_metadata(
    dataplane: DataPlaneDep, model_name: str, version: str
) -> dict[str, Any]:
    """Like the model's metadata, for one version."""
    return _v2_model_metadata(dataplane.model_metadata(model_name, parse_version(version)))


def _readiness(dataplane: DataPlane, model_name: str, version: int | None) -> dict[str, Any]:
    if not dataplane.model_ready(model_name, version):
        which = model_name if version is None else f"{model_name} version {version}"
        raise Unavailable(f"model {which} is not ready")
    return {"name": model_name, "ready": True}


async def model_ready(dataplane: DataPlaneDep, model_name: str) -> dict[str, Any]:
    """200 when the model's default version can answer; 503 otherwise, 404 when unknown."""
    return _readiness(dataplane, model_name, None)


async def model_version_ready(
    dataplane: DataPlaneDep, model_name: str, version: str
) -> dict[str, Any]:
    """200 when this version can answer; 503 otherwise, 404 when unknown."""
    return _readiness(dataplane, model_name, parse_version(version))


async def infer(request: Request) -> Response:
    """Run a model (its default version, or the one in the path) on v2 tensors."""
    path = request.path_params
    version = path.get("version")
    body = await request.body()
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH_HEADER), len(body))
    dataplane = dataplane_of(request)
    # Bodies over the threshold are decoded in a parse thread, numeric data in slices.
    threshold = settings_of(request).inline_parse_bytes
    decoded = await parse_off_loop(
        len(body),
        threshold,
        decode_infer_request,
        body,
        header_length,
        dataplane.limits,
        len(body) > threshold,
    )
    result = await dataplane.infer(
        path["model_name"],
        decoded.inputs,
        version=None if version is None else parse_version(version),
        outputs=None if decoded.outputs is None else [o.name for o in decoded.outputs],
        client_gone=client_gone(request),
        signature=decoded.signature,
    )
    note_served_version(request.scope, result.model_version)
    encoded = encode_infer_response(
        result.model_name, result.model_version, result.outputs, decoded
    )
    headers = None
    if encoded.header_length is not None:
        headers = {HEADER_LENGTH_HEADER: str(encoded.header_length)}
    return Response(content=encoded.body, media_type=encoded.media_type, headers=headers)


def build_router() -> APIRouter:
    """The `/v2` routes; `app.main.create_app` includes them."""
    router = APIRouter(prefix="/v2", tags=["KServe v2"])
    router.add_api_route("", server_metadata, methods=["GET"], summary="Server metadata")
    router.add_api_route("/health/live", server_live, methods=["GET"], summary="Liveness")
    router.add_api_route("/health/ready", server_ready, methods=["GET"], summary="Readiness")
    router.add_api_route(
        "/models/{model_name}", model_metadata, methods=["GET"], summary="Model metadata"
    )
    router.add_api_route(
        "/models/{model_name}/versions/{version}",
        model_version_metadata,
        methods=["GET"],
        summary="Model version metadata",
    )
    router.add_api_route(
        "/models/{model_name}/ready", model_ready, methods=["GET"], summary="Model readiness"
    )
    router.add_api_route(
        "/models/{model_name}/versions/{version}/ready",
        model_version_ready,
        methods=["GET"],
        summary="Model version readiness",
    )
    for path, summary in (
        (INFER_PATH, "Inference"),
        (VERSION_INFER_PATH, "Inference on one version"),
    ):
        # Served by a plain route hoisted to the front of the app (app.protocols.hot_routes);
        # this APIRoute documents it in OpenAPI.
        router.add_api_route(
            path,
            infer,
            methods=["POST"],
            summary=summary,
            openapi_extra=_infer_openapi(path),
            responses=_INFER_RESPONSES,
            response_class=Response,
        )
    return router
