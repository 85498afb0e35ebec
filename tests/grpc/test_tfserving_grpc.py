"""TensorFlow Serving's gRPC API with tensorflow-serving-api's own stubs: Predict by version,
label and default, typed and `tensor_content` tensors, output filters, model metadata and status."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.grpc.conftest import (
    API_HEADERS,
    API_METADATA,
    MODELS,
    GrpcServer,
    images,
    in_process,
)
from tests.outputs import assert_same_outputs


def predict(
    channel: grpc.Channel,
    name: str,
    image: np.ndarray,
    version: int | None = None,
    label: str | None = None,
    output_filter: tuple[str, ...] = (),
) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
    request.output_filter.extend(output_filter)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, metadata=API_METADATA, timeout=30)


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    return {key: tf.make_ndarray(tensor) for key, tensor in response.outputs.items()}


@pytest.mark.parametrize("name", MODELS)
def test_predict_equals_http_and_the_saved_model(
    grpc_server: GrpcServer, name: str, saved_models: dict[str, Any]
) -> None:
    image = images(name, rows=3, seed=7)
    with grpc_server.channel() as channel:
        response = predict(channel, name, image)
    assert response.model_spec.name == name
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got = outputs_of(response)
    assert_same_outputs(got, in_process(saved_models, name, image), rtol=1e-5)
    http = httpx.post(
        f"{grpc_server.url}/v1/models/{name}:predict",
        json={"inputs": image.tolist()},
        headers=API_HEADERS,
        timeout=30,
    )
    assert http.status_code == 200, http.text
    for key, value in http.json()["outputs"].items():
        if got[key].dtype.kind == "O":
            assert [v.decode() for v in got[key].tolist()] == value
        else:
            np.testing.assert_allclose(got[key], np.array(value), rtol=1e-5, atol=1e-5)


def test_predict_by_version_and_by_label(
    grpc_server: GrpcServer, saved_models: dict[str, Any]
) -> None:
    image = images("mnist", rows=2, seed=8)
    want = in_process(saved_models, "mnist", image)
    with grpc_server.channel() as channel:
        by_version = predict(channel, "mnist", image, version=1)
        by_label = predict(channel, "mnist", image, label="stable")
        filtered = predict(channel, "mnist", image, label="stable", output_filter=("class_id",))
    for response in (by_version, by_label):
        assert response.model_spec.version.value == 1
        assert_same_outputs(outputs_of(response), want, rtol=1e-5)
    assert list(filtered.outputs) == ["class_id"]
    assert tf.make_ndarray(filtered.outputs["class_id"]).tolist() == want["class_id"].tolist()


def test_predict_with_typed_values(grpc_server: GrpcServer, saved_models: dict[str, Any]) -> None:
    """`float_val` instead of `tensor_content` (what hand-built TensorProtos carry)."""
    image = images("deskew", rows=1, seed=9)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "deskew"
    tensor = request.inputs["image"]
    tensor.dtype = tf.float32.as_datatype_enum
    for size in image.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend(image.ravel().tolist())
    with grpc_server.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, metadata=API_METADATA, timeout=30)
    assert_same_outputs(outputs_of(response), in_process(saved_models, "deskew", image), rtol=1e-5)


def test_model_metadata_signature_def(grpc_server: GrpcServer) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "ocr"
    with grpc_server.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.GetModelMetadata(request, metadata=API_METADATA, timeout=10)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    image = signature.inputs["image"]
    assert image.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, 28, -1, 1]
    assert signature.outputs["text"].dtype == tf.string.as_datatype_enum
    assert set(signature.outputs) == {"text", "confidence", "probabilities"}
    http = httpx.get(f"{grpc_server.url}/v1/models/ocr/metadata", headers=API_HEADERS).json()
    http_inputs = http["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert http_inputs["image"]["name"] == image.name


def test_model_status(grpc_server: GrpcServer) -> None:
    with grpc_server.channel() as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for spec in ({"name": "mnist"}, {"name": "mnist", "version_label": "stable"}):
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = spec["name"]
            request.model_spec.version_label = spec.get("version_label", "")
            response = stub.GetModelStatus(request, metadata=API_METADATA, timeout=10)
            (status,) = response.model_version_status
            assert status.version == 1
            assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
            assert status.status.error_code == 0
