"""One real server for the hostile tests, and a probe that measures what each request costs it.

The server is `python -m app` on 127.0.0.1 with the repository's published models and the
documented default limits (only the log level is changed). `Probe.send` resets the server
process's peak resident memory (`VmHWM`, by writing 5 to `/proc/<pid>/clear_refs`), sends one
request and reads the peak back: the growth over the resident memory before the request is what
that request cost. The documented bound (README, "Limits"): at most
`MEMORY_PER_BODY_BYTE` times the body plus `MEMORY_CONSTANT`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.repository.format import newest_version_dir
from tests.live_server import REPO_ROOT, LiveServer, live_server

SERVED_MODELS = ("mnist", "deskew", "ocr")
#: The documented bound on one request's peak memory: a small multiple of its size plus a
#: constant (the constant covers the model call and the response of a small request).
MEMORY_PER_BODY_BYTE = 8
MEMORY_CONSTANT = 64 * 1024 * 1024
#: Statuses a hostile request may get; never a 5xx.
CLIENT_ERRORS = frozenset({400, 404, 413, 415, 429})


@pytest.fixture(scope="session")
def hostile_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = REPO_ROOT / "models"
    if not all((source / m).is_dir() and newest_version_dir(source / m) for m in SERVED_MODELS):
        pytest.skip(
            "models/ has not got mnist, deskew and ocr published yet (run the training jobs)"
        )
    target = tmp_path_factory.mktemp("hostile-repository")
    for name in SERVED_MODELS:
        newest = newest_version_dir(source / name)
        assert newest is not None
        shutil.copytree(newest, target / name / newest.name)
    return target


@pytest.fixture(scope="session")
def hostile_server(
    hostile_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The server with its default limits (one for the whole session)."""
    args = ["--device", "cpu", "--log-level", "warning"]
    # No gRPC listener: its fixed default port would collide with other test servers.
    # Live: each request's cost is read from the server process's peak memory (/proc/<pid>).
    with live_server(
        hostile_repository,
        tmp_path_factory.mktemp("hostile-logs"),
        args,
        # glibc's mmap threshold pinned at 1 MiB: every large buffer is mapped and unmapped with
        # its array, so a request's peak is what it holds at once. With glibc's default sliding
        # threshold the peak depended on what earlier requests had freed: the same 4000 x 3000
        # photo measured 48 MB in some server processes and 87-111 MB in others.
        env={"KERASSERVE_GRPC_PORT": "0", "MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)},
    ) as running:
        yield running


@dataclass
class Measured:
    response: httpx.Response
    seconds: float
    peak_bytes: int  # growth of the server's peak RSS over its RSS before the request
    body_bytes: int

    @property
    def status(self) -> int:
        return self.response.status_code

    def within_memory_bound(self) -> bool:
        return self.peak_bytes <= MEMORY_PER_BODY_BYTE * self.body_bytes + MEMORY_CONSTANT

    def describe(self) -> str:
        return (
            f"status {self.status} in {self.seconds * 1000:.0f} ms, peak +"
            f"{self.peak_bytes / 2**20:.1f} MiB for a {self.body_bytes}-byte body: "
            f"{self.response.text[:200]!r}"
        )


class Probe:
    """Sends requests to the server and measures each one's time and peak memory."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.pid = server.process.pid
        self.client = httpx.Client(base_url=server.url, timeout=120.0)

    def _status(self) -> dict[str, int]:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return {
            line.split(":")[0]: int(line.split()[1]) * 1024
            for line in text.splitlines()
            if line.startswith(("VmHWM", "VmRSS"))
        }

    def send(self, method: str, path: str, content: bytes = b"", **kwargs: Any) -> Measured:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # peak := current RSS
        before = self._status()["VmRSS"]
        started = time.perf_counter()
        response = self.client.request(method, path, content=content, **kwargs)
        seconds = time.perf_counter() - started
        peak = self._status()["VmHWM"]
        return Measured(response, seconds, max(0, peak - before), len(content))

    def assert_client_error_within_bounds(
        self, measured: Measured, allowed: frozenset[int] = CLIENT_ERRORS
    ) -> None:
        """A 4xx with an `{"error": ...}` body (or 200), within the memory bound, server up."""
        assert measured.status == 200 or measured.status in allowed, measured.describe()
        if measured.status != 200:
            assert isinstance(measured.response.json().get("error"), str), measured.describe()
        assert measured.within_memory_bound(), measured.describe()
        assert self.server.is_running(), self.server.log()[-2000:]


@pytest.fixture(scope="session")
def probe(hostile_server: LiveServer) -> Iterator[Probe]:
    measuring = Probe(hostile_server)
    yield measuring
    measuring.client.close()
