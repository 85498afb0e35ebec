"""KServe v2 (Open Inference Protocol) tensors <-> numpy arrays: pure functions, no HTTP.

Kept apart from the routes so that the wire format can be tested byte for byte and so that the
route handler stays a thin "read body, decode, infer, encode" sequence.

Two encodings exist for every tensor:
- JSON: `{"name", "shape", "datatype", "data": [...]}` with `data` flat (or nested) in row-major
  order. Numeric data is turned into an array by one `numpy.asarray` call and written back by
  orjson's native numpy serialisation, so no Python loop ever runs per element of a numeric tensor.
- The binary tensor data extension: the JSON header is followed by raw little-endian tensor bytes;
  the header's length travels in the `Inference-Header-Content-Length` HTTP header and each
  binary input says its size in `parameters.binary_data_size`. Inputs are decoded with
  `numpy.frombuffer`, i.e. as read-only *views* of the request body (no copy). BYTES tensors are a
  sequence of elements, each a 4-byte little-endian length followed by that many bytes.

Every declared shape is checked against `app.limits.TensorLimits` and against the data that
carries it before anything is allocated (a BYTES tensor can never declare more elements than
its bytes could hold), and requested outputs must be distinct.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.errors import InvalidInput
from app.limits import DEFAULT_LIMITS, TensorLimits
from app.protocols.large_json import loads_large

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
BYTES = "BYTES"
#: The request parameter that picks a signature other than `serving_default` (an extension).
SIGNATURE_PARAMETER = "signature_name"

#: v2 datatype -> numpy dtype (little-endian, the byte order of the binary extension).
V2_NUMERIC_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
V2_DATATYPES: tuple[str, ...] = (*V2_NUMERIC_DTYPES, BYTES)

# dtype *names* (numpy's and TensorFlow's spellings) -> v2 datatype; used for metadata and outputs.
_NAME_TO_V2: dict[str, str] = {dtype.name: v2 for v2, dtype in V2_NUMERIC_DTYPES.items()}
_NAME_TO_V2.update(
    {
        "half": "FP16",
        "float": "FP32",
        "double": "FP64",
        "string": BYTES,
        "object": BYTES,
        "bytes": BYTES,
        "str": BYTES,
    }
)

_DTYPE_TO_V2: dict[np.dtype, str] = {dtype: v2 for v2, dtype in V2_NUMERIC_DTYPES.items()}
_LENGTH_PREFIX = struct.Struct("<I")
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One entry of the request's `outputs` list: which output, and whether to send it binary."""

    name: str
    binary: bool


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded v2 inference request."""

    id: str | None
    inputs: dict[str, np.ndarray]
    #: None means "every output of the model", each in the request-level encoding.
    outputs: tuple[RequestedOutput, ...] | None
    #: request-level `parameters.binary_data_output`: the default encoding of outputs.
    binary_output: bool
    #: request-level `parameters.signature_name`: None for `serving_default`.
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """Body bytes and, for a binary body, the length of its JSON header."""

    body: bytes
    header_length: int | None

    @property
    def media_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


def v2_datatype(dtype_name: str) -> str:
    """Map a numpy or TensorFlow dtype name (`float32`, `int64`, `string`) to its v2 datatype."""
    try:
        return _NAME_TO_V2[dtype_name]
    except KeyError:
        raise InvalidInput(f"dtype {dtype_name!r} has no KServe v2 datatype") from None


def _array_datatype(array: np.ndarray) -> str:
    # Keyed by dtype, not by name: `dtype.name` is computed in Python on every call.
    datatype = _DTYPE_TO_V2.get(array.dtype)
    if datatype is not None:
        return datatype
    if array.dtype.kind in "OSU":
        return BYTES
    return v2_datatype(array.dtype.name)


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """Validate the `Inference-Header-Content-Length` header against the body it describes."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise InvalidInput(
            f"{HEADER_LENGTH_HEADER} must be an integer, got {value[:40]!r}"
        ) from None
    if not 0 < length <= body_length:
        raise InvalidInput(
            f"{HEADER_LENGTH_HEADER} is {length} but the body has {body_length} bytes"
        )
    return length


