"""KServe v2 against the app in-process: Triton's own request builder and response parser, then
raw JSON and the error table.

Answers through HTTP must equal the in-process SavedModel's on held-out MNIST rows and held-out
OCR strips: classes and strings exactly, floats to 1e-5, with binary data on and off. The bodies
are the ones `tritonclient.http.InferenceServerClient.infer` sends and parses (its public
`generate_request_body` and `parse_response_body`); tritonclient over a real socket is checked
against a live server in tests/signatures/test_clients_live.py and tests/security.
"""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from tests.app.conftest import BROKEN_MODEL, SERVED_MODELS, ReferenceModels
from tests.outputs import assert_same_outputs

OUTPUT_NAMES = {
    "mnist": ("class_id", "probabilities"),
    "deskew": ("angle", "scale"),
    "ocr": ("text", "confidence", "probabilities"),
}


def triton_infer(
    client: httpx.Client,
    name: str,
    inputs: list[triton.InferInput],
    outputs: list[triton.InferRequestedOutput] | None = None,
    request_id: str = "",
    model_version: str = "",
) -> triton.InferResult:
    """What `InferenceServerClient.infer` sends, posted in-process, parsed as it parses it."""
    body, json_size = triton.InferenceServerClient.generate_request_body(
        inputs, outputs, request_id=request_id
    )
    headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
    version = f"/versions/{model_version}" if model_version else ""
    response = client.post(f"/v2/models/{name}{version}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = response.headers.get("Inference-Header-Content-Length")
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=None if length is None else int(length)
    )


def _model_input(
    name: str,
    heldout_digits: tuple[np.ndarray, np.ndarray],
    heldout_strips: list[tuple[np.ndarray, list[str]]],
) -> np.ndarray:
    return heldout_strips[-1][0] if name == "ocr" else heldout_digits[0]


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    metadata = client.get("/v2").json()
    assert metadata["name"] == "kerasserve"
    assert "binary_tensor_data" in metadata["extensions"]
    assert metadata["device"]["mode"] == "cpu"


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_model_readiness_and_metadata(client: httpx.Client, name: str) -> None:
    assert client.get(f"/v2/models/{name}/ready").status_code == 200
    metadata = client.get(f"/v2/models/{name}").json()
    version = metadata["versions"][-1]
    assert client.get(f"/v2/models/{name}/versions/{version}/ready").status_code == 200
    assert client.get(f"/v2/models/{name}/versions/{version}").json()["name"] == name
    assert metadata["platform"] == "tensorflow_savedmodel"
    image_shape = [-1, 28, -1, 1] if name == "ocr" else [-1, 28, 28, 1]
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": image_shape}]
    outputs = {o["name"]: o["datatype"] for o in metadata["outputs"]}
    assert set(outputs) == set(OUTPUT_NAMES[name])
    if name == "ocr":
        assert outputs["text"] == "BYTES"
    if name == "mnist":
        assert outputs["class_id"] == "INT64"


def test_unknown_and_broken_models_are_not_ready(client: httpx.Client) -> None:
    assert client.get("/v2/models/no-such-model/ready").status_code != 200
    assert client.get(f"/v2/models/{BROKEN_MODEL}/ready").status_code != 200
    unknown = client.get("/v2/models/no-such-model")
    assert unknown.status_code != 200 and "no-such-model" in unknown.json()["error"]


@pytest.mark.parametrize("name", SERVED_MODELS)
@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)]
)
def test_tritonclient_infer_equals_in_process_model(
    client: httpx.Client,
    reference_models: ReferenceModels,
    heldout_digits: tuple[np.ndarray, np.ndarray],
    heldout_strips: list[tuple[np.ndarray, list[str]]],
    name: str,
    binary_in: bool,
    binary_out: bool,
) -> None:
    image = _model_input(name, heldout_digits, heldout_strips)
    tensor = triton.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image, binary_data=binary_in)
    requested = [triton.InferRequestedOutput(o, binary_data=binary_out) for o in OUTPUT_NAMES[name]]
    result = triton_infer(client, name, [tensor], outputs=requested, request_id="r-1")
    response = result.get_response()
    assert response["model_name"] == name and response["id"] == "r-1"
    for output in response["outputs"]:
        assert ("parameters" in output) == binary_out
    got = {o: result.as_numpy(o) for o in OUTPUT_NAMES[name]}
    assert_same_outputs(got, reference_models.predict(name, image))


