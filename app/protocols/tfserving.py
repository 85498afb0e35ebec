"""TensorFlow Serving's REST API (`/v1/...`): same paths, same JSON, so TF Serving clients work.

Request bodies: the row format (`{"instances": [...]}` -> `{"predictions": [...]}`) and the
columnar format (`{"inputs": ...}` -> `{"outputs": ...}`), optional `signature_name` (any
signature of the version), binary values as `{"b64": "..."}` (either base64 alphabet). String
outputs come back as JSON strings (UTF-8), or as `{"b64": ...}` when the output's name ends in
`_bytes`, as in TF Serving. Lists become arrays with one `np.asarray` per input; arrays go out
through orjson without per-element Python. `:classify` and `:regress` take TF Serving's
`tf.Example` JSON (`app.protocols.tf_example_json`) and answer `{"results": ...}`.

The hot path: a body whose `instances` (or unnamed `inputs`) is a rectangular array of numbers
is decoded by `app.protocols.numeric_json` without a Python object per element; the predict
routes are plain Starlette routes (no FastAPI dependency solving), like KServe v2's infer.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from app.dataplane import UNNAMED_INPUT, DataPlane, ModelMetadata, VersionStatus
from app.dependencies import DataPlaneDep, dataplane_of, settings_of
from app.errors import InvalidInput
from app.examples import Classifications
from app.observability import note_served_version
from app.protocols.base64_json import decode_b64
from app.protocols.common import (
    client_gone,
    json_response,
    parse_json,
    parse_version,
    read_json_bytes,
)
from app.protocols.large_json import loads_large, parse_off_loop
from app.protocols.numeric_json import parse_with_numeric_array
from app.protocols.tf_example_json import examples_from_body
from app.servable import TensorSpec
from app.signatures import Signature

BINARY_OUTPUT_SUFFIX = "_bytes"
MODEL_PATHS = (
    "/v1/models/{name}",
    "/v1/models/{name}/versions/{version}",
    "/v1/models/{name}/labels/{label}",
)
PREDICT_PATHS = tuple(path + ":predict" for path in MODEL_PATHS)
CLASSIFY_PATHS = tuple(path + ":classify" for path in MODEL_PATHS)
REGRESS_PATHS = tuple(path + ":regress" for path in MODEL_PATHS)
TF_DATATYPES = {
    "float16": "DT_HALF",
    "bfloat16": "DT_BFLOAT16",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "bool": "DT_BOOL",
    "string": "DT_STRING",
}


async def model_status(name: str, dataplane: DataPlaneDep) -> Response:
    """Every version of the model with its state."""
    return json_response(_status_body(dataplane.model_status(name)))


async def version_status(name: str, version: str, dataplane: DataPlaneDep) -> Response:
    """One version's state."""
    return json_response(_status_body(dataplane.model_status(name, parse_version(version))))


async def label_status(name: str, label: str, dataplane: DataPlaneDep) -> Response:
    """The state of the version a label points at."""
    version = dataplane.registry.resolve(name, label=label).version
    return json_response(_status_body(dataplane.model_status(name, version)))


async def metadata(name: str, dataplane: DataPlaneDep) -> Response:
    """Every signature def of the default version."""
    return json_response(_metadata_body(dataplane.model_metadata(name)))


async def version_metadata(name: str, version: str, dataplane: DataPlaneDep) -> Response:
    """Every signature def of one version."""
    info = dataplane.model_metadata(name, version=parse_version(version))
    return json_response(_metadata_body(info))


async def label_metadata(name: str, label: str, dataplane: DataPlaneDep) -> Response:
    """Every signature def of the version a label points at."""
    return json_response(_metadata_body(dataplane.model_metadata(name, label=label)))


