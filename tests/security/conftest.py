"""Fixtures for the access and HTTP-limit tests: in-process apps and real servers.

In-process apps (httpx.ASGITransport) check the token and cross-site rules; they serve an empty
repository, so every route answers without a model loading (no lifespan runs in-process). Real
`python -m app` processes on 127.0.0.1 check what needs sockets: header limits, slow clients,
connection caps, tritonclient against the control routes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import LiveServer

API_TOKEN = "api-token-7c1f0b2e9d"
ADMIN_TOKEN = "admin-token-4a8e6f3b21"
API_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIVE_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def empty_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty-repository")


@pytest.fixture()
def make_client(empty_repository: Path) -> Callable[..., Any]:
    """`async with make_client(api_tokens=[...], ...) as client:` over a fresh in-process app."""

    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
        from app.main import create_app
        from app.settings import Settings

        app = create_app(
            Settings(model_repository=empty_repository, device="cpu", poll_interval=0, **settings)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client

    return make


def wait_live(server: LiveServer, timeout_s: float = LIVE_TIMEOUT_S) -> None:
    """Until `/v2/health/live` answers 200 (an empty repository has nothing to wait for)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert server.is_running(), f"server exited:\n{server.log()[-4000:]}"
        try:
            if httpx.get(f"{server.url}/v2/health/live", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server not live:\n{server.log()[-4000:]}"
        time.sleep(0.2)
