"""TF Serving's REST API over every signature: metadata, `signature_name`, `:classify`,
`:regress`, and the JSON details of TF Serving's documentation and tests (in process)."""

from __future__ import annotations

import base64
import re

import httpx
import numpy as np
import orjson
import pytest

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"


def _post(client: httpx.Client, path: str, body: object, status: int = 200) -> dict:
    response = client.post(path, content=orjson.dumps(body))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _compact(json_text: str) -> bytes:
    """TF Serving pretty-prints; the tokens are what must be equal byte for byte."""
    return re.sub(rb"\s+", b"", json_text.encode())


# ---- TF Serving's half_plus_two golden requests (its REST handler tests and docs) -----------

GOLDEN = [
    # (path suffix, request, TF Serving's answer)
    (":predict", '{"instances": [1.0, 2.0]}', '{ "predictions": [2.5, 3.0] }'),
    (
        ":predict",
        '{"signature_name": "serving_default", "instances": [3.0, 4.0]}',
        '{ "predictions": [3.5, 4.0] }',
    ),
    (
        ":predict",
        '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}',
        '{ "outputs": [3.5, 4.0] }',
    ),
    (
        ":regress",
        '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }',
        '{ "results": [42.0] }',
    ),
    (
        ":classify",
        '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }',
        '{ "results": [[["", 12.0]]] }',
    ),
    (
        ":classify",
        '{"signature_name": "classify_x_to_y", "examples": [ { "x": 10.0 } ] }',
        '{ "results": [[["", 7.0]]] }',
    ),
    (
        ":regress",
        '{"signature_name": "regress_x2_to_y3", "examples": [{"x2": 1.0}, {"x2": 2.0}]}',
        '{ "results": [3.5, 4.0] }',
    ),
]


@pytest.mark.parametrize("suffix, request_body, answer", GOLDEN)
@pytest.mark.parametrize("which", ["", "/versions/1"])
def test_half_plus_two_golden_answers_byte_for_byte(
    app_client: httpx.Client, suffix: str, request_body: str, answer: str, which: str
) -> None:
    response = app_client.post(f"/v1/models/half_plus_two{which}{suffix}", content=request_body)
    assert response.status_code == 200, response.text
    assert response.content == _compact(answer)


