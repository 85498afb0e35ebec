"""HTTP helpers every protocol adapter shares: JSON bodies in, JSON bytes out, version paths.

Inference routes take the raw `Request` and return a `Response` of orjson bytes: tensors never
pass through pydantic, and numpy arrays are serialised by orjson without a per-element loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request, Response

from app.errors import InvalidInput, UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"
# curl -d sends form-urlencoded by default and TF Serving's examples rely on that; missing and
# text/plain are what simple clients send. Anything else (images, multipart) is refused.
JSON_COMPATIBLE_TYPES = frozenset(
    {
        "",
        JSON_MEDIA_TYPE,
        "text/plain",
        "application/x-www-form-urlencoded",
    }
)
ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower case ("" when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json_bytes(request: Request) -> bytes:
    """The raw body of a JSON request; 415 for a non-JSON content type."""
    kind = media_type(request)
    if kind not in JSON_COMPATIBLE_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected a JSON body (Content-Type: {JSON_MEDIA_TYPE}), got Content-Type {kind!r}"
        )
    return await request.body()


def parse_json(body: bytes) -> Any:
    """orjson's parse; 400 for malformed JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from exc


async def read_json_body(request: Request) -> Any:
    """The parsed body; 415 for a non-JSON content type, 400 for malformed JSON."""
    return parse_json(await read_json_bytes(request))


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """orjson bytes (numpy arrays and scalars included) as an application/json response."""
    return Response(
        content=orjson.dumps(content, option=ORJSON_OPTIONS),
        status_code=status_code,
        media_type=JSON_MEDIA_TYPE,
        headers=headers,
    )


def parse_version(text: str) -> int:
    """A version path segment: a positive integer, else 400 naming what came."""
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise InvalidInput(f"model version must be a positive integer, got {text!r}")
    return int(text)


def client_gone(request: Request) -> Callable[[], Awaitable[None]]:
    """An awaitable factory that returns once the HTTP client has disconnected.

    Only for use after the body was read in full: ASGI then has nothing left to deliver but
    `http.disconnect`. The batcher awaits it only while the request waits in its queue, so a
    client that sends and hangs up does not have its work computed or hold a queue slot.
    """
    receive = request.receive

    async def wait() -> None:
        for _ in range(8):  # anything else first (an empty body chunk) is skipped
            if (await receive())["type"] == "http.disconnect":
                return
        await asyncio.Future()  # a server that never says: wait until cancelled

    return wait
