"""The repository config file: per-model version policy, version labels and batching options.

One file, re-read whenever its mtime or size changes (`app.repository.watcher`), so operators
change policies, move labels and tune batching without a restart. Default location:
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
Numbers must be finite and within `BATCHING_BOUNDS` (`timeout_s: .nan` or `.inf`, a negative
delay, a thread count of a billion: refused, naming the key). Messages name the file by its
repository-relative name, never by its absolute path. What happens when the file is missing or
empty for a moment (an editor's save) is the reloader's business (`app.repository.reloader`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from app.batching import BatchingOptions
from app.repository import MAX_VERSION, VersionPolicy

DEFAULT_CONFIG_NAME = "config.yaml"
_MODEL_KEYS = ("version_policy", "labels", "batching")
_BATCHING_FIELDS = {f.name: f.type for f in fields(BatchingOptions)}
# Inclusive ranges of the batching values a config file may set; the lower bounds repeat
# BatchingOptions' own checks, the upper ones keep a typo from asking for a billion threads or a
# timeout of centuries. A field missing here gets `_DEFAULT_BOUNDS`.
BATCHING_BOUNDS: dict[str, tuple[float, float]] = {
    "max_batch_size": (1, 65_536),
    "max_batch_delay_us": (0, 10_000_000),  # 10 s
    "max_queued_rows": (1, 10_000_000),
    "max_queued_bytes": (1, 64 * 1024**3),
    "timeout_s": (0.001, 86_400.0),  # a day
    "inference_threads": (1, 64),
    "max_pad_ratio": (1.0, 1_000.0),
    "max_variable_dim": (1, 1_000_000),
}
_DEFAULT_BOUNDS = (0, 2**31 - 1)


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
        """The file's fingerprint, `None` when it does not exist.

        Any other error (a symbolic link loop, no permission) gives a fingerprint that matches
        no file, so the reader tries the file and reports why it cannot be read.
        """
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return cls(-1, -1)
        return cls(stat.st_mtime_ns, stat.st_size)


def load_repository_config(path: Path, shown_as: str | None = None) -> RepositoryConfig:
    """Read and validate `path`; a missing file is the empty config (every default).

    Errors start with `shown_as` (default: the file name), which is what clients read.
    """
    shown = shown_as or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return RepositoryConfig()
    except OSError as exc:
        raise RepositoryConfigError(
            f"{shown}: cannot be read: {(exc.strerror or type(exc).__name__).lower()}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise RepositoryConfigError(
            f"{shown}: not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from exc
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise RepositoryConfigError(f"{shown}: not valid {_kind(path)}: {exc}") from exc
    except RecursionError as exc:  # deeply nested flow collections
        raise RepositoryConfigError(f"{shown}: not valid {_kind(path)}: nested too deeply") from exc
    try:
        return parse_repository_config(document)
    except RepositoryConfigError as exc:
        raise RepositoryConfigError(f"{shown}: {exc}") from exc


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def parse_repository_config(
    document: Any, defaults: BatchingOptions | None = None
) -> RepositoryConfig:
    """Validate a parsed document; `defaults` lets batching values be checked in full."""
    if document is None:
        return RepositoryConfig()
    _expect_mapping(document, "the top level")
    unknown = set(document) - {"models"}
    if unknown:
        raise RepositoryConfigError(f"unknown top-level keys {sorted(unknown)} (expected 'models')")
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
        raise RepositoryConfigError(
            f"{where}: unknown keys {sorted(unknown)} (expected {list(_MODEL_KEYS)})"
        )
    policy = (
        parse_version_policy(body["version_policy"], f"{where}.version_policy")
        if "version_policy" in body
        else None
    )
    labels = _parse_labels(body.get("labels") or {}, f"{where}.labels")
    batching = (
        _parse_batching(body["batching"] or {}, f"{where}.batching", defaults)
        if "batching" in body
        else None
    )
    return ModelConfig(policy=policy, labels=labels, batching=batching)


def parse_version_policy(value: Any, where: str = "version_policy") -> VersionPolicy:
    """`all`, `{latest: N}` (N >= 1) or `{specific: [versions]}`, as in TF Serving."""
    expected = "expected 'all', {latest: N} or {specific: [versions]}"
    if value == "all" or value == {"all": {}} or value == {"all": None}:
        return VersionPolicy(kind="all")
    if not isinstance(value, dict) or len(value) != 1:
        raise RepositoryConfigError(f"{where}: {expected}, got {_shown(value)}")
    ((kind, argument),) = value.items()
    if kind == "latest":
        if not _is_int(argument) or not 1 <= argument <= MAX_VERSION:
            raise RepositoryConfigError(
                f"{where}.latest: expected a whole number >= 1, got {_shown(argument)}"
            )
        return VersionPolicy(kind="latest", count=argument)
    if kind == "specific":
        if (
            not isinstance(argument, list)
            or not argument
            or not all(_is_int(v) and 0 < v <= MAX_VERSION for v in argument)
        ):
            raise RepositoryConfigError(
                f"{where}.specific: expected a non-empty list of "
                f"version numbers > 0, got {_shown(argument)}"
            )
        return VersionPolicy(kind="specific", versions=frozenset(argument))
    raise RepositoryConfigError(f"{where}: {expected}, got {_shown(value)}")


def _parse_labels(value: Any, where: str) -> dict[str, int]:
    _expect_mapping(value, where)
    labels: dict[str, int] = {}
    for label, version in value.items():
        if not isinstance(label, str) or not label or "/" in label:
            raise RepositoryConfigError(
                f"{where}: label names must be non-empty strings without '/', got {_shown(label)}"
            )
        if label.isdigit():
            raise RepositoryConfigError(f"{where}.{label}: a label name cannot be a number")
        if not _is_int(version) or not 1 <= version <= MAX_VERSION:
            raise RepositoryConfigError(
                f"{where}.{label}: expected a version number >= 1, got {_shown(version)}"
            )
        labels[label] = version
    return labels


def _parse_batching(value: Any, where: str, defaults: BatchingOptions) -> dict[str, Any]:
    _expect_mapping(value, where)
    unknown = set(value) - set(_BATCHING_FIELDS)
    if unknown:
        raise RepositoryConfigError(
            f"{where}: unknown keys {sorted(unknown)} (expected some of {sorted(_BATCHING_FIELDS)})"
        )
    for key, item in value.items():
        default = getattr(defaults, key)
        ok = (
            isinstance(item, bool)
            if isinstance(default, bool)
            else _is_int(item)
            if isinstance(default, int)
            else _is_int(item) or isinstance(item, float)
        )
        if not ok:
            raise RepositoryConfigError(
                f"{where}.{key}: expected {type(default).__name__}, got {_shown(item)}"
            )
    numbers = {key: item for key, item in value.items() if not isinstance(item, bool)}
    for key, item in numbers.items():  # nan passes every comparison: refuse it by name first
        if not math.isfinite(item):
            _out_of_bounds(where, key, item)
    try:
        replace(defaults, **value)  # BatchingOptions checks its lower bounds itself
    except ValueError as exc:
        raise RepositoryConfigError(f"{where}: {exc}") from exc
    for key, item in numbers.items():  # then the ranges a config may ask for
        low, high = BATCHING_BOUNDS.get(key, _DEFAULT_BOUNDS)
        if not low <= item <= high:
            _out_of_bounds(where, key, item)
    return dict(value)


def _out_of_bounds(where: str, key: str, item: float) -> NoReturn:
    low, high = BATCHING_BOUNDS.get(key, _DEFAULT_BOUNDS)
    raise RepositoryConfigError(
        f"{where}.{key}: expected a finite number from {low} to {high}, got {_shown_number(item)}"
    )


def _expect_mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise RepositoryConfigError(
            f"{where}: expected a mapping, got {type(value).__name__} {_shown(value)}"
        )


def _shown(value: Any) -> str:
    """`repr` of a value, cut short (a config value can be a megabyte of text)."""
    if _is_int(value):
        return _shown_number(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _shown_number(value: float) -> str:
    """A number as the message shows it: short even when it is a 4,000-digit integer."""
    if isinstance(value, float) or value.bit_length() < 64:
        return repr(value)
    try:
        return f"an integer of {len(str(abs(value)))} digits"
    except ValueError:  # over Python's limit for int-to-text conversion
        return f"an integer of about {round(value.bit_length() * math.log10(2))} digits"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
