"""The HTTP side of access control: one pure ASGI middleware in front of every route.

Per request it classifies the path with a few prefix checks (no regex, no router lookup):
- OPEN: `/v2/health/*`, `/docs`, `/docs/*`, `/redoc`, `/openapi.json`, `/` and `/web/*`;
- ADMIN: `/v2/repository` and everything under it (model control and the repository config);
- API: everything else, unknown paths included, so that a client without a token learns
  nothing more from a 404 than from a 401.
Then `TokenGuard.check` decides with the `Authorization` header (401 with `WWW-Authenticate:
Bearer`, or 403), and admin requests must also look like what a non-browser client or the
service's own page sends:
- an `Origin` header, when present, must be an allowed CORS origin or the server's own origin
  (browsers send `Origin` on every cross-origin POST, including the "simple" ones that need no
  preflight); without `Origin`, `Sec-Fetch-Site: cross-site` is refused too (403);
- a body-carrying admin request (anything but GET/HEAD/OPTIONS) must be `application/json` or
  carry no `Content-Type` at all (415 otherwise): a cross-site HTML form can only send
  form-encoded, multipart or text/plain bodies. tritonclient's `load_model`/`unload_model` send
  a JSON body without a `Content-Type`, which is why its absence is accepted; a browser sending a
  body without one always adds `Origin`, which the previous rule checks.

CORS is off unless origins are configured: then a preflight (`OPTIONS` with `Origin` and
`Access-Control-Request-Method`) from an allowed origin is answered here with 204, and answers to
allowed origins carry `Access-Control-Allow-Origin`; other origins get no CORS headers (their
preflight goes on to the routes like any request and fails there).

Cost per one-row inference request, CPU time measured in isolation: 0.6 us with no API token and
no CORS origin (a call and two prefix checks), 1.9 us with an API token (the header list scanned
up to `Authorization`, then the constant-time comparisons), against about 1.3 ms of server CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Forbidden, ServingError, UnsupportedMediaType
from app.protocols.common import json_response
from app.security.tokens import Access, TokenGuard

OPEN_PATHS = frozenset({"/", "/docs", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/docs/", "/web/")
HEALTH_PREFIX = "/v2/health/"
ADMIN_PREFIX = "/v2/repository"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPE = b"application/json"

CORS_ALLOW_METHODS = b"GET, POST, OPTIONS"
CORS_ALLOW_HEADERS = b"Authorization, Content-Type, X-Request-ID, Inference-Header-Content-Length"
CORS_EXPOSE_HEADERS = b"X-Request-ID, Inference-Header-Content-Length, WWW-Authenticate"
CORS_MAX_AGE = b"600"
BEARER_SCHEME = "bearer"


def classify(path: str) -> Access:
    """The access level a path needs: prefix checks only, hot inference paths first."""
    if path.startswith("/v2/"):
        if path.startswith(HEALTH_PREFIX):
            return Access.OPEN
        if path.startswith(ADMIN_PREFIX):
            return Access.ADMIN
        return Access.API
    if path.startswith("/v1/"):
        return Access.API
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return Access.OPEN
    return Access.API


def _same_origin(origin: bytes, host: bytes | None) -> bool:
    """Whether `Origin` names the host the request was sent to (the service's own page)."""
    if host is None:
        return False
    scheme, separator, authority = origin.partition(b"://")
    return bool(separator) and scheme in (b"http", b"https") and authority == host.lower()


def error_response(exc: ServingError) -> Response:
    """The same `{"error": ...}` answer the app's one error handler gives."""
    return json_response({"error": exc.message}, status_code=exc.status_code, headers=exc.headers)


class AccessMiddleware:
    """Pure ASGI middleware: tokens, cross-site refusals on admin routes, CORS."""

    def __init__(self, app: ASGIApp, guard: TokenGuard, cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.guard = guard
        origins = tuple(origin.strip().rstrip("/") for origin in cors_origins if origin.strip())
        self.any_origin = "*" in origins
        self.cors_origins = frozenset(
            origin.lower().encode("latin-1") for origin in origins if origin != "*"
        )
        self.cors_enabled = bool(origins)
        # API requests need a header pass only when a token is required or CORS is on.
        self.inspect_api = guard.api_required or self.cors_enabled

    def _cors_allowed(self, origin: bytes) -> bool:
        return self.any_origin or origin.lower() in self.cors_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = classify(scope["path"])
        if access is Access.API and not self.inspect_api:
            await self.app(scope, receive, send)
            return
        if access is Access.OPEN and not self.cors_enabled:
            await self.app(scope, receive, send)
            return
        if access is Access.API and not self.cors_enabled:  # the token is all that matters
            for key, value in scope["headers"]:
                if key == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            else:
                authorization = None
            try:
                self.guard.check(Access.API, authorization)
            except ServingError as exc:
                await error_response(exc)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        authorization = origin = host = fetch_site = content_type = None
        preflight_method = False
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"origin":
                origin = value
            elif key == b"host":
                host = value
            elif key == b"sec-fetch-site":
                fetch_site = value
            elif key == b"content-type":
                content_type = value
            elif key == b"access-control-request-method":
                preflight_method = True
        cors_origin = (
            origin
            if (self.cors_enabled and origin is not None and self._cors_allowed(origin))
            else None
        )
        if cors_origin is not None:
            if scope["method"] == "OPTIONS" and preflight_method:
                await self._preflight(cors_origin, send)
                return
            send = self._with_cors_headers(send, cors_origin)
        try:
            self.guard.check(
                access, authorization.decode("latin-1") if authorization is not None else None
            )
            if access is Access.ADMIN:
                self._check_admin_request(
                    scope["method"], origin, cors_origin, host, fetch_site, content_type
                )
        except ServingError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_admin_request(
        self,
        method: str,
        origin: bytes | None,
        cors_origin: bytes | None,
        host: bytes | None,
        fetch_site: bytes | None,
        content_type: bytes | None,
    ) -> None:
        """Refuse admin requests a browser could have sent on another site's behalf."""
        if origin is not None:
            if cors_origin is None and not _same_origin(origin, host):
                raise Forbidden(
                    "cross-site requests to the admin routes are refused (the "
                    "Origin is neither this server nor an allowed CORS origin)"
                )
        elif fetch_site is not None and fetch_site.lower() == b"cross-site":
            raise Forbidden("cross-site requests to the admin routes are refused")
        if method not in SAFE_METHODS and content_type is not None:
            kind = content_type.split(b";", 1)[0].strip().lower()
            if kind != JSON_TYPE:
                raise UnsupportedMediaType(
                    "admin routes take application/json bodies (or none), got Content-Type "
                    f"{kind.decode('latin-1')!r}"
                )

    async def _preflight(self, origin: bytes, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin),
                    (b"access-control-allow-methods", CORS_ALLOW_METHODS),
                    (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
                    (b"access-control-max-age", CORS_MAX_AGE),
                    (b"vary", b"Origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    def _with_cors_headers(send: Send, origin: bytes) -> Send:
        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", origin),
                    (b"access-control-expose-headers", CORS_EXPOSE_HEADERS),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        return send_with_cors


def document_bearer_tokens(app: FastAPI) -> None:
    """Declare the bearer tokens in the app's OpenAPI document, per operation by the same
    `classify` the middleware uses: `/docs` gets an Authorize button, clients see which
    routes need a token."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # caches itself in app.openapi_schema
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[BEARER_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (or an admin token) where API tokens are configured; "
            "an admin token for /v2/repository/*. Health routes and the documentation need none.",
        }
        for path, operations in schema.get("paths", {}).items():
            needed: list[dict[str, list[str]]] = (
                [] if classify(path) is Access.OPEN else [{BEARER_SCHEME: []}]
            )
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation["security"] = needed
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
