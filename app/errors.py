"""Errors that carry their own HTTP status: the one status table of the service.

Every layer (repository, servable, batcher, data plane, protocol adapters, task endpoints) raises
a `ServingError` subclass; one exception handler in `app.main` turns it into
`{"error": "..."}` with the status below. Anything else that escapes is a server bug and becomes
a 500 with a generic message (the traceback goes to the log, never to the client).

| kind | status | when |
| --- | --- | --- |
| InvalidInput | 400 | malformed JSON, wrong input name / shape / dtype, undecodable image |
| NotFound | 404 | unknown model, version or label |
| Conflict | 409 | a control action that contradicts the current state |
| PayloadTooLarge | 413 | body over the configured limit |
| UnsupportedMediaType | 415 | content type the endpoint cannot read |
| QueueFull | 429 | the model's bounded queue is full |
| Unavailable | 503 | model not ready (loading, failed, unloading) or server shutting down |
| DeadlineExceeded | 504 | the request timed out before its work started |
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class: a client-facing message plus the HTTP status it maps to."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    status_code = 400


class NotFound(ServingError):
    status_code = 404


class Conflict(ServingError):
    status_code = 409


class PayloadTooLarge(ServingError):
    status_code = 413


class UnsupportedMediaType(ServingError):
    status_code = 415


class QueueFull(ServingError):
    status_code = 429


class Unavailable(ServingError):
    status_code = 503


class DeadlineExceeded(ServingError):
    status_code = 504
