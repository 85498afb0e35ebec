"""A worker's life from the app's side: the same for one worker process or many.

The FastAPI lifespan (`app.main`) owns it, so it holds however uvicorn was started
(`python -m app`, `--workers N`, `uvicorn --factory`):

- start: the lifespan starts the reloader; the heap is frozen after the initial load and after
  every load since (`after_load`, the reloader's `on_loaded`; `app.heap`), in a server process
  only (an app run in a test process leaves that process's collector alone);
- SIGTERM/SIGINT: `begin_shutdown()`. Taken over from the uvicorn server that runs the app
  (`take_over_signals`, in the lifespan's startup), so that a worker started by uvicorn's
  supervisor drains exactly as a single process does. In order:
  1. at once: the data plane is marked shutting down, so readiness answers 503 and new
     inference requests get 503 while the listening socket stays open (a load balancer sees
     "not ready" instead of connection errors);
  2. requests that hold a model version (registry leases) finish, for at most `grace_s` (and
     readiness stays 503 for at least `MIN_NOT_READY_S`);
  3. the worker stops accepting connections, answers the requests of those it accepted last
     (`LINGER_S`), then tells uvicorn to stop (`should_exit`): it closes the connections, waits
     for responses still being written (bounded by what is left of the grace period) and runs
     the lifespan's shutdown (runners drained and closed);
  4. the process ends with status 0 (at once, abandoning it, when a model load is still running
     in its thread: `exit_if_loads_running`).

Why take the signal over instead of letting uvicorn handle it: uvicorn closes the listening
socket and idle connections at once (clients racing a request into them get a reset, not a
503), and records the signal to re-raise it after its shutdown, so a clean drain still ended in
status 143. A second signal of the same kind stops at once (uvicorn's force exit); a SIGINT
followed by a SIGTERM (Ctrl-C in a terminal: the worker gets the SIGINT, then the supervisor's
SIGTERM) is one shutdown, not two.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from app.dataplane import DataPlane
from app.heap import freeze_heap
from app.registry import ModelRegistry

log = logging.getLogger(__name__)
DRAIN_POLL_S = 0.02
# Not ready for at least this long (bounded by the grace period), even with nothing in flight:
# a worker with no request in flight otherwise stopped listening within milliseconds of the
# signal, before a readiness probe or a load balancer could see it answer 503 (and, with
# several workers, connections queued on the shared socket once every worker had stopped
# accepting were reset when the supervisor closed it).
MIN_NOT_READY_S = 1.0
# Between closing the listening socket and closing connections: a connection accepted just
# before the close whose request had not arrived yet was closed unanswered (the client read a
# reset); in this time its request arrives and is answered 503.
LINGER_S = 0.2
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Lifecycle:
    """Shutdown of one worker: `begin_shutdown()` and the signal takeover that calls it."""

    def __init__(self, dataplane: DataPlane, registry: ModelRegistry, grace_s: float) -> None:
        self.dataplane = dataplane
        self.registry = registry
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None  # the uvicorn.Server whose signals were taken over
        self._signals_seen: list[int] = []
        self._drain: asyncio.Task[None] | None = None

    def begin_shutdown(self, why: str = "shutdown requested") -> None:
        """Not ready from now on, drain in-flight requests, then stop the server (idempotent).

        Call from the event loop's thread."""
        if self._drain is not None:
            return
        self.dataplane.shutting_down = True
        log.info(
            "%s: not ready any more, draining in-flight requests for up to %.1f s",
            why,
            self.grace_s,
            extra={"event": "shutdown_started"},
        )
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        started = time.monotonic()
        deadline = started + self.grace_s
        not_ready_until = started + min(MIN_NOT_READY_S, self.grace_s)
        while (
            in_flight(self.registry) and time.monotonic() < deadline
        ) or time.monotonic() < not_ready_until:
            await asyncio.sleep(DRAIN_POLL_S)
        left = in_flight(self.registry)
        if left:
            log.warning("grace period over with %d requests still in flight", left)
        log.info(
            "drained in %.2f s; stopping",
            time.monotonic() - started,
            extra={"event": "shutdown_drained"},
        )
        server = self._server
        if server is not None:
            for listener in getattr(server, "servers", ()):
                listener.close()
            await asyncio.sleep(LINGER_S)
            # What is left of the grace period bounds uvicorn's wait for responses being written.
            remaining = max(deadline - time.monotonic(), 1.0)
            server.config.timeout_graceful_shutdown = int(remaining + 0.999)
            server.should_exit = True

    def after_load(self) -> None:
        """Freeze the heap (`app.heap`) when this app runs in a server process."""
        if self._server is not None:
            freeze_heap()

    # ---- signals -------------------------------------------------------------------------

    def take_over_signals(self) -> bool:
        """Handle SIGTERM/SIGINT here instead of in the uvicorn server running this app.

        Only when the handlers in place are a uvicorn server's (the app runs in a server
        process, on its main thread); anywhere else (an in-process test client) nothing
        changes. Returns whether it took them over."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
        servers = {getattr(handler, "__self__", None) for handler in current.values()}
        server = servers.pop() if len(servers) == 1 else None
        if server is None or not hasattr(server, "should_exit"):
            return False
        self._loop = asyncio.get_running_loop()
        self._server = server
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)
        return True

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler (main thread, between two bytecodes): start the drain, or stop now
        on a second signal of the same kind."""
        server, loop = self._server, self._loop
        if server is None or loop is None:
            return
        if sig in self._signals_seen:
            server.should_exit = True
            server.force_exit = True
            return
        self._signals_seen.append(sig)
        loop.call_soon_threadsafe(self.begin_shutdown, f"signal {sig}")

    # ---- the end -------------------------------------------------------------------------

    def exit_if_loads_running(self) -> None:
        """End the process now (status 0) when a model load is still running in its thread.

        A TensorFlow load cannot be interrupted; a SIGTERM during a long initial load would
        otherwise keep the process alive until the load ends, past the grace period (measured:
        a load with a 6 s warm-up kept a server told `--shutdown-grace 2` alive 6.4 s after
        the signal). Everything the load would produce is discarded anyway; logs are flushed
        first. Only in a server process whose signals this took over (never in a test's).
        """
        if self._server is None:
            return
        running = self.registry.loads_running()
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


def in_flight(registry: ModelRegistry) -> int:
    """Requests holding a model version right now (the registry's leases)."""
    return sum(
        entry.in_flight for name in registry.model_names() for entry in registry.versions(name)
    )