def test_metadata_lists_every_signature_with_its_method_and_tensor_names(
    app_client: httpx.Client,
) -> None:
    body = app_client.get("/v1/models/half_plus_two/metadata").json()
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {
        "serving_default",
        "classify_x_to_y",
        "regress_x_to_y",
        "regress_x2_to_y3",
        "classify_sign",
        "regress_with_offset",
    }
    assert {key: s["method_name"] for key, s in signatures.items()} == {
        "serving_default": PREDICT,
        "classify_x_to_y": CLASSIFY,
        "regress_x_to_y": REGRESS,
        "regress_x2_to_y3": REGRESS,
        "classify_sign": CLASSIFY,
        "regress_with_offset": REGRESS,
    }
    classify = signatures["classify_sign"]
    # The graph's own tensor names, read from saved_model.pb.
    assert classify["inputs"]["inputs"]["name"] == "classify_sign_inputs:0"
    assert classify["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert set(classify["outputs"]) == {"classes", "scores"}
    assert classify["outputs"]["scores"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in classify["outputs"]["scores"]["tensor_shape"]["dim"]] == ["-1", "2"]
    assert classify["outputs"]["scores"]["name"].startswith("StatefulPartitionedCall")

    multi = app_client.get("/v1/models/multi/versions/1/metadata").json()
    multi_signatures = multi["metadata"]["signature_def"]["signature_def"]
    assert set(multi_signatures) == {"serving_default", "scale", "measure"}
    assert set(multi_signatures["scale"]["inputs"]) == {"x", "factor"}
    assert multi_signatures["measure"]["outputs"]["length"]["dtype"] == "DT_INT64"
    assert all(s["method_name"] == PREDICT for s in multi_signatures.values())


def test_signature_name_selects_any_signature_in_rows_and_columns(app_client: httpx.Client) -> None:
    rows = _post(
        app_client,
        "/v1/models/multi:predict",
        {
            "signature_name": "scale",
            "instances": [{"x": [1, 2, 3], "factor": 2.0}, {"x": [1, 1, 1], "factor": -1.5}],
        },
    )
    assert rows == {"predictions": [[2.0, 4.0, 6.0], [-1.5, -1.5, -1.5]]}
    columns = _post(
        app_client,
        "/v1/models/multi:predict",
        {"signature_name": "scale", "inputs": {"x": [[1, 2, 3]], "factor": [0.5]}},
    )
    assert columns == {"outputs": [[0.5, 1.0, 1.5]]}
    strings = _post(
        app_client,
        "/v1/models/multi/labels/none:predict".replace("/labels/none", ""),
        {"signature_name": "measure", "instances": ["héllo", "ab"]},
    )
    assert strings == {
        "predictions": [{"length": 6, "shout": "HéLLO"}, {"length": 2, "shout": "AB"}]
    }
    default = _post(app_client, "/v1/models/multi:predict", {"instances": [[1, 2, 3]]})
    assert default == {"predictions": [{"doubled": [2.0, 4.0, 6.0], "total": 6.0}]}


def test_unknown_signature_is_a_400_listing_the_signatures(app_client: httpx.Client) -> None:
    error = _post(
        app_client, "/v1/models/multi:predict", {"signature_name": "nope", "instances": [1]}, 400
    )["error"]
    assert "'nope' not found" in error
    assert "['serving_default', 'measure', 'scale']" in error or all(
        name in error for name in ("serving_default", "measure", "scale")
    )
    wrong_inputs = _post(
        app_client,
        "/v1/models/multi:predict",
        {"signature_name": "scale", "inputs": {"x": [[1, 2, 3]]}},
        400,
    )["error"]
    assert "signature 'scale' expects inputs ['factor', 'x']" in wrong_inputs


def test_classify_with_classes_and_scores(app_client: httpx.Client) -> None:
    body = _post(
        app_client,
        "/v1/models/half_plus_two:classify",
        {"signature_name": "classify_sign", "examples": [{"x": -4.0}, {"x": 0.0}]},
    )
    results = body["results"]
    assert [[label for label, _ in row] for row in results] == [["negative", "positive"]] * 2
    expected = 1.0 / (1.0 + np.exp(-(0.5 * np.array([-4.0, 0.0]) + 2.0)))
    np.testing.assert_allclose([row[1][1] for row in results], expected, rtol=1e-6)
    np.testing.assert_allclose([row[0][1] for row in results], 1 - expected, rtol=1e-6)


def test_regress_with_a_context_and_int64_features(app_client: httpx.Client) -> None:
    body = _post(
        app_client,
        "/v1/models/half_plus_two:regress",
        {
            "signature_name": "regress_with_offset",
            "context": {"offset": 10},
            "examples": [{"x": 2.0}, {"x": [4]}],
        },
        # "x": [4] is an int64 feature: parse_example wants a float, TensorFlow refuses it
        400,
    )
    assert "rejected the input" in body["error"]
    body = _post(
        app_client,
        "/v1/models/half_plus_two:regress",
        {
            "signature_name": "regress_with_offset",
            "context": {"offset": 10},
            "examples": [{"x": 2.0}, {"x": [4.0]}],
        },
    )
    assert body == {"results": [13.0, 14.0]}


@pytest.mark.parametrize(
    "path, body, expected",
    [
        (
            "/v1/models/multi:classify",
            {"examples": [{"x": 1.0}]},
            "signature 'serving_default' of model 'multi' is a predict signature, not "
            "classify; the model has no classify signature",
        ),
        (
            "/v1/models/half_plus_two:classify",
            {"examples": [{"x": 1.0}]},
            "its classify signatures are ['classify_sign', 'classify_x_to_y']",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
            "is a classify signature, not regress",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"signature_name": "nope", "examples": [{"x": 1.0}]},
            "serving signature name 'nope' not found",
        ),
        ("/v1/models/half_plus_two:regress", {"examples": []}, "non-empty list"),
        ("/v1/models/half_plus_two:regress", None, "must be a JSON object, got null"),
        (
            "/v1/models/half_plus_two:classify",
            {"signature_name": "classify_x_to_y", "examples": [{"y": 1.0}]},
            "Feature: x (data type: float) is required but could not be found",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"examples": [[1.0]]},
            "example 0 must be a JSON object",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]},
            "mixes float and bytes values",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": None}]},
            "JSON type null",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 1e300}]},
            "cannot be a float32",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"signature_name": "regress_x_to_y", "context": {"x": 1.0}, "examples": [{"x": 1.0}]},
            "feature 'x' is in the context and in example 0",
        ),
        (
            "/v1/models/half_plus_two:regress",
            {"signature_name": 7, "examples": [{"x": 1.0}]},
            "'signature_name' must be a string",
        ),
    ],
)
def test_classify_and_regress_mistakes_are_clear_400s(
    app_client: httpx.Client, path: str, body: object, expected: str
) -> None:
    assert expected in _post(app_client, path, body, 400)["error"]


