"""Reading the model repository on disk (its format: `app.repository.format`).

Only reading happens here; loading is `app.servable`'s job and deciding what to load is the
registry's. A version is visible exactly when its folder name is all digits (the training job
publishes with one atomic rename from a hidden `.tmp-*` folder, see models/README.md), so
anything else under a model folder is ignored and a half-written version is never seen.

The scan survives whatever the filesystem holds: an entry it cannot read (a root-owned
`lost+found`, a symbolic link loop, a dangling link) or a version-numbered entry that is not a
folder (a file, a FIFO) is reported as a `RepositoryProblem` and skipped, never raised, so one bad
entry cannot stop the healthy models from loading. `check_version_files` runs before TensorFlow
opens a version: a FIFO in it would block the loading thread for ever, a missing `saved_model.pb`
is an unfinished publish. Messages here name entries by their repository-relative name.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from app.repository.format import (
    KERAS_ARCHIVE,
    SAVED_MODEL_FILES,
    ModelFormat,
    RepositoryError,
    is_version_name,
)

log = logging.getLogger(__name__)
# Files and folders checked in one version before loading: a SavedModel has a handful (a few
# dozen with assets); ten thousand bounds the walk over a folder that is not a model at all.
MAX_VERSION_ENTRIES = 10_000


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
class RepositoryProblem:
    """One entry of the repository that cannot be used, for status, logs and metrics.

    `kind` is `unreadable_entry` (listing or stat failed) or `invalid_entry` (a model-level
    special file, or a version-numbered entry that is not a folder); `model` and `version` say
    where it is (the version is `None` for a model-level entry).
    """

    kind: str
    model: str
    version: int | None
    message: str

    @property
    def entry(self) -> str:
        return self.model if self.version is None else f"{self.model}/{self.version}"


@dataclass(frozen=True)
class RepositoryScan:
    """The models found, what could not be used, and the models whose folder was unreadable.

    A model in `unreadable` may still be serving: the reloader leaves it as it is until its
    folder can be read again (a transient fault must not unload a model).
    """

    models: dict[str, ModelDir]
    problems: tuple[RepositoryProblem, ...] = ()
    unreadable: frozenset[str] = frozenset()


def scan_repository(root: Path) -> dict[str, ModelDir]:
    """Every model folder under `root` with its published versions (cheap: no file reads)."""
    scan = scan_repository_report(root)
    for path in sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name not in scan.models
        and p.name not in scan.unreadable
    ):
        log.warning("model folder %s has no version folders; skipped", path)
    for problem in scan.problems:
        log.warning("repository entry %s skipped: %s", problem.entry, problem.message)
    return scan.models


def scan_repository_report(root: Path) -> RepositoryScan:
    """`scan_repository` with the entries it skipped; only an unreadable root raises."""
    if not root.is_dir():
        raise RepositoryError("the model repository is not a directory (or cannot be reached)")
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as exc:
        raise RepositoryError(f"the model repository cannot be read: {_reason(exc)}") from exc
    models: dict[str, ModelDir] = {}
    problems: list[RepositoryProblem] = []
    unreadable: set[str] = set()
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if not _is_printable_name(name):
            problems.append(
                RepositoryProblem(
                    "invalid_entry", _shown(name), None, "the name is not printable UTF-8; skipped"
                )
            )
            continue
        kind = _kind_of(entry.path)
        if isinstance(kind, OSError):
            unreadable.add(name)
            problems.append(
                RepositoryProblem(
                    "unreadable_entry", name, None, f"cannot be read: {_reason(kind)}"
                )
            )
            continue
        if kind == "file":
            continue  # config.yaml, a README: files beside the models are normal
        if kind != "folder":
            problems.append(
                RepositoryProblem(
                    "invalid_entry", name, None, f"is a {kind}, not a model folder; skipped"
                )
            )
            continue
        try:
            children = sorted(os.scandir(entry.path), key=lambda child: child.name)
        except OSError as exc:
            unreadable.add(name)
            problems.append(
                RepositoryProblem(
                    "unreadable_entry",
                    name,
                    None,
                    f"the model folder cannot be read: {_reason(exc)}",
                )
            )
            continue
        versions: list[VersionDir] = []
        for child in children:
            if not is_version_name(child.name):
                continue  # hidden staging folders (.tmp-*), keras/, notes: not versions
            version = int(child.name)
            child_kind = _kind_of(child.path)
            if child_kind == "folder":
                versions.append(VersionDir(name, version, Path(child.path)))
            elif isinstance(child_kind, OSError):
                problems.append(
                    RepositoryProblem(
                        "unreadable_entry", name, version, f"cannot be read: {_reason(child_kind)}"
                    )
                )
            else:
                problems.append(
                    RepositoryProblem(
                        "invalid_entry",
                        name,
                        version,
                        f"is a {child_kind}, not a version folder; skipped",
                    )
                )
        if not versions:
            continue  # an empty lost+found, a model being prepared: not a model (yet)
        versions.sort(key=lambda v: v.version)
        models[name] = ModelDir(name, Path(entry.path), tuple(versions))
    return RepositoryScan(models, tuple(problems), frozenset(unreadable))


def check_version_files(version_path: Path, max_entries: int = MAX_VERSION_ENTRIES) -> ModelFormat:
    """Refuse a version folder TensorFlow must not open (`RepositoryError` says why), else say
    what it holds: a SavedModel, or (without one) a Keras archive `model.keras`.

    Every entry must be a regular file or a folder (symbolic links are followed): reading a
    FIFO blocks for ever and a device never ends. `saved_model.pb` (or `.pbtxt`), or else
    `model.keras`, must be a regular file. At most `max_entries` entries are looked at.
    """
    kind = _kind_of(str(version_path))
    if isinstance(kind, OSError):
        raise RepositoryError(f"the version folder cannot be read: {_reason(kind)}")
    if kind != "folder":
        raise RepositoryError(f"the version entry is a {kind}, not a folder")
    seen = 0
    pending = [version_path]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise RepositoryError(
                f"{_inside(folder, version_path)}cannot be read: {_reason(exc)}"
            ) from exc
        for entry in entries:
            seen += 1
            if seen > max_entries:
                raise RepositoryError(
                    f"the version folder holds more than {max_entries} "
                    "files and folders; not a SavedModel"
                )
            entry_kind = _kind_of(entry.path)
            where = _inside(Path(entry.path), version_path).rstrip(": ")
            if isinstance(entry_kind, OSError):
                raise RepositoryError(f"{where} cannot be read: {_reason(entry_kind)}")
            if entry_kind == "folder":
                if not entry.is_symlink():  # a linked folder is read by TensorFlow, not walked
                    pending.append(Path(entry.path))
            elif entry_kind != "file":
                raise RepositoryError(f"{where} is a {entry_kind}, not a regular file")
    present = [name for name in SAVED_MODEL_FILES if _kind_of(str(version_path / name)) == "file"]
    if present:
        return "savedmodel"
    if any(_kind_of(str(version_path / name)) == "folder" for name in SAVED_MODEL_FILES):
        raise RepositoryError("saved_model.pb is a folder, not a file")
    archive = _kind_of(str(version_path / KERAS_ARCHIVE))
    if archive == "file":
        return "keras"
    if archive == "folder":
        raise RepositoryError(f"{KERAS_ARCHIVE} is a folder, not a file")
    raise RepositoryError(
        f"the version folder has no saved_model.pb and no {KERAS_ARCHIVE} (an unfinished publish?)"
    )


def _kind_of(path: str) -> str | OSError:
    """'folder', 'file', another kind in words, or the error that stat gave (links followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc
    except ValueError as exc:  # an embedded NUL: cannot come from a listing, but be safe
        return OSError(str(exc))
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _reason(exc: OSError) -> str:
    """The OS's words for an error, without the path it names."""
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder (a dangling symbolic link, or removed meanwhile)"
    return exc.strerror.lower() if exc.strerror else (str(exc) or type(exc).__name__)


def _inside(path: Path, version_path: Path) -> str:
    """`path` relative to the version folder, as a message prefix ('' for the folder)."""
    try:
        relative = path.relative_to(version_path)
    except ValueError:
        return ""
    return f"{relative.as_posix()}: " if str(relative) != "." else ""


def _is_printable_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as surrogates
        return False
    return name.isprintable()


def _shown(name: str) -> str:
    """A file name that is not valid UTF-8, with its odd bytes as `\\xff` escapes."""
    return os.fsencode(name).decode("ascii", "backslashreplace")
