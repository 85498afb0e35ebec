"""Keeps the loaded versions in line with the repository, its config file and control requests.

`RepositoryReloader` owns every change to what is loaded after start: the initial load, the poll
loop (`poll_interval` seconds, 0 = off) and the model control API (`app.protocols.
repository_control`). One asyncio lock serialises them, so a control request never races a poll
pass. One pass (`reconcile`):

1. Re-read the config file when its mtime or size changed. A bad file is refused whole: the
   previous config stays, the error is logged and shown by `GET /v2/repository/config`.
2. Rescan the repository (cheap: directory listings only). A version is visible only once the
   training job's atomic rename has published it (see models/README.md), so nothing half
   written is ever loaded.
3. Per model, load the versions its policy selects that are not loaded yet, newest first, in a
   worker thread, warm-up included (`app.servable`); a version takes traffic only when it is
   AVAILABLE. Versions that failed to load do not count for the policy (`latest: 1` with a
   corrupt newest version keeps the previous one serving) and are not retried until their
   folder changes or an explicit load asks for it.
4. Only then unload the versions the policy no longer selects, and those whose folder
   disappeared: the registry stops new leases and waits for in-flight requests (bounded by
   `drain_timeout_s`) before closing the runner, so a switch never fails a request.
5. Apply the config's labels. A label that points at a version that is not loaded is refused:
   it keeps its previous (still loaded) target, or is absent, and the error is reported.
6. When a model's batching options changed, its serving versions get new runners (the old
   ones finish what they were given); versions loaded later use the new options anyway.

The rule between polling and the control API: an explicit `unload` pins the model unloaded;
polling leaves it alone until an explicit `load`, which lifts the pin, retries failed versions
and loads what the policy selects. Every other model follows the repository.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.errors import NotFound
from app.metrics import ServiceMetrics, VersionSnapshot
from app.registry import ModelRegistry, ModelVersion, VersionState
from app.repository import ModelDir, RepositoryError, VersionDir, VersionPolicy, scan_repository
from app.repository_config import (
    FileFingerprint,
    RepositoryConfig,
    RepositoryConfigError,
    load_repository_config,
)

log = logging.getLogger(__name__)
BUSY_STATES = (VersionState.LOADING, VersionState.AVAILABLE)


@dataclass(frozen=True)
class VersionIndexEntry:
    """One line of the repository index (Triton's fields)."""

    name: str
    version: int
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str


class RepositoryReloader:
    """Initial load, polling and model control over one `ModelRegistry`."""

    def __init__(self, registry: ModelRegistry, config_path: Path, poll_interval_s: float,
                 drain_timeout_s: float, metrics: ServiceMetrics | None = None) -> None:
        self.registry = registry
        self.config_path = config_path
        self.poll_interval_s = poll_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.metrics = metrics
        self.config = RepositoryConfig()
        self.config_error: str | None = None
        self.label_errors: dict[str, list[str]] = {}
        self._config_fingerprint: FileFingerprint | None = None
        self._config_checked = False
        self._failed: dict[tuple[str, int], tuple[int, int]] = {}  # -> folder fingerprint
        self._unloaded_by_request: set[str] = set()
        self._lock = asyncio.Lock()
        self._default_batching = registry.default_batching
        self._default_policy = registry.default_policy

    # ---- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Initial load (readiness turns true after it), then poll until cancelled."""
        await self.reconcile()
        self.registry.initial_load_done = True
        log.info("initial load done", extra={"event": "initial_load_done",
                                             "models": self.snapshot_states()})
        if self.poll_interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.reconcile()
            except Exception:  # the loop must outlive any one bad pass
                log.exception("repository poll failed; retrying in %.1f s", self.poll_interval_s)

    async def reconcile(self) -> None:
        """One pass: config, scan, loads, unloads, labels (see the module docstring)."""
        async with self._lock:
            rebatched = self._refresh_config()
            models = self._scan()
            for name in sorted(set(models) | set(self.registry.model_names())):
                await self._reconcile_model(name, models.get(name))
            self._apply_all_labels()
            for name in sorted(rebatched & set(self.registry.model_names())):
                await self._rebuild_runners(name)

    # ---- model control (v2 repository extension) -------------------------------------------

    async def load_model(self, name: str) -> list[ModelVersion]:
        """Lift an explicit unload, retry failed versions, load what the policy selects."""
        async with self._lock:
            rebatched = self._refresh_config()
            model = self._scan().get(name)
            if model is None:
                raise NotFound(f"model {name!r} is not in the repository "
                               f"{str(self.registry.repository)!r}")
            self._unloaded_by_request.discard(name)
            for key in [key for key in self._failed if key[0] == name]:
                del self._failed[key]
            log.info("load of %s requested", name, extra={"event": "load_requested",
                                                          "model": name})
            await self._reconcile_model(name, model)
            self._apply_labels(name)
            if name in rebatched:
                await self._rebuild_runners(name)
            return self.registry.versions(name)

    async def unload_model(self, name: str) -> None:
        """Unload every version of `name` (draining each) and keep it unloaded until `load`."""
        async with self._lock:
            if name not in self.registry.model_names() and name not in self._scan():
                raise NotFound(f"model {name!r} is neither loaded nor in the repository")
            self._unloaded_by_request.add(name)
            log.info("unload of %s requested", name, extra={"event": "unload_requested",
                                                            "model": name})
            if name in self.registry.model_names():
                for entry in self.registry.versions(name):
                    await self._unload(entry, "unload requested")

    def index(self) -> list[VersionIndexEntry]:
        """Every version on disk or known to the registry, with its state and why."""
        try:
            models = self._scan_quietly()
        except RepositoryError:
            models = {}
        entries: list[VersionIndexEntry] = []
        for name in sorted(set(models) | set(self.registry.model_names())):
            known = ({e.version: e for e in self.registry.versions(name)}
                     if name in self.registry.model_names() else {})
            on_disk = {v.version for v in models[name].versions} if name in models else set()
            for version in sorted(on_disk | set(known)):
                entries.append(self._index_entry(name, version, known.get(version),
                                                 version in on_disk))
        return entries

    def _index_entry(self, name: str, version: int, entry: ModelVersion | None,
                     on_disk: bool) -> VersionIndexEntry:
        state, reason = "UNAVAILABLE", ""
        if entry is not None and entry.state is VersionState.AVAILABLE:
            state = "READY"
        elif entry is not None and entry.state in (VersionState.START, VersionState.LOADING):
            state, reason = "LOADING", "loading"
        elif entry is not None and entry.state is VersionState.UNLOADING:
            state, reason = "UNLOADING", "draining in-flight requests"
        elif entry is not None and entry.error:
            reason = f"failed to load: {entry.error}"
        elif name in self._unloaded_by_request:
            reason = "unloaded by request (POST /v2/repository/models/NAME/load to load)"
        elif not on_disk:
            reason = "version folder removed from the repository"
        else:
            reason = "not selected by the version policy"
        return VersionIndexEntry(name, version, state, reason)

    def config_status(self) -> dict[str, object]:
        """The config file in force and what is wrong with it, for `GET /v2/repository/config`."""
        return {
            "path": str(self.config_path),
            "exists": self.config_path.is_file(),
            "error": self.config_error,
            "label_errors": {k: v for k, v in self.label_errors.items() if v},
            "poll_interval_s": self.poll_interval_s,
            "unloaded_by_request": sorted(self._unloaded_by_request),
            "models": {
                name: {"version_policy": _describe_policy(self._policy(name)),
                       "labels": self.registry.labels(name)
                       if name in self.registry.model_names() else {},
                       "configured_labels": self.config.model(name).labels,
                       "batching": self.config.model(name).batching}
                for name in sorted(set(self.config.models) | set(self.registry.model_names()))
            },
        }

    def snapshot_states(self) -> dict[str, dict[int, str]]:
        return {name: {e.version: e.state.value for e in self.registry.versions(name)}
                for name in self.registry.model_names()}

    def version_snapshots(self) -> Iterable[VersionSnapshot]:
        """What the metrics scrape reads: every version's state and batcher queue depth."""
        for name in self.registry.model_names():
            for entry in self.registry.versions(name):
                queued = getattr(entry.runner, "queued_rows", None)
                yield name, entry.version, entry.state.value, queued

    # ---- one model -----------------------------------------------------------------------

    async def _reconcile_model(self, name: str, model: ModelDir | None) -> None:
        if name in self._unloaded_by_request:
            return
        on_disk = model.versions if model is not None else ()
        self._forget_stale_failures(name, on_disk)
        policy = self._policy(name)
        while True:
            candidates = tuple(v for v in on_disk if (name, v.version) not in self._failed)
            wanted = policy.select(candidates)
            pending = [v for v in reversed(wanted) if self._state(name, v.version)
                       not in BUSY_STATES]
            if not pending:
                break
            for version_dir in pending:  # newest first: it serves as soon as it is ready
                await self._load(version_dir)
        keep = {v.version for v in wanted}
        present = {v.version for v in on_disk}
        if name in self.registry.model_names():
            for entry in self.registry.versions(name):
                if entry.state is VersionState.AVAILABLE and entry.version not in keep:
                    await self._unload(entry, "version folder removed"
                                       if entry.version not in present
                                       else f"beyond the version policy "
                                            f"({_describe_policy(policy)})")

    async def _load(self, version_dir: VersionDir) -> None:
        name, version = version_dir.name, version_dir.version
        log.info("loading %s version %d", name, version,
                 extra={"event": "model_loading", "model": name, "version": version})
        entry = await self.registry.load_version(version_dir)
        if entry.state is VersionState.AVAILABLE:
            seconds = entry.servable.load_seconds if entry.servable is not None else 0.0
            if self.metrics is not None:
                self.metrics.load_time.labels(name).observe(seconds)
            log.info("%s version %d is serving (loaded and warmed up in %.2f s)", name,
                     version, seconds, extra={"event": "model_loaded", "model": name,
                                              "version": version, "load_seconds": seconds})
            return
        self._failed[(name, version)] = _folder_fingerprint(version_dir.path)
        if self.metrics is not None:
            self.metrics.load_failures.labels(name).inc()
        log.error("%s version %d failed to load: %s", name, version, entry.error,
                  extra={"event": "model_load_failed", "model": name, "version": version})

    async def _unload(self, entry: ModelVersion, why: str) -> None:
        if entry.state is not VersionState.AVAILABLE:
            return
        log.info("unloading %s version %d: %s", entry.name, entry.version, why,
                 extra={"event": "model_unloading", "model": entry.name,
                        "version": entry.version, "reason": why})
        await self.registry.unload_version(entry.name, entry.version, self.drain_timeout_s)

    def _forget_stale_failures(self, name: str, on_disk: tuple[VersionDir, ...]) -> None:
        """A failed version is retried once its folder changed (republished) or vanished."""
        current = {v.version: v for v in on_disk}
        for key in [key for key in self._failed if key[0] == name]:
            folder = current.get(key[1])
            if folder is None or _folder_fingerprint(folder.path) != self._failed[key]:
                del self._failed[key]

    def _state(self, name: str, version: int) -> VersionState | None:
        if name not in self.registry.model_names():
            return None
        for entry in self.registry.versions(name):
            if entry.version == version:
                return entry.state
        return None

    def _policy(self, name: str) -> VersionPolicy:
        return self.config.model(name).policy or self._default_policy

    # ---- config and labels ---------------------------------------------------------------

    async def _rebuild_runners(self, name: str) -> None:
        for entry in self.registry.versions(name):
            if entry.state is VersionState.AVAILABLE:
                log.info("%s version %d: new batching options %s", name, entry.version,
                         self.registry.batching_for(name),
                         extra={"event": "batching_changed", "model": name,
                                "version": entry.version})
                await self.registry.rebuild_runner(name, entry.version, self.drain_timeout_s)

    def _refresh_config(self) -> set[str]:
        """Re-read the config file if it changed; the models whose batching options changed."""
        fingerprint = FileFingerprint.of(self.config_path)
        if self._config_checked and fingerprint == self._config_fingerprint:
            return set()
        first_read = not self._config_checked
        self._config_checked = True
        self._config_fingerprint = fingerprint
        try:
            config = load_repository_config(self.config_path)
        except RepositoryConfigError as exc:
            self.config_error = str(exc)
            if self.metrics is not None:
                self.metrics.config_reloads.labels("error").inc()
            log.error("repository config refused, the previous one stays in force: %s", exc,
                      extra={"event": "config_refused"})
            return set()
        previous, self.config = self.config, config
        self.config_error = None
        overrides = {name: model.batching_options(self._default_batching)
                     for name, model in config.models.items()}
        self.registry.batching_overrides = {name: options for name, options in overrides.items()
                                            if options is not None}
        if self.metrics is not None:
            self.metrics.config_reloads.labels("ok").inc()
        log.info("repository config %s: %d models configured",
                 "read" if fingerprint else "absent (defaults)", len(config.models),
                 extra={"event": "config_loaded", "path": str(self.config_path)})
        if first_read:  # nothing is loaded yet: every load will use these options
            return set()
        return {name for name in set(previous.models) | set(config.models)
                if previous.model(name).batching != config.model(name).batching}

    def _apply_all_labels(self) -> None:
        for name in self.registry.model_names():
            self._apply_labels(name)

    def _apply_labels(self, name: str) -> None:
        """Set the configured labels whose versions are loaded; refuse and report the rest."""
        current = self.registry.labels(name)
        labels: dict[str, int] = {}
        errors: list[str] = []
        for label, version in self.config.model(name).labels.items():
            if self._state(name, version) is VersionState.AVAILABLE:
                labels[label] = version
                continue
            errors.append(f"label {label!r} of model {name!r} points at version {version}, "
                          "which is not loaded; refused")
            previous = current.get(label)
            if previous is not None and previous != version and \
                    self._state(name, previous) is VersionState.AVAILABLE:
                labels[label] = previous
        if labels != current:
            log.info("labels of %s: %s", name, labels,
                     extra={"event": "labels_changed", "model": name, "labels": labels})
            self.registry.set_labels(name, labels)
        if errors != self.label_errors.get(name, []):
            for error in errors:
                log.error("%s", error, extra={"event": "label_refused", "model": name})
        self.label_errors[name] = errors

    # ---- repository ----------------------------------------------------------------------

    def _scan(self) -> dict[str, ModelDir]:
        try:
            return self._scan_quietly()
        except RepositoryError as exc:
            log.error("%s", exc)
            return {}

    def _scan_quietly(self) -> dict[str, ModelDir]:
        logger = logging.getLogger("app.repository")
        level = logger.level
        logger.setLevel(logging.ERROR)  # "no version folders" warnings every poll are noise
        try:
            return scan_repository(self.registry.repository)
        finally:
            logger.setLevel(level)


def _folder_fingerprint(path: Path) -> tuple[int, int]:
    """Inode and mtime of a version folder: a republished version gets a new one."""
    try:
        stat = os.stat(path)
    except OSError:
        return (0, 0)
    return (stat.st_ino, stat.st_mtime_ns)


def _describe_policy(policy: VersionPolicy) -> object:
    if policy.kind == "all":
        return "all"
    if policy.kind == "specific":
        return {"specific": sorted(policy.versions)}
    return {"latest": policy.count}

