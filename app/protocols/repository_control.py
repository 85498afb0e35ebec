"""The KServe v2 / Triton model repository extension: index, load, unload (and config status).

Triton refuses these calls while it polls the repository; here both work together, by one rule
(`app.repository.reloader`): an explicit unload pins the model unloaded and polling leaves it
alone until an explicit load, which also retries versions that failed to load. Loading and
unloading finish before the response (as in Triton): a 200 from `unload` means in-flight
requests have drained.

- `POST /v2/repository/index`, optional body `{"ready": true}`: `[{"name", "version",
  "state", "reason"}]`, one entry per version on disk or known to the server; states are
  READY, LOADING, UNLOADING and UNAVAILABLE (reason: load error, unloaded by request, not
  selected by the version policy, folder removed); then the repository entries that cannot be
  used (an unreadable folder, a file named like a version), without a version when the entry is
  not inside a model folder.
- `POST /v2/repository/models/{name}/load`: 200 with the model's versions once loaded; 404 when
  the repository has no such model; 503 when no version of it could be loaded (errors listed).
- `POST /v2/repository/models/{name}/unload`: 200 once unloaded; 404 for an unknown model.
- `GET /v2/repository/config`: the repository config in force, its error if the file on disk
  was refused, refused labels (not part of the v2 spec).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.errors import InvalidInput, Unavailable
from app.protocols.common import json_response, read_json_body
from app.registry import VersionState
from app.repository.reloader import RepositoryReloader


def _reloader(request: Request) -> RepositoryReloader:
    return request.app.state.reloader


async def _optional_body(request: Request) -> dict[str, Any]:
    """The JSON object body, or {} when there is none (Triton's clients may send nothing)."""
    if not await request.body():
        return {}
    body = await read_json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v2/repository", tags=["KServe v2 model repository"])

    @router.post("/index", summary="Every model version with its state")
    async def index(request: Request) -> Response:
        body = await _optional_body(request)
        ready_only = body.get("ready", False)
        if not isinstance(ready_only, bool):
            raise InvalidInput(f"'ready' must be true or false, got {ready_only!r}")
        entries = [
            {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
            if e.version is not None
            else {"name": e.name, "state": e.state, "reason": e.reason}
            for e in _reloader(request).index()
            if not ready_only or e.state == "READY"
        ]
        return json_response(entries)

    @router.post("/models/{name}/load", summary="Load a model (lifts an explicit unload)")
    async def load(name: str, request: Request) -> Response:
        await _optional_body(request)
        versions = await _reloader(request).load_model(name)
        described = [
            {"version": str(e.version), "state": e.state.value, "error": e.error} for e in versions
        ]
        if not any(e.state is VersionState.AVAILABLE for e in versions):
            errors = "; ".join(f"version {e.version}: {e.error}" for e in versions if e.error)
            raise Unavailable(f"model {name!r} could not be loaded: {errors or 'no version'}")
        return json_response({"name": name, "versions": described})

    @router.post("/models/{name}/unload", summary="Unload a model and keep it unloaded")
    async def unload(name: str, request: Request) -> Response:
        await _optional_body(request)
        await _reloader(request).unload_model(name)
        return json_response({})

    @router.get("/config", summary="The repository config in force and its errors")
    async def config(request: Request) -> Response:
        return json_response(_reloader(request).status.config_status())

    return router