def build_router() -> APIRouter:
    """The `/v1` routes. Predict is served by a plain route hoisted to the front of the app
    (`app.protocols.hot_routes`); its APIRoute here only documents it."""
    router = APIRouter(tags=["TensorFlow Serving REST API"])
    for path, endpoint, summary in (
        ("/v1/models/{name}", model_status, "Status of every version of a model"),
        ("/v1/models/{name}/versions/{version}", version_status, "Status of one version"),
        ("/v1/models/{name}/labels/{label}", label_status, "Status of a labelled version"),
        ("/v1/models/{name}/metadata", metadata, "Signature def of the default version"),
        (
            "/v1/models/{name}/versions/{version}/metadata",
            version_metadata,
            "Signature def of one version",
        ),
        (
            "/v1/models/{name}/labels/{label}/metadata",
            label_metadata,
            "Signature def of a labelled version",
        ),
    ):
        router.add_api_route(path, endpoint, methods=["GET"], summary=summary)
    for method_paths, handler, verb in (
        (CLASSIFY_PATHS, classify, "Classify tf.Examples"),
        (REGRESS_PATHS, regress, "Regress tf.Examples"),
        (PREDICT_PATHS, predict, "Predict"),
    ):
        for path, which in zip(method_paths, _WHICH_VERSION, strict=True):
            openapi = _predict_openapi(path) if handler is predict else _examples_openapi(path)
            router.add_api_route(
                path,
                handler,
                methods=["POST"],
                summary=f"{verb} with {which}",
                openapi_extra=openapi,
                response_class=Response,
            )
    return router


_WHICH_VERSION = ("the default version", "one version", "a labelled version")


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [name for name in ("name", "version", "label") if "{" + name + "}" in path]
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]


def _examples_openapi(path: str) -> dict[str, Any]:
    """TF Serving's classify/regress body (FastAPI cannot see it on a raw-Request route)."""
    example = {
        "signature_name": "classify_x_to_y",
        "context": {"country": "fr"},
        "examples": [{"x": 1.0}, {"x": 2.5, "image": {"b64": "aW1hZ2U="}}],
    }
    return _json_body_openapi(path, example)


def _predict_openapi(path: str) -> dict[str, Any]:
    """The JSON body and path parameters, which FastAPI cannot see on a raw-Request route."""
    return _json_body_openapi(path, {"instances": [[[[0.0]] * 28] * 28]})


def _json_body_openapi(path: str, example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        },
        "parameters": _path_parameters(path),
    }


def _which(request: Request) -> tuple[str, int | None, str | None]:
    """The model name, version and label a `/v1` path names."""
    path = request.path_params
    version = path.get("version")
    return path["name"], None if version is None else parse_version(version), path.get("label")


async def predict(request: Request) -> Response:
    """Predict with the default, numbered or labelled version named in the path."""
    name, version, label = _which(request)
    return await _predict(request, name, version=version, label=label)


async def classify(request: Request, dataplane: DataPlaneDep) -> Response:
    """TF Serving's `:classify`: `tf.Example`s through a classification signature.

    `{"results": [[[label, score], ...] per example]}`; a label is "" when the signature has
    no `classes` output, as in TF Serving.
    """
    found = await _examples_through(request, dataplane, dataplane.classify)
    return json_response({"results": _classification_rows(found)})


async def regress(request: Request, dataplane: DataPlaneDep) -> Response:
    """TF Serving's `:regress`: `tf.Example`s through a regression signature;
    `{"results": [value per example]}`."""
    values = await _examples_through(request, dataplane, dataplane.regress)
    return json_response({"results": values})


async def _examples_through(
    request: Request, dataplane: DataPlane, method: Callable[..., Any]
) -> Any:
    """Read a `:classify`/`:regress` body, run it through `method` (the data plane's `classify`
    or `regress`), note the version that answered; what the method found (classifications or
    values)."""
    name, version, label = _which(request)
    body = parse_json(await read_json_bytes(request))
    examples, context = examples_from_body(body, dataplane.example_limits)
    result, found = await method(
        name,
        examples,
        context,
        version=version,
        label=label,
        signature=_signature_name(body),
        client_gone=client_gone(request),
    )
    note_served_version(request.scope, result.model_version)
    return found


def _classification_rows(found: Classifications) -> list[list[list[Any]]]:
    return [[[label, score] for label, score in found.pairs(row)] for row in range(found.rows)]


def _signature_name(body: Any) -> str | None:
    """The body's `signature_name` (None: `serving_default`); a non-string is a 400."""
    signature = body.get("signature_name") if isinstance(body, dict) else None
    if signature is not None and not isinstance(signature, str):
        raise InvalidInput(f"'signature_name' must be a string, got {type(signature).__name__}")
    return signature or None


