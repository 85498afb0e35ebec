"""One repository of test-built models (`tests.signatures.models`), served two ways.

- `app_client`: the app in this process (`tests.in_process`: httpx over ASGI, lifespan run, so
  the models really load and the batcher really runs), for everything HTTP-only;
- `live`: a real `python -m app` with a gRPC port, for the clients that need sockets
  (tritonclient.http, tritonclient.grpc, TF Serving's gRPC stubs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.grpc.conftest import wait_for_grpc
from tests.in_process import in_process_sync
from tests.live_server import LiveServer, free_port, live_server
from tests.signatures.models import export_all

GRPC_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_all(tmp_path_factory.mktemp("signatures") / "models")


@pytest.fixture(scope="module")
def app_client(repository: Path) -> Iterator[httpx.Client]:
    with in_process_sync(repository) as served:
        yield served.client


@dataclass(frozen=True)
class Live:
    server: LiveServer
    grpc_address: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def host_port(self) -> str:
        return self.server.url.removeprefix("http://")


@pytest.fixture(scope="session")
def live(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    grpc_port = free_port()
    args = ["--device", "cpu", "--grpc-port", str(grpc_port), "--log-level", "warning"]
    # Live: tritonclient.http/grpc and TF Serving's stubs need a socket and a gRPC port.
    with live_server(repository, tmp_path_factory.mktemp("signature-logs"), args) as server:
        address = f"127.0.0.1:{grpc_port}"
        wait_for_grpc(address, GRPC_START_TIMEOUT_S, server)
        yield Live(server, address)