def decode_infer_request(
    body: bytes,
    header_length: int | None = None,
    limits: TensorLimits = DEFAULT_LIMITS,
    sliced: bool = False,
) -> InferRequest:
    """Decode a v2 inference request body (JSON, or JSON header + binary tensor data).

    `sliced`: parse numeric `data` in slices (`app.protocols.large_json`), for big bodies
    decoded off the event loop.
    """
    view = memoryview(body)
    header = _load_json(view if header_length is None else view[:header_length], sliced)
    if not isinstance(header, dict):
        raise InvalidInput("the request body must be a JSON object with an 'inputs' list")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")

    cursor = header_length or 0
    inputs: dict[str, np.ndarray] = {}
    counts: list[int] = []
    for raw in raw_inputs:
        name, shape, datatype, parameters = _tensor_header(raw, limits)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears more than once")
        binary_size = parameters.get("binary_data_size")
        if binary_size is None:
            if "data" not in raw:
                raise InvalidInput(
                    f"input {name!r} has neither 'data' nor parameters.binary_data_size"
                )
            count = limits.check_shape(name, shape)
            counts.append(count)
            limits.check_request(counts)
            inputs[name] = _array_from_json(name, raw["data"], shape, datatype, count)
            continue
        if "data" in raw:
            raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size")
        if header_length is None:
            raise InvalidInput(
                f"input {name!r} has binary_data_size but the request has no "
                f"{HEADER_LENGTH_HEADER} header"
            )
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
            raise InvalidInput(
                f"input {name!r}: binary_data_size must be a non-negative "
                f"integer, got {binary_size!r}"
            )
        if cursor + binary_size > len(body):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {binary_size} runs past the end of the body "
                f"({len(body) - cursor} bytes left after byte {cursor})"
            )
        itemsize = None if datatype == BYTES else V2_NUMERIC_DTYPES[datatype].itemsize
        count = limits.check_declared(name, shape, datatype, itemsize, binary_size)
        counts.append(count)
        limits.check_request(counts)
        inputs[name] = _array_from_binary(name, view, cursor, binary_size, shape, datatype, count)
        cursor += binary_size
    if header_length is not None and cursor != len(body):
        raise InvalidInput(
            f"the binary_data_size values add up to {cursor - header_length} bytes but "
            f"{len(body) - header_length} bytes follow the JSON header"
        )

    parameters = _parameters(header, "request")
    return InferRequest(
        id=_optional_id(header.get("id")),
        inputs=inputs,
        outputs=_requested_outputs(header),
        binary_output=_flag(parameters, "binary_data_output"),
        signature=signature_parameter(parameters.get(SIGNATURE_PARAMETER)),
    )


def signature_parameter(value: Any) -> str | None:
    """The `signature_name` request parameter: a string, None (or "") for the default."""
    if value is not None and not isinstance(value, str):
        raise InvalidInput(
            f"parameter {SIGNATURE_PARAMETER!r} must be a string, got {value!r}"[:200]
        )
    return value or None


def _load_json(data: memoryview, sliced: bool = False) -> Any:
    try:
        return loads_large(data) if sliced else orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None


def _parameters(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    parameters = obj.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of the {where} must be an object")
    return parameters


def _flag(parameters: Mapping[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} must be true or false, got {value!r}")
    return value


def _optional_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"'id' must be a string, got {value!r}")


def _tensor_header(
    raw: Any, limits: TensorLimits
) -> tuple[str, tuple[int, ...], str, Mapping[str, Any]]:
    """Validate the name / shape / datatype / parameters of one input tensor."""
    if not isinstance(raw, dict):
        raise InvalidInput("each input must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("each input needs a 'name' string")
    shape = raw.get("shape")
    if isinstance(shape, list) and len(shape) > limits.max_rank:  # before a loop over it
        raise InvalidInput(f"input {name!r} has rank {len(shape)}; the limit is {limits.max_rank}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(
            f"input {name!r}: 'shape' must be a list of non-negative integers, got "
            f"{str(shape)[:80]}"
        )
    datatype = raw.get("datatype")
    if datatype not in V2_DATATYPES:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r}; expected one of "
            f"{', '.join(V2_DATATYPES)}"
        )
    return name, tuple(shape), datatype, _parameters(raw, f"input {name!r}")


def _array_from_json(
    name: str, data: Any, shape: tuple[int, ...], datatype: str, count: int
) -> np.ndarray:
    # A flat list (the usual form) is counted before numpy converts it.
    if (
        isinstance(data, list)
        and len(data) != count
        and (not data or not isinstance(data[0], list))
    ):
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} elements but 'data' has {len(data)}"
        )
    if datatype == BYTES:
        return _bytes_array_from_json(name, data, shape, count)
    dtype = V2_NUMERIC_DTYPES[datatype]
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"input {name!r}: 'data' is not a valid {datatype} tensor ({exc})"
        ) from None
    if array.size != count:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} elements but "
            f"'data' has {array.size}"
        )
    return array.reshape(shape)


def _bytes_array_from_json(name: str, data: Any, shape: tuple[int, ...], count: int) -> np.ndarray:
    flat = np.array(data, dtype=object).reshape(-1) if isinstance(data, list) else None
    if flat is None or flat.size != count:
        got = "no list" if flat is None else f"{flat.size} elements"
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} BYTES elements but 'data' has {got}"
        )
    for index, element in enumerate(flat):
        if isinstance(element, str):
            flat[index] = element.encode("utf-8")
        elif not isinstance(element, bytes):
            raise InvalidInput(
                f"input {name!r}: BYTES elements must be strings, got {type(element).__name__}"
            )
    return flat.reshape(shape)


