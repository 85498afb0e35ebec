"""KServe v2 over every signature, in process: `signatures` in the model metadata,
`parameters.signature_name` in JSON and binary requests, and the batcher kept for
`serving_default` only."""

from __future__ import annotations

import re
import struct

import httpx
import numpy as np
import orjson
import pytest

SCALE_INPUTS = [
    {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
    {"name": "factor", "datatype": "FP32", "shape": [2], "data": [2, 0.5]},
]


def _infer(client: httpx.Client, model: str, body: dict, status: int = 200) -> dict:
    response = client.post(f"/v2/models/{model}/infer", content=orjson.dumps(body))
    assert response.status_code == status, response.text
    return response.json()


def test_metadata_has_the_default_signature_and_every_signature_by_name(
    app_client: httpx.Client,
) -> None:
    body = app_client.get("/v2/models/multi").json()
    assert [t["name"] for t in body["inputs"]] == ["x"]  # serving_default's, as before
    assert sorted(t["name"] for t in body["outputs"]) == ["doubled", "total"]
    signatures = body["signatures"]
    assert list(signatures) == ["serving_default", "measure", "scale"]
    assert signatures["scale"]["inputs"] == [
        {"name": "factor", "datatype": "FP32", "shape": [-1]},
        {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert signatures["measure"]["outputs"] == [
        {"name": "length", "datatype": "INT64", "shape": [-1]},
        {"name": "shout", "datatype": "BYTES", "shape": [-1]},
    ]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    half = app_client.get("/v2/models/half_plus_two/versions/1").json()["signatures"]
    assert half["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"
    assert half["classify_sign"]["inputs"] == [
        {"name": "inputs", "datatype": "BYTES", "shape": [-1]}
    ]


def test_signature_name_parameter_in_json(app_client: httpx.Client) -> None:
    body = _infer(
        app_client,
        "multi",
        {"id": "7", "parameters": {"signature_name": "scale"}, "inputs": SCALE_INPUTS},
    )
    assert body["id"] == "7"
    assert body["outputs"] == [
        {"name": "scaled", "datatype": "FP32", "shape": [2, 3], "data": [2, 4, 6, 2, 2.5, 3]}
    ]
    strings = _infer(
        app_client,
        "multi",
        {
            "parameters": {"signature_name": "measure"},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["ab", "ç"]}],
            "outputs": [{"name": "shout"}, {"name": "length"}],
        },
    )
    assert strings["outputs"][0]["data"] == ["AB", "ç"]  # tf.strings.upper: ASCII only
    assert strings["outputs"][1]["data"] == [2, 2]


def test_signature_name_parameter_in_a_binary_request(app_client: httpx.Client) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    factor = np.array([1.0, -1.0], np.float32)
    header = orjson.dumps(
        {
            "parameters": {"signature_name": "scale", "binary_data_output": True},
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": x.nbytes},
                },
                {
                    "name": "factor",
                    "datatype": "FP32",
                    "shape": [2],
                    "parameters": {"binary_data_size": factor.nbytes},
                },
            ],
        }
    )
    response = app_client.post(
        "/v2/models/multi/versions/1/infer",
        content=header + x.tobytes() + factor.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = orjson.loads(response.content[:length])
    assert meta["outputs"][0]["name"] == "scaled"
    scaled = np.frombuffer(response.content[length:], np.float32).reshape(2, 3)
    np.testing.assert_array_equal(scaled, x * factor[:, None])


@pytest.mark.parametrize(
    "parameters, inputs, outputs, expected",
    [
        (
            {"signature_name": "nope"},
            SCALE_INPUTS,
            None,
            "serving signature name 'nope' not found; model 'multi' has signatures "
            "['serving_default', 'measure', 'scale']",
        ),
        ({"signature_name": 3}, SCALE_INPUTS, None, "parameter 'signature_name' must be a string"),
        (
            {"signature_name": "scale"},
            SCALE_INPUTS[:1],
            None,
            "signature 'scale' expects inputs ['factor', 'x'], got ['x']",
        ),
        (
            {"signature_name": "scale"},
            SCALE_INPUTS,
            [{"name": "total"}],
            "unknown output 'total'; model 'multi' signature 'scale' has outputs ['scaled']",
        ),
    ],
)
def test_signature_mistakes_are_400s(
    app_client: httpx.Client, parameters: dict, inputs: list, outputs: list | None, expected: str
) -> None:
    body: dict = {"parameters": parameters, "inputs": inputs}
    if outputs is not None:
        body["outputs"] = outputs
    assert expected in _infer(app_client, "multi", body, 400)["error"]


def _batches(client: httpx.Client, model: str) -> float:
    text = client.get("/metrics").text
    match = re.search(
        rf'^kerasserve_batch_size_rows_count{{model="{model}",version="1"}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def test_only_serving_default_goes_through_the_batcher(app_client: httpx.Client) -> None:
    """The batcher counts the default signature's calls; the others run unbatched beside it
    (app.batching.runners.signature_runner), and both answer right while the other is used."""
    before = _batches(app_client, "multi")
    for _ in range(3):
        body = _infer(
            app_client,
            "multi",
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
        )
        assert {o["name"]: o["data"] for o in body["outputs"]}["total"] == [6]
    after_default = _batches(app_client, "multi")
    assert after_default == before + 3
    for _ in range(3):
        body = _infer(
            app_client, "multi", {"parameters": {"signature_name": "scale"}, "inputs": SCALE_INPUTS}
        )
        assert body["outputs"][0]["name"] == "scaled"
    assert _batches(app_client, "multi") == after_default


def test_bytes_length_prefix_for_a_string_signature(app_client: httpx.Client) -> None:
    text = b"\x00\xffraw"
    data = struct.pack("<I", len(text)) + text
    header = orjson.dumps(
        {
            "parameters": {"signature_name": "measure"},
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "outputs": [{"name": "length"}],
        }
    )
    response = app_client.post(
        "/v2/models/multi/infer",
        content=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [len(text)]
