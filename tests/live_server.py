"""A real `python -m app` on 127.0.0.1 in a subprocess, for tests that talk HTTP to it.

Started with its own model repository and options on a free port, waited for until every model
folder has finished loading (or failed), and always stopped (SIGTERM, then SIGKILL) with its log
kept for failure messages. Nothing here mocks TensorFlow or HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.processes import free_port, service_command

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
SETTLED_STATES = {"AVAILABLE", "END"}


class LiveServer:
    """A started server: its base URL, its process and the log it has written so far."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_running(self) -> bool:
        return self.process.poll() is None


def _model_folders(repository: Path) -> list[str]:
    return sorted(
        p.name
        for p in repository.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(c.name.isdigit() for c in p.iterdir())
    )


def wait_until_loaded(
    server: LiveServer,
    models: Sequence[str],
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Poll TF Serving's status route until every version of every model has settled
    (`headers`: an `Authorization` for a server started with API tokens)."""
    deadline = time.monotonic() + timeout_s
    # With no model folders, wait for the server to answer at all (its liveness route).
    pending: list[str | None] = [*models] or [None]
    with httpx.Client(base_url=server.url, timeout=5.0, headers=headers) as client:
        while pending:
            if not server.is_running():
                raise RuntimeError(
                    f"server exited with {server.process.returncode} while "
                    f"starting:\n{server.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"models {pending} not loaded after {timeout_s} s:\n{server.log()[-4000:]}"
                )
            route = "/v2/health/live" if pending[0] is None else f"/v1/models/{pending[0]}"
            try:
                status = client.get(route)
            except httpx.TransportError:
                status = None
            if (
                status is not None
                and status.status_code == 200
                and all(
                    v["state"] in SETTLED_STATES
                    for v in status.json().get("model_version_status", [])
                )
            ):
                pending.pop(0)
            else:
                time.sleep(0.2)


@contextmanager
def live_server(
    repository: Path,
    log_dir: Path,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
    headers: dict[str, str] | None = None,
) -> Iterator[LiveServer]:
    """Run the service on a free port until the block ends (`headers`: for the start poll)."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    process_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            service_command(repository, port, extra_args),
            cwd=REPO_ROOT,
            env=process_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(process, port, log_path)
    try:
        wait_until_loaded(server, _model_folders(repository), start_timeout_s, headers)
        yield server
    finally:
        stop(server.process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