async def _predict(
    request: Request, name: str, version: int | None = None, label: str | None = None
) -> Response:
    plane = dataplane_of(request)
    raw = await read_json_bytes(request)
    # Bodies over the threshold are decoded in a parse thread (numeric arrays in slices), the
    # rows of a big body turned into arrays there too: a Python loop over them would hold
    # the event loop.
    threshold = settings_of(request).inline_parse_bytes
    has_rows, inputs, signature = await parse_off_loop(
        len(raw), threshold, decode_predict, raw, len(raw) > threshold
    )
    result = await plane.infer(
        name,
        inputs,
        version=version,
        label=label,
        client_gone=client_gone(request),
        signature=signature,
    )
    note_served_version(request.scope, result.model_version)
    encoded = {key: encode_output(key, value) for key, value in result.outputs.items()}
    if has_rows:
        return json_response({"predictions": predictions_from_outputs(encoded, result.outputs)})
    if len(encoded) == 1:
        return json_response({"outputs": next(iter(encoded.values()))})
    return json_response({"outputs": encoded})


def decode_predict(
    raw: bytes, sliced: bool = False
) -> tuple[bool, dict[str, np.ndarray], str | None]:
    """(row format?, the inputs as arrays, the signature name or None) of a predict body; a
    value that names no input is keyed `UNNAMED_INPUT` (see `rows_to_inputs`). The signature is
    looked up by the data plane, in the version that answers."""
    body = _parse_predict_body(raw, sliced)
    signature = _signature_name(body)
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise InvalidInput(
            "the request must have exactly one of 'instances' (row format) or "
            f"'inputs' (columnar format), got keys {sorted(body)}"
        )
    # No model lookup here: an unnamed value is named inside the data plane's lease, so the
    # version whose signature names it is the version that answers.
    if has_rows:
        return True, rows_to_inputs(body["instances"]), signature
    return False, columns_to_inputs(body["inputs"]), signature


def _parse_predict_body(raw: bytes, sliced: bool = False) -> dict[str, Any]:
    """The body as a dict; a numeric `instances`/`inputs` array arrives already as numpy.

    `sliced`: every large numeric array is parsed in slices (`app.protocols.large_json`), for
    big bodies parsed off the event loop.
    """
    if sliced:
        body = loads_large(raw)
    else:
        for key in ("instances", "inputs"):
            if b'"' + key.encode() + b'"' in raw:
                fast = parse_with_numeric_array(raw, key)
                if fast is not None:
                    return fast
        body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


