"""Drive one server with Debian's `wrk` (one thread, C, light on CPU) and parse its JSON line;
gRPC points with Debian's `h2load` (nghttp2-client: one thread, C, HTTP/2).

Why wrk: on a 2-core machine the load generator shares the cores with the server; a Python
generator would take a large share of them. wrk's own CPU time is measured anyway (from the
kernel's accounting of the child) and reported next to each point.

Why h2load for gRPC: wrk speaks HTTP/1.1 only, and a Python gRPC client costs more CPU per call
than the server's own work for a one-row request. A unary gRPC call is an HTTP/2 POST whose body
is one length-prefixed message, so h2load replays a fixed body like wrk does. Concurrency c is c
connections with one call in flight each (as wrk's c connections). h2load reads only the HTTP
status, not the gRPC status in the trailers: the benchmark probes every gRPC scenario with a real
client first, and `run_h2load` reports the per-request times of its log file as percentiles.
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


def require_h2load() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise LoadGeneratorError("h2load not found: apt-get install -y nghttp2-client")
    return path


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
        require_wrk(),
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={round(timeout_s)}s",
        "-s",
        str(LUA_SCRIPT),
        base_url + payload.path,
        "--",
        str(body_file),
        payload.content_type,
        "" if payload.header_length is None else str(payload.header_length),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + timeout_s + 30
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((ln for ln in finished.stdout.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if line is None:
        raise LoadGeneratorError(f"wrk printed no result: {finished.stdout}{finished.stderr}")
    raw = json.loads(line[len(RESULT_MARKER) :])
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
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        loadgen_cpu_s=round(cpu_s, 3),
    )


def run_h2load(
    base_url: str,
    payload: Payload,
    body_file: Path,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Run h2load for `duration_s` at `concurrency` connections, one gRPC call in flight each."""
    log_file = body_file.with_suffix(f".c{concurrency}.h2log")
    command = [
        require_h2load(),
        "-t1",
        f"-c{concurrency}",
        "-m1",
        f"-D{max(1, round(duration_s))}",
        "-d",
        str(body_file),
        "-H",
        f"content-type: {payload.content_type}",
        "-H",
        "te: trailers",
        f"--log-file={log_file}",
        base_url + payload.path,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + timeout_s + 30
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        rows = [line.split("\t") for line in log_file.read_text().splitlines() if line]
    except OSError:
        rows = []
    finally:
        log_file.unlink(missing_ok=True)
    if finished.returncode != 0 or not rows:
        raise LoadGeneratorError(f"h2load failed: {finished.stdout[-1500:]}{finished.stderr}")
    statuses = [int(row[1]) for row in rows]
    # Microseconds until the end of each response, of the calls that completed with HTTP 200.
    latencies = sorted(int(row[2]) for row in rows if row[1] == "200")
    starts = [int(row[0]) for row in rows]
    ends = [int(row[0]) + int(row[2]) for row in rows]
    duration = max(ends) / 1e6 - min(starts) / 1e6 if rows else 0.0

    def percentile(q: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] / 1000

    return LoadResult(
        requests=len(latencies),
        duration_s=round(duration, 3),
        requests_per_s=len(latencies) / duration if duration else 0.0,
        p50_ms=percentile(50),
        p90_ms=percentile(90),
        p99_ms=percentile(99),
        max_ms=latencies[-1] / 1000 if latencies else 0.0,
        status_errors=sum(1 for status in statuses if status not in (200, -1)),
        socket_errors=sum(1 for status in statuses if status == -1),
        loadgen_cpu_s=round(cpu_s, 3),
    )
