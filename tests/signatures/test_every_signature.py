"""Every signature of every test model, on every protocol, answers what TensorFlow answers for
the same signature in this process: TF Serving REST (columnar), KServe v2 JSON, v2 binary
(tritonclient.http), KServe v2 gRPC (tritonclient.grpc) and TF Serving's gRPC Predict."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.signatures.conftest import Live

Tensors = dict[str, np.ndarray]


def _serialized_examples() -> np.ndarray:
    """Two examples with every feature the half_plus_two signatures read. The values are chosen
    so that the serialized bytes are ASCII (0.5, 2.0, 8.0 as float32; small int64s): KServe v2
    JSON carries BYTES as JSON strings, which must be text."""
    rows = []
    for x, x2, offset in ((2.0, 8.0, 5), (0.5, 2.0, 1)):
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(x)
        example.features.feature["x2"].float_list.value.append(x2)
        example.features.feature["offset"].int64_list.value.append(offset)
        data = example.SerializeToString()
        data.decode("ascii")  # the promise above
        rows.append(data)
    return np.array(rows, dtype=object)


X = np.array([[1.0, 2.0, 3.0], [-4.0, 0.5, 1e-8]], np.float32)
INPUTS: dict[tuple[str, str], Tensors] = {
    ("multi", "serving_default"): {"x": X},
    ("multi", "scale"): {"x": X, "factor": np.array([3.0, -0.25], np.float32)},
    ("multi", "measure"): {"text": np.array([b"abc", b"hello world"], dtype=object)},
    ("typed", "serving_default"): {
        "ids": np.array([2**62 + 1, -7], np.int64),
        "words": np.array([b"one", b"two"], dtype=object),
    },
    ("typed", "scalar"): {"x": np.array(3.25, np.float32)},
    ("half_plus_two", "serving_default"): {"x": np.array([1.0, 2.0], np.float32)},
    **{
        ("half_plus_two", name): {"inputs": _serialized_examples()}
        for name in (
            "classify_x_to_y",
            "regress_x_to_y",
            "regress_x2_to_y3",
            "classify_sign",
            "regress_with_offset",
        )
    },
}
V2_TYPES = {"float32": "FP32", "int64": "INT64", "object": "BYTES"}


@pytest.fixture(scope="module")
def reference(repository: Path) -> Callable[[str, str, Tensors], Tensors]:
    loaded = {
        name: tf.saved_model.load(str(repository / name / "1"))
        for name in ("multi", "typed", "half_plus_two")
    }

    def run(model: str, signature: str, inputs: Tensors) -> Tensors:
        function = loaded[model].signatures[signature]
        tensors = {
            k: tf.constant(v.tolist() if v.dtype == object else v) for k, v in inputs.items()
        }
        return {k: v.numpy() for k, v in function(**tensors).items()}

    return run


def _json_value(array: np.ndarray) -> Any:
    if array.dtype == object:
        return (
            [{"b64": base64.b64encode(v).decode()} for v in array.tolist()]
            if array.ndim
            else {"b64": base64.b64encode(array.item()).decode()}
        )
    return array.tolist()


def _tf_serving_rest(live: Live, model: str, signature: str, inputs: Tensors) -> Tensors:
    body = {"signature_name": signature, "inputs": {k: _json_value(v) for k, v in inputs.items()}}
    response = httpx.post(f"{live.url}/v1/models/{model}:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    if not isinstance(outputs, dict):  # one output: TF Serving leaves the name out
        outputs = {"_": outputs}
    return {k: _from_json(v) for k, v in outputs.items()}


def _from_json(value: Any) -> np.ndarray:
    def leaf(item: Any) -> Any:
        if isinstance(item, dict):
            return base64.b64decode(item["b64"])
        return item.encode() if isinstance(item, str) else item

    def walk(item: Any) -> Any:
        return [walk(i) for i in item] if isinstance(item, list) else leaf(item)

    converted = walk(value)
    first = np.asarray(converted, dtype=object).ravel()
    is_bytes = first.size and isinstance(first[0], bytes)
    return np.asarray(converted, dtype=object if is_bytes else None)


def _v2_json(live: Live, model: str, signature: str, inputs: Tensors) -> Tensors:
    body = {
        "parameters": {"signature_name": signature},
        "inputs": [
            {
                "name": k,
                "datatype": V2_TYPES[v.dtype.name],
                "shape": list(v.shape),
                "data": [e.decode("ascii") for e in v.ravel()]
                if v.dtype == object
                else v.ravel().tolist(),
            }
            for k, v in inputs.items()
        ],
    }
    response = httpx.post(f"{live.url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    result = {}
    for output in response.json()["outputs"]:
        data = output["data"]
        if output["datatype"] == "BYTES":
            data = [d.encode() for d in data]
        result[output["name"]] = np.array(
            data, dtype=object if output["datatype"] == "BYTES" else None
        ).reshape(output["shape"])
    return result


def _triton(module: Any, client: Any, model: str, signature: str, inputs: Tensors) -> Tensors:
    tensors = []
    for k, v in inputs.items():
        tensor = module.InferInput(k, list(v.shape), V2_TYPES[v.dtype.name])
        if module is triton_http:
            tensor.set_data_from_numpy(v, binary_data=True)
        else:
            tensor.set_data_from_numpy(v)
        tensors.append(tensor)
    result = client.infer(model, tensors, parameters={"signature_name": signature})
    response = result.get_response()
    if module is triton_http:
        names = [output["name"] for output in response["outputs"]]
    else:
        names = [output.name for output in response.outputs]
    return {name: result.as_numpy(name) for name in names}


def _triton_http(live: Live, model: str, signature: str, inputs: Tensors) -> Tensors:
    client = triton_http.InferenceServerClient(live.host_port)
    try:
        return _triton(triton_http, client, model, signature, inputs)
    finally:
        client.close()


def _triton_grpc(live: Live, model: str, signature: str, inputs: Tensors) -> Tensors:
    client = triton_grpc.InferenceServerClient(live.grpc_address)
    try:
        return _triton(triton_grpc, client, model, signature, inputs)
    finally:
        client.close()


def _tf_serving_grpc(live: Live, model: str, signature: str, inputs: Tensors) -> Tensors:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for k, v in inputs.items():
        value = v.tolist() if v.dtype == object else v
        request.inputs[k].CopyFrom(
            tf.make_tensor_proto(value, dtype=tf.string if v.dtype == object else None)
        )
    with grpc.insecure_channel(live.grpc_address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30
        )
    assert response.model_spec.signature_name == signature
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


PROTOCOLS = {
    "tfserving_rest": _tf_serving_rest,
    "v2_json": _v2_json,
    "v2_binary_tritonclient_http": _triton_http,
    "v2_grpc_tritonclient": _triton_grpc,
    "tfserving_grpc": _tf_serving_grpc,
}


def _same(got: np.ndarray, want: np.ndarray, where: str) -> None:
    assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
    if want.dtype == object:
        assert got.ravel().tolist() == want.ravel().tolist(), where
    elif want.dtype.kind in "iu":
        assert got.astype(np.int64).tolist() == want.astype(np.int64).tolist(), where
    else:
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-6, err_msg=where)


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("model, signature", list(INPUTS))
def test_every_signature_on_every_protocol(
    live: Live,
    reference: Callable[[str, str, Tensors], Tensors],
    protocol: str,
    model: str,
    signature: str,
) -> None:
    inputs = INPUTS[(model, signature)]
    want = reference(model, signature, inputs)
    got = PROTOCOLS[protocol](live, model, signature, inputs)
    if set(got) == {"_"}:
        got = {next(iter(want)): got["_"]}
    assert set(got) == set(want)
    for name in want:
        _same(got[name], want[name], f"{protocol} {model}/{signature} output {name!r}")
