"""TF Serving REST API against the app in-process: predictions equal the in-process SavedModel's.

Real held-out MNIST rows (and held-out OCR strips) go over HTTP in both request formats; the
answers must match the same version called in this process: classes and strings exactly,
floats to 1e-5.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.app.conftest import BROKEN_MODEL, SERVED_MODELS, ReferenceModels
from tests.outputs import assert_same_outputs


def _rows_to_columns(predictions: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in predictions] for key in predictions[0]}


def _inputs_for(name: str, heldout_digits, heldout_strips) -> list[np.ndarray]:
    if name == "ocr":
        return [images for images, _ in heldout_strips]
    return [heldout_digits[0]]


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_row_format_equals_in_process_model(
    name: str,
    client: httpx.Client,
    reference_models: ReferenceModels,
    heldout_digits,
    heldout_strips,
) -> None:
    for images in _inputs_for(name, heldout_digits, heldout_strips):
        response = client.post(f"/v1/models/{name}:predict", json={"instances": images.tolist()})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == len(images)
        assert_same_outputs(_rows_to_columns(predictions), reference_models.predict(name, images))


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_columnar_format_equals_in_process_model(
    name: str,
    client: httpx.Client,
    reference_models: ReferenceModels,
    heldout_digits,
    heldout_strips,
) -> None:
    for images in _inputs_for(name, heldout_digits, heldout_strips):
        response = client.post(
            f"/v1/models/{name}/versions/1:predict",
            json={"signature_name": "serving_default", "inputs": {"image": images.tolist()}},
        )
        assert response.status_code == 200, response.text
        assert_same_outputs(response.json()["outputs"], reference_models.predict(name, images))


def test_named_instances_and_bare_columns_are_accepted(
    client: httpx.Client, reference_models: ReferenceModels, heldout_digits
) -> None:
    images = heldout_digits[0][:2]
    expected = reference_models.predict("mnist", images)["class_id"].tolist()
    named = client.post(
        "/v1/models/mnist:predict", json={"instances": [{"image": row} for row in images.tolist()]}
    )
    bare = client.post("/v1/models/mnist:predict", json={"inputs": images.tolist()})
    assert [row["class_id"] for row in named.json()["predictions"]] == expected
    assert bare.json()["outputs"]["class_id"] == expected


def test_mnist_classifies_heldout_digits_over_http(client: httpx.Client, heldout_digits) -> None:
    """The published model, served, gets held-out digits right (one per class)."""
    images, labels = heldout_digits
    response = client.post("/v1/models/mnist:predict", json={"inputs": images.tolist()})
    outputs = response.json()["outputs"]
    assert np.mean(np.asarray(outputs["class_id"]) == labels) >= 0.8
    np.testing.assert_allclose(np.sum(outputs["probabilities"], axis=1), 1.0, atol=1e-4)


def test_b64_values_reach_a_float_model_as_a_clear_dtype_error(client: httpx.Client) -> None:
    payload = {"instances": [{"b64": base64.b64encode(b"\x89PNG").decode()}]}
    response = client.post("/v1/models/mnist:predict", json=payload)
    assert response.status_code == 400
    assert "expects dtype float32" in response.json()["error"]


def test_model_status_lists_versions_and_states(client: httpx.Client) -> None:
    for name in SERVED_MODELS:
        body = client.get(f"/v1/models/{name}").json()
        assert body["model_version_status"] == [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    one = client.get("/v1/models/mnist/versions/1")
    assert one.status_code == 200
    assert one.json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_failed_model_reports_its_load_error(client: httpx.Client) -> None:
    status = client.get(f"/v1/models/{BROKEN_MODEL}").json()["model_version_status"][0]
    assert status["state"] == "END"
    assert status["status"]["error_code"] == "UNKNOWN"
    assert "cannot load SavedModel" in status["status"]["error_message"]


@pytest.mark.parametrize(
    "path", ["/v1/models/{name}/metadata", "/v1/models/{name}/versions/1/metadata"]
)
def test_metadata_is_a_tf_serving_signature_def(path: str, client: httpx.Client) -> None:
    body = client.get(path.format(name="ocr")).json()
    assert body["model_spec"] == {"name": "ocr", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    image = signature["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "28", "-1", "1"]
    outputs = signature["outputs"]
    assert outputs["text"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in outputs["text"]["tensor_shape"]["dim"]] == ["-1"]
    assert outputs["probabilities"]["tensor_shape"]["dim"][2]["size"] == "11"


def test_openapi_lists_the_tf_serving_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/models/{name}:predict" in paths
    assert "/v1/models/{name}/versions/{version}/metadata" in paths
    assert client.get("/docs").status_code == 200
