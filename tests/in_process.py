"""The app over a model repository, with its lifespan running, talked to in-process.

For tests where processes, sockets and signals do not matter: `httpx.ASGITransport` calls the
real app (middleware, routes, data plane, TensorFlow) without a port or a subprocess.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

LOAD_TIMEOUT_S = 120.0


@asynccontextmanager
async def in_process(repository: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of the app over `repository` once its initial load is done."""
    from app.main import create_app
    from app.settings import Settings

    app = create_app(
        Settings(
            model_repository=repository, device="cpu", poll_interval=0, grpc_port=0, **settings
        )
    )
    async with app.router.lifespan_context(app):
        deadline = asyncio.get_running_loop().time() + LOAD_TIMEOUT_S
        while not app.state.registry.initial_load_done:
            assert asyncio.get_running_loop().time() < deadline, "models did not load"
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