def _array_from_binary(
    name: str,
    view: memoryview,
    offset: int,
    size: int,
    shape: tuple[int, ...],
    datatype: str,
    count: int,
) -> np.ndarray:
    """`count` was checked against `size` by `TensorLimits.check_declared`."""
    if datatype == BYTES:
        return _bytes_array_from_binary(name, view[offset : offset + size], shape, count)
    dtype = V2_NUMERIC_DTYPES[datatype]
    # A view of the request body: no copy of the tensor data is made here.
    return np.frombuffer(view, dtype=dtype, count=count, offset=offset).reshape(shape)


def _bytes_array_from_binary(
    name: str, segment: memoryview, shape: tuple[int, ...], count: int
) -> np.ndarray:
    flat = np.empty(count, dtype=object)
    position = 0
    for index in range(count):
        if position + 4 > len(segment):
            raise InvalidInput(f"input {name!r}: BYTES data ends after {index} of {count} elements")
        (length,) = _LENGTH_PREFIX.unpack_from(segment, position)
        position += 4
        if position + length > len(segment):
            raise InvalidInput(
                f"input {name!r}: BYTES element {index} says {length} bytes but "
                f"only {len(segment) - position} remain"
            )
        flat[index] = bytes(segment[position : position + length])
        position += length
    if position != len(segment):
        raise InvalidInput(
            f"input {name!r}: {len(segment) - position} bytes left over after "
            f"{count} BYTES elements"
        )
    return flat.reshape(shape)


def _requested_outputs(header: Mapping[str, Any]) -> tuple[RequestedOutput, ...] | None:
    raw_outputs = header.get("outputs")
    if raw_outputs is None:
        return None
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list of {name, parameters} objects")
    default_binary = _flag(_parameters(header, "request"), "binary_data_output")
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for raw in raw_outputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInput("each requested output needs a 'name' string")
        # One output named 100,000 times turned a 1.4 MB request into a 53 MB response.
        if raw["name"] in seen:
            raise InvalidInput(f"output {raw['name'][:80]!r} is requested more than once")
        seen.add(raw["name"])
        parameters = _parameters(raw, f"output {raw['name']!r}")
        if parameters.get("classification"):
            raise InvalidInput(
                "the classification extension is not supported; request the "
                "'probabilities' output instead"
            )
        binary = parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise InvalidInput(f"output {raw['name']!r}: binary_data must be true or false")
        requested.append(RequestedOutput(raw["name"], binary))
    return tuple(requested)


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def encode_infer_response(
    model_name: str,
    model_version: int | str,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
) -> EncodedResponse:
    """Encode the model's outputs as the request asked (selection, JSON or binary per output)."""
    selection = request.outputs
    if selection is None:
        selection = tuple(RequestedOutput(name, request.binary_output) for name in outputs)
    tensors: list[dict[str, Any]] = []
    buffers: list[Any] = []
    for wanted in selection:
        array = outputs.get(wanted.name)
        if array is None:
            raise InvalidInput(
                f"unknown output {wanted.name!r}; model {model_name!r} has "
                f"outputs {sorted(outputs)}"
            )
        datatype = _array_datatype(array)
        tensor: dict[str, Any] = {
            "name": wanted.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if wanted.binary:
            chunk, size = _binary_chunk(array, datatype)
            buffers.append(chunk)
            tensor["parameters"] = {"binary_data_size": size}
        else:
            tensor["data"] = _json_data(array, datatype)
        tensors.append(tensor)

    response: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = tensors
    header = orjson.dumps(response, option=_JSON_OPTIONS)
    if not buffers:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *buffers]), len(header))


def _json_data(array: np.ndarray, datatype: str) -> Any:
    if datatype == BYTES:
        return [_as_text(element) for element in array.reshape(-1).tolist()]
    # orjson writes a C-contiguous numpy array natively (float32 in its shortest round-trip form).
    return np.ascontiguousarray(array).reshape(-1)


def _as_text(element: Any) -> str:
    return element.decode("utf-8", "replace") if isinstance(element, bytes) else str(element)


def _binary_chunk(array: np.ndarray, datatype: str) -> tuple[Any, int]:
    if datatype == BYTES:
        parts: list[bytes] = []
        for element in array.reshape(-1).tolist():
            data = element if isinstance(element, bytes) else str(element).encode("utf-8")
            parts.append(_LENGTH_PREFIX.pack(len(data)))
            parts.append(data)
        chunk = b"".join(parts)
        return chunk, len(chunk)
    little_endian = np.ascontiguousarray(array, dtype=V2_NUMERIC_DTYPES[datatype])
    raw = little_endian.reshape(-1).view(np.uint8)
    return raw, raw.nbytes
