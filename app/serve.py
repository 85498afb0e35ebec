"""Run uvicorn for `python -m app`: one process, or a supervisor and N worker processes.

Nothing about shutdown lives here: draining, "not ready" and the exit status are the app's
(`app.lifecycle`, taken over from whichever uvicorn server runs it), so one worker and many
behave alike. What differs:

- one worker: the app is built by the caller (a bad device request stops the start with a
  clear error) and served by a plain `uvicorn.Server` in this process;
- N workers: uvicorn's supervisor starts N processes, each building its app from the
  environment (`app.main.create_app_from_environment`), accepting on one shared socket. The
  supervisor relays SIGTERM/SIGINT to every worker, each drains, and it exits 0 once they have.
  The workers share the control API's decisions through a state directory (`--state-dir`;
  when none is given, a private one made here for this run and removed at the end).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from app.security.http_limits import configure as configure_http_limits
from app.security.http_limits import limits_from
from app.settings import ENV_PREFIX, Settings

EXIT_START_ERROR = 2
STATE_DIR_ENV = f"{ENV_PREFIX}STATE_DIR"
# How long the supervisor waits for a worker's answer to its health ping before it kills and
# replaces the worker. uvicorn's 5 s is shorter than what a healthy worker may spend holding
# the interpreter lock (the ping is answered by a Python thread): importing TensorFlow, or the
# full garbage collection before the heap is frozen, took 6 to 11 s with four workers on two
# busy cores, and workers were killed in a loop while starting.
WORKER_HEALTHCHECK_S = 60


def uvicorn_config(app: Any, settings: Settings, access_log: bool, **extra: Any) -> uvicorn.Config:
    """The uvicorn config for `app` (an app, or an import string with `factory=True`).

    uvicorn's access log is off by default (`access_log`): a log line per request is a cost on
    the hot path; with JSON logs uvicorn's loggers go through the root handler and its JSON
    formatter, and the observability middleware's request line replaces the access log.
    HTTP is uvicorn's httptools protocol with the header and connection limits; the config is
    pickled into each worker, the limits with it.
    """
    json_logs = settings.log_format == "json"
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        access_log=access_log and not json_logs,
        # A bound for responses still being written once the drain is over (`app.lifecycle`
        # lowers it to what is left of the grace period).
        timeout_graceful_shutdown=max(int(settings.shutdown_grace), 1),
        **extra,
    )
    return configure_http_limits(config, limits_from(settings))


def serve_one(app: Any, settings: Settings, access_log: bool) -> None:
    """Serve `app` in this process until it has drained after SIGTERM/SIGINT."""
    uvicorn.Server(uvicorn_config(app, settings, access_log)).run()


def serve_workers(settings: Settings, access_log: bool) -> None:
    """Run `settings.workers` worker processes until SIGTERM/SIGINT and their drain.

    The caller has exported the settings to the environment (the workers read only that);
    `KERASSERVE_STATE_DIR` is set here when no state directory was given.
    """
    private_state = None
    if settings.state_dir is None:
        private_state = Path(tempfile.mkdtemp(prefix="kerasserve-state-"))
        os.environ[STATE_DIR_ENV] = str(private_state)
    config = uvicorn_config(
        "app.main:create_app_from_environment",
        settings,
        access_log,
        factory=True,
        workers=settings.workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
    sock = listening_socket(settings.host, settings.port)
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if private_state is not None:
            shutil.rmtree(private_state, ignore_errors=True)


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket every worker accepts on, with TCP_NODELAY set on it (accepted sockets inherit it).

    Why not `uvicorn.run(workers=N)`: uvicorn binds that socket with protocol 0, and asyncio
    only sets TCP_NODELAY on sockets whose protocol is IPPROTO_TCP; with Nagle's algorithm on, a
    response written in two parts (headers, then body) waited for the client's delayed ACK,
    about 40 ms per request.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_START_ERROR) from exc
    sock.set_inheritable(True)
    return sock
