"""Run uvicorn with a graceful SIGTERM that ends in exit status 0.

What SIGTERM (or Ctrl-C) does here, in order:
1. at once: the data plane is marked shutting down, so readiness answers 503 and new inference
   requests get 503 while the listening socket stays open (a load balancer sees "not ready"
   instead of connection errors);
2. requests that already hold a model version (registry leases) finish, for at most
   `grace_s` seconds;
3. then uvicorn's own shutdown closes the sockets, waits for responses still being written
   (bounded by what is left of the grace period) and runs the app's lifespan shutdown (runners
   drained and closed);
4. `serve_gracefully` returns and `python -m app` exits 0 (at once, abandoning it, when a model
   load is still running in its thread: `exit_if_loads_running`).

Why a subclass of `uvicorn.Server`: uvicorn records the signal and re-raises it after its
own graceful shutdown, so the process dies of SIGTERM (status 143) even after a clean drain.
`handle_exit` here does not record it. A second signal stops at once (uvicorn's force exit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from app.heap import freeze_heap_after_initial_load
from app.security.http_limits import HttpLimits
from app.security.http_limits import configure as configure_http_limits

log = logging.getLogger(__name__)
DRAIN_POLL_S = 0.02


class GracefulServer(uvicorn.Server):
    """`uvicorn.Server` whose first SIGTERM/SIGINT drains the app before stopping."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        # Not part of shutdown, but this is where the single-worker server's loop starts.
        freezer = self._loop.create_task(
            freeze_heap_after_initial_load(self._app.state.registry), name="freeze-heap"
        )
        try:
            await super().serve(sockets)
        finally:
            freezer.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: start the drain (first signal) or stop now (second one)."""
        if self._draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self._draining
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(
            self._drain(sig), name="graceful-drain"
        )

    async def _drain(self, sig: int) -> None:
        started = time.monotonic()
        state = self._app.state
        state.dataplane.shutting_down = True
        log.info(
            "signal %d: not ready any more, draining in-flight requests for up to %.1f s",
            sig,
            self._grace_s,
            extra={"event": "shutdown_started"},
        )
        deadline = started + self._grace_s
        while in_flight_inference(self._app) and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        left = in_flight_inference(self._app)
        if left:
            log.warning("grace period over with %d requests still in flight", left)
        remaining = max(deadline - time.monotonic(), 1.0)
        self.config.timeout_graceful_shutdown = int(remaining + 0.999)
        log.info(
            "drained in %.2f s; stopping",
            time.monotonic() - started,
            extra={"event": "shutdown_drained"},
        )
        self.should_exit = True


def in_flight_inference(app: FastAPI) -> int:
    """Requests holding a model version right now (the registry's leases)."""
    registry = app.state.registry
    return sum(
        entry.in_flight for name in registry.model_names() for entry in registry.versions(name)
    )


def serve_gracefully(
    app: FastAPI,
    host: str,
    port: int,
    log_level: str,
    grace_s: float,
    json_logs: bool = False,
    access_log: bool = False,
    limits: HttpLimits | None = None,
) -> None:
    """Serve `app` until SIGTERM/SIGINT, drain it, and return (the caller exits 0).

    uvicorn's access log is off by default (`access_log`): a log line per request is a cost on
    the hot path; with JSON logs the observability middleware's request line replaces it.
    HTTP is uvicorn's httptools protocol with the header and connection `limits`.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # JSON logs: uvicorn's loggers go through the root handler and its JSON formatter; the
        # observability middleware's request line replaces uvicorn's access log.
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        access_log=access_log and not json_logs,
        timeout_graceful_shutdown=max(int(grace_s), 1),
    )
    configure_http_limits(config, limits or HttpLimits())
    GracefulServer(config, app, grace_s).run()
    exit_if_loads_running(app)


def exit_if_loads_running(app: FastAPI) -> None:
    """End the process now (status 0) when a model load is still running in its thread.

    A TensorFlow load cannot be interrupted; a SIGTERM during a long initial load would
    otherwise keep the process alive until the load ends, past the grace period (measured: a
    load with a 6 s warm-up kept a server told `--shutdown-grace 2` alive 6.4 s after the
    signal). Everything the load would produce is discarded anyway; logs are flushed first.
    """
    running = app.state.registry.loads_running()
    if not running:
        return
    log.warning(
        "exiting with %d model load(s) still running (they are abandoned)",
        running,
        extra={"event": "shutdown_abandons_loads"},
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
