"""Structured logs and per-request bookkeeping: request ids, request metrics, in-flight count.

`RequestObserver` is a pure ASGI middleware (Starlette's `BaseHTTPMiddleware` wraps every
request in extra tasks and streams, a measurable cost on a sub-millisecond inference path). Per
request it:
- takes the request id from `X-Request-ID` (or makes one), returns it in the response headers
  and keeps it in a context variable so every log line written while serving the request
  carries it;
- counts the request in `kerasserve_requests` and its duration in the latency histogram, by
  model, version, protocol and status code: the model from the matched route's path
  parameters, the version from `note_served_version` once the data plane picked one. Requests
  that no version answered get an empty version, and an empty model unless the name is a model
  the registry knows: label values never come from arbitrary client input (unbounded series);
- counts requests in flight, which graceful shutdown waits for;
- writes one debug-level log line (only built when debug is on).

`JsonFormatter` writes one JSON object per log line (time, level, logger, message, request id,
and any `extra=` fields such as `model`, `version`, `event`).
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import ServiceMetrics

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128
SERVED_VERSION_KEY = "kerasserve.version"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
request_log = logging.getLogger("app.requests")
_random_bits = random.Random().getrandbits  # seeded from os.urandom once, at import

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current request id and `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


JsonFormatter.converter = time.gmtime  # timestamps in UTC, marked Z


def use_log_format(log_format: str) -> None:
    """Switch every root handler to JSON lines (`json`) or leave the text format (`text`)."""
    if log_format != "json":
        return
    formatter = JsonFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def new_request_id() -> str:
    """16 hex digits from the Mersenne Twister, not `os.urandom`.

    Why: `os.urandom` is a syscall that releases the GIL; on the event loop, with an inference
    thread waiting for the GIL, every request then waited for that thread's switch interval
    (py-spy: 15% of the loaded server's samples on this line). Request ids need to be unique
    enough to correlate logs, not unpredictable.
    """
    return f"{_random_bits(64):016x}"


def note_served_version(scope: Scope, version: int) -> None:
    """Called by protocol adapters: the version that answered (for metrics and the log line)."""
    scope[SERVED_VERSION_KEY] = version


_PROTOCOL_PREFIXES = (("/v1/", "tfserving"), ("/v2/", "kserve_v2"), ("/tasks/", "tasks"))


def _protocol(path: str) -> str:
    """The API a path belongs to (a metrics label): tfserving, kserve_v2, tasks or other."""
    for prefix, protocol in _PROTOCOL_PREFIXES:
        if path.startswith(prefix):
            return protocol
    return "other"


class RequestObserver:
    """Pure ASGI middleware: request id, request metrics, in-flight count, request log."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics | None = None,
        is_known_model: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.is_known_model = is_known_model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id_from(scope) or new_request_id()
        token = request_id_var.set(request_id)
        header_value = request_id.encode("latin-1")
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, header_value),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        params = scope.get("path_params") or {}
        model = params.get("name") or params.get("model_name") or ""
        served = scope.get(SERVED_VERSION_KEY)
        if served is not None:
            version = str(served)
        else:  # error path: only label values the server itself knows
            version = ""
            if model and not self.is_known_model(model):
                model = ""
        path = scope["path"]
        protocol = _protocol(path)
        if self.metrics is not None:
            self.metrics.observe_request(model, version, protocol, status, seconds)
        if request_log.isEnabledFor(logging.DEBUG):
            request_log.debug(
                "%s %s %d %.1f ms",
                scope["method"],
                path,
                status,
                seconds * 1000,
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "path": path,
                    "model": model or None,
                    "version": version or None,
                    "protocol": protocol,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


def _request_id_from(scope: Scope) -> str | None:
    """The client's `X-Request-ID`, when it is printable and not absurdly long."""
    for key, value in scope["headers"]:
        if key == REQUEST_ID_HEADER:
            text = value.decode("latin-1").strip()
            if text and len(text) <= MAX_REQUEST_ID_LENGTH and text.isprintable():
                return text
            return None
    return None
