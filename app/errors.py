"""Errors that carry their own HTTP status: the one status table of the service.

Every layer (repository, servable, batcher, data plane, protocol adapters, task endpoints) raises
a `ServingError` subclass; one exception handler in `app.main` turns it into
`{"error": "..."}` with the status below. Anything else that escapes is a server bug and becomes
a 500 with a generic message (the traceback goes to the log, never to the client).

| kind | status | when |
| --- | --- | --- |
| InvalidInput | 400 | malformed JSON, wrong input name / shape / dtype, undecodable image |
| Unauthorized | 401 | missing or wrong bearer token (answer carries `WWW-Authenticate: Bearer`) |
| Forbidden | 403 | admin route without admin access configured or with a non-admin token; a |
|  |  | cross-site request to an admin route |
| NotFound | 404 | unknown model, version or label |
| PayloadTooLarge | 413 | body, tensor, width or picture over its configured limit |
| UnsupportedMediaType | 415 | content type the endpoint cannot read |
| QueueFull | 429 | a model's queue (rows or bytes) or the picture-decoding queue is full |
| ClientClosedRequest | 499 | the client went away while its request was queued |
| Unavailable | 503 | model not ready (loading, failed, unloading) or server shutting down |
| DeadlineExceeded | 504 | the request timed out before its work started |

Refused before the app sees a request, by the HTTP protocol (`app.security.http_limits`), with
the same `{"error": "..."}` body and the connection closed: 408 request headers not received
within the header timeout, 431 request headers over the size or count limit, 503 too many open
connections.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServingError(Exception):
    """Base class: a client-facing message plus the HTTP status it maps to.

    `headers` are response headers the error needs (401's `WWW-Authenticate`); the one handler
    in `app.main` sends them with the JSON body.
    """

    status_code: int = 500

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] | None = dict(headers) if headers else None


class InvalidInput(ServingError):
    status_code = 400


class Unauthorized(ServingError):
    """Missing or wrong credentials: always tells the client to use a bearer token."""

    status_code = 401

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer", **(headers or {})})


class Forbidden(ServingError):
    status_code = 403


class NotFound(ServingError):
    status_code = 404


class PayloadTooLarge(ServingError):
    status_code = 413


class UnsupportedMediaType(ServingError):
    status_code = 415


class QueueFull(ServingError):
    status_code = 429


class ClientClosedRequest(ServingError):
    """The client disconnected while its work was queued; the work was dropped, not run."""

    status_code = 499


class Unavailable(ServingError):
    status_code = 503


class DeadlineExceeded(ServingError):
    status_code = 504
