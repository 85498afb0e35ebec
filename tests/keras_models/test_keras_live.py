"""`model.keras` versions on a real `python -m app` over sockets: gRPC (TF Serving's
PredictionService and KServe v2 through tritonclient.grpc), tritonclient.http with binary
tensors, hot reload of a newly published `.keras` version, and a label pointing at it.

The server imports the custom-layer module itself (`--custom-objects-module`, found through
PYTHONPATH); every answer is compared with Keras' own call on the same inputs.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.grpc.conftest import wait_for_grpc
from tests.keras_models.conftest import (
    CUSTOM_MODULE,
    EMBEDDING_ROWS,
    KerasRepository,
    build_embed,
)
from tests.live_server import REPO_ROOT, LiveServer, free_port, live_server
from tests.outputs import FLOAT_TOLERANCE

POLL_INTERVAL_S = 0.3
RELOAD_TIMEOUT_S = 60.0
RNG = np.random.default_rng(5)


class Served:
    def __init__(self, live: LiveServer, grpc_port: int, repository: Path) -> None:
        self.live = live
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.repository = repository


@pytest.fixture(scope="module")
def served(
    keras_repository: KerasRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    repository = tmp_path_factory.mktemp("keras-live") / "models"
    repository.mkdir()
    for name in ("pair", "custom", "embed"):
        shutil.copytree(keras_repository.path / name, repository / name)
    grpc_port = free_port()
    args = [
        "--device",
        "cpu",
        "--grpc-port",
        str(grpc_port),
        "--poll-interval",
        str(POLL_INTERVAL_S),
        "--custom-objects-module",
        CUSTOM_MODULE,
    ]
    path = os.pathsep.join([str(keras_repository.module_dir), str(REPO_ROOT)])
    logs = tmp_path_factory.mktemp("keras-live-logs")
    # Live: gRPC clients and TF Serving's stubs connect to a port.
    with live_server(repository, logs, args, env={"PYTHONPATH": path}) as live:
        wait_for_grpc(f"127.0.0.1:{grpc_port}", 60.0, live)
        yield Served(live, grpc_port, repository)


def test_grpc_tfserving_predict_and_kserve_infer_match_keras(
    served: Served, keras_repository: KerasRepository
) -> None:
    inputs = {
        "features": RNG.random((2, 3), dtype=np.float32),
        "bias": RNG.random((2, 1), dtype=np.float32),
    }
    want = keras_repository.reference("pair", inputs)

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pair"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(served.grpc_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=30)
    got = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=FLOAT_TOLERANCE)

    client = triton_grpc.InferenceServerClient(served.grpc_address)
    try:
        tensors = []
        for name, value in inputs.items():
            tensor = triton_grpc.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        result = client.infer("pair", tensors)
        for name in want:
            np.testing.assert_allclose(result.as_numpy(name), want[name], atol=FLOAT_TOLERANCE)
        # An out-of-range Embedding index: INVALID_ARGUMENT naming the input and the range.
        tokens = np.array([[1, 2, 3, EMBEDDING_ROWS + 2]], np.int64)
        tensor = triton_grpc.InferInput("tokens", [1, 4], "INT64")
        tensor.set_data_from_numpy(tokens)
        with pytest.raises(Exception, match=r"'tokens'.*\[0, 10\)") as raised:
            client.infer("embed", [tensor])
        assert "StatusCode.INVALID_ARGUMENT" in str(raised.value)
    finally:
        client.close()


def test_tritonclient_http_binary_over_a_socket(
    served: Served, keras_repository: KerasRepository
) -> None:
    x = RNG.random((3, 2), dtype=np.float32)
    client = triton_http.InferenceServerClient(served.live.url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("x", [3, 2], "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result = client.infer(
            "custom", [tensor], outputs=[triton_http.InferRequestedOutput("shifted", True)]
        )
        want = keras_repository.reference("custom", {"x": x})["shifted"]
        np.testing.assert_allclose(result.as_numpy("shifted"), want, atol=FLOAT_TOLERANCE)
    finally:
        client.close()


def test_a_published_keras_version_is_hot_reloaded_and_labelled(served: Served) -> None:
    import keras

    keras.utils.set_random_seed(21)
    newer = build_embed()
    staging = served.repository / "embed" / ".tmp-2"
    staging.mkdir()
    newer.save(staging / "model.keras")
    (staging / "metadata.json").write_text('{"source": "keras test"}')
    staging.rename(served.repository / "embed" / "2")  # the atomic publish the trainer does

    tokens = np.array([[0, 4, 9, 2]], np.int64)
    want = np.asarray(newer(tokens, training=False))
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    with httpx.Client(base_url=served.live.url, timeout=30.0) as client:
        while True:
            answer = client.post("/v1/models/embed:predict", json={"instances": tokens.tolist()})
            assert answer.status_code == 200, answer.text
            if np.allclose(answer.json()["predictions"], want, atol=FLOAT_TOLERANCE):
                break
            assert time.monotonic() < deadline, (
                f"version 2 not served:\n{served.live.log()[-3000:]}"
            )
            time.sleep(POLL_INTERVAL_S)
        (served.repository / "config.yaml").write_text(
            "models:\n  embed:\n    version_policy: all\n    labels: {canary: 2}\n"
        )
        while True:
            answer = client.post(
                "/v1/models/embed/labels/canary:predict", json={"instances": tokens.tolist()}
            )
            if answer.status_code == 200:
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(POLL_INTERVAL_S)
        np.testing.assert_allclose(answer.json()["predictions"], want, atol=FLOAT_TOLERANCE)
        training = client.get("/v2/models/embed/versions/2/training").json()
        assert training["metadata"]["source"] == "keras test"
