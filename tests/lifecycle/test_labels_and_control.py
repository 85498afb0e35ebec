"""Labels and policies from the config file, re-read without restart; the model control API."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.in_process import in_process_sync
from tests.lifecycle.conftest import (
    ADMIN_HEADERS,
    ADMIN_TOKEN,
    MODEL,
    POLL_INTERVAL_S,
    publish_copy,
    tf_predict_body,
    v2_infer_body,
    version_states,
    wait_for,
    write_config,
)
from tests.lifecycle.metrics_util import scrape

CONFIG_CHANGE_TIMEOUT_S = 10 * POLL_INTERVAL_S + 5.0


def _label_version(client: httpx.Client, label: str) -> str:
    response = client.get(f"/v1/models/{MODEL}/labels/{label}")
    assert response.status_code == 200, response.text
    (status,) = response.json()["model_version_status"]
    assert status["state"] == "AVAILABLE"
    return status["version"]


def _served_by_label(client: httpx.Client, label: str) -> str:
    """Predict through the label route; the version that answered, read from /metrics."""
    before = scrape(client)
    response = client.post(f"/v1/models/{MODEL}/labels/{label}:predict", json=tf_predict_body())
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1
    after = scrape(client)
    moved = [
        v
        for v in ("1", "2", "3")
        if after.value(
            "kerasserve_requests_total", model=MODEL, version=v, protocol="tfserving", code="200"
        )
        > before.value(
            "kerasserve_requests_total", model=MODEL, version=v, protocol="tfserving", code="200"
        )
    ]
    assert len(moved) == 1, moved
    return moved[0]


def test_labels_move_without_restart_and_unloaded_targets_are_refused(
    repository: Path, mnist_version_source: Path
) -> None:
    publish_copy(repository, mnist_version_source, 2)
    publish_copy(repository, mnist_version_source, 3)  # on disk, outside the policy
    write_config(
        repository,
        f"""
models:
  {MODEL}:
    version_policy: {{specific: [1, 2]}}
    labels: {{stable: 1, canary: 2}}
""",
    )
    # In-process: the config is re-read by the app's own polling; no process is involved.
    with in_process_sync(
        repository, poll_interval=POLL_INTERVAL_S, admin_tokens=[ADMIN_TOKEN]
    ) as served:
        client = served.client
        client.headers.update(ADMIN_HEADERS)
        states = version_states(client)
        assert states[1]["state"] == states[2]["state"] == "AVAILABLE"
        assert 3 not in states or states[3]["state"] != "AVAILABLE"
        wait_for(lambda: _label_version(client, "stable") == "1", 5.0, "labels to be set")
        assert _label_version(client, "canary") == "2"
        assert _served_by_label(client, "stable") == "1"

        write_config(
            repository,
            f"""
models:
  {MODEL}:
    version_policy: {{specific: [1, 2]}}
    labels: {{stable: 2, canary: 2}}
""",
        )
        wait_for(
            lambda: _label_version(client, "stable") == "2",
            CONFIG_CHANGE_TIMEOUT_S,
            "stable to move to version 2",
        )
        assert _served_by_label(client, "stable") == "2"

        # Labels on versions that are not loaded: refused, reported, stable traffic unchanged.
        write_config(
            repository,
            f"""
models:
  {MODEL}:
    version_policy: {{specific: [1, 2]}}
    labels: {{stable: 3, canary: 2, beta: 3}}
