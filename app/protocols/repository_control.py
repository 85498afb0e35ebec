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

from app.dependencies import ReloaderDep
from app.errors import InvalidInput, Unavailable
from app.protocols.common import json_response, read_json_body
from app.registry import VersionState


async def _optional_body(request: Request) -> dict[str, Any]:
    """The JSON object body, or {} when there is none (Triton's clients may send nothing)."""
    if not await request.body():
        return {}
    body = await read_json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


async def index(request: Request, reloader: ReloaderDep) -> Response:
    """Every model version on disk or known to the server, with its state."""
    body = await _optional_body(request)
    ready_only = body.get("ready", False)
    if not isinstance(ready_only, bool):
        raise InvalidInput(f"'ready' must be true or false, got {ready_only!r}")
    entries = [
        {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
        if e.version is not None
        else {"name": e.name, "state": e.state, "reason": e.reason}
        for e in reloader.index()
        if not ready_only or e.state == "READY"
    ]
    return json_response(entries)


async def load(name: str, request: Request, reloader: ReloaderDep) -> Response:
    """Load every version the policy selects; lifts an explicit unload."""
    await _optional_body(request)
    versions = await reloader.load_model(name)
    described = [
        {"version": str(e.version), "state": e.state.value, "error": e.error} for e in versions
    ]
    if not any(e.state is VersionState.AVAILABLE for e in versions):
        errors = "; ".join(f"version {e.version}: {e.error}" for e in versions if e.error)
        raise Unavailable(f"model {name!r} could not be loaded: {errors or 'no version'}")
    return json_response({"name": name, "versions": described})


async def unload(name: str, request: Request, reloader: ReloaderDep) -> Response:
    """Unload every version (in-flight requests drain first) and keep the model unloaded."""
    await _optional_body(request)
    await reloader.unload_model(name)
    return json_response({})


async def config(reloader: ReloaderDep) -> Response:
    """The repository config in force, its error if the file on disk was refused."""
    return json_response(reloader.status.config_status())


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v2/repository", tags=["KServe v2 model repository"])
    for path, endpoint, method, summary in (
        ("/index", index, "POST", "Every model version with its state"),
        ("/models/{name}/load", load, "POST", "Load a model (lifts an explicit unload)"),
        ("/models/{name}/unload", unload, "POST", "Unload a model and keep it unloaded"),
        ("/config", config, "GET", "The repository config in force and its errors"),
    ):
        router.add_api_route(path, endpoint, methods=[method], summary=summary)
    return router
