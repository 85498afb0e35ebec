"""Hot reload under load: a training run publishes a new version, a corrupt version appears."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.lifecycle.conftest import (
    ADMIN_HEADERS,
    MODEL,
    POLL_INTERVAL_S,
    REPO_ROOT,
    TINY_TRAINING,
    TRAIN_TIMEOUT_S,
    publish_copy,
    version_states,
    wait_for,
)
from tests.lifecycle.load import BoundedLoad
from tests.lifecycle.metrics_util import scrape
from tests.training.conftest import cli_env, training_command

SWITCH_SLACK_S = 3.0  # scan, scheduling and the first request on two busy shared cores


def _load_seconds(client: httpx.Client) -> float:
    return scrape(client).value("kerasserve_model_load_duration_seconds_sum", model=MODEL)


def test_training_publishes_a_new_version_under_load_without_a_failed_request(
    repository: Path, start_server
) -> None:
    with (
        start_server(repository) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        first_load_s = _load_seconds(client)
        load = BoundedLoad(server.url, clients=3, pause_s=0.02).start()
        try:
            time.sleep(1.0)
            options = ["--repository", str(repository), "--version", "2"]
            training = subprocess.Popen(
                training_command(MODEL, *TINY_TRAINING, *options),
                cwd=REPO_ROOT,
                env=cli_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            published_at = None
            deadline = time.monotonic() + TRAIN_TIMEOUT_S
            while published_at is None and time.monotonic() < deadline:
                if (repository / MODEL / "2").is_dir():
                    published_at = time.monotonic()
                elif training.poll() is not None and not (repository / MODEL / "2").is_dir():
                    break
                time.sleep(0.02)
            output = training.communicate(timeout=TRAIN_TIMEOUT_S)[0].decode(errors="replace")
            assert training.returncode == 0, f"training failed:\n{output[-3000:]}"
            assert published_at is not None, "the training run published no version 2"
            first_new = wait_for(
                lambda: [o for o in list(load.outcomes) if o.version == 2],
                120.0,
                "a response from version 2",
            )
            time.sleep(1.5)  # responses after the switch
        finally:
            outcomes = load.stop()
        failed = [o for o in outcomes if o.status != 200]
        assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
        switched_at = min(o.finished for o in first_new)
        after_switch = [o for o in outcomes if o.started > switched_at]
        assert after_switch and all(o.version == 2 for o in after_switch), (
            "a request started after the switch was answered by version 1"
        )
        new_load_s = _load_seconds(client) - first_load_s
        switch_latency = switched_at - published_at
        print(
            f"\nswitch latency {switch_latency:.2f} s (poll interval {POLL_INTERVAL_S} s, "
            f"load + warm-up of version 2 {new_load_s:.2f} s, {len(outcomes)} requests, "
            f"{len([o for o in outcomes if o.version == 1])} by version 1)"
        )
        assert new_load_s > 0
        assert switch_latency <= POLL_INTERVAL_S + new_load_s + SWITCH_SLACK_S
        states = wait_for(
            lambda: (s := version_states(client))[1]["state"] == "END" and s,
            10.0,
            "version 1 to be unloaded",
        )
        assert states[2]["state"] == "AVAILABLE"


def _truncate_saved_model(version: Path) -> None:
    path = version / "saved_model.pb"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_corrupt_version_is_reported_and_traffic_stays_on_the_old_one(
    repository: Path, start_server, mnist_version_source: Path
) -> None:
    with (
        start_server(repository) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        load = BoundedLoad(server.url, clients=2, pause_s=0.02).start()
        try:
            publish_copy(repository, mnist_version_source, 2, change=_truncate_saved_model)
            states = wait_for(
                lambda: (s := version_states(client)).get(2, {}).get("state") == "END" and s,
                60.0,
                "version 2 to fail",
            )
            time.sleep(4 * POLL_INTERVAL_S)  # a few more polls: no retry, no disturbance
        finally:
            outcomes = load.stop()
        assert outcomes and all(o.status == 200 and o.version == 1 for o in outcomes), [
            o for o in outcomes if o.status != 200 or o.version != 1
        ][:5]
        broken = states[2]["status"]
        assert broken["error_code"] != "OK"
        assert "cannot load SavedModel" in broken["error_message"]
        assert version_states(client)[1]["state"] == "AVAILABLE"

        index = client.post("/v2/repository/index", headers=ADMIN_HEADERS).json()
        entry = next(e for e in index if e["name"] == MODEL and e["version"] == "2")
        assert entry["state"] == "UNAVAILABLE"
        assert entry["reason"].startswith("failed to load: cannot load SavedModel")
        metrics = scrape(client)
        assert metrics.value("kerasserve_model_load_failures_total", model=MODEL) == 1

        # A good version published after the failure is picked up as usual.
        publish_copy(repository, mnist_version_source, 3)
        wait_for(
            lambda: version_states(client).get(3, {}).get("state") == "AVAILABLE",
            60.0,
            "version 3 to load",
        )
        answer = client.post(
            f"/v2/models/{MODEL}/infer",
            json={
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 28, 28, 1],
                        "datatype": "FP32",
                        "data": [0.0] * 784,
                    }
                ]
            },
        )
        assert answer.status_code == 200 and answer.json()["model_version"] == "3"