# ---- request decoding ------------------------------------------------------------------------


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def rows_to_inputs(instances: Any, input_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Row format: a list of instances, each a value (one-input model) or {input: value}.

    A value that names no input is keyed `UNNAMED_INPUT` when `input_names` is None: the data
    plane gives it the name of the model's only input under the request's lease.
    """
    if isinstance(instances, np.ndarray):  # decoded by app.protocols.numeric_json
        return {_only_input(input_names, "instance"): instances}
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list of rows")
    first = instances[0]
    if isinstance(first, dict) and not _is_b64(first):
        keys = first.keys()
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict) or instance.keys() != keys:
                got = sorted(instance) if isinstance(instance, dict) else type(instance).__name__
                raise InvalidInput(
                    f"every instance must name the same inputs {sorted(keys)}; "
                    f"instance {index} has {got}"
                )
        return {key: _to_array([instance[key] for instance in instances], key) for key in keys}
    return {_only_input(input_names, "instance"): _to_array(instances, "the instances")}


def columns_to_inputs(columns: Any, input_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Columnar format: {input: batch of values}, or the batch alone for one-input models
    (keyed `UNNAMED_INPUT` when `input_names` is None, as in `rows_to_inputs`)."""
    if isinstance(columns, np.ndarray):  # decoded by app.protocols.numeric_json
        return {_only_input(input_names, "'inputs' value"): columns}
    if isinstance(columns, dict) and not _is_b64(columns):
        return {key: _to_array(value, key) for key, value in columns.items()}
    return {_only_input(input_names, "'inputs' value"): _to_array(columns, "'inputs'")}


def _only_input(input_names: list[str] | None, what: str) -> str:
    if input_names is None:
        return UNNAMED_INPUT
    if len(input_names) != 1:
        raise InvalidInput(
            f"the model has inputs {input_names}: each {what} must be an object that names them"
        )
    return input_names[0]


def _to_array(value: Any, input_name: str) -> np.ndarray:
    """One input's nested lists as an array; `{"b64": ...}` leaves become `bytes` objects."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged lists
        raise InvalidInput(
            f"input {input_name!r} is not a rectangular array (rows of different lengths): {exc}"
        ) from exc
    if array.dtype.kind == "O":  # b64 objects (or junk the validator will name)
        array = np.array(_decode_b64_leaves(value, input_name), dtype=object)
    return array


def _decode_b64_leaves(value: Any, input_name: str) -> Any:
    if isinstance(value, list):
        return [_decode_b64_leaves(item, input_name) for item in value]
    if isinstance(value, dict):
        if not _is_b64(value) or not isinstance(value["b64"], str):
            raise InvalidInput(
                f"input {input_name!r}: the only object allowed as a value is "
                f'{{"b64": "<base64 string>"}}, got keys {sorted(value)}'
            )
        return decode_b64(value["b64"], f"input {input_name!r}")
    return value


# ---- response encoding -----------------------------------------------------------------------


def encode_output(name: str, array: np.ndarray) -> Any:
    """Numbers stay numpy (orjson writes them); strings become str, or b64 for `*_bytes`."""
    if array.dtype.kind not in "OSU":
        # A scalar stays a scalar (a numpy one: orjson writes float32 with float32's digits);
        # np.ascontiguousarray would make it a one-element list.
        return array[()] if array.ndim == 0 else np.ascontiguousarray(array)
    if name.endswith(BINARY_OUTPUT_SUFFIX):
        to_b64 = np.frompyfunc(lambda item: {"b64": base64.b64encode(item).decode("ascii")}, 1, 1)
        return to_b64(array).tolist()
    if array.dtype.kind == "U":
        return array.tolist()
    return np.strings.decode(array.astype(np.bytes_), "utf-8", "replace").tolist()


def predictions_from_outputs(encoded: dict[str, Any], raw: dict[str, np.ndarray]) -> Any:
    """`predictions`: the batch itself for one output, else one {output: value} per row."""
    if len(encoded) == 1:
        return next(iter(encoded.values()))
    sizes = {key: (value.shape[0] if value.ndim else None) for key, value in raw.items()}
    batch = next(iter(sizes.values()))
    if batch is None or any(size != batch for size in sizes.values()):
        raise InvalidInput(
            f"outputs have different batch sizes {sizes}: the row format "
            "cannot hold them; use the columnar format ('inputs')"
        )
    return [{key: column[row] for key, column in encoded.items()} for row in range(batch)]


def _status_body(statuses: list[VersionStatus]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(status.version),
                "state": status.state.value,
                "status": (
                    {"error_code": "UNKNOWN", "error_message": status.error}
                    if status.error
                    else {"error_code": "OK", "error_message": ""}
                ),
            }
            for status in statuses
        ]
    }


def _tensor_info(spec: TensorSpec, tensor_name: str) -> dict[str, Any]:
    return {
        "dtype": TF_DATATYPES.get(spec.tf_dtype, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in spec.shape_with_minus_one],
            "unknown_rank": False,
        },
        "name": tensor_name,
    }


def _signature_def(signature: Signature) -> dict[str, Any]:
    return {
        "inputs": {
            key: _tensor_info(spec, signature.input_tensor_names[key])
            for key, spec in signature.inputs.items()
        },
        "outputs": {
            key: _tensor_info(spec, signature.output_tensor_names[key])
            for key, spec in signature.outputs.items()
        },
        "method_name": signature.method_name,
        "defaults": {},
    }


def _metadata_body(info: ModelMetadata) -> dict[str, Any]:
    """GetModelMetadata's JSON: every signature def as TF Serving prints it (the
    `__saved_model_init_op` entry TF Serving also lists is left out: it is not callable)."""
    return {
        "model_spec": {"name": info.name, "signature_name": "", "version": str(info.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    key: _signature_def(signature) for key, signature in info.signatures.items()
                },
            }
        },
    }
