"""Options the README promises, on a real server: no polling, a config file kept elsewhere, and
the 504 of a request that outlives the model's timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from tests.lifecycle.conftest import (
    MODEL,
    POLL_INTERVAL_S,
    publish_copy,
    tf_predict_body,
    v2_infer_body,
    version_states,
    write_config,
)
from tests.live_server import LiveServer

StartServer = Callable[..., AbstractContextManager[LiveServer]]


def test_poll_interval_zero_and_a_repository_config_outside_the_repository(
    repository: Path, mnist_version_source: Path, start_server: StartServer, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "serving.yaml"
    outside.parent.mkdir()
    outside.write_text(f"models: {{{MODEL}: {{labels: {{stable: 1}}}}}}\n")
    # A config inside the repository that must not be read: the option names another file.
    write_config(repository, f"models: {{{MODEL}: {{labels: {{canary: 1}}}}}}\n")
    with (
        start_server(
            repository, "--poll-interval", "0", "--repository-config", str(outside)
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        predicted = client.post(f"/v1/models/{MODEL}/labels/stable:predict", json=tf_predict_body())
        assert predicted.status_code == 200, predicted.text
        assert client.get(f"/v1/models/{MODEL}/labels/canary").status_code == 404
        publish_copy(repository, mnist_version_source, 2)
        time.sleep(4 * POLL_INTERVAL_S + 1.0)  # several polls of the servers that do poll
        assert set(version_states(client)) == {1}, "with --poll-interval 0 nothing reloads"


def test_a_request_that_outlives_the_model_timeout_gets_a_504_over_http(
    repository: Path, start_server: StartServer
) -> None:
    write_config(repository, f"models: {{{MODEL}: {{batching: {{timeout_s: 0.001}}}}}}\n")
    with (
        start_server(repository) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):

        def infer(_: int) -> httpx.Response:
            return client.post(f"/v2/models/{MODEL}/infer", json=v2_infer_body())

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(infer, range(64)))
    statuses = {answer.status_code for answer in answers}
    assert statuses <= {200, 504}, statuses
    timed_out = [answer for answer in answers if answer.status_code == 504]
    assert timed_out, "a 1 ms timeout under 16 concurrent requests gave no 504"
    assert f"model '{MODEL}' did not answer within 0.001 s" in timed_out[0].json()["error"]
