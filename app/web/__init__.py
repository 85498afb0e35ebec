"""The playground and model dashboard: static files served by the service itself.

`GET /` is the page, `GET /web/...` its scripts and styles (`app/web/static/`): plain ES modules,
no build step, nothing loaded from another host. The page is a client of the service's own API
like any other (task endpoints, `/v1`, `/v2`, `/metrics`), so it sees exactly what a client
sees, token checks and errors included. Both paths are open routes: the page itself holds no
data, and it asks for a token when the API answers 401.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_FILE = STATIC_DIR / "index.html"
WEB_PREFIX = "/web"
# The browser enforces what the page may load: its own origin only (pictures it makes itself
# are data: and blob: URLs), no inline script, no framing by other sites.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def index(_: Request) -> Response:
    return FileResponse(INDEX_FILE, media_type="text/html", headers=PAGE_HEADERS)


class _StaticFiles(StaticFiles):
    """Starlette's static files with `nosniff` and revalidation (the page changes with the
    service, so a cached old script must not outlive an upgrade)."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response


def install(app: FastAPI) -> None:
    """Add `GET /` and the `/web` static mount to `app` (outside the OpenAPI schema)."""
    app.router.routes.append(Route("/", index, methods=["GET", "HEAD"], include_in_schema=False))
    app.router.routes.append(Mount(WEB_PREFIX, app=_StaticFiles(directory=STATIC_DIR), name="web"))
