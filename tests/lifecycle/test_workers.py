"""`--workers 4`: every worker follows the control API, serves a new version, drains on SIGTERM.

Several worker processes accept on one socket; a request reaches whichever worker the kernel
hands its connection to. The probes here use a fresh connection each, so that they reach
every worker, and identify the worker by the `worker_pid` of `GET /v2/repository/config`.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.lifecycle.conftest import (
    ADMIN_HEADERS,
    MODEL,
    POLL_INTERVAL_S,
    SERVER_ARGS,
    binary_infer_request,
    publish_copy,
    v2_infer_body,
)
from tests.lifecycle.load import BoundedLoad, Drain, PostsUntilStopped, assert_drained
from tests.live_server import LiveServer, live_server

WORKERS = 4
# Four processes importing TensorFlow and loading on two cores, shared with other test runs.
START_TIMEOUT_S = 360.0
# Beyond the poll interval, for a worker to act on a decision another worker took: the pass
# reading the state, scheduling on a busy shared machine.
FOLLOW_SLACK_S = 1.0
# For every worker to be seen reporting it: each one's unload ends with a full garbage
# collection (seconds with four workers on two shared cores), and loads take seconds.
REPORT_TIMEOUT_S = 60.0
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?: (.*)$", re.M)
PROBES = 40  # readiness probes on fresh connections once every worker has followed
GRACE_S = 10.0
BIG_BATCH_ROWS = 128  # in flight for some ms: requests straddle the signal


@contextmanager
def _workers(repository: Path, logs: Path, *extra: str) -> Iterator[LiveServer]:
    # Live: `--workers` forks uvicorn worker processes.
    with live_server(
        repository,
        logs,
        [*SERVER_ARGS, "--workers", str(WORKERS), *extra],
        start_timeout_s=START_TIMEOUT_S,
    ) as server:
        yield server


# No keep-alive: every request on a connection of its own, so that any worker may take it (one
# client, not one per request: making a client costs tens of milliseconds on a busy machine).
_NO_KEEPALIVE = httpx.Limits(max_connections=10, max_keepalive_connections=0)
_clients: dict[str, httpx.Client] = {}


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.popitem()[1].close()


def _fresh(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a new connection."""
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = httpx.Client(base_url=url, timeout=30.0, limits=_NO_KEEPALIVE)
    return client.request(method, path, **kwargs)


def _every_worker(
    url: str, condition: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
) -> dict[int, float]:
    """Probe until all `WORKERS` workers have answered with a config status that meets
    `condition`; for each worker pid, when it was first seen meeting it."""
    deadline = time.monotonic() + timeout_s
    seen: dict[int, float] = {}
    last: dict[int, dict[str, Any]] = {}
    while len(seen) < WORKERS:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for every worker to {what}: "
                f"{len(seen)} of {WORKERS} did; last answers {last}"
            )
        try:
            response = _fresh(url, "GET", "/v2/repository/config", headers=ADMIN_HEADERS)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        assert response.status_code == 200, response.text
        status = response.json()
        pid = status["worker_pid"]
        last[pid] = status["models"].get(MODEL, {})
        if pid not in seen and condition(status):
            seen[pid] = time.monotonic()
        time.sleep(0.01)
    assert len(last) == WORKERS, f"answers from {sorted(last)}: not {WORKERS} workers"
    return seen


def _serving(versions: list[int]) -> Callable[[dict[str, Any]], bool]:
    return lambda status: status["models"].get(MODEL, {}).get("serving_versions") == versions


def _logged_at(log: str, message: str) -> list[float]:
    """Timestamps (seconds) of the log lines whose message is `message`."""
    return [
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for stamp, text in LOG_TIME.findall(log)
        if text == message
    ]


def _followed_after(log: str, requested: str, followed: str) -> float:
    """Seconds from the request taken by one worker until the last other worker acted on it."""
    (taken,) = _logged_at(log, requested)
    acted = _logged_at(log, followed)
    assert len(acted) == WORKERS - 1, f"{len(acted)} workers followed {requested!r}"
    return max(acted) - taken


def _statuses(url: str, method: str, path: str, **kwargs: Any) -> list[int]:
    return [_fresh(url, method, path, **kwargs).status_code for _ in range(PROBES)]


