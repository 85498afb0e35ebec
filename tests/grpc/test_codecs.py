"""The gRPC tensor codecs in-process: KServe v2 raw and typed tensors, TensorFlow TensorProtos,
and every bound they check before allocating (no server needed)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tritonclient.grpc import service_pb2
from tritonclient.utils import deserialize_bytes_tensor

from app.errors import InvalidInput, PayloadTooLarge
from app.limits import TensorLimits
from app.protocols.grpc.kserve_codec import decode_infer_request, encode_infer_response
from app.protocols.grpc.tensor_proto import fill_tensor, tensor_to_array

LIMITS = TensorLimits()


def raw_request(*tensors: tuple[str, str, tuple[int, ...], bytes]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="m")
    for name, datatype, shape, data in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(data)
    return request


def bytes_elements(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def test_raw_numeric_input_is_a_view_of_the_message_bytes() -> None:
    image = np.arange(6, dtype=np.float32).reshape(2, 3)
    decoded = decode_infer_request(raw_request(("x", "FP32", (2, 3), image.tobytes())), LIMITS)
    array = decoded.inputs["x"]
    assert array.tolist() == image.tolist() and array.dtype == np.float32
    assert not array.flags.owndata and not array.flags.writeable  # no copy was made
    assert decoded.raw_output and decoded.outputs is None


def test_raw_bytes_input_uses_the_binary_decoder_and_its_bounds() -> None:
    decoded = decode_infer_request(
        raw_request(
            ("s", "BYTES", (2,), bytes_elements(b"ab", b"")),
        ),
        LIMITS,
    )
    assert decoded.inputs["s"].tolist() == [b"ab", b""]
    with pytest.raises(InvalidInput, match="BYTES"):  # a million elements declared in 8 bytes
        decode_infer_request(raw_request(("s", "BYTES", (1_000_000,), b"\0" * 8)), LIMITS)
    with pytest.raises(InvalidInput, match="left over"):
        decode_infer_request(raw_request(("s", "BYTES", (1,), bytes_elements(b"a") + b"x")), LIMITS)


@pytest.mark.parametrize(
    ("change", "error", "text"),
    [
        (
            lambda r: r.raw_input_contents.append(b""),
            InvalidInput,
            "2 entries but the request has 1",
        ),
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), InvalidInput, "both contents"),
        (lambda r: r.inputs[0].shape.extend([1] * 9), InvalidInput, "rank 11"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 3), InvalidInput, "needs 36 bytes"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 1 << 40), PayloadTooLarge, "over the limit"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP128"), InvalidInput, "unknown datatype"),
        (
            lambda r: r.outputs.add(name="y") and r.outputs.add(name="y"),
            InvalidInput,
            "more than once",
        ),
    ],
)
def test_raw_request_errors(change: object, error: type[Exception], text: str) -> None:
    request = raw_request(("x", "FP32", (2, 3), b"\0" * 24))
    change(request)  # type: ignore[operator]
    with pytest.raises(error, match=text):
        decode_infer_request(request, LIMITS)


def test_typed_contents_are_counted_before_conversion() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype="INT8", shape=[3])
    tensor.contents.int_contents.extend([1, -2, 3])
    decoded = decode_infer_request(request, LIMITS)
    assert decoded.inputs["x"].dtype == np.int8 and decoded.inputs["x"].tolist() == [1, -2, 3]
    assert not decoded.raw_output
    tensor.contents.int_contents.append(4)
    with pytest.raises(InvalidInput, match="needs 3 elements but contents.int_contents has 4"):
        decode_infer_request(request, LIMITS)
    tensor.contents.int_contents[:] = [1, 2, 300]
    with pytest.raises(InvalidInput, match="do not fit INT8"):
        decode_infer_request(request, LIMITS)
    tensor.datatype = "FP16"
    with pytest.raises(InvalidInput, match="raw_input_contents"):
        decode_infer_request(request, LIMITS)


def test_timeout_parameter_in_microseconds() -> None:
    request = raw_request(("x", "FP32", (1,), b"\0" * 4))
    request.parameters["timeout"].int64_param = 250_000
    assert decode_infer_request(request, LIMITS).timeout_s == 0.25
    request.parameters["timeout"].string_param = "soon"
    with pytest.raises(InvalidInput, match="microseconds"):
        decode_infer_request(request, LIMITS)


def test_responses_raw_and_typed() -> None:
    outputs = {
        "text": np.array([b"12", b"7"], dtype=object),
        "p": np.array([[0.5, 0.25]], dtype=np.float16),
    }
    raw = decode_infer_request(raw_request(("x", "FP32", (1,), b"\0" * 4)), LIMITS)
    response = encode_infer_response("ocr", 2, "id-1", outputs, raw)
    assert (response.model_version, response.id) == ("2", "id-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("text", "BYTES", [2]),
        ("p", "FP16", [1, 2]),
    ]
    assert deserialize_bytes_tensor(response.raw_output_contents[0]).tolist() == [b"12", b"7"]
    assert np.frombuffer(response.raw_output_contents[1], "<f2").tolist() == [0.5, 0.25]

    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(0)
    request.outputs.add(name="p")
    typed = encode_infer_response("ocr", 2, "", outputs, decode_infer_request(request, LIMITS))
    (output,) = typed.outputs
    assert not typed.raw_output_contents
    assert output.datatype == "FP32"  # FP16 has no typed field: widened
    assert list(output.contents.fp32_contents) == [0.5, 0.25]


def test_tensor_proto_content_and_typed_values() -> None:
    image = np.random.default_rng(0).random((2, 3), dtype=np.float32)
    array = tensor_to_array("x", tf.make_tensor_proto(image), LIMITS, [])
    assert np.array_equal(array, image) and not array.flags.owndata
    strings = tensor_to_array("s", tf.make_tensor_proto([b"a", b"bc"]), LIMITS, [])
    assert strings.dtype == object and strings.tolist() == [b"a", b"bc"]
    half = tensor_to_array("h", tf.make_tensor_proto(np.array([1.5, -2], np.float16)), LIMITS, [])
    assert half.dtype == np.float16 and half.tolist() == [1.5, -2.0]
    filled = tensor_to_array("f", tf.make_tensor_proto(7.0, shape=[2, 2]), LIMITS, [])
    assert filled.tolist() == [[7.0, 7.0], [7.0, 7.0]]


def test_tensor_proto_errors() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=3)
    proto.float_val.extend([1.0, 2.0])
    with pytest.raises(InvalidInput, match="needs 3 values"):
        tensor_to_array("x", proto, LIMITS, [])
    proto.tensor_content = b"\0" * 8
    with pytest.raises(InvalidInput, match="needs 12 bytes"):
        tensor_to_array("x", proto, LIMITS, [])
    proto.dtype = types_pb2.DT_COMPLEX64
    with pytest.raises(InvalidInput, match="DT_COMPLEX64 is not supported"):
        tensor_to_array("x", proto, LIMITS, [])
    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    huge.tensor_shape.dim.add(size=1 << 40)
    huge.string_val.append(b"x")  # one value would fill 2**40 elements: refused first
    with pytest.raises(PayloadTooLarge):
        tensor_to_array("x", huge, LIMITS, [])
    unknown = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    unknown.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidInput, match="unknown rank"):
        tensor_to_array("x", unknown, LIMITS, [])


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([3, 1], dtype=np.int64),
        np.array([b"12", b""], dtype=object),
        np.array([True, False]),
    ],
)
def test_fill_tensor_round_trips_through_tensorflow(array: np.ndarray) -> None:
    proto = tensor_pb2.TensorProto()
    fill_tensor(proto, array)
    back = tf.make_ndarray(proto)
    assert back.shape == array.shape and back.tolist() == array.tolist()
