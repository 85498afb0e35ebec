"""Tokens on a real server: tritonclient's model control with an admin token, logs clean."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from app.repository.format import newest_version_dir
from tests.live_server import REPO_ROOT, LiveServer, live_server
from tests.security.conftest import ADMIN_HEADERS, ADMIN_TOKEN, API_HEADERS, API_TOKEN

MODEL = "mnist"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    source = REPO_ROOT / "models" / MODEL
    newest = newest_version_dir(source)
    assert newest is not None, f"no published version under {source}"
    repository = tmp_path_factory.mktemp("repository")
    shutil.copytree(newest, repository / MODEL / newest.name)
    args = [
        "--device",
        "cpu",
        "--poll-interval",
        "0.5",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "--admin-token",
        ADMIN_TOKEN,
    ]
    # The API token comes from the environment, as a deployment would pass it.
    # Live: tritonclient.http needs a socket, and the test reads the log the process writes.
    with live_server(
        repository,
        tmp_path_factory.mktemp("logs"),
        args,
        env={"KERASSERVE_API_TOKENS": f"{API_TOKEN},second-api-token"},
        headers=API_HEADERS,
    ) as running:
        yield running


def _predict(client: httpx.Client, **headers: str) -> httpx.Response:
    image = np.zeros((1, 28, 28, 1), np.float32).tolist()
    return client.post(f"/v1/models/{MODEL}:predict", json={"instances": image}, headers=headers)


def test_tritonclient_controls_models_with_the_admin_token(server: LiveServer) -> None:
    control = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        with pytest.raises(InferenceServerException) as anonymous:
            control.unload_model(MODEL)
        assert "bearer token" in str(anonymous.value)
        with pytest.raises(InferenceServerException) as api_only:
            control.unload_model(MODEL, headers=API_HEADERS)
        assert "admin token" in str(api_only.value)
        assert control.is_model_ready(MODEL, headers=API_HEADERS)

        control.unload_model(MODEL, headers=ADMIN_HEADERS)
        assert not control.is_model_ready(MODEL, headers=API_HEADERS)
        index = control.get_model_repository_index(headers=ADMIN_HEADERS)
        assert {e["state"] for e in index if e["name"] == MODEL} == {"UNAVAILABLE"}
        control.load_model(MODEL, headers=ADMIN_HEADERS)
        assert control.is_model_ready(MODEL, headers=API_HEADERS)
        assert control.is_server_live()  # health stays open
        with pytest.raises(InferenceServerException):
            control.get_server_metadata(headers={"Authorization": "Bearer wrong"})
    finally:
        control.close()


def test_inference_needs_the_api_token_and_logs_hold_no_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        refused = _predict(client)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert _predict(client, **API_HEADERS).status_code == 200
        assert _predict(client, Authorization="Bearer second-api-token").status_code == 200
        assert _predict(client, **ADMIN_HEADERS).status_code == 200
        assert _predict(client, Authorization="Bearer not-a-token-xyz").status_code == 401
        assert client.get("/v2/health/live").status_code == 200
        # A form post to a control route (what a foreign page can send): refused.
        form = client.post(
            f"/v2/repository/models/{MODEL}/unload", data={"a": "b"}, headers=ADMIN_HEADERS
        )
        assert form.status_code == 415
        foreign = client.post(
            f"/v2/repository/models/{MODEL}/unload",
            json={},
            headers={**ADMIN_HEADERS, "Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        assert client.get(f"/v2/models/{MODEL}/ready", headers=API_HEADERS).status_code == 200
        metrics = client.get("/metrics", headers=API_HEADERS).text
    log = server.log()
    assert '"status":401' in log  # the refusals are logged (debug request lines)...
    for secret in (API_TOKEN, ADMIN_TOKEN, "second-api-token", "not-a-token-xyz"):  # ...bare
        assert secret not in log
        assert secret not in metrics
