"""SIGTERM under load: not ready at once, new requests 503, in-flight ones finish, exit 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.lifecycle.conftest import MODEL, binary_infer_request
from tests.lifecycle.load import Drain, PostsUntilStopped, assert_drained

GRACE_S = 10.0
BIG_BATCH_ROWS = 128  # in flight for some ms: requests straddle the signal


def test_sigterm_drains_in_flight_requests_and_exits_zero(repository: Path, start_server) -> None:
    body, headers = binary_infer_request(BIG_BATCH_ROWS)
    with start_server(repository, "--shutdown-grace", str(GRACE_S)) as server:
        probe = httpx.Client(base_url=server.url, timeout=30.0)
        assert probe.get("/v2/health/ready").status_code == 200
        posts = PostsUntilStopped(server.url, body, headers, clients=4).start()
        time.sleep(2.0)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        ready = probe.get("/v2/health/ready")
        new_request = probe.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
        exit_status = server.process.wait(timeout=GRACE_S + 10.0)
        exited = time.monotonic()
        results = posts.stop()
        probe.close()
        log = server.log()

    drain = Drain(signalled, exited, exit_status, ready, new_request, results, log)
    assert_drained(drain, GRACE_S, min_before=4)
    assert "drained" in log
