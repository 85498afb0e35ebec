"""Limits uvicorn's httptools protocol does not have: header size and count, header time,
open connections.

uvicorn's httptools protocol reads a request's line and headers into memory without a bound (a
200 MB header was read whole) and waits for them without a deadline (a client sending one
header byte every two seconds held its connection open indefinitely). `LimitedHttpToolsProtocol`
is that protocol (still httptools' C parser) with four checks:

- header bytes: the request line and headers may take `max_header_bytes`. Checked twice: on the
  raw bytes received while a request's headers are incomplete, after each read, so the parser's
  buffers never hold more than the limit plus one read (its callbacks only see a header once it
  is complete); and exactly once the headers are complete (URL, names, values and separators, so
  the 431 does not depend on how the bytes were split into reads), computed only when the bytes
  received could exceed the limit;
- header count: the 101st header (by default) is refused as it is parsed;
- header time: a request's line and headers must arrive within `header_timeout_s` of the first
  read that brought part of them (of the connection for its first request: an idle new
  connection is closed too); idle keep-alive time between requests stays uvicorn's
  `timeout_keep_alive`. The body is not covered;
- open connections: a connection made while `max_connections` are open gets a 503 at once.

Refusals are a JSON `{"error": ...}` with `Connection: close` (431; 408 for a partial request
that timed out; 503 for the connection cap), then a lingering close: the server stops writing,
discards what the client still sends for at most `LINGER_S`, then closes, so a client still
sending its oversized header reads the answer instead of a connection reset.

Why not uvicorn's `limit_concurrency`: it answers 503 in plain text and counts running tasks as
well as connections. The settings travel on the uvicorn `Config` (`configure`), which worker
processes receive pickled, so one and several workers share the same limits.

Cost on the hot path: two wrapped parser callbacks per request and a length check per header;
a timer only for requests whose headers span several reads.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

LIMITS_ATTRIBUTE = "kerasserve_http_limits"
# Descriptors besides client connections: models, logs, sockets, TensorFlow's own files.
FILE_HEADROOM = 256
log = logging.getLogger(__name__)
LINGER_S = 2.0
# ": " and CRLF around each header value; the request line's method, version and spaces.
HEADER_OVERHEAD = 4
REQUEST_LINE_OVERHEAD = 16


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may cost before the app sees a request (see the module doc)."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    max_connections: int = 1024


class HeaderLimitExceeded(Exception):
    """Raised from a parser callback; stops the parser and becomes a 431."""


def limits_from(settings: Settings) -> HttpLimits:
    return HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout,
        max_connections=settings.max_connections,
    )


def configure(config: uvicorn.Config, limits: HttpLimits) -> uvicorn.Config:
    """Make `config` serve HTTP with `LimitedHttpToolsProtocol` and `limits`; returns it."""
    config.http = LimitedHttpToolsProtocol
    setattr(config, LIMITS_ATTRIBUTE, limits)
    ensure_file_limit(limits.max_connections + FILE_HEADROOM)
    return config


def ensure_file_limit(needed: int) -> int:
    """Raise the soft open-file limit to `needed` when the hard limit allows (worker processes
    inherit it), so that the connection cap, not EMFILE, is what refuses connections; log a
    warning when it cannot. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        log.warning(
            "open-file limit %d is below the %d that --max-connections needs: "
            "connections beyond it fail to be accepted",
            soft,
            needed,
        )
    return soft


def _refusal(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = orjson.dumps({"error": message})
    phrase = http.HTTPStatus(status).phrase.encode()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines.append(
        b"content-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % len(body)
    )
    lines.append(body)
    return b"".join(lines)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size/count/time limits and a connection cap."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits: HttpLimits = getattr(config, LIMITS_ATTRIBUTE, None) or HttpLimits()
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._header_timeout_s = limits.header_timeout_s
        self._max_connections = limits.max_connections
        self._in_headers = True  # reading a request's line and headers
        self._raw_bytes = 0  # bytes received while the headers were incomplete
        self._chunk_bytes = 0  # size of the read being parsed
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # Connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self._refuse(
                503, f"too many open connections (limit {self._max_connections}); retry later"
            )
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering close: discard what the client still sends
        self._unset_keepalive_if_required()
        self._chunk_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeaderLimitExceeded):
                self._refuse(431, str(exc.__context__))
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_headers:  # a read ended inside a request's line or headers
            self._raw_bytes += len(data)
            if self._raw_bytes > self._max_header_bytes:
                self._refuse(431, self._too_large())
            elif self._header_timer is None:
                # Armed only now: a request whose headers come in one read (nearly all) never
                # pays for a timer; the first request's timer runs from the connection.
                self._arm_header_timer()

    def _bad_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._raw_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own on_header, plus the count: a copy rather than a super() call, which
        # doubled the cost of every header.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        if len(self.headers) > self._max_headers:
            raise HeaderLimitExceeded(f"more than {self._max_headers} request headers (the limit)")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        # Exact size only when the bytes received could hold more than the limit (rare: the
        # whole request line and headers are never larger than what arrived).
        if (
            self._raw_bytes + self._chunk_bytes > self._max_header_bytes
            and self._header_size() > self._max_header_bytes
        ):
            raise HeaderLimitExceeded(self._too_large())
        super().on_headers_complete()

    def _header_size(self) -> int:
        """Request line and headers as sent (separators included)."""
        return (
            REQUEST_LINE_OVERHEAD
            + len(self.url)
            + sum(len(name) + len(value) + HEADER_OVERHEAD for name, value in self.headers)
        )

    # Refusals
    def _too_large(self) -> str:
        return f"request line and headers over the limit of {self._max_header_bytes} bytes"

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._in_headers or self.transport.is_closing():
            return
        if self._raw_bytes:
            self._refuse(408, f"request headers not received within {self._header_timeout_s:g} s")
        else:  # nothing sent at all: nobody to answer
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with a JSON error, stop reading requests, close after a linger."""
        self._refused = True
        self._cancel_header_timer()
        self.logger.info(
            "refused a connection from %s: %d %s",
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            status,
            message,
        )
        transport = self.transport
        if transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request while a response is being written: an answer now would
            # interleave with it; the connection is dropped instead.
            transport.close()
            return
        transport.write(_refusal(status, message, self.server_state.default_headers))
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_S, transport.close)
