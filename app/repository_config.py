"""The repository config file: per-model version policy, version labels and batching options.

One file, re-read whenever its mtime or size changes (`app.reloader`), so operators change
policies, move labels and tune batching without a restart. Default location:
`<repository>/config.yaml` (`--repository-config` / `KERASSERVE_REPOSITORY_CONFIG` to move it).
YAML or JSON (a `.json` file is read as JSON; JSON is valid YAML anyway). Format::

    models:
      mnist:
        version_policy: {latest: 2}      # or: all | {specific: [1, 3]}; default {latest: 1}
        labels: {stable: 1, canary: 2}    # any label name -> a version number
        batching:                         # any BatchingOptions field, over the server defaults
          max_batch_size: 32
          max_batch_delay_us: 1000
          enabled: true                   # false: one servable call per request
      ocr:
        version_policy: all

Every mistake is reported with its place in the file (`models.mnist.labels.stable: ...`). A file
that fails to parse or validate is refused as a whole: the previous config stays in force and the
error is reported (log, `GET /v2/repository/config`, metrics), so a typo never unloads models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from app.batching import BatchingOptions
from app.repository import VersionPolicy

DEFAULT_CONFIG_NAME = "config.yaml"
_MODEL_KEYS = ("version_policy", "labels", "batching")
_BATCHING_FIELDS = {f.name: f.type for f in fields(BatchingOptions)}


class RepositoryConfigError(ValueError):
    """The config file cannot be used; the message names the file and the place in it."""


@dataclass(frozen=True)
class ModelConfig:
    """What the config file says about one model (`None`/empty: server defaults)."""

    policy: VersionPolicy | None = None
    labels: dict[str, int] = field(default_factory=dict)
    batching: dict[str, Any] | None = None  # the fields given, merged over the defaults later

    def batching_options(self, defaults: BatchingOptions) -> BatchingOptions | None:
        """The given batching fields over `defaults`; `None` when the file sets none."""
        return None if self.batching is None else replace(defaults, **self.batching)


@dataclass(frozen=True)
class RepositoryConfig:
    """The whole file, validated."""

    models: dict[str, ModelConfig] = field(default_factory=dict)

    def model(self, name: str) -> ModelConfig:
        return self.models.get(name, ModelConfig())


@dataclass(frozen=True)
class FileFingerprint:
    """What tells a changed file from an unchanged one without reading it."""

    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> FileFingerprint | None:
        """The file's fingerprint, `None` when it does not exist."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return cls(stat.st_mtime_ns, stat.st_size)


def default_config_path(repository: Path) -> Path:
    return repository / DEFAULT_CONFIG_NAME


