"""A bounded load: a few httpx clients in threads, each recording every request it made."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.lifecycle.conftest import MODEL, v2_infer_body


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it (monotonic times; status 0: transport error)."""

    started: float
    finished: float
    status: int
    version: int | None
    error: str = ""


@dataclass
class BoundedLoad:
    """`clients` threads sending v2 infer requests until `stop()`, `max_seconds` or
    `max_requests` each; `pause_s` between requests keeps the two shared cores usable."""

    url: str
    clients: int = 3
    pause_s: float = 0.02
    max_seconds: float = 240.0
    max_requests: int = 20000
    stop_on_transport_error: bool = False
    # A new connection per request: with several worker processes on one socket, requests
    # then reach every worker, not the one each client's first connection landed on.
    fresh_connections: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> BoundedLoad:
        body = v2_infer_body()
        for index in range(self.clients):
            thread = threading.Thread(
                target=self._client, args=(body,), daemon=True, name=f"load-{index}"
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._lock:
            return sorted(self.outcomes, key=lambda o: o.started)

    def _client(self, body: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.max_seconds
        keepalive = 0 if self.fresh_connections else 20  # 20: httpx's default
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=keepalive)
        with httpx.Client(base_url=self.url, timeout=30.0, limits=limits) as client:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    response = client.post(f"/v2/models/{MODEL}/infer", json=body)
                except httpx.TransportError as exc:
                    self._add(Outcome(started, time.monotonic(), 0, None, repr(exc)))
                    if self.stop_on_transport_error:
                        return
                    continue
                version = (
                    int(response.json()["model_version"]) if response.status_code == 200 else None
                )
                self._add(
                    Outcome(
                        started,
                        time.monotonic(),
                        response.status_code,
                        version,
                        "" if response.status_code == 200 else response.text,
                    )
                )
                if self.pause_s:
                    time.sleep(self.pause_s)

    def _add(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)


@dataclass
class PostsUntilStopped:
    """`clients` threads posting one body in a loop (one connection each) until `stop()` or a
    transport error; `results`: (started, finished, status or the error's type name)."""

    url: str
    body: bytes
    headers: dict[str, str]
    clients: int = 4
    results: list[tuple[float, float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PostsUntilStopped:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[tuple[float, float, int | str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            return list(self.results)

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status: int | str = client.post(
                        f"/v2/models/{MODEL}/infer", content=self.body, headers=self.headers
                    ).status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.results.append((started, time.monotonic(), status))
                if isinstance(status, str):
                    return


@dataclass(frozen=True)
class Drain:
    """What a SIGTERM under load left behind, as the test saw it."""

    signalled: float
    exited: float
    exit_status: int
    ready: httpx.Response  # readiness asked just after the signal
    new_request: httpx.Response  # an inference sent just after the signal
    results: list[tuple[float, float, int | str]]  # PostsUntilStopped's
    log: str


def assert_drained(drain: Drain, grace_s: float, min_before: int = 1) -> None:
    """SIGTERM's promise: exit 0 within the grace period, not ready and new requests 503 at
    once, and every request sent before the signal answered (200, or 503 when it had not
    started), never a dropped connection or a 500; some were in flight at the signal."""
    assert drain.exit_status == 0, drain.log[-3000:]
    assert drain.exited - drain.signalled < grace_s + 5.0
    assert drain.ready.status_code == 503
    assert drain.new_request.status_code == 503
    assert "shutting down" in drain.new_request.json()["error"]
    before = [r for r in drain.results if r[0] < drain.signalled]
    assert len(before) >= min_before
    straddling = [r for r in before if r[1] > drain.signalled]
    assert straddling, "no request was in flight at the signal"
    assert all(r[2] in (200, 503) for r in before), [r for r in before if r[2] not in (200, 503)]
    assert any(r[2] == 200 for r in straddling)
