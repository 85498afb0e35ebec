"""The app over a model repository, with its lifespan running, talked to in-process.

For tests where processes, sockets and signals do not matter: `httpx.ASGITransport` calls the
real app (middleware, routes, data plane, TensorFlow) without a port or a subprocess.

- `in_process`: an `httpx.AsyncClient`, for async tests (the app runs on the test's loop);
- `in_process_sync`: the same app on an event loop of its own in a background thread, with a
  plain `httpx.Client` for synchronous tests, and `InProcessApp.run` for the tests that send
  concurrent requests from coroutines (they run on the app's loop, as a server's would).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

LOAD_TIMEOUT_S = 120.0
#: The longest a synchronous request may take, as the live tests' client timeout was.
REQUEST_TIMEOUT_S = 60.0

T = TypeVar("T")


@asynccontextmanager
async def in_process(repository: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of the app over `repository` once its initial load is done (`settings`:
    any of `app.settings.Settings`)."""
    from app.main import create_app
    from app.settings import Settings

    # CPU, no polling and no gRPC port unless the test says otherwise.
    chosen = {"device": "cpu", "poll_interval": 0, "grpc_port": 0, **settings}
    app = create_app(Settings(model_repository=repository, **chosen))
    async with app.router.lifespan_context(app):
        deadline = asyncio.get_running_loop().time() + LOAD_TIMEOUT_S
        while not app.state.registry.initial_load_done:
            assert asyncio.get_running_loop().time() < deadline, "models did not load"
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


class _PortalTransport(httpx.BaseTransport):
    """A synchronous transport that hands each request to the async client on the portal's
    loop and gives back its raw (still encoded) body."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._portal.call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        body = request.stream
        if not isinstance(body, httpx.AsyncByteStream):
            body = _AsyncChunks(body)  # a generator body stays chunked
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, stream=body)
        with anyio.fail_after(REQUEST_TIMEOUT_S):
            response = await self._client.send(forwarded, stream=True)
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=httpx.ByteStream(raw),
            extensions={"http_version": b"HTTP/1.1"},
        )


class _AsyncChunks(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._stream:
            yield chunk


class InProcessApp:
    """A running in-process app: `client` for synchronous requests, `run` for coroutines."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self.async_client = client
        self.client = httpx.Client(
            transport=_PortalTransport(portal, client), base_url="http://testserver"
        )

    def run(self, function: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        """`await function(async_client)` on the app's loop, from a synchronous test."""

        async def call() -> T:
            return await function(self.async_client)

        return self._portal.call(call)


@contextmanager
def in_process_sync(repository: Path, **settings: Any) -> Iterator[InProcessApp]:
    """`in_process` for synchronous tests: loaded once, stopped when the block ends."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(in_process(repository, **settings)) as client,
    ):
        app = InProcessApp(portal, client)
        try:
            yield app
        finally:
            app.client.close()
