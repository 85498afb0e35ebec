"""Export a trained model and publish it into the repository atomically (see models/README.md).

A version is visible exactly when a folder named by a positive integer exists under
`models/<name>/`. Everything is therefore built in a hidden `.tmp-<version>-<random>/` folder on the
same filesystem, `metadata.json` is written last, files and folders are fsynced, and one
`rename(2)` makes the version appear whole. A job killed at any point leaves only a hidden folder
that readers skip and a later publish removes once it is more than an hour old.

Typical use (what `training.fit` does)::

    staged = stage_version(repository, "mnist")           # or version=N
    save_servable(module, staged.path)                    # SavedModel with serving_default
    ...evaluate through load_serving_function(staged.path)...
    final_path = staged.commit(metadata)                  # metadata.json, fsync, rename

The SavedModel is the version's only copy of its weights: `--init-from` reads its variables back
into a freshly built training model (`training.warm_start`), so no Keras weights file is kept
beside it (that doubled the committed repository).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.repository.format import (
    METADATA_FILE,
    SIGNATURE_KEY,
    STAGING_PREFIX,
    list_versions,
)

log = logging.getLogger(__name__)

STALE_TMP_AGE_S = 3600.0
SIGNATURE_NAME = "serving_default"


class PublishError(RuntimeError):
    """The version cannot be published (e.g. `--version N` already exists)."""


def next_version(model_dir: Path) -> int:
    """One above the highest published version (1 for a new model)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def latest_version_dir(repository: Path, name: str) -> Path:
    """Folder of the highest published version of `name`, for `--init-from latest`."""
    versions = list_versions(repository / name)
    if not versions:
        raise PublishError(
            f"--init-from latest: no published version of {name!r} under {repository / name}"
        )
    return repository / name / str(versions[-1])


@dataclass
class StagedVersion:
    """A version being built in its hidden folder; `commit` makes it visible in one rename."""

    model_dir: Path
    version: int
    path: Path

    @property
    def final_path(self) -> Path:
        return self.model_dir / str(self.version)

    def commit(self, metadata: dict[str, Any]) -> Path:
        """Write metadata.json last, fsync everything, then rename into place."""
        if self.final_path.exists():
            raise PublishError(f"version {self.version} already exists at {self.final_path}")
        metadata_path = self.path / METADATA_FILE
        with metadata_path.open("w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_tree(self.path)
        try:
            os.rename(self.path, self.final_path)
        except OSError as exc:  # another job took the number between staging and now
            raise PublishError(f"cannot publish version {self.version}: {exc}") from exc
        _fsync_dir(self.model_dir)
        log.info("published %s", self.final_path)
        return self.final_path

    def discard(self) -> None:
        """Remove the hidden folder (a failed or non-chief job's leftovers)."""
        shutil.rmtree(self.path, ignore_errors=True)


def stage_version(repository: Path, name: str, version: int | None = None) -> StagedVersion:
    """Reserve a version number and create its hidden build folder on the repository's disk."""
    model_dir = Path(repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp_dirs(model_dir)
    if version is None:
        version = next_version(model_dir)
    check_version_free(repository, name, version)
    path = model_dir / f"{STAGING_PREFIX}{version}-{secrets.token_hex(4)}"
    path.mkdir()
    return StagedVersion(model_dir=model_dir, version=version, path=path)


def check_version_free(repository: Path, name: str, version: int) -> None:
    """Fail before training, not after, when `--version N` is invalid or already taken."""
    if version <= 0:
        raise PublishError(f"--version must be a positive integer, got {version}")
    target = Path(repository) / name / str(version)
    if target.exists():
        raise PublishError(
            f"version {version} of {name!r} already exists at {target}; choose another --version"
        )


def remove_stale_tmp_dirs(model_dir: Path, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Delete hidden build folders older than `max_age_s` (killed jobs); young ones may be live."""
    removed: list[Path] = []
    now = time.time()
    for entry in model_dir.glob(f"{STAGING_PREFIX}*"):
        with contextlib.suppress(OSError):
            if entry.is_dir() and now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry)
                removed.append(entry)
    return removed


def save_servable(module: Any, path: Path) -> None:
    """Save only the inference graph: `module.serving_default` becomes the one signature."""
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: module.serving_default})


def require_version_dir(path: Path) -> Path:
    """`path` as a published version folder (one holding `saved_model.pb`), or PublishError."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise PublishError(f"{path} is not a published version (no saved_model.pb)")
    return path


def load_serving_function(path: Path) -> Any:
    """The exported `serving_default` as a callable of named tensors (what the server calls)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures[SIGNATURE_NAME]
    function._loaded_module = loaded  # keep the variables alive as long as the function lives
    return function


def signature_spec(serving_function: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """`{"inputs": {name: {dtype, shape}}, "outputs": {...}}` with -1 for unknown dimensions."""
    _, input_specs = serving_function.structured_input_signature
    return {
        "inputs": {name: _tensor_spec(spec) for name, spec in sorted(input_specs.items())},
        "outputs": {
            name: _tensor_spec(spec) for name, spec in serving_function.structured_outputs.items()
        },
    }


def _tensor_spec(spec: Any) -> dict[str, Any]:
    return {
        "dtype": spec.dtype.name,
        "shape": [-1 if dim is None else int(dim) for dim in spec.shape.as_list()],
    }


def code_revision(source_dir: Path | None = None) -> str | None:
    """The git commit of the training code (with `-dirty` for local edits), or None if unknown."""
    directory = source_dir or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "."],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def build_metadata(
    *,
    name: str,
    version: int,
    data: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, float],
    signature: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The metadata.json document of models/README.md; `extra` is the recipe's own part."""
    return {
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_revision": code_revision(),
        "data": data,
        "training": training,
        "metrics": {key: float(value) for key, value in metrics.items()},
        SIGNATURE_KEY: signature,
        **extra,
    }


def read_metadata(version_dir: Path) -> dict[str, Any]:
    with (Path(version_dir) / METADATA_FILE).open(encoding="utf-8") as handle:
        return json.load(handle)


def directory_size(path: Path) -> int:
    """Bytes on disk under `path` (reported in the final summary line)."""
    return sum(entry.stat().st_size for entry in Path(path).rglob("*") if entry.is_file())


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for file_name in files:
            fd = os.open(os.path.join(directory, file_name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(directory))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
