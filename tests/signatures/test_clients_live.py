"""Every signature through the clients that need a socket, on a real server: tritonclient.http
(binary tensors), tritonclient.grpc (KServe v2 gRPC) and TF Serving's gRPC stubs (Predict,
GetModelMetadata, Classify, Regress)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.signatures.conftest import Live

X = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
FACTOR = np.array([2.0, -0.5], np.float32)
EXPECTED = X * FACTOR[:, None]


def _scale_inputs(module: object) -> list:
    x = module.InferInput("x", list(X.shape), "FP32")  # type: ignore[attr-defined]
    factor = module.InferInput("factor", list(FACTOR.shape), "FP32")  # type: ignore[attr-defined]
    if module is triton_http:
        x.set_data_from_numpy(X, binary_data=True)
        factor.set_data_from_numpy(FACTOR, binary_data=True)
    else:
        x.set_data_from_numpy(X)
        factor.set_data_from_numpy(FACTOR)
    return [x, factor]


def test_tritonclient_http_binary_with_a_signature(live: Live) -> None:
    client = triton_http.InferenceServerClient(live.host_port)
    try:
        result = client.infer(
            "multi",
            _scale_inputs(triton_http),
            outputs=[triton_http.InferRequestedOutput("scaled", binary_data=True)],
            parameters={"signature_name": "scale"},
        )
        np.testing.assert_array_equal(result.as_numpy("scaled"), EXPECTED)
        words = triton_http.InferInput("text", [2], "BYTES")
        words.set_data_from_numpy(np.array([b"ab", b"xyz"], dtype=object), binary_data=True)
        measured = client.infer("multi", [words], parameters={"signature_name": "measure"})
        assert measured.as_numpy("length").tolist() == [2, 3]
        assert measured.as_numpy("shout").tolist() == [b"AB", b"XYZ"]
        metadata = client.get_model_metadata("multi")
        assert set(metadata["signatures"]) == {"serving_default", "scale", "measure"}
        with pytest.raises(triton_http.InferenceServerException) as caught:
            client.infer("multi", _scale_inputs(triton_http), parameters={"signature_name": "x"})
        assert "'x' not found" in str(caught.value) and "'scale'" in str(caught.value)
    finally:
        client.close()


def test_tritonclient_grpc_with_a_signature(live: Live) -> None:
    client = triton_grpc.InferenceServerClient(live.grpc_address)
    try:
        result = client.infer(
            "multi", _scale_inputs(triton_grpc), parameters={"signature_name": "scale"}
        )
        np.testing.assert_array_equal(result.as_numpy("scaled"), EXPECTED)
        default = triton_grpc.InferInput("x", [2, 3], "FP32")
        default.set_data_from_numpy(X)
        np.testing.assert_allclose(client.infer("multi", [default]).as_numpy("total"), [6, 15])
        with pytest.raises(triton_grpc.InferenceServerException) as caught:
            client.infer("multi", _scale_inputs(triton_grpc), parameters={"signature_name": "x"})
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "signatures ['serving_default', 'measure', 'scale']" in caught.value.message()
    finally:
        client.close()


def _stub(live: Live) -> tuple[grpc.Channel, prediction_service_pb2_grpc.PredictionServiceStub]:
    channel = grpc.insecure_channel(live.grpc_address)
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _example(**features: float) -> example_pb2.Example:
    example = example_pb2.Example()
    for key, value in features.items():
        if isinstance(value, int):
            example.features.feature[key].int64_list.value.append(value)
        else:
            example.features.feature[key].float_list.value.append(value)
    return example


def test_tf_serving_stubs_predict_metadata_classify_regress(live: Live) -> None:
    import tensorflow as tf

    channel, stub = _stub(live)
    with channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "multi"
        request.model_spec.signature_name = "scale"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
        request.inputs["factor"].CopyFrom(tf.make_tensor_proto(FACTOR))
        response = stub.Predict(request, timeout=30)
        assert response.model_spec.signature_name == "scale"
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["scaled"]), EXPECTED)

        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "half_plus_two"
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(metadata, timeout=30).metadata["signature_def"].Unpack(signature_map)
        methods = {k: v.method_name for k, v in signature_map.signature_def.items()}
        assert methods["serving_default"] == "tensorflow/serving/predict"
        assert methods["classify_x_to_y"] == "tensorflow/serving/classify"
        assert methods["regress_x2_to_y3"] == "tensorflow/serving/regress"
        assert len(methods) == 6

        # TF Serving's half_plus_two answers over gRPC: 0.5 * 20 + 2 and 0.5 * 80 + 2.
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "half_plus_two"
        classify.model_spec.signature_name = "classify_x_to_y"
        classify.input.example_list.examples.extend([_example(x=20.0), _example(x=10.0)])
        classified = stub.Classify(classify, timeout=30)
        assert [
            [(c.label, c.score) for c in r.classes] for r in classified.result.classifications
        ] == [
            [("", 12.0)],
            [("", 7.0)],
        ]
        assert classified.model_spec.version.value == 1

        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "half_plus_two"
        regress.model_spec.signature_name = "regress_with_offset"
        with_context = regress.input.example_list_with_context
        with_context.context.CopyFrom(_example(offset=100))
        with_context.examples.extend([_example(x=80.0), _example(x=0.0)])
        regressed = stub.Regress(regress, timeout=30)
        assert [r.value for r in regressed.result.regressions] == [142.0, 102.0]

        labelled = classification_pb2.ClassificationRequest()
        labelled.model_spec.name = "half_plus_two"
        labelled.model_spec.signature_name = "classify_sign"
        labelled.input.example_list.examples.append(_example(x=-4.0))
        classes = stub.Classify(labelled, timeout=30).result.classifications[0].classes
        assert [c.label for c in classes] == ["negative", "positive"]
        assert classes[1].score == pytest.approx(1 / (1 + np.exp(0.0)), rel=1e-6)


def test_tf_serving_stubs_refuse_what_a_model_cannot_do(live: Live) -> None:
    channel, stub = _stub(live)
    with channel:
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "multi"
        regress.input.example_list.examples.append(_example(x=1.0))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Regress(regress, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the model has no regress signature" in caught.value.details()

        empty = classification_pb2.ClassificationRequest()
        empty.model_spec.name = "half_plus_two"
        empty.model_spec.signature_name = "classify_x_to_y"
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(empty, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "example_list" in caught.value.details()

        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = "multi"
        predict.model_spec.signature_name = "missing"
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'missing' not found" in caught.value.details()
