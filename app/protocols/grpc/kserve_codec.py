"""KServe v2 gRPC tensors (`inference.ModelInferRequest`/`Response`) <-> numpy arrays.

Pure functions over the generated messages, no gRPC calls, no TensorFlow. Two encodings exist:
- `raw_input_contents` / `raw_output_contents`: one bytes entry per tensor, little-endian,
  BYTES elements each a 4-byte length and the bytes (as in the HTTP binary extension). Inputs
  become `numpy.frombuffer` views of those bytes (no copy); BYTES are decoded by the HTTP
  binary decoder (`app.protocols.v2_codec`), with the same bounds, after the same
  declared-shape-against-bytes check (`app.limits`).
- typed `contents` (`fp32_contents`, `int64_contents`, ...): the element count is checked
  against the declared shape before numpy converts the list.

Outputs come back in the encoding the request used (raw when it sent raw inputs, as KServe's
own server does; tritonclient always sends raw).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from app.errors import InvalidInput
from app.limits import TensorLimits
from app.protocols import v2_codec
from app.protocols.v2_codec import BYTES, V2_DATATYPES, V2_NUMERIC_DTYPES

#: v2 datatype -> the `InferTensorContents` field that carries it (FP16: raw only).
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}
#: Triton's request parameter for a per-request timeout, in microseconds.
TIMEOUT_PARAMETER = "timeout"


@dataclass(frozen=True, slots=True)
class DecodedInfer:
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None  # None: every output of the model
    raw_output: bool
    timeout_s: float | None  # the request's own `timeout` parameter
    signature: str | None = None  # the `signature_name` parameter (None: serving_default)


def decode_infer_request(
    request: service_pb2.ModelInferRequest, limits: TensorLimits
) -> DecodedInfer:
    """The request's inputs as arrays, after every bound check; InvalidInput/PayloadTooLarge."""
    raw = request.raw_input_contents
    if not request.inputs:
        raise InvalidInput("the request needs at least one input")
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs: give every input's data there, or "
            "every input's contents"
        )
    inputs: dict[str, np.ndarray] = {}
    counts: list[int] = []
    for index, tensor in enumerate(request.inputs):
        name, shape, datatype = _tensor_header(tensor, limits)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears more than once")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input {name!r} has both contents and raw_input_contents")
            data = raw[index]
            itemsize = None if datatype == BYTES else V2_NUMERIC_DTYPES[datatype].itemsize
            count = limits.check_declared(name, shape, datatype, itemsize, len(data))
            counts.append(count)
            limits.check_request(counts)
            # The HTTP binary decoder: frombuffer views, bounded BYTES parsing.
            inputs[name] = v2_codec._array_from_binary(
                name, memoryview(data), 0, len(data), shape, datatype, count
            )
        else:
            count = limits.check_shape(name, shape)
            counts.append(count)
            limits.check_request(counts)
            inputs[name] = _array_from_contents(name, tensor.contents, shape, datatype, count)
    return DecodedInfer(
        inputs=inputs,
        outputs=_requested_outputs(request),
        raw_output=bool(raw),
        timeout_s=_timeout_parameter(request),
        signature=_signature_parameter(request),
    )


def _signature_parameter(request: service_pb2.ModelInferRequest) -> str | None:
    if v2_codec.SIGNATURE_PARAMETER not in request.parameters:
        return None
    parameter = request.parameters[v2_codec.SIGNATURE_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInput(f"parameter {v2_codec.SIGNATURE_PARAMETER!r} must be a string")
    return parameter.string_param or None


def _tensor_header(tensor: Any, limits: TensorLimits) -> tuple[str, tuple[int, ...], str]:
    name = tensor.name
    if not name:
        raise InvalidInput("each input needs a name")
    shape = limits.declared_shape(name, tensor.shape)
    datatype = tensor.datatype
    if datatype not in V2_DATATYPES:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype[:40]!r}; expected one of "
            f"{', '.join(V2_DATATYPES)}"
        )
    return name, shape, datatype


def _array_from_contents(
    name: str, contents: Any, shape: tuple[int, ...], datatype: str, count: int
) -> np.ndarray:
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input {name!r}: {datatype} tensors have no typed contents field; "
            "send them in raw_input_contents"
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} elements but "
            f"contents.{field} has {len(values)}"
        )
    if datatype == BYTES:
        array = np.empty(count, dtype=object)  # count was checked against the values present
        array[:] = list(values)
        return array.reshape(shape)
    try:
        array = np.array(values, dtype=V2_NUMERIC_DTYPES[datatype])
    except (OverflowError, ValueError) as exc:
        raise InvalidInput(
            f"input {name!r}: contents.{field} do not fit {datatype} ({exc})"
        ) from None
    return array.reshape(shape)


def _requested_outputs(request: service_pb2.ModelInferRequest) -> tuple[str, ...] | None:
    if not request.outputs:
        return None
    names: list[str] = []
    seen: set[str] = set()
    for output in request.outputs:
        if output.name in seen:
            raise InvalidInput(f"output {output.name[:80]!r} is requested more than once")
        if "classification" in output.parameters:
            raise InvalidInput(
                "the classification extension is not supported; request the "
                "'probabilities' output instead"
            )
        seen.add(output.name)
        names.append(output.name)
    return tuple(names)


def _timeout_parameter(request: service_pb2.ModelInferRequest) -> float | None:
    if TIMEOUT_PARAMETER not in request.parameters:
        return None
    parameter = request.parameters[TIMEOUT_PARAMETER]
    if parameter.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param") or (
        parameter.int64_param < 0
    ):
        raise InvalidInput("parameter 'timeout' must be a non-negative integer of microseconds")
    microseconds = parameter.int64_param or parameter.uint64_param
    return microseconds / 1e6 if microseconds else None


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def encode_infer_response(
    model_name: str,
    model_version: int,
    request_id: str,
    outputs: dict[str, np.ndarray],
    decoded: DecodedInfer,
) -> service_pb2.ModelInferResponse:
    """The response with the requested outputs (all, in the model's order, by default)."""
    response = service_pb2.ModelInferResponse(
        model_name=model_name, model_version=str(model_version), id=request_id
    )
    for name in decoded.outputs if decoded.outputs is not None else outputs:
        array = outputs[name]
        datatype = v2_codec.v2_datatype(array.dtype.name)
        if datatype == "FP16" and not decoded.raw_output:  # no typed field for FP16
            array, datatype = array.astype(np.float32), "FP32"
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if decoded.raw_output:
            response.raw_output_contents.append(_raw_bytes(array, datatype))
        else:
            _fill_contents(tensor.contents, array, datatype)
    return response


def _raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == BYTES:
        chunk, _ = v2_codec._binary_chunk(array, BYTES)  # the HTTP binary encoder
        return bytes(chunk)
    return np.ascontiguousarray(array, dtype=V2_NUMERIC_DTYPES[datatype]).tobytes()


def _fill_contents(contents: Any, array: np.ndarray, datatype: str) -> None:
    field = CONTENTS_FIELDS[datatype]
    values = array.reshape(-1).tolist()
    if datatype == BYTES:
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    getattr(contents, field).extend(values)
