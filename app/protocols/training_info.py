"""What the training job recorded for a version (`metadata.json`), for people and dashboards.

`GET /v2/models/{name}/versions/{version}/training` (not part of the v2 spec; an API route like
the model metadata it sits beside) answers::

    {"name": "mnist", "version": "1", "state": "AVAILABLE", "error": null,
     "labels": ["stable"], "metadata": {...metadata.json...}}

`metadata` is the version's `metadata.json` (data source, training configuration, per-epoch
history, held-out metrics and figures, signature), `{}` when the training job wrote none. A
loaded version answers from memory; a version that is not loaded (it failed, or the policy left
it out) is read from disk, off the event loop. The document is the operator's, but it can hold
filesystem paths (`--init-from` weights, `--data` files): every absolute path in it is cut to
its last component before it is sent, so the answer never tells a client where files live.
"""

from __future__ import annotations

import re
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Response

from app.dependencies import RegistryDep
from app.errors import Unavailable
from app.protocols.common import json_response, parse_version
from app.registry import ModelRegistry, ModelVersion
from app.repository import RepositoryError, read_metadata

TRAINING_PATH = "/v2/models/{model_name}/versions/{version}/training"
# An absolute POSIX path (two or more segments), a Windows drive path or a home path, starting
# a string or after a space, quote, bracket, '=', ',' or ':' ("npz:/data/mnist.npz"); a slash
# inside a word (base64, "tensorflow/serving/predict") starts none. Segments with a colon are
# left alone: TensorFlow's device names ("/job:worker/replica:0/task:1/device:GPU:0",
# "/device:CPU:0") look like paths but are not.
_START = r"(?<![^\s'\"(\[=,:])"
_ABSOLUTE_PATH = re.compile(
    _START + r"(?:[A-Za-z]:[\\/]|/(?!/))(?:[^\s:\\/'\"]+[\\/])+([^\s:\\/'\"]*)"
    r"|" + _START + r"~[\\/](?:[^\s:\\/'\"]+[\\/])*([^\s:\\/'\"]*)"
)
# Values that are data, not text: the training package stores figure pictures as base64 PNG.
OPAQUE_KEYS = frozenset({"png"})


def strip_paths(value: Any) -> Any:
    """`value` (JSON data) with every absolute filesystem path cut to `.../<last component>`
    (values under `OPAQUE_KEYS` are kept as they are)."""
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(
            lambda match: ".../" + (match.group(1) or match.group(2) or ""), value
        )
    if isinstance(value, dict):
        return {
            key: item if key in OPAQUE_KEYS else strip_paths(item) for key, item in value.items()
        }
    if isinstance(value, list):
        return [strip_paths(item) for item in value]
    return value


def _labels_of(registry: ModelRegistry, entry: ModelVersion) -> list[str]:
    return sorted(
        label for label, version in registry.labels(entry.name).items() if version == entry.version
    )


async def _metadata_of(entry: ModelVersion) -> dict[str, Any]:
    servable = entry.servable
    if servable is not None:
        return servable.metadata
    try:
        return await to_thread.run_sync(read_metadata, entry.path)
    except RepositoryError:
        # The message would name the file's location; the client gets what went wrong only.
        raise Unavailable(
            f"model {entry.name!r} version {entry.version}: its metadata.json "
            "cannot be read as a JSON object"
        ) from None


async def training_record(registry: RegistryDep, model_name: str, version: str) -> Response:
    """The version's state, labels and `metadata.json` (absolute paths cut to file names)."""
    entry = registry.get_version(model_name, parse_version(version))
    metadata = await _metadata_of(entry)
    return json_response(
        {
            "name": entry.name,
            "version": str(entry.version),
            "state": entry.state.value,
            "error": strip_paths(entry.error) if entry.error else None,
            "labels": _labels_of(registry, entry),
            "metadata": strip_paths(metadata),
        }
    )


def build_router() -> APIRouter:
    router = APIRouter(tags=["KServe v2"])
    router.add_api_route(
        TRAINING_PATH,
        training_record,
        methods=["GET"],
        summary="What training recorded for one version (metadata.json)",
        response_class=Response,
        responses={
            200: {"description": "State, labels and metadata.json."},
            404: {"description": "Unknown model or version."},
        },
    )
    return router