def load_repository_config(path: Path) -> RepositoryConfig:
    """Read and validate `path`; a missing file is the empty config (every default)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return RepositoryConfig()
    except OSError as exc:
        raise RepositoryConfigError(f"{path}: cannot be read: {exc}") from exc
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise RepositoryConfigError(f"{path}: not valid {_kind(path)}: {exc}") from exc
    try:
        return parse_repository_config(document)
    except RepositoryConfigError as exc:
        raise RepositoryConfigError(f"{path}: {exc}") from exc


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def parse_repository_config(document: Any, defaults: BatchingOptions | None = None
                            ) -> RepositoryConfig:
    """Validate a parsed document; `defaults` lets batching values be checked in full."""
    if document is None:
        return RepositoryConfig()
    _expect_mapping(document, "the top level")
    unknown = set(document) - {"models"}
    if unknown:
        raise RepositoryConfigError(f"unknown top-level keys {sorted(unknown)} "
                                    "(expected 'models')")
    models = document.get("models") or {}
    _expect_mapping(models, "models")
    parsed: dict[str, ModelConfig] = {}
    for name, body in models.items():
        where = f"models.{name}"
        if not isinstance(name, str) or not name or name.startswith("."):
            raise RepositoryConfigError(f"{where}: model names must be non-empty strings")
        parsed[name] = _parse_model(body or {}, where, defaults or BatchingOptions())
    return RepositoryConfig(parsed)


def _parse_model(body: Any, where: str, defaults: BatchingOptions) -> ModelConfig:
    _expect_mapping(body, where)
    unknown = set(body) - set(_MODEL_KEYS)
    if unknown:
        raise RepositoryConfigError(f"{where}: unknown keys {sorted(unknown)} "
                                    f"(expected {list(_MODEL_KEYS)})")
    policy = (parse_version_policy(body["version_policy"], f"{where}.version_policy")
              if "version_policy" in body else None)
    labels = _parse_labels(body.get("labels") or {}, f"{where}.labels")
    batching = (_parse_batching(body["batching"] or {}, f"{where}.batching", defaults)
                if "batching" in body else None)
    return ModelConfig(policy=policy, labels=labels, batching=batching)


def parse_version_policy(value: Any, where: str = "version_policy") -> VersionPolicy:
    """`all`, `{latest: N}` (N >= 1) or `{specific: [versions]}`, as in TF Serving."""
    expected = "expected 'all', {latest: N} or {specific: [versions]}"
    if value == "all" or value == {"all": {}} or value == {"all": None}:
        return VersionPolicy(kind="all")
    if not isinstance(value, dict) or len(value) != 1:
        raise RepositoryConfigError(f"{where}: {expected}, got {value!r}")
    (kind, argument), = value.items()
    if kind == "latest":
        if not _is_int(argument) or argument < 1:
            raise RepositoryConfigError(f"{where}.latest: expected a whole number >= 1, "
                                        f"got {argument!r}")
        return VersionPolicy(kind="latest", count=argument)
    if kind == "specific":
        if (not isinstance(argument, list) or not argument
                or not all(_is_int(v) and v > 0 for v in argument)):
            raise RepositoryConfigError(f"{where}.specific: expected a non-empty list of "
                                        f"version numbers > 0, got {argument!r}")
        return VersionPolicy(kind="specific", versions=frozenset(argument))
    raise RepositoryConfigError(f"{where}: {expected}, got {value!r}")


def _parse_labels(value: Any, where: str) -> dict[str, int]:
    _expect_mapping(value, where)
    labels: dict[str, int] = {}
    for label, version in value.items():
        if not isinstance(label, str) or not label or "/" in label:
            raise RepositoryConfigError(f"{where}: label names must be non-empty strings "
                                        f"without '/', got {label!r}")
        if label.isdigit():
            raise RepositoryConfigError(f"{where}.{label}: a label name cannot be a number")
        if not _is_int(version) or version < 1:
            raise RepositoryConfigError(f"{where}.{label}: expected a version number >= 1, "
                                        f"got {version!r}")
        labels[label] = version
    return labels


def _parse_batching(value: Any, where: str, defaults: BatchingOptions) -> dict[str, Any]:
    _expect_mapping(value, where)
    unknown = set(value) - set(_BATCHING_FIELDS)
    if unknown:
        raise RepositoryConfigError(f"{where}: unknown keys {sorted(unknown)} "
                                    f"(expected some of {sorted(_BATCHING_FIELDS)})")
    for key, item in value.items():
        default = getattr(defaults, key)
        ok = (isinstance(item, bool) if isinstance(default, bool)
              else _is_int(item) if isinstance(default, int)
              else _is_int(item) or isinstance(item, float))
        if not ok:
            raise RepositoryConfigError(f"{where}.{key}: expected "
                                        f"{type(default).__name__}, got {item!r}")
    try:
        replace(defaults, **value)  # BatchingOptions checks ranges itself
    except ValueError as exc:
        raise RepositoryConfigError(f"{where}: {exc}") from exc
    return dict(value)


def _expect_mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise RepositoryConfigError(f"{where}: expected a mapping, got "
                                    f"{type(value).__name__} {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
