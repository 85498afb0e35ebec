"""The v2 wire format, byte for byte, against tritonclient's own request builder and parser.

No server here: `InferenceServerClient.generate_request_body` and `parse_response_body` are the
exact code the Triton HTTP client runs, so agreeing with them is agreeing with the client.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from app.errors import InvalidInput
from app.protocols.v2_codec import (
    V2_NUMERIC_DTYPES,
    InferRequest,
    RequestedOutput,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    v2_datatype,
)

RNG = np.random.default_rng(7)


def _triton_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _decode_triton(
    inputs: list[triton.InferInput], outputs: list[triton.InferRequestedOutput] | None = None
) -> InferRequest:
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs, outputs)
    return decode_infer_request(
        body, parse_header_length(None if header_length is None else str(header_length), len(body))
    )


@pytest.mark.parametrize("binary", [False, True])
def test_numeric_and_bytes_inputs_match_what_tritonclient_sent(binary: bool) -> None:
    image = RNG.random((2, 28, 5, 1), dtype=np.float32)
    counts = np.array([[1, -2, 3]], dtype=np.int64)
    words = np.array([b"seven", "n\u00e9uf".encode(), b""], dtype=object)
    decoded = _decode_triton(
        [
            _triton_input("image", image, "FP32", binary),
            _triton_input("counts", counts, "INT64", binary),
            _triton_input("words", words, "BYTES", binary),
        ]
    )
    np.testing.assert_array_equal(decoded.inputs["image"], image)
    assert decoded.inputs["image"].dtype == np.float32
    np.testing.assert_array_equal(decoded.inputs["counts"], counts)
    assert decoded.inputs["words"].tolist() == words.tolist()
    # tritonclient asks for every output in binary when it names none.
    assert decoded.outputs is None and decoded.binary_output is True
    if binary:  # binary tensors are views of the request body, not copies
        assert not decoded.inputs["image"].flags.owndata
        assert not decoded.inputs["image"].flags.writeable


@pytest.mark.parametrize("datatype", sorted(V2_NUMERIC_DTYPES))
@pytest.mark.parametrize("binary", [False, True])
def test_every_numeric_datatype_round_trips(datatype: str, binary: bool) -> None:
    dtype = V2_NUMERIC_DTYPES[datatype]
    values = (RNG.random((3, 4)) * 100).astype(dtype)
    decoded = _decode_triton([_triton_input("x", values, datatype, binary)])
    np.testing.assert_array_equal(decoded.inputs["x"], values)
    assert decoded.inputs["x"].dtype == dtype

    wanted = (RequestedOutput("x", binary),)
    encoded = encode_infer_response("m", 3, {"x": values}, InferRequest(None, {}, wanted, False))
    parsed = triton.InferenceServerClient.parse_response_body(
        encoded.body, header_length=encoded.header_length
    )
    np.testing.assert_array_equal(parsed.as_numpy("x"), values)
    assert parsed.get_response()["model_version"] == "3"


def test_response_honours_output_selection_and_per_output_encoding() -> None:
    outputs = {
        "probabilities": RNG.random((2, 10), dtype=np.float32),
        "class_id": np.array([3, 9], dtype=np.int64),
        "text": np.array([b"4071", b"2"], dtype=object),
    }
    request = _decode_triton(
        [_triton_input("image", np.zeros((2, 1), np.float32), "FP32", False)],
        [
            triton.InferRequestedOutput("text", binary_data=True),
            triton.InferRequestedOutput("probabilities", binary_data=False),
        ],
    )
    encoded = encode_infer_response("ocr", 1, outputs, request)
    assert encoded.header_length is not None
    header = orjson.loads(encoded.body[: encoded.header_length])
    assert [o["name"] for o in header["outputs"]] == ["text", "probabilities"]
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 + 4 + 1
    parsed = triton.InferenceServerClient.parse_response_body(
        encoded.body, header_length=encoded.header_length
    )
    assert parsed.as_numpy("text").tolist() == [b"4071", b"2"]
    np.testing.assert_array_equal(parsed.as_numpy("probabilities"), outputs["probabilities"])
    assert parsed.as_numpy("class_id") is None


def test_json_response_is_plain_json_with_strings_and_float32_round_trip() -> None:
    probabilities = RNG.random((1, 10), dtype=np.float32)
    request = InferRequest("req-1", {}, None, False)
    encoded = encode_infer_response(
        "ocr", 2, {"text": np.array([b"123"], dtype=object), "p": probabilities}, request
    )
    assert encoded.header_length is None and encoded.media_type == "application/json"
    body = orjson.loads(encoded.body)
    assert body["id"] == "req-1" and body["model_name"] == "ocr"
    assert body["outputs"][0] == {
        "name": "text",
        "datatype": "BYTES",
        "shape": [1],
        "data": ["123"],
    }
    returned = np.asarray(body["outputs"][1]["data"], dtype=np.float32).reshape(1, 10)
    np.testing.assert_array_equal(returned, probabilities)


def test_nested_json_data_is_accepted() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}
    )
    decoded = decode_infer_request(body)
    np.testing.assert_array_equal(decoded.inputs["x"], [[1, 2], [3, 4]])


def _json_input(**fields: object) -> bytes:
    tensor = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    tensor.update(fields)
    return orjson.dumps({"inputs": [tensor]})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[]", "JSON object"),
        (orjson.dumps({"inputs": []}), "non-empty 'inputs'"),
        (_json_input(datatype="FLOAT99"), "unknown datatype 'FLOAT99'"),
        (_json_input(shape=[3]), "needs 3 elements but 'data' has 2"),
        (_json_input(shape=[-1]), "non-negative integers"),
        (_json_input(data=["a", "b"]), "not a valid FP32 tensor"),
        (_json_input(datatype="UINT8", data=[1, 300]), "not a valid UINT8 tensor"),
        (_json_input(parameters={"binary_data_size": 8}), "both 'data' and binary_data_size"),
    ],
)
def test_malformed_json_requests_are_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(body)


def _binary_body(
    size: int, payload: bytes, shape: list[int] | None = None, datatype: str = "FP32"
) -> tuple[bytes, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape or [2],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    return header + payload, len(header)


@pytest.mark.parametrize(
    ("size", "payload", "shape", "datatype", "message"),
    [
        (8, b"\0" * 12, None, "FP32", "add up to 8 bytes but 12 bytes follow"),
        (8, b"\0" * 4, None, "FP32", "runs past the end of the body"),
        (12, b"\0" * 12, None, "FP32", "needs 8 bytes but binary_data_size is 12"),
        (6, b"\3\0\0\0ab", [1], "BYTES", "says 3 bytes but only 2 remain"),
        (9, b"\1\0\0\0a\0\0\0\0", [1], "BYTES", "left over"),
        (5, b"\1\0\0\0a", [2], "BYTES", "ends after 1 of 2 elements"),
    ],
)
def test_inconsistent_binary_sizes_are_invalid_input(
    size: int, payload: bytes, shape: list[int] | None, datatype: str, message: str
) -> None:
    body, header_length = _binary_body(size, payload, shape, datatype)
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(body, header_length)


def test_header_length_must_fit_the_body() -> None:
    with pytest.raises(InvalidInput, match="the body has 10 bytes"):
        parse_header_length("11", 10)
    with pytest.raises(InvalidInput, match="must be an integer"):
        parse_header_length("ten", 10)
    with pytest.raises(InvalidInput, match="no Inference-Header-Content-Length"):
        decode_infer_request(_binary_body(0, b"")[0], None)


def test_unknown_requested_output_and_classification_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        encode_infer_response(
            "mnist",
            1,
            {"class_id": np.zeros(1, np.int64)},
            InferRequest(None, {}, (RequestedOutput("nope", False),), False),
        )
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
        }
    )
    with pytest.raises(InvalidInput, match="classification extension"):
        decode_infer_request(body)


def test_dtype_names_map_to_v2_datatypes() -> None:
    assert v2_datatype("float32") == "FP32"
    assert v2_datatype("int64") == "INT64"
    assert v2_datatype("string") == "BYTES"
    assert v2_datatype("bool") == "BOOL"
    with pytest.raises(InvalidInput):
        v2_datatype("complex64")
