"""KServe v2 over gRPC with Triton's client (and KServe's own): the answers of HTTP and of the
SavedModel itself, raw and typed tensors, requested outputs, metadata and configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.grpc.conftest import (
    API_HEADERS,
    API_METADATA,
    MODELS,
    GrpcServer,
    images,
    in_process,
    post_v2_json,
)
from tests.live_server import REPO_ROOT
from tests.outputs import assert_same_outputs

HEADERS = dict(API_METADATA)


def triton_infer(
    client: triton_grpc.InferenceServerClient,
    name: str,
    image: np.ndarray,
    outputs: list[str] | None = None,
) -> Any:
    tensor = triton_grpc.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    requested = None if outputs is None else [triton_grpc.InferRequestedOutput(o) for o in outputs]
    return client.infer(
        name, [tensor], outputs=requested, headers=HEADERS, request_id="grpc-test-1"
    )


def http_infer(server: GrpcServer, name: str, image: np.ndarray) -> dict[str, np.ndarray]:
    response = post_v2_json(server, name, image)
    assert response.status_code == 200, response.text
    result = {}
    for output in response.json()["outputs"]:
        data = output["data"]
        if output["datatype"] == "BYTES":
            result[output["name"]] = np.array([d.encode() for d in data], dtype=object).reshape(
                output["shape"]
            )
        else:
            result[output["name"]] = np.array(data).reshape(output["shape"])
    return result


def test_live_ready_and_server_metadata(grpc_server: GrpcServer) -> None:
    client = grpc_server.triton()
    assert client.is_server_live()  # open, like /v2/health/live
    assert client.is_server_ready()
    for name in MODELS:
        assert client.is_model_ready(name, headers=HEADERS)
        assert client.is_model_ready(name, "1", headers=HEADERS)
    metadata = client.get_server_metadata(headers=HEADERS, as_json=True)
    assert metadata["name"] == "kerasserve"
    assert "model_repository" in metadata["extensions"]


@pytest.mark.parametrize("name", MODELS)
def test_infer_equals_http_and_the_saved_model(
    grpc_server: GrpcServer, name: str, saved_models: dict[str, Any]
) -> None:
    client = grpc_server.triton()
    image = images(name, rows=3)
    result = triton_infer(client, name, image)
    response = result.get_response()
    assert response.model_name == name and response.model_version == "1"
    assert response.id == "grpc-test-1"
    assert len(response.raw_output_contents) == len(response.outputs)  # raw in, raw out
    got = {output.name: result.as_numpy(output.name) for output in response.outputs}
    want = in_process(saved_models, name, image)
    assert_same_outputs(got, want, rtol=1e-5)
    assert_same_outputs(got, http_infer(grpc_server, name, image), rtol=1e-5)


def test_model_metadata_and_config(grpc_server: GrpcServer) -> None:
    client = grpc_server.triton()
    metadata = client.get_model_metadata("ocr", headers=HEADERS, as_json=True)
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": ["-1", "28", "-1", "1"]}
    ]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "confidence": "FP32",
        "probabilities": "FP32",
        "text": "BYTES",
    }
    http = httpx.get(f"{grpc_server.url}/v2/models/ocr", headers=API_HEADERS).json()
    assert [int(d) for d in metadata["inputs"][0]["shape"]] == http["inputs"][0]["shape"]
    config = client.get_model_config("mnist", headers=HEADERS, as_json=True)["config"]
    assert int(config["max_batch_size"]) > 0
    assert config["input"] == [
        {"name": "image", "data_type": "TYPE_FP32", "dims": ["28", "28", "1"]}
    ]


def test_requested_outputs_and_one_version(
    grpc_server: GrpcServer, saved_models: dict[str, Any]
) -> None:
    client = grpc_server.triton()
    image = images("ocr", rows=2, seed=3)
    result = triton_infer(client, "ocr", image, outputs=["text"])
    assert [o.name for o in result.get_response().outputs] == ["text"]
    assert (
        result.as_numpy("text").tolist() == in_process(saved_models, "ocr", image)["text"].tolist()
    )
    tensor = triton_grpc.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    versioned = client.infer("ocr", [tensor], model_version="1", headers=HEADERS)
    assert versioned.get_response().model_version == "1"


def test_typed_contents_in_typed_contents_out(
    grpc_server: GrpcServer, saved_models: dict[str, Any]
) -> None:
    """A client that sends `fp32_contents` instead of raw bytes gets typed contents back."""
    image = images("mnist", rows=2, seed=5)
    request = service_pb2.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=image.shape)
    tensor.contents.fp32_contents.extend(image.ravel().tolist())
    request.outputs.add(name="class_id")
    with grpc_server.channel() as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=API_METADATA, timeout=30)
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("class_id", "INT64", [2])
    want = in_process(saved_models, "mnist", image)["class_id"]
    assert list(output.contents.int64_contents) == want.tolist()


KSERVE_CLIENT = textwrap.dedent("""
    import asyncio, json, sys
    import numpy as np
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def main(address, token):
        client = InferenceGRPCClient(address, timeout=30)
        headers = (("authorization", "Bearer " + token),)
        answers = {"live": await client.is_server_live(),
                   "ready": await client.is_model_ready("mnist", headers=headers)}
        image = np.random.default_rng(11).random((2, 28, 28, 1), dtype=np.float32)
        for binary in (True, False):
            tensor = InferInput(name="image", shape=list(image.shape), datatype="FP32")
            tensor.set_data_from_numpy(image, binary_data=binary)
            result = await client.infer(InferRequest(model_name="mnist", infer_inputs=[tensor]),
                                        headers=headers)
            answers["binary" if binary else "typed"] = {
                o.name: o.as_numpy().tolist() for o in result.outputs}
        await client.close()
        print(json.dumps(answers))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_kserve_inference_grpc_client(
    grpc_server: GrpcServer, saved_models: dict[str, Any]
) -> None:
    """KServe's own client, in its own process: its generated v2 messages have the same full
    names as tritonclient's, and one process's protobuf registry refuses the second set."""
    from tests.grpc.conftest import API_TOKEN

    completed = subprocess.run(
        [sys.executable, "-c", KSERVE_CLIENT, grpc_server.address, API_TOKEN],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    answers = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answers["live"] is True and answers["ready"] is True
    image = np.random.default_rng(11).random((2, 28, 28, 1), dtype=np.float32)
    want = in_process(saved_models, "mnist", image)
    for encoding in ("binary", "typed"):
        got = {key: np.array(value) for key, value in answers[encoding].items()}
        assert_same_outputs({k: got[k].astype(want[k].dtype) for k in got}, want, rtol=1e-5)
