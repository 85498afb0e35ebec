"""Start and stop the gRPC server from the app's lifespan, without delaying HTTP.

Why in the background: the TF Serving message modules import TensorFlow's protobuf package,
which imports TensorFlow itself (about 5 s here). Imported in a worker thread while the lifespan
returns at once, the HTTP liveness route answers during that time, as it did before; the models
need TensorFlow imported before they can load anyway, so readiness is not later than it was.

A port that cannot be bound is fatal, like the HTTP port: the error is logged, kept in
`error`, and the process is asked to stop (SIGTERM); `python -m app` then exits with its
start-error status. (It also checks the port before starting, so this is the rare case of
a port taken in between.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.dataplane import DataPlane
    from app.metrics import ServiceMetrics
    from app.repository.reloader import RepositoryReloader
    from app.security.tokens import TokenGuard
    from app.settings import Settings

log = logging.getLogger(__name__)
SERVER_MODULE = "app.protocols.grpc.server"


class GrpcLifecycle:
    """The gRPC front end of one app: `start()` in the lifespan, `stop()` at its end."""

    def __init__(
        self,
        settings: Settings,
        dataplane: DataPlane,
        guard: TokenGuard,
        metrics: ServiceMetrics | None,
        reloader: RepositoryReloader,
    ) -> None:
        self._settings = settings
        self._dataplane = dataplane
        self._guard = guard
        self._metrics = metrics
        self._reloader = reloader
        self._task: asyncio.Task[None] | None = None
        self._server: Any = None
        self.port: int | None = None  # the bound port once serving
        self.error: str | None = None
        self.started = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self._settings.grpc_port != 0

    def start(self) -> None:
        """Begin starting in the background (returns at once); nothing when the port is 0."""
        if self.enabled:
            self._task = asyncio.create_task(self._start(), name="grpc-start")

    async def _start(self) -> None:
        settings = self._settings
        try:
            module = await asyncio.to_thread(importlib.import_module, SERVER_MODULE)
            from app.protocols.grpc.calls import FrontEnd

            front = FrontEnd(
                dataplane=self._dataplane,
                guard=self._guard,
                metrics=self._metrics,
                reloader=self._reloader,
                inline_parse_bytes=settings.inline_parse_bytes,
            )
            server = module.GrpcServer(
                front,
                settings.host,
                settings.grpc_port,
                max_message_bytes=settings.max_body_bytes,
                max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
                reuse_port=settings.workers > 1,
            )
            self.port = await server.start()
        except Exception as exc:  # a bind failure (GrpcStartError) or a broken install
            self.error = str(exc) or type(exc).__name__
            log.error(
                "the gRPC server could not start: %s; stopping",
                self.error,
                exc_info=type(exc).__name__ != "GrpcStartError",
            )
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._server = server
        self.started.set()

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let running ones finish for up to `grace_s`, then cancel them."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
