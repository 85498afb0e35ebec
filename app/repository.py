"""The model repository on disk: `<root>/<name>/<version>/` as TF Serving lays it out.

Only reading happens here; loading is `app.servable`'s job and deciding what to load is the
registry's. A version is visible exactly when its folder name is all digits (the training job
publishes with one atomic rename from a hidden `.tmp-*` folder, see models/README.md), so
anything else under a model folder is ignored and a half-written version is never seen.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"


class RepositoryError(RuntimeError):
    """The repository root or a version's files cannot be read."""


@dataclass(frozen=True)
class VersionDir:
    """One published version folder."""

    name: str
    version: int
    path: Path


@dataclass(frozen=True)
class ModelDir:
    """One model folder and its published versions, oldest first."""

    name: str
    path: Path
    versions: tuple[VersionDir, ...]


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve, as in TF Serving's `model_version_policy`.

    `latest` keeps the newest `count`, `all` keeps every version, `specific` keeps `versions`.
    """

    kind: Literal["latest", "all", "specific"] = "latest"
    count: int = 1
    versions: frozenset[int] = field(default_factory=frozenset)

    def select(self, available: tuple[VersionDir, ...]) -> list[VersionDir]:
        """The versions out of `available` (oldest first) that this policy serves."""
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            return [v for v in available if v.version in self.versions]
        return list(available[-self.count:]) if self.count > 0 else []


def is_version_name(name: str) -> bool:
    """All digits and not zero: the publishing rule's test for a complete version."""
    return name.isascii() and name.isdigit() and int(name) > 0


def scan_repository(root: Path) -> dict[str, ModelDir]:
    """Every model folder under `root` with its published versions (cheap: no file reads)."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {str(root)!r} is not a directory")
    models: dict[str, ModelDir] = {}
    for model_path in sorted(root.iterdir()):
        if model_path.name.startswith(".") or not model_path.is_dir():
            continue
        versions = sorted(
            (VersionDir(model_path.name, int(child.name), child)
             for child in model_path.iterdir()
             if child.is_dir() and is_version_name(child.name)),
            key=lambda v: v.version,
        )
        if not versions:
            log.warning("model folder %s has no version folders; skipped", model_path)
            continue
        models[model_path.name] = ModelDir(model_path.name, model_path, tuple(versions))
    return models


def read_metadata(version_path: Path) -> dict[str, Any]:
    """The version's `metadata.json`, or `{}` when the training job wrote none."""
    path = version_path / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise RepositoryError(f"{path} must hold a JSON object, got {type(metadata).__name__}")
    return metadata
