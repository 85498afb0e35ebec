"""The repository format, in one place: what the training job writes and the server reads.

`<root>/<name>/<version>/` as TF Serving lays it out (models/README.md). Both sides import
these names (`training.publish`, `training.publish_external`, `app.repository.scan`,
`app.servable`, the batcher's padding plan), so the rule cannot drift between writer and reader:

- a version is a folder whose name is a positive integer that fits TF Serving's int64; anything
  else under a model folder is not a version, in particular the hidden `.tmp-*` folder a publish
  is built in before one atomic rename makes it visible;
- it holds a SavedModel (`saved_model.pb`, or `.pbtxt`) or, without one, a Keras 3 archive named
  exactly `model.keras`;
- `metadata.json` beside it is a JSON object; the keys below are the ones the server reads.

Only the standard library here: the training side imports it without the server's packages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

METADATA_FILE = "metadata.json"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
KERAS_ARCHIVE = "model.keras"
# A publish is built in `<model>/.tmp-<version>-<random>/`; readers skip every hidden name.
STAGING_PREFIX = ".tmp-"
MAX_VERSION = 2**63 - 1
ModelFormat = Literal["savedmodel", "keras"]

# metadata.json keys that the server reads (the training job writes more; the server passes
# the whole document on to `GET .../training`).
NAME_KEY = "name"
VERSION_KEY = "version"
SIGNATURE_KEY = "signature"
# Variable-width models: the value narrower requests are padded with in a merged batch, and
# how many input columns make one output step (`T = ceil(W / time_stride)`).
PAD_VALUE_KEY = "pad_value"
TIME_STRIDE_KEY = "time_stride"


class RepositoryError(RuntimeError):
    """The repository root or a version's files cannot be read."""


def is_version_name(name: str) -> bool:
    """All digits, not zero and a 64-bit number (TF Serving's versions are int64)."""
    return name.isascii() and name.isdigit() and 0 < int(name) <= MAX_VERSION


def list_versions(model_dir: Path) -> list[int]:
    """The published versions under a model folder, ascending (a missing folder: none)."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in model_dir.iterdir()
        if is_version_name(entry.name) and entry.is_dir()
    )


def newest_version_dir(model_dir: Path) -> Path | None:
    """The folder of the highest published version under a model folder, or None."""
    versions = list_versions(model_dir)
    return model_dir / str(versions[-1]) if versions else None


def read_metadata(version_path: Path) -> dict[str, Any]:
    """The version's `metadata.json`, or `{}` when the training job wrote none."""
    path = version_path / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{METADATA_FILE} cannot be read as JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise RepositoryError(
            f"{METADATA_FILE} must hold a JSON object, got {type(metadata).__name__}"
        )
    return metadata