def test_control_api_through_one_worker_reaches_every_worker(
    repository: Path, tmp_path: Path
) -> None:
    with (
        _workers(repository, tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=60.0, headers=ADMIN_HEADERS) as admin,
    ):
        _every_worker(server.url, _serving([1]), START_TIMEOUT_S, "serve version 1")

        unload = admin.post(f"/v2/repository/models/{MODEL}/unload")
        assert unload.status_code == 200, unload.text
        _every_worker(
            server.url,
            lambda s: _serving([])(s) and s["unloaded_by_request"] == [MODEL],
            REPORT_TIMEOUT_S,
            "unload the model",
        )
        # Every worker now says the same: the model is not ready and serves nothing.
        ready = _statuses(server.url, "GET", f"/v2/models/{MODEL}/ready")
        infer = _statuses(server.url, "POST", f"/v2/models/{MODEL}/infer", json=v2_infer_body())

        load = admin.post(f"/v2/repository/models/{MODEL}/load")
        assert load.status_code == 200, load.text
        _every_worker(
            server.url,
            lambda s: _serving([1])(s) and s["unloaded_by_request"] == [],
            REPORT_TIMEOUT_S,
            "load the model again",
        )
        ready_again = _statuses(server.url, "GET", f"/v2/models/{MODEL}/ready")
        server_ready = _statuses(server.url, "GET", "/v2/health/ready")
        infer_again = _statuses(
            server.url, "POST", f"/v2/models/{MODEL}/infer", json=v2_infer_body()
        )
        log = server.log()

    unload_s = _followed_after(
        log,
        f"unload of {MODEL} requested",
        f"unloading {MODEL} version 1: unload requested through another worker",
    )
    load_s = _followed_after(
        log, f"load of {MODEL} requested", f"load of {MODEL} requested through another worker"
    )
    print(f"\nfollowed: the unload after {unload_s:.2f} s, the load after {load_s:.2f} s")
    assert unload_s <= POLL_INTERVAL_S + FOLLOW_SLACK_S, unload_s
    assert load_s <= POLL_INTERVAL_S + FOLLOW_SLACK_S, load_s
    assert set(ready) == {503}, ready
    assert set(infer) == {503}, infer
    assert set(ready_again) == {200}, ready_again
    assert set(server_ready) == {200}, server_ready
    assert set(infer_again) == {200}, infer_again


def test_new_version_under_load_then_sigterm_under_load(
    repository: Path, tmp_path: Path, mnist_version_source: Path
) -> None:
    with _workers(repository, tmp_path, "--shutdown-grace", str(GRACE_S)) as server:
        _every_worker(server.url, _serving([1]), START_TIMEOUT_S, "serve version 1")

        # A new version published under load, requests on fresh connections (every worker).
        load = BoundedLoad(server.url, clients=3, pause_s=0.02, fresh_connections=True).start()
        try:
            time.sleep(1.0)
            publish_copy(repository, mnist_version_source, 2)
            switched = _every_worker(
                server.url, _serving([2]), 120.0, "serve version 2 and unload version 1"
            )
            time.sleep(1.0)  # responses after the switch
        finally:
            outcomes = load.stop()
        failed = [o for o in outcomes if o.status != 200]
        assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
        all_switched = max(switched.values())
        after = [o for o in outcomes if o.started > all_switched]
        assert after, "no request after every worker had switched"
        assert all(o.version == 2 for o in after), "version 1 answered after the switch"
        assert {o.version for o in outcomes} == {1, 2}

        # SIGTERM to the supervisor under load: each worker drains, the supervisor exits 0.
        body, headers = binary_infer_request(BIG_BATCH_ROWS)
        posts = PostsUntilStopped(server.url, body, headers, clients=WORKERS).start()
        time.sleep(2.0)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # The supervisor passes the signal on at its next check (every 0.5 s).
        deadline = signalled + 3.0
        ready = _fresh(server.url, "GET", "/v2/health/ready")
        while ready.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
            ready = _fresh(server.url, "GET", "/v2/health/ready")
        new_request = _fresh(
            server.url, "POST", f"/v2/models/{MODEL}/infer", content=body, headers=headers
        )
        exit_status = server.process.wait(timeout=GRACE_S + 15.0)
        exited = time.monotonic()
        results = posts.stop()
        log = server.log()

    assert_drained(Drain(signalled, exited, exit_status, ready, new_request, results, log), GRACE_S)
    assert log.count("drained in") == WORKERS, log[-3000:]