def test_example_counts_are_bounded_before_anything_is_built(app_client: httpx.Client) -> None:
    from app.limits import DEFAULT_EXAMPLE_LIMITS

    too_many = {"examples": [{}] * (DEFAULT_EXAMPLE_LIMITS.max_examples + 1)}
    error = _post(app_client, "/v1/models/half_plus_two:regress", too_many, 413)["error"]
    assert f"the limit is {DEFAULT_EXAMPLE_LIMITS.max_examples}" in error
    # A context is copied into every example: 300 values x 60,000 examples is 18 M values.
    copied = {
        "signature_name": "regress_x_to_y",
        "context": {"big": [0.5] * 300},
        "examples": [{}] * 60_000,
    }
    error = _post(app_client, "/v1/models/half_plus_two:regress", copied, 413)["error"]
    assert "context copied into each example" in error


# ---- the JSON mapping ---------------------------------------------------------------------


def test_int64_outside_the_float_range_and_strings_both_ways(app_client: httpx.Client) -> None:
    big = 2**62 + 1  # not a float64: 4611686018427387905
    body = (
        b'{"instances": [{"ids": 4611686018427387905, "words": "w\xc3\xa9"},'
        b' {"ids": -9007199254740993, "words": {"b64": "_-8"}}]}'
    )
    response = app_client.post("/v1/models/typed:predict", content=body)
    assert response.status_code == 200, response.text
    raw = response.content
    assert b'"next_id":4611686018427387906' in raw
    assert b'"next_id":-9007199254740992' in raw
    predictions = orjson.loads(raw)["predictions"]
    assert predictions[0]["next_id"] == big + 1
    assert predictions[0]["greeting"] == "hello wé"
    # `_bytes` outputs come back as standard base64, the web-safe input decoded to \xff\xef
    assert predictions[1]["echo_bytes"] == {"b64": base64.b64encode(b"\xff\xef").decode()}
    assert predictions[0]["echo_bytes"] == {"b64": base64.b64encode("wé".encode()).decode()}


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(b"\xfb\xff\xbf").decode(),  # standard: +/ characters
        base64.urlsafe_b64encode(b"\xfb\xff\xbf").decode(),  # web-safe: -_ characters
        base64.b64encode(b"\xfb\xff").decode().rstrip("="),  # no padding
    ],
)
def test_b64_takes_both_alphabets_with_or_without_padding(
    app_client: httpx.Client, encoded: str
) -> None:
    body = _post(
        app_client,
        "/v1/models/typed:predict",
        {"inputs": {"ids": [1], "words": [{"b64": encoded}]}},
    )
    padded = encoded + "=" * (-len(encoded) % 4)
    expected = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    assert base64.b64decode(body["outputs"]["echo_bytes"][0]["b64"]) == expected


def test_floats_keep_every_digit(app_client: httpx.Client) -> None:
    raw = app_client.post(
        "/v1/models/typed:predict", content=b'{"inputs": {"ids": [1, 2], "words": ["a", "b"]}}'
    ).content
    # float32 1/3 is 0.33333334 (TF Serving would print 0.333333); float64 1/3 to 17 digits.
    assert b'"third":[0.33333334,0.6666667]' in raw
    assert b'"third64":[0.3333333333333333,0.6666666666666666]' in raw
    third = orjson.loads(raw)["outputs"]["third"]
    assert np.float32(third[0]) == np.float32(1) / np.float32(3)


def test_scalars_in_and_out(app_client: httpx.Client) -> None:
    response = app_client.post(
        "/v1/models/typed:predict", content=b'{"signature_name": "scalar", "inputs": 3.25}'
    )
    assert response.status_code == 200, response.text
    assert response.content == b'{"outputs":6.5}'


def test_several_named_inputs_in_rows_and_columns(app_client: httpx.Client) -> None:
    rows = _post(
        app_client,
        "/v1/models/typed:predict",
        {"instances": [{"ids": 7, "words": "x"}, {"ids": 8, "words": "y"}]},
    )["predictions"]
    columns = _post(
        app_client, "/v1/models/typed:predict", {"inputs": {"ids": [7, 8], "words": ["x", "y"]}}
    )["outputs"]
    assert [row["next_id"] for row in rows] == columns["next_id"] == [8, 9]
    assert [row["greeting"] for row in rows] == columns["greeting"] == ["hello x", "hello y"]
