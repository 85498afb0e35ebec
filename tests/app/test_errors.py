"""The error table over the app in-process: status, a message naming expected and received, and
the app still answering afterwards (the 413s are the body-limit middleware's, which runs
in-process as in a server: it is ASGI middleware, not uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.app.conftest import BROKEN_MODEL, TEST_MAX_BODY_BYTES

ONE_DIGIT = np.zeros((1, 28, 28, 1), dtype=np.float32).tolist()


@pytest.fixture(autouse=True)
def server_survives(client: httpx.Client) -> Iterator[None]:
    yield
    check = client.post("/v1/models/mnist:predict", json={"instances": ONE_DIGIT})
    assert check.status_code == 200, check.text


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert "Traceback" not in body["error"]
    return body["error"]


def test_unknown_model_is_404(client: httpx.Client) -> None:
    message = _error(client.post("/v1/models/nope:predict", json={"instances": ONE_DIGIT}), 404)
    assert "'nope'" in message and "mnist" in message
    assert "'nope'" in _error(client.get("/v1/models/nope"), 404)
    assert "'nope'" in _error(client.get("/v1/models/nope/metadata"), 404)


def test_unknown_version_is_404(client: httpx.Client) -> None:
    message = _error(
        client.post("/v1/models/mnist/versions/9:predict", json={"instances": ONE_DIGIT}), 404
    )
    assert "no version 9" in message and "versions: 1" in message
    assert "no version 9" in _error(client.get("/v1/models/mnist/versions/9"), 404)


def test_unknown_label_is_404(client: httpx.Client) -> None:
    message = _error(
        client.post("/v1/models/mnist/labels/stable:predict", json={"instances": ONE_DIGIT}), 404
    )
    assert "no label 'stable'" in message


def test_non_numeric_version_is_400(client: httpx.Client) -> None:
    message = _error(client.get("/v1/models/mnist/versions/latest"), 400)
    assert "positive integer" in message and "'latest'" in message


def test_unknown_route_is_404_json(client: httpx.Client) -> None:
    _error(client.get("/v1/nothing/here"), 404)


def test_malformed_json_is_400(client: httpx.Client) -> None:
    message = _error(
        client.post(
            "/v1/models/mnist:predict",
            content=b'{"instances": [',
            headers={"content-type": "application/json"},
        ),
        400,
    )
    assert "malformed JSON" in message


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"instances": ONE_DIGIT, "inputs": ONE_DIGIT}, "exactly one of 'instances'"),
        ({"predict": ONE_DIGIT}, "exactly one of 'instances'"),
        ([1, 2, 3], "must be a JSON object"),
        ({"instances": []}, "non-empty list"),
        ({"instances": ONE_DIGIT, "signature_name": "other"}, "'other' not found"),
    ],
)
def test_malformed_request_is_400(body: object, expected: str, client: httpx.Client) -> None:
    assert expected in _error(client.post("/v1/models/mnist:predict", json=body), 400)


def test_wrong_input_name_is_400(client: httpx.Client) -> None:
    message = _error(
        client.post("/v1/models/mnist:predict", json={"inputs": {"img": ONE_DIGIT}}), 400
    )
    assert "expects inputs ['image'], got ['img']" in message


def test_wrong_shape_is_400(client: httpx.Client) -> None:
    wrong = np.zeros((1, 28, 27, 1)).tolist()
    message = _error(client.post("/v1/models/mnist:predict", json={"instances": wrong}), 400)
    assert "expects shape [-1, 28, 28, 1], got [1, 28, 27, 1]" in message
    ocr_rank = np.zeros((1, 28, 40)).tolist()
    message = _error(client.post("/v1/models/ocr:predict", json={"inputs": ocr_rank}), 400)
    assert "expects shape [-1, 28, -1, 1], got [1, 28, 40]" in message


def test_ragged_rows_are_400(client: httpx.Client) -> None:
    ragged = [np.zeros((28, 28, 1)).tolist(), np.zeros((28, 27, 1)).tolist()]
    message = _error(client.post("/v1/models/mnist:predict", json={"instances": ragged}), 400)
    assert "not a rectangular array" in message


def test_wrong_dtype_is_400(client: httpx.Client) -> None:
    strings = [[[["x"]] * 28] * 28]
    message = _error(client.post("/v1/models/mnist:predict", json={"instances": strings}), 400)
    assert "expects dtype float32, got string" in message


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    too_big = b" " * (TEST_MAX_BODY_BYTES + 1)
    message = _error(
        client.post(
            "/v1/models/mnist:predict",
            content=too_big,
            headers={"content-type": "application/json"},
        ),
        413,
    )
    assert str(TEST_MAX_BODY_BYTES) in message


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b" " * (TEST_MAX_BODY_BYTES // 4)

    message = _error(
        client.post(
            "/v1/models/mnist:predict",
            content=chunks(),
            headers={"content-type": "application/json"},
        ),
        413,
    )
    assert "over the limit" in message


def test_unsupported_media_type_is_415(client: httpx.Client) -> None:
    message = _error(
        client.post(
            "/v1/models/mnist:predict", content=b"\x89PNG", headers={"content-type": "image/png"}
        ),
        415,
    )
    assert "image/png" in message and "application/json" in message


def test_model_that_failed_to_load_is_503(client: httpx.Client) -> None:
    message = _error(
        client.post(f"/v1/models/{BROKEN_MODEL}:predict", json={"instances": ONE_DIGIT}), 503
    )
    assert "no version ready" in message and "failed to load" in message
    assert "failed to load" in _error(client.get(f"/v1/models/{BROKEN_MODEL}/metadata"), 503)
