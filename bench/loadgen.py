"""Drive one server with Debian's `wrk` (one thread, C, light on CPU) and parse its JSON line.

Why wrk: on a 2-core machine the load generator shares the cores with the server; a Python
generator would take a large share of them. wrk's own CPU time is measured anyway (from the
kernel's accounting of the child) and reported next to each point.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import Payload

LUA_SCRIPT = Path(__file__).parent / "wrk" / "post_body.lua"
RESULT_MARKER = "WRK_JSON "


class LoadGeneratorError(RuntimeError):
    """wrk is missing or did not print its result line."""


@dataclass(frozen=True)
class LoadResult:
    """One load point as wrk saw it, plus wrk's own CPU use."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int
    socket_errors: int
    loadgen_cpu_s: float


def require_wrk() -> str:
    """Path of wrk, or a clear message on how to get it."""
    path = shutil.which("wrk")
    if path is None:
        raise LoadGeneratorError("wrk not found: apt-get install -y wrk")
    return path


class BodyFiles:
    """Writes each payload's body to a file once (wrk's Lua script reads it at start)."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="bench-bodies-"))
        self._files: dict[tuple[str, str, int], Path] = {}

    def path_for(self, payload: Payload) -> Path:
        key = (payload.protocol, payload.model, payload.rows)
        if key not in self._files:
            path = self._folder / f"{payload.model}-{payload.protocol}-{payload.rows}.body"
            path.write_bytes(payload.body)
            self._files[key] = path
        return self._files[key]

    def cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


def run_wrk(
    base_url: str,
    payload: Payload,
    body_file: Path,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Run wrk for `duration_s` at `concurrency` open connections (one thread)."""
    command = [
        require_wrk(), "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s",
        f"--timeout={round(timeout_s)}s", "-s", str(LUA_SCRIPT), base_url + payload.path, "--",
        str(body_file), payload.content_type,
        "" if payload.header_length is None else str(payload.header_length),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(command, capture_output=True, text=True,
                              timeout=duration_s + timeout_s + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((ln for ln in finished.stdout.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if line is None:
        raise LoadGeneratorError(f"wrk printed no result: {finished.stdout}{finished.stderr}")
    raw = json.loads(line[len(RESULT_MARKER):])
    duration = raw["duration_us"] / 1e6
    return LoadResult(
        requests=raw["requests"],
        duration_s=round(duration, 3),
        requests_per_s=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["latency_max_us"] / 1000,
        status_errors=raw["status_errors"],
        socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
        + raw["timeouts"],
        loadgen_cpu_s=round(cpu_s, 3),
    )