""",
        )
        status = wait_for(
            lambda: (
                (c := client.get("/v2/repository/config").json())["label_errors"].get(MODEL) and c
            ),
            CONFIG_CHANGE_TIMEOUT_S,
            "the label error",
        )
        errors = " ".join(status["label_errors"][MODEL])
        assert "label 'beta' of model 'mnist' points at version 3, which is not loaded" in errors
        assert "label 'stable'" in errors
        assert _label_version(client, "stable") == "2"  # kept its loaded target
        missing = client.post(f"/v1/models/{MODEL}/labels/beta:predict", json=tf_predict_body())
        assert missing.status_code == 404
        assert "has no label 'beta'" in missing.json()["error"]

        # A broken config file is refused whole: the previous config stays in force.
        (repository / "config.yaml").write_text("models: {mnist: {version_policy: {latest: 0}")
        status = wait_for(
            lambda: (c := client.get("/v2/repository/config").json())["error"] and c,
            CONFIG_CHANGE_TIMEOUT_S,
            "the config error",
        )
        assert "config.yaml" in status["error"]
        time.sleep(3 * POLL_INTERVAL_S)
        assert _label_version(client, "stable") == "2"
        states = version_states(client)
        assert states[1]["state"] == states[2]["state"] == "AVAILABLE"


def _v2_infer(client: httpx.Client, version: int) -> httpx.Response:
    return client.post(f"/v2/models/{MODEL}/versions/{version}/infer", json=v2_infer_body())


def test_policy_latest_two_and_model_control_api(
    repository: Path, start_server, mnist_version_source: Path
) -> None:
    publish_copy(repository, mnist_version_source, 2)
    write_config(repository, f"models: {{{MODEL}: {{version_policy: {{latest: 2}}}}}}\n")
    with (
        start_server(repository) as server,
        httpx.Client(base_url=server.url, timeout=30.0, headers=ADMIN_HEADERS) as client,
    ):
        for version in (1, 2):
            predicted = client.post(
                f"/v1/models/{MODEL}/versions/{version}:predict", json=tf_predict_body()
            )
            assert predicted.status_code == 200, predicted.text
            inferred = _v2_infer(client, version)
            assert inferred.status_code == 200 and inferred.json()["model_version"] == str(version)

        control = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            index = control.get_model_repository_index(headers=ADMIN_HEADERS)
            assert {(e["name"], e["version"], e["state"]) for e in index} >= {
                (MODEL, "1", "READY"),
                (MODEL, "2", "READY"),
            }

            control.unload_model(MODEL, headers=ADMIN_HEADERS)
            index = control.get_model_repository_index(headers=ADMIN_HEADERS)
            mine = [e for e in index if e["name"] == MODEL]
            assert mine and all(e["state"] == "UNAVAILABLE" for e in mine)
            assert all("unloaded by request" in e["reason"] for e in mine)
            assert _v2_infer(client, 2).status_code == 503
            time.sleep(4 * POLL_INTERVAL_S)  # polling must not bring it back
            assert not control.is_model_ready(MODEL)
            assert client.post(f"/v2/models/{MODEL}/infer", json=v2_infer_body()).status_code == 503

            control.load_model(MODEL, headers=ADMIN_HEADERS)
            assert control.is_model_ready(MODEL, "1") and control.is_model_ready(MODEL, "2")
            ready = client.post("/v2/repository/index", json={"ready": True}).json()
            assert {(e["name"], e["version"]) for e in ready} == {(MODEL, "1"), (MODEL, "2")}
            assert _v2_infer(client, 1).json()["model_version"] == "1"

            with pytest.raises(InferenceServerException) as unknown:
                control.load_model("no-such-model", headers=ADMIN_HEADERS)
            assert "not in the repository" in str(unknown.value)
            assert client.post("/v2/repository/models/no-such-model/unload").status_code == 404
        finally:
            control.close()

        # The policy is re-read from the config file too: latest 1 unloads version 1.
        write_config(repository, f"models: {{{MODEL}: {{version_policy: {{latest: 1}}}}}}\n")
        wait_for(
            lambda: version_states(client)[1]["state"] == "END",
            CONFIG_CHANGE_TIMEOUT_S,
            "version 1 to be unloaded by the new policy",
        )
        assert _v2_infer(client, 1).status_code == 503
        assert _v2_infer(client, 2).status_code == 200
        # A retired version's series leave /metrics (requests, batches), the serving one's stay.
        samples = scrape(client).samples
        assert not [s for s in samples if s.labels.get("version") == "1"], "version 1 series"
        served = {s.name for s in samples if s.labels.get("version") == "2"}
        assert {"kerasserve_requests_total", "kerasserve_batch_size_rows_count"} <= served

        # Batching options too: with batching off, version 2 gets an unbatched runner at once.
        write_config(
            repository,
            f"models: {{{MODEL}: {{version_policy: {{latest: 1}}, "
            "batching: {enabled: false}}}\n",
        )
        wait_for(
            lambda: (
                client.get("/v2/repository/config").json()["models"][MODEL]["batching"]
                == {"enabled": False}
            ),
            CONFIG_CHANGE_TIMEOUT_S,
            "the batching change",
        )
        wait_for(
            lambda: "new batching options" in server.log(),
            CONFIG_CHANGE_TIMEOUT_S,
            "the runner swap",
        )
        before = scrape(client)
        for _ in range(3):
            assert _v2_infer(client, 2).status_code == 200
        after = scrape(client)
        counted = {"model": MODEL, "version": "2"}
        assert (
            after.value("kerasserve_requests_total", protocol="kserve_v2", code="200", **counted)
            - before.value("kerasserve_requests_total", protocol="kserve_v2", code="200", **counted)
            == 3
        )
        assert after.value("kerasserve_batch_size_rows_count", **counted) == before.value(
            "kerasserve_batch_size_rows_count", **counted
        )
