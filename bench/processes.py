"""Start a server under test in its own session, wait until it is ready, measure it, stop it.

Why a session per server: PyTriton and MLServer fork helpers (tritonserver, Python stubs,
inference workers). Everything a server starts shares its session id, so memory is summed over
the whole tree and stopping it leaves nothing behind, without ever matching processes by name.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time; carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_command(
    repository: Path, port: int, options: Sequence[str] = (), python: str = sys.executable
) -> list[str]:
    """The service's command line: `python -m app` on 127.0.0.1:`port` over `repository`, then
    `options`. gRPC is off unless `options` give `--grpc-port`: its default port, 8001, is one
    per machine, and the second of two servers started side by side would fail on it."""
    grpc = [] if "--grpc-port" in options else ["--grpc-port", "0"]
    return [
        python,
        "-m",
        "app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-repository",
        str(repository),
        *grpc,
        *options,
    ]


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body); (0, b"") when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


@dataclass
class Memory:
    """Resident memory of a server's whole process tree, in MiB.

    `rss` double-counts pages shared between processes (forked workers); `pss` shares them out
    and is the fairer total for multi-process servers.
    """

    rss_mib: float
    pss_mib: float
    processes: int


@dataclass
class ServerProcess:
    """A running server: its process, the port it answers on, and its log file."""

    name: str
    command: list[str]
    port: int
    ready_paths: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    start_to_ready_s: float | None = None
    grpc_port: int | None = None  # where it serves gRPC, when the benchmark drives that

    def start(self, ready_timeout_s: float = 180.0) -> float:
        """Launch and poll the ready paths until all answer 200; returns seconds to ready."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        deadline = started + ready_timeout_s
        pending = list(self.ready_paths)
        while pending:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
                )
            if time.perf_counter() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} not ready in {ready_timeout_s:.0f} s: {self.log_tail()}"
                )
            status, _ = http_request(self.port, "GET", pending[0], timeout_s=2.0)
            if status == 200:
                pending.pop(0)
            else:
                time.sleep(0.05)
        self.start_to_ready_s = time.perf_counter() - started
        return self.start_to_ready_s

    def log_tail(self, characters: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-characters:]
        return ""

    def session_pids(self) -> list[int]:
        """Every live process in the server's session (the server and all it started)."""
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if int(fields[3]) == self.process.pid and fields[0] != "Z":  # field 6: session
                    pids.append(int(entry.name))
        return pids

    def memory(self) -> Memory:
        rss_kib = pss_kib = 0
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss_kib += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss_kib += int(line.split()[1])
        return Memory(round(rss_kib / 1024, 1), round(pss_kib / 1024, 1), len(pids))

    def cpu_seconds(self) -> float:
        """User + system CPU used so far by the live processes of the session."""
        ticks = 0
        for pid in self.session_pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_until_idle(self, busy_fraction: float = 0.1, max_wait_s: float = 60.0) -> None:
        """Return once the server uses under `busy_fraction` of a core (requests queued by a
        finished load point, e.g. the naive server's backlog at concurrency 128, are done)."""
        interval_s = 0.25
        deadline = time.perf_counter() + max_wait_s
        previous = self.cpu_seconds()
        while time.perf_counter() < deadline:
            time.sleep(interval_s)
            current = self.cpu_seconds()
            if current - previous < busy_fraction * interval_s:
                return
            previous = current

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGINT then SIGTERM to the process group, SIGKILL to whatever of the session is left."""
        if self.process is None:
            return
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s / 2)
                break
        deadline = time.perf_counter() + grace_s
        while self.session_pids() and time.perf_counter() < deadline:
            time.sleep(0.2)  # helpers (tritonserver, inference workers) shut down after the parent
        for pid in self.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.process = None
