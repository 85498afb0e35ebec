"""Refuse request bodies over the configured size before they are read into memory.

A pure ASGI middleware (no per-request Starlette wrapper cost): a declared `Content-Length`
over the limit gets 413 at once; a chunked body is counted as it arrives and the read fails with
`PayloadTooLarge`, which the one error handler turns into the same 413.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.protocols.common import json_response


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self, size: int | str) -> str:
        return f"request body of {size} bytes is over the limit of {self.max_body_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            response = json_response(
                {"error": self._too_large(int(declared))},
                status_code=413,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._too_large(f"more than {received}"))
            return message

        await self.app(scope, counting_receive, send)
