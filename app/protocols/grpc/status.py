"""The one mapping from the service's error table (`app.errors`) to gRPC status codes.

Every `ServingError` keeps its message; only the status changes representation. A status the
table does not name (a new error kind) falls back by its hundreds: 4xx is INVALID_ARGUMENT, 5xx
INTERNAL, so an unmapped client error never reads as a server fault.
"""

from __future__ import annotations

import grpc

#: HTTP status of a `ServingError` -> gRPC status code.
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    # Over a size limit (message, tensor, width): a resource the server will not spend.
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(status_code: int) -> grpc.StatusCode:
    """The gRPC code for an HTTP-style status of the error table."""
    code = GRPC_CODES.get(status_code)
    if code is not None:
        return code
    return (
        grpc.StatusCode.INVALID_ARGUMENT if 400 <= status_code < 500 else (grpc.StatusCode.INTERNAL)
    )


class Unimplemented(Exception):
    """A method of a published service this server does not implement: UNIMPLEMENTED with
    this message (not a `ServingError`: HTTP has no such route to map it from)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
