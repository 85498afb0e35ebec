"""TensorFlow's `TensorProto` (TF Serving's gRPC tensors) <-> numpy arrays, without TensorFlow.

Only the generated protobuf classes are used (`tf.make_ndarray` would run TensorFlow code on the
request path and copies). Inputs:
- `tensor_content` (what `tf.make_tensor_proto` writes for numeric arrays): a
  `numpy.frombuffer` view of the bytes, after checking the declared shape against their size;
- typed fields (`float_val`, `int64_val`, `string_val`, `half_val`, ...): exactly one value per
  element, or one value for the whole tensor (TensorFlow fills a tensor from a single value),
  after the declared shape passed the tensor limits.
Outputs: numbers as `tensor_content`, strings as `string_val`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from app.errors import InvalidInput
from app.limits import TensorLimits

DataType = types_pb2.DataType

#: DataType -> little-endian numpy dtype, for the numeric types a model here can take.
NUMPY_DTYPES: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype("<f4"),
    types_pb2.DT_DOUBLE: np.dtype("<f8"),
    types_pb2.DT_HALF: np.dtype("<f2"),
    types_pb2.DT_INT8: np.dtype("i1"),
    types_pb2.DT_INT16: np.dtype("<i2"),
    types_pb2.DT_INT32: np.dtype("<i4"),
    types_pb2.DT_INT64: np.dtype("<i8"),
    types_pb2.DT_UINT8: np.dtype("u1"),
    types_pb2.DT_UINT16: np.dtype("<u2"),
    types_pb2.DT_UINT32: np.dtype("<u4"),
    types_pb2.DT_UINT64: np.dtype("<u8"),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
}
#: DataType -> the typed field that carries its values (as TensorFlow's tensor.proto says).
VALUE_FIELDS: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",  # the float16 bit patterns, one per int32
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}
_DATATYPE_OF: dict[np.dtype, int] = {dtype: code for code, dtype in NUMPY_DTYPES.items()}


def _dtype_name(code: int) -> str:
    try:
        return DataType.Name(code)
    except ValueError:
        return str(code)


def tensor_to_array(
    name: str, tensor: tensor_pb2.TensorProto, limits: TensorLimits, counts: list[int]
) -> np.ndarray:
    """One input as an array; `counts` collects element counts for the per-request bound."""
    shape_proto = tensor.tensor_shape
    if shape_proto.unknown_rank:
        raise InvalidInput(f"input {name!r} has an unknown rank; give its shape")
    limits.check_rank(name, len(shape_proto.dim))  # before the sizes are read out of the dims
    shape = limits.declared_shape(name, [dim.size for dim in shape_proto.dim])
    dtype_code = tensor.dtype
    if dtype_code not in VALUE_FIELDS:
        raise InvalidInput(
            f"input {name!r}: dtype {_dtype_name(dtype_code)} is not supported "
            f"(supported: {', '.join(DataType.Name(c) for c in VALUE_FIELDS)})"
        )
    if dtype_code != types_pb2.DT_STRING and tensor.tensor_content:
        content = tensor.tensor_content
        dtype = NUMPY_DTYPES[dtype_code]
        count = limits.check_declared(
            name, shape, _dtype_name(dtype_code), dtype.itemsize, len(content)
        )
        counts.append(count)
        limits.check_request(counts)
        return np.frombuffer(content, dtype=dtype, count=count).reshape(shape)
    count = limits.check_shape(name, shape)
    counts.append(count)
    limits.check_request(counts)
    field = VALUE_FIELDS[dtype_code]
    values = getattr(tensor, field)
    if len(values) not in (count, 1) or (not values and count):
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} values (or one "
            f"for every element) but {field} has {len(values)}"
        )
    return _typed_array(name, values, dtype_code, count).reshape(shape)


def _typed_array(name: str, values: Any, dtype_code: int, count: int) -> np.ndarray:
    if dtype_code == types_pb2.DT_STRING:
        array = np.empty(count, dtype=object)
        array[:] = list(values) if len(values) == count else values[0]
        return array
    dtype = NUMPY_DTYPES[dtype_code]
    try:
        if dtype_code == types_pb2.DT_HALF:
            parsed = np.array(values, dtype=np.uint16).view(np.float16)
        else:
            parsed = np.array(values, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise InvalidInput(
            f"input {name!r}: values do not fit {_dtype_name(dtype_code)} ({exc})"
        ) from None
    return parsed if parsed.size == count else np.full(count, parsed[0], dtype=parsed.dtype)


def fill_tensor(tensor: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """Write `array` into `tensor` (an entry of a response map, filled in place)."""
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    if array.dtype.kind in "OSU":
        tensor.dtype = types_pb2.DT_STRING
        tensor.string_val.extend(
            value if isinstance(value, bytes) else str(value).encode("utf-8")
            for value in array.reshape(-1).tolist()
        )
        return
    dtype_code = _DATATYPE_OF.get(array.dtype.newbyteorder("<"))
    if dtype_code is None:
        raise InvalidInput(f"output dtype {array.dtype.name} has no TensorFlow DataType here")
    tensor.dtype = dtype_code
    tensor.tensor_content = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[dtype_code]).tobytes()
