"""What every gRPC method does around its own work: tokens, request id, deadline, errors, metrics.

`rpc(access, protocol)` wraps a servicer method `(self, request, call) -> response`:
- the `authorization` metadata goes to the same `TokenGuard` as HTTP's header, with the access
  level of the method (the same levels as the HTTP routes);
- the `x-request-id` metadata (or a new id) is the request id of every log line written while
  serving the call, and comes back in the trailing metadata;
- the client's deadline is `call.timeout_s`, which inference hands to the batcher;
- a `ServingError` becomes its gRPC status (`app.protocols.grpc.status`) with the same message;
  anything else is logged and answered INTERNAL with a generic message;
- one observation in the request counter and latency histogram, labelled with the gRPC protocol
  and the HTTP-equivalent status (200, 400, 404, 499 for a cancelled call, ...), so one
  dashboard query covers both transports.

A cancelled call (client gone, deadline passed) cancels the handler's task; the batcher drops
queued work whose caller was cancelled, so nothing is computed for nobody.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from app.dataplane import DataPlane
from app.errors import InvalidInput, ServingError
from app.metrics import ServiceMetrics
from app.observability import (
    MAX_REQUEST_ID_LENGTH,
    new_request_id,
    request_id_var,
    request_log,
)
from app.protocols.grpc.status import Unimplemented, grpc_code
from app.repository.reloader import RepositoryReloader
from app.security.tokens import Access, TokenGuard

log = logging.getLogger(__name__)

AUTHORIZATION_KEY = "authorization"
REQUEST_ID_KEY = "x-request-id"
CANCELLED_STATUS = 499
INTERNAL_MESSAGE = "internal server error"

Request = TypeVar("Request")
Response = TypeVar("Response")


@dataclass(frozen=True, slots=True)
class FrontEnd:
    """What the servicers share: the data plane and the app's guard, metrics and reloader."""

    dataplane: DataPlane
    guard: TokenGuard
    metrics: ServiceMetrics | None
    reloader: RepositoryReloader
    inline_parse_bytes: int  # messages over this size are decoded in a worker thread

    def is_known_model(self, name: str) -> bool:
        return name in self.dataplane.registry.model_names()


class Call:
    """One call as a handler sees it: its context, its deadline and the labels it served."""

    __slots__ = ("context", "model", "timeout_s", "version")

    def __init__(self, context: grpc.aio.ServicerContext, timeout_s: float | None) -> None:
        self.context = context
        self.timeout_s = timeout_s
        self.model = ""
        self.version: int | None = None

    def served(self, model: str, version: int) -> None:
        """The model version that answered (metrics labels)."""
        self.model = model
        self.version = version


class UndecodableRequest:
    """What the lenient deserializer hands a handler for bytes that are not the message: the
    handler answers INVALID_ARGUMENT (grpcio's own answer would be UNKNOWN, naming a Python
    exception class)."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name

    def error(self) -> InvalidInput:
        return InvalidInput(f"the request is not a valid {self.message_name} message")


def lenient_deserializer(message_class: Any) -> Callable[[bytes], Any]:
    """`message_class.FromString`, returning an `UndecodableRequest` instead of raising."""
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return UndecodableRequest(name)

    return deserialize


Handler = Callable[[Any, Request, Call], Awaitable[Response]]
Method = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def _metadata(context: grpc.aio.ServicerContext) -> tuple[str | None, str | None]:
    """The `authorization` and `x-request-id` values (keys arrive lower-case)."""
    authorization = request_id = None
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_KEY:
            authorization = value if isinstance(value, str) else None
        elif key == REQUEST_ID_KEY and isinstance(value, str):
            text = value.strip()
            if text and len(text) <= MAX_REQUEST_ID_LENGTH and text.isprintable():
                request_id = text
    return authorization, request_id


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    # No deadline: None, or a huge number on some grpcio versions.
    return None if remaining is None or remaining > 1e9 else max(remaining, 0.0)


def rpc(
    access: Access, protocol: str
) -> Callable[[Handler[Request, Response]], Method[Request, Response]]:
    """Wrap a servicer method with the checks and bookkeeping every call shares."""

    def decorate(handler: Handler[Request, Response]) -> Method[Request, Response]:
        @functools.wraps(handler)
        async def method(
            self: Any, request: Request, context: grpc.aio.ServicerContext
        ) -> Response:
            front: FrontEnd = self.front
            started = time.perf_counter()
            authorization, request_id = _metadata(context)
            request_id = request_id or new_request_id()
            token = request_id_var.set(request_id)
            call = Call(context, _timeout(context))
            status = 200
            try:
                context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
                front.guard.check(access, authorization)
                if isinstance(request, UndecodableRequest):
                    raise request.error()
                return await handler(self, request, call)
            except ServingError as exc:
                status = exc.status_code
                await context.abort(grpc_code(status), exc.message)
                raise  # not reached: abort raises
            except Unimplemented as exc:
                status = 501
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, exc.message)
                raise
            except asyncio.CancelledError:
                status = CANCELLED_STATUS
                raise
            except grpc.aio.AbortError:
                raise
            except Exception:
                status = 500
                log.error("unhandled error in gRPC %s", handler.__name__, exc_info=True)
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
                raise
            finally:
                _finish(
                    front, call, protocol, handler.__name__, status, time.perf_counter() - started
                )
                request_id_var.reset(token)

        return method

    return decorate


def _finish(
    front: FrontEnd, call: Call, protocol: str, method: str, status: int, seconds: float
) -> None:
    """The call's metrics and, at debug level, its request log line (as HTTP's)."""
    model, version = call.model, call.version
    if version is None and model and not front.is_known_model(model):
        model = ""  # label values never come from arbitrary client input
    served = "" if version is None else str(version)
    if front.metrics is not None:
        front.metrics.observe_request(model, served, protocol, status, seconds)
    if request_log.isEnabledFor(logging.DEBUG):
        request_log.debug(
            "gRPC %s %d %.1f ms",
            method,
            status,
            seconds * 1000,
            extra={
                "event": "request",
                "method": method,
                "model": model or None,
                "version": served or None,
                "protocol": protocol,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )


def model_label(call: Call, name: str) -> None:
    """Note the model a call asked for (kept as a label only if the server knows it)."""
    call.model = name