def test_tritonclient_default_outputs_are_all_binary(
    client: httpx.Client,
    reference_models: ReferenceModels,
    heldout_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    image, labels = heldout_digits
    tensor = triton.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    result = triton_infer(client, "mnist", [tensor], model_version="1")
    expected = reference_models.predict("mnist", image)
    np.testing.assert_array_equal(result.as_numpy("class_id"), expected["class_id"])
    # The published model recognises most of these held-out digits.
    assert np.mean(result.as_numpy("class_id") == labels) >= 0.7


def test_raw_v2_json_infer(
    client: httpx.Client,
    reference_models: ReferenceModels,
    heldout_strips: list[tuple[np.ndarray, list[str]]],
) -> None:
    image, _ = heldout_strips[0]
    body = {
        "id": "strip",
        "inputs": [
            {
                "name": "image",
                "shape": list(image.shape),
                "datatype": "FP32",
                "data": image.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "text"}, {"name": "confidence"}],
    }
    response = client.post(
        "/v2/models/ocr/versions/1/infer",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Inference-Header-Content-Length" not in response.headers
    payload = response.json()
    assert payload["model_name"] == "ocr" and payload["model_version"] == "1"
    assert payload["id"] == "strip"
    text, confidence = payload["outputs"]
    expected = reference_models.predict("ocr", image)
    assert text == {
        "name": "text",
        "datatype": "BYTES",
        "shape": [1],
        "data": [expected["text"][0].decode()],
    }
    assert confidence["datatype"] == "FP32"
    assert confidence["data"][0] == pytest.approx(float(expected["confidence"][0]), abs=1e-5)


def test_raw_v2_binary_response_sets_header_length(
    client: httpx.Client, heldout_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    image = heldout_digits[0][:2]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(image.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": image.nbytes},
                }
            ],
            "outputs": [{"name": "class_id", "parameters": {"binary_data": True}}],
        }
    )
    response = client.post(
        "/v2/models/mnist/infer",
        content=header + image.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    described = orjson.loads(response.content[:length])
    assert described["outputs"][0]["parameters"]["binary_data_size"] == 16
    classes = np.frombuffer(response.content[length:], dtype="<i8")
    assert classes.shape == (2,)


def _image_input(**overrides: object) -> dict[str, object]:
    tensor: dict[str, object] = {
        "name": "image",
        "shape": [1, 28, 28, 1],
        "datatype": "FP32",
        "data": [0.0] * 784,
    }
    tensor.update(overrides)
    return tensor


ERROR_CASES = [
    (
        "/v2/models/mnist/infer",
        {"inputs": [_image_input(datatype="FLOAT99")]},
        400,
        "unknown datatype 'FLOAT99'",
    ),
    (
        "/v2/models/mnist/infer",
        {"inputs": [_image_input(shape=[1, 28, 28, 2])]},
        400,
        "needs 1568 elements but 'data' has 784",
    ),
    (
        "/v2/models/mnist/infer",
        {"inputs": [_image_input(shape=[1, 784])]},
        400,
        "expects shape [-1, 28, 28, 1]",
    ),
    (
        "/v2/models/mnist/infer",
        {"inputs": [_image_input(name="picture")]},
        400,
        "expects inputs ['image']",
    ),
    (
        "/v2/models/mnist/infer",
        {"inputs": [_image_input(datatype="BYTES", data=["x"] * 784)]},
        400,
        "expects dtype float32",
    ),
    (
        "/v2/models/mnist/infer",
        {"inputs": [_image_input()], "outputs": [{"name": "nope"}]},
        400,
        "unknown output 'nope'",
    ),
    ("/v2/models/nope/infer", {"inputs": [_image_input()]}, 404, "nope"),
    ("/v2/models/mnist/versions/99/infer", {"inputs": [_image_input()]}, 404, "99"),
    ("/v2/models/mnist/versions/x/infer", {"inputs": [_image_input()]}, 400, "'x'"),
    ("/v2/models/broken/infer", {"inputs": [_image_input()]}, 503, "broken"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), ERROR_CASES)
def test_json_errors_name_the_problem_and_server_stays_up(
    client: httpx.Client, path: str, body: dict[str, object], status: int, message: str
) -> None:
    response = client.post(path, content=orjson.dumps(body))
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    ("payload", "size", "message"),
    [
        (b"\0" * 3136, 3000, "needs 3136 bytes but binary_data_size is 3000"),
        (b"\0" * 3000, 3136, "runs past the end of the body"),
        (b"\0" * 3200, 3136, "add up to 3136 bytes but 3200 bytes follow"),
    ],
)
def test_binary_sizes_inconsistent_with_body_are_400(
    client: httpx.Client, payload: bytes, size: int, message: str
) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 28, 28, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    response = client.post(
        "/v2/models/mnist/infer",
        content=header + payload,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200


def test_malformed_json_and_bad_header_length_are_400(client: httpx.Client) -> None:
    response = client.post("/v2/models/mnist/infer", content=b'{"inputs": [')
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]
    response = client.post(
        "/v2/models/mnist/infer", content=b"{}", headers={"Inference-Header-Content-Length": "500"}
    )
    assert response.status_code == 400
    assert "Inference-Header-Content-Length is 500" in response.json()["error"]


def test_metadata_errors(client: httpx.Client) -> None:
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/mnist/versions/42").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404
    broken = client.get(f"/v2/models/{BROKEN_MODEL}/ready")
    assert broken.status_code == 503 and BROKEN_MODEL in broken.json()["error"]
    assert client.get("/v2/health/live").json() == {"live": True}
