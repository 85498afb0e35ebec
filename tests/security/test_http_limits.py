"""Header size, header count, header time and the connection cap, against a real server.

Raw sockets to 127.0.0.1, every read bounded by a timeout. The server serves an empty
repository with a short header timeout, so the slow-client cases finish in seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.live_server import LiveServer, live_server
from tests.security.conftest import API_HEADERS, API_TOKEN, wait_live

HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 12
MAX_HEADER_BYTES = 16 * 1024  # the default
MAX_HEADERS = 100  # the default
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
MEMORY_SLACK_KB = 8 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    repository = tmp_path_factory.mktemp("empty-repository")
    args = [
        "--device",
        "cpu",
        "--poll-interval",
        "0",
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--max-connections",
        str(MAX_CONNECTIONS),
    ]
    # Live: header limits, header timeouts and the connection cap are uvicorn's, on raw sockets.
    with live_server(repository, tmp_path_factory.mktemp("logs"), args) as running:
        wait_live(running)
        yield running


def exchange(port: int, request: bytes, timeout_s: float = 10.0) -> bytes:
    """Send `request`, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def assert_alive(server: LiveServer) -> None:
    assert server.is_running()
    response = exchange(server.port, LIVE + b"Connection: close\r\n\r\n")
    assert status_and_body(response) == (200, b'{"live":true}')


def test_a_200_mb_header_is_refused_early_without_the_memory(server: LiveServer) -> None:
    for _ in range(3):  # warm: whatever a first request allocates is allocated
        assert_alive(server)
    before = memory_kb(server.process.pid)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30.0)
    sent = [0]

    def send() -> None:
        try:
            sock.sendall(LIVE + b"X-Big: ")
            chunk = b"a" * (1 << 20)
            for _ in range(200):
                sock.sendall(chunk)
                sent[0] += 1
        except OSError:  # the server closed after its linger: it stopped reading, fine
            pass

    sender = threading.Thread(target=send, daemon=True)
    started = time.monotonic()
    sender.start()
    response = read_all(sock)
    sender.join(timeout=30.0)
    sock.close()
    status, body = status_and_body(response)
    assert status == 431
    assert b"connection: close" in response.lower()
    assert orjson.loads(body) == {
        "error": f"request line and headers over the limit of {MAX_HEADER_BYTES} bytes"
    }
    assert time.monotonic() - started < 20.0
    after = memory_kb(server.process.pid)
    assert after["VmRSS"] - before["VmRSS"] < MEMORY_SLACK_KB, (before, after, sent)
    assert after["VmHWM"] - before["VmHWM"] < MEMORY_SLACK_KB, (before, after, sent)
    assert_alive(server)


def test_header_bytes_and_count_limits(server: LiveServer) -> None:
    close = b"Connection: close\r\n"
    fits = exchange(server.port, LIVE + close + b"X-A: " + b"a" * 15_000 + b"\r\n\r\n")
    assert status_and_body(fits)[0] == 200
    over = exchange(server.port, LIVE + close + b"X-A: " + b"a" * 17_000 + b"\r\n\r\n")
    assert status_and_body(over)[0] == 431
    long_url = exchange(
        server.port, b"GET /v2/health/live?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status_and_body(long_url)[0] == 431
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS - 5))
    assert status_and_body(exchange(server.port, LIVE + close + many + b"\r\n"))[0] == 200
    too_many = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
    status, body = status_and_body(exchange(server.port, LIVE + close + too_many + b"\r\n"))
    assert status == 431
    assert orjson.loads(body) == {"error": f"more than {MAX_HEADERS} request headers (the limit)"}
    assert_alive(server)


def test_a_header_byte_every_two_seconds_is_cut_off(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=15.0) as sock:
        stop = threading.Event()

        def drip() -> None:  # the measured attack: one more header byte every two seconds
            try:
                sock.sendall(LIVE)
                for byte in b"X-Slow: abcdefghijklmnop":
                    if stop.wait(2.0):
                        return
                    sock.sendall(bytes([byte]))
            except OSError:
                pass

        sender = threading.Thread(target=drip, daemon=True)
        started = time.monotonic()
        sender.start()
        response = read_all(sock)
        elapsed = time.monotonic() - started
        stop.set()
        sender.join(timeout=5.0)
    status, body = status_and_body(response)
    assert status == 408
    assert "not received within" in orjson.loads(body)["error"]
    assert HEADER_TIMEOUT_S - 0.2 < elapsed < HEADER_TIMEOUT_S + 3.0
    assert_alive(server)


def test_a_silent_connection_is_closed_after_the_header_timeout(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=15.0) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""  # closed without an answer: nothing was asked
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3.0


def test_keep_alive_connections_outlive_the_header_timeout(server: LiveServer) -> None:
    """The timer covers each request's headers, not the idle time between requests."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10.0) as sock:
        for _ in range(3):
            sock.sendall(LIVE + b"\r\n")
            received = b""
            while not received.endswith(b'{"live":true}'):
                received += sock.recv(65536)
            assert status_and_body(received)[0] == 200
            time.sleep(0.75 * HEADER_TIMEOUT_S)  # under uvicorn's keep-alive timeout of 5 s


def test_connections_over_the_cap_get_503_and_the_server_recovers(server: LiveServer) -> None:
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=5.0))
        time.sleep(0.2)
        response = exchange(server.port, LIVE + b"\r\n", timeout_s=5.0)
        status, body = status_and_body(response)
        assert status == 503
        assert "too many open connections" in orjson.loads(body)["error"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5.0
    while True:  # the server sees the closes
        try:
            assert_alive(server)
            break
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.mark.slow
def test_limits_and_tokens_apply_to_every_worker(tmp_path: Path) -> None:
    """With several workers each worker process gets the limits and the exported tokens."""
    repository = tmp_path / "repository"
    repository.mkdir()
    args = [
        "--device",
        "cpu",
        "--poll-interval",
        "0",
        "--workers",
        "2",
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--api-token",
        API_TOKEN,
    ]
    # Live: `--workers` forks worker processes, each of which must get the limits and tokens.
    with live_server(repository, tmp_path, args) as running:
        wait_live(running)
        authorization = ("Authorization: " + API_HEADERS["Authorization"] + "\r\n").encode()
        for _ in range(6):  # connections land on either worker
            over = exchange(running.port, LIVE + b"X-A: " + b"a" * 20_000 + b"\r\n\r\n")
            assert status_and_body(over)[0] == 431
            anonymous = exchange(
                running.port, b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert status_and_body(anonymous)[0] == 401
            allowed = exchange(
                running.port,
                b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + authorization + b"Connection: close\r\n\r\n",
            )
            assert status_and_body(allowed)[0] == 200
        started = time.monotonic()
        slow = exchange(running.port, LIVE, timeout_s=HEADER_TIMEOUT_S + 5.0)
        assert status_and_body(slow)[0] == 408
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3.0
        assert API_TOKEN not in running.log()


def test_the_open_file_limit_is_raised_for_the_connection_cap() -> None:
    """A soft limit below the cap is raised up to the hard limit (in a child process)."""
    import subprocess
    import sys

    script = (
        "import resource\n"
        "from app.security.http_limits import ensure_file_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(ensure_file_limit(1280), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    raised, soft, hard = (int(word) for word in result.stdout.split())
    expected = 1280 if hard < 0 or hard >= 1280 else hard
    assert raised == soft == expected
