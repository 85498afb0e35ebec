"""`/metrics` parses and moves with traffic; JSON logs carry request ids; X-Request-ID."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.lifecycle.conftest import MODEL, tf_predict_body, v2_infer_body, wait_for
from tests.lifecycle.metrics_util import scrape

REQUEST_ID = "lifecycle-test-42"
EXPECTED_FAMILIES = {
    "kerasserve_requests",
    "kerasserve_request_duration_seconds",
    "kerasserve_queue_duration_seconds",
    "kerasserve_compute_duration_seconds",
    "kerasserve_batch_size_rows",
    "kerasserve_queue_depth_rows",
    "kerasserve_model_versions",
    "kerasserve_model_load_duration_seconds",
    "kerasserve_model_load_failures",
    "kerasserve_process_resident_memory_bytes",
    "kerasserve_gpu_memory_in_use_bytes",
}


def test_metrics_move_with_requests_and_logs_are_json_with_request_ids(
    repository: Path, start_server
) -> None:
    with (
        start_server(repository, "--log-format", "json", "--log-level", "debug") as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        before = scrape(client)
        assert before.family_names >= EXPECTED_FAMILIES, EXPECTED_FAMILIES - before.family_names

        tagged = client.post(
            f"/v2/models/{MODEL}/infer", json=v2_infer_body(), headers={"X-Request-ID": REQUEST_ID}
        )
        assert tagged.status_code == 200
        assert tagged.headers["x-request-id"] == REQUEST_ID
        for _ in range(2):
            untagged = client.post(f"/v2/models/{MODEL}/infer", json=v2_infer_body(rows=3))
            assert re.fullmatch(r"[0-9a-f]{16}", untagged.headers["x-request-id"])
        for _ in range(2):
            assert (
                client.post(f"/v1/models/{MODEL}:predict", json=tf_predict_body()).status_code
                == 200
            )
        assert (
            client.post("/v2/models/no-such-model/infer", json=v2_infer_body()).status_code == 404
        )

        after = scrape(client)

        def moved(name: str, **labels: str) -> float:
            return after.value(name, **labels) - before.value(name, **labels)

        ok = {"model": MODEL, "version": "1", "code": "200"}
        assert moved("kerasserve_requests_total", protocol="kserve_v2", **ok) == 3
        assert moved("kerasserve_requests_total", protocol="tfserving", **ok) == 2
        # Unknown names never become label values (a client could create endless series).
        assert moved("kerasserve_requests_total", model="", protocol="kserve_v2", code="404") == 1
        assert 'model="no-such-model"' not in client.get("/metrics").text
        assert moved("kerasserve_request_duration_seconds_count", model=MODEL) == 5
        assert moved("kerasserve_batch_size_rows_sum", model=MODEL, version="1") == 1 + 3 + 3 + 2
        assert moved("kerasserve_compute_duration_seconds_count", model=MODEL) >= 1
        assert moved("kerasserve_queue_duration_seconds_count", model=MODEL) >= 1
        assert after.value("kerasserve_model_versions", model=MODEL, state="AVAILABLE") == 1
        assert after.value("kerasserve_model_load_duration_seconds_count", model=MODEL) == 1
        assert after.value("kerasserve_process_resident_memory_bytes") > 50e6

        def request_line() -> dict | None:
            for line in server.log().splitlines():
                if REQUEST_ID in line and line.startswith("{"):
                    entry = json.loads(line)
                    if entry.get("event") == "request":
                        return entry
            return None

        entry = wait_for(request_line, 5.0, "the request's log line")
        assert entry["request_id"] == REQUEST_ID and entry["level"] == "debug"
        assert entry["model"] == MODEL and entry["version"] == "1" and entry["status"] == 200
        assert entry["duration_ms"] > 0
        events = [
            json.loads(line)
            for line in server.log().splitlines()
            if line.startswith("{") and '"event"' in line
        ]
        loaded = [e for e in events if e["event"] == "model_loaded"]
        assert loaded and loaded[0]["level"] == "info" and loaded[0]["model"] == MODEL
