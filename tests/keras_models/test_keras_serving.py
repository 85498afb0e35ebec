"""`model.keras` versions served in-process: every HTTP protocol, custom objects, safe loading,
Embedding index checks, and TensorFlow's value errors as readable 400s.

One app serves the whole repository of `conftest.keras_repository` (custom-layer module named,
unsafe deserialization off); answers are compared with Keras' own call on the same inputs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.in_process import in_process
from tests.keras_models.conftest import (
    CUSTOM_MODULE,
    EMBEDDING_ROWS,
    EXPORTED,
    MODULE,
    MODULE_ROWS,
    KerasRepository,
)
from tests.outputs import FLOAT_TOLERANCE, assert_same_outputs

pytestmark = pytest.mark.anyio
RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client(
    keras_repository: KerasRepository, module_path: Any, anyio_backend: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(keras_repository.path, custom_objects_modules=(CUSTOM_MODULE,)) as c:
        yield c


def pair_inputs(rows: int) -> dict[str, np.ndarray]:
    return {
        "features": RNG.random((rows, 3), dtype=np.float32),
        "bias": RNG.random((rows, 1), dtype=np.float32),
    }


async def test_status_and_metadata_describe_the_keras_signature(client: httpx.AsyncClient) -> None:
    status = (await client.get("/v1/models/pair")).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    signature = (await client.get("/v1/models/pair/metadata")).json()["metadata"]["signature_def"]
    serving = signature["signature_def"]["serving_default"]
    assert sorted(serving["inputs"]) == ["bias", "features"]
    assert sorted(serving["outputs"]) == ["score", "total"]
    assert serving["inputs"]["features"]["tensor_shape"]["dim"][1]["size"] == "3"
    v2 = (await client.get("/v2/models/pair")).json()
    assert v2["platform"] == "keras"
    assert {t["name"]: t["shape"] for t in v2["outputs"]} == {"score": [-1, 2], "total": [-1, 1]}
    assert {t["name"]: t["datatype"] for t in v2["inputs"]} == {"bias": "FP32", "features": "FP32"}


async def test_two_inputs_two_outputs_over_tfserving_rows_and_columns(
    client: httpx.AsyncClient, keras_repository: KerasRepository
) -> None:
    inputs = pair_inputs(3)
    want = keras_repository.reference("pair", inputs)
    rows = [{k: v[i].tolist() for k, v in inputs.items()} for i in range(3)]
    answer = await client.post("/v1/models/pair:predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert_same_outputs({k: [row[k] for row in predictions] for k in want}, want)

    columns = {k: v.tolist() for k, v in inputs.items()}
    answer = await client.post("/v1/models/pair/versions/1:predict", json={"inputs": columns})
    assert answer.status_code == 200, answer.text
    assert_same_outputs(answer.json()["outputs"], want)


async def test_two_inputs_two_outputs_over_v2_json_and_binary(
    client: httpx.AsyncClient, keras_repository: KerasRepository
) -> None:
    inputs = pair_inputs(2)
    want = keras_repository.reference("pair", inputs)
    body = {
        "inputs": [
            {"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
            for k, v in inputs.items()
        ]
    }
    answer = await client.post("/v2/models/pair/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: np.reshape(o["data"], o["shape"]) for o in answer.json()["outputs"]}
    assert_same_outputs(outputs, want)

    # The binary extension, built and parsed by tritonclient's own codec.
    tensors = []
    for name, value in inputs.items():
        tensor = triton.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value, binary_data=True)
        tensors.append(tensor)
    requested = [triton.InferRequestedOutput(n, binary_data=True) for n in want]
    payload, header_length = triton.InferenceServerClient.generate_request_body(tensors, requested)
    answer = await client.post(
        "/v2/models/pair/infer",
        content=payload,
        headers={"Inference-Header-Content-Length": str(header_length)},
    )
    assert answer.status_code == 200, answer.text
    result = triton.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(answer.headers["Inference-Header-Content-Length"])
    )
    assert_same_outputs({n: result.as_numpy(n) for n in want}, want)


async def test_registered_custom_layer_is_served(
    client: httpx.AsyncClient, keras_repository: KerasRepository
) -> None:
    x = RNG.random((2, 2), dtype=np.float32)
    answer = await client.post("/v1/models/custom:predict", json={"instances": x.tolist()})
    assert answer.status_code == 200, answer.text
    want = keras_repository.reference("custom", {"x": x})["shifted"]
    np.testing.assert_allclose(answer.json()["predictions"], want, atol=FLOAT_TOLERANCE)
    np.testing.assert_allclose(want, x * 2.0 + 1.5, atol=FLOAT_TOLERANCE)  # the layer really ran


async def test_embedding_indices_in_range_match_keras(
    client: httpx.AsyncClient, keras_repository: KerasRepository
) -> None:
    tokens = np.array([[0, 3, 9, 1], [9, 9, 0, 5]], dtype=np.int64)
    want = keras_repository.reference("embed", {"tokens": tokens})
    answer = await client.post("/v1/models/embed:predict", json={"inputs": tokens.tolist()})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["outputs"], want["logits"], atol=FLOAT_TOLERANCE)
    body = {"inputs": [{"name": "tokens", "shape": [2, 4], "datatype": "INT64",
                        "data": tokens.ravel().tolist()}]}  # fmt: skip
    answer = await client.post("/v2/models/embed/infer", json=body)
    assert answer.status_code == 200, answer.text
    logits = answer.json()["outputs"][0]
    np.testing.assert_allclose(np.reshape(logits["data"], logits["shape"]), want["logits"], 1e-5)


@pytest.mark.parametrize("bad", [12, EMBEDDING_ROWS, -5, -1])
async def test_embedding_index_out_of_range_is_a_400_naming_input_and_range(
    client: httpx.AsyncClient, bad: int
) -> None:
    tokens = [[0, 1, 2, 3], [1, bad, 2, 3]]
    for answer in (
        await client.post("/v1/models/embed:predict", json={"instances": tokens}),
        await client.post(
            "/v2/models/embed/infer",
            json={
                "inputs": [
                    {
                        "name": "tokens",
                        "shape": [2, 4],
                        "datatype": "INT64",
                        "data": sum(tokens, []),
                    }
                ]
            },  # fmt: skip
        ),
    ):
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert "'tokens'" in error and f"[0, {EMBEDDING_ROWS})" in error and str(bad) in error
        assert "Graph execution error" not in error


@pytest.mark.parametrize("bad", [12, -5])
async def test_the_embedding_exported_as_a_savedmodel_is_bounded_too(
    client: httpx.AsyncClient, keras_repository: KerasRepository, bad: int
) -> None:
    """The same Embedding model written by Keras' `model.export`: the graph's gather is found at
    load time, so -5 (which the graph would wrap to row 5) and 12 are refused alike."""
    tokens = np.array([[0, 3, 9, 1]], np.int64)
    answer = await client.post(
        f"/v1/models/{EXPORTED}:predict", json={"instances": tokens.tolist()}
    )
    assert answer.status_code == 200, answer.text
    want = keras_repository.reference("embed", {"tokens": tokens})["logits"]
    np.testing.assert_allclose(answer.json()["predictions"], want, atol=FLOAT_TOLERANCE)
    answer = await client.post(
        f"/v1/models/{EXPORTED}:predict", json={"instances": [[0, 1, 2, bad]]}
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "'tokens'" in error and "[0, 10)" in error and str(bad) in error, error


async def test_a_plain_tensorflow_savedmodel_gather_and_value_errors_are_readable_400s(
    client: httpx.AsyncClient, keras_repository: KerasRepository
) -> None:
    """A tf.Module's `tf.gather` on a variable is bounded like an Embedding; a value TensorFlow
    itself refuses (a failed assertion in the graph) is a 400 with TensorFlow's line about it."""
    good = {"inputs": {"ids": [0, MODULE_ROWS - 1], "amount": [1.5, 2.0]}}
    answer = await client.post(f"/v1/models/{MODULE}:predict", json=good)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["rows"] == [[0.0, 1.0], [12.0, 13.0]]
    assert answer.json()["outputs"]["doubled"] == [3.0, 4.0]
    for ids in ([0, MODULE_ROWS], [-1, 0]):
        answer = await client.post(
            f"/v1/models/{MODULE}:predict", json={"inputs": {"ids": ids, "amount": [1.0, 2.0]}}
        )
        assert answer.status_code == 400, answer.text
        assert f"[0, {MODULE_ROWS})" in answer.json()["error"]
    answer = await client.post(
        f"/v1/models/{MODULE}:predict", json={"inputs": {"ids": [0, 1], "amount": [1.0, -7.0]}}
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "amount must not be negative" in error, error
    assert "Graph execution error" not in error and "File " not in error, error
    assert str(keras_repository.path) not in error and ".py" not in error, error


async def test_lambda_is_refused_by_default_naming_the_option(client: httpx.AsyncClient) -> None:
    status = (await client.get("/v1/models/lam")).json()["model_version_status"][0]
    assert status["state"] == "END"
    assert "--allow-unsafe-deserialization" in status["status"]["error_message"]
    answer = await client.post("/v1/models/lam:predict", json={"instances": [[1.0, 2.0]]})
    assert answer.status_code == 503
    assert "--allow-unsafe-deserialization" in answer.json()["error"]


async def test_missing_custom_object_names_it_and_the_rest_serve(
    client: httpx.AsyncClient, keras_repository: KerasRepository
) -> None:
    status = (await client.get("/v1/models/orphan")).json()["model_version_status"][0]
    assert status["state"] == "END"
    message = status["status"]["error_message"]
    assert "'NobodyRegistersMe'" in message and "kerasserve_orphans>NobodyRegistersMe" in message
    assert "--custom-objects-module" in message
    assert str(keras_repository.path) not in message
    ready = {
        name: (await client.get(f"/v2/models/{name}/ready")).status_code
        for name in ("pair", "custom", "embed", "orphan", "lam")
    }
    assert ready == {"pair": 200, "custom": 200, "embed": 200, "orphan": 503, "lam": 503}


async def test_metrics_count_keras_requests(client: httpx.AsyncClient) -> None:
    await client.post("/v1/models/custom:predict", json={"instances": [[1.0, 2.0]]})
    metrics = (await client.get("/metrics")).text
    assert any(
        line.startswith("kerasserve_requests_total") and 'model="custom"' in line
        for line in metrics.splitlines()
    )


async def test_lambda_is_served_when_unsafe_deserialization_is_allowed(
    keras_repository: KerasRepository, module_path: Any
) -> None:
    x = RNG.random((2, 2), dtype=np.float32)
    async with in_process(
        keras_repository.path,
        custom_objects_modules=(CUSTOM_MODULE,),
        allow_unsafe_deserialization=True,
    ) as unsafe:
        answer = await unsafe.post("/v1/models/lam:predict", json={"instances": x.tolist()})
        assert answer.status_code == 200, answer.text
        want = keras_repository.reference("lam", {"x": x})["doubled"]
        np.testing.assert_allclose(answer.json()["predictions"], want, atol=FLOAT_TOLERANCE)
        np.testing.assert_allclose(want, x * 2.0 + 1.0, atol=FLOAT_TOLERANCE)
        body = json.dumps({"instances": [[1.0, 2.0]]})
        assert (await unsafe.post("/v1/models/orphan:predict", content=body)).status_code == 503
