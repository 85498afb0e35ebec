"""Loads and unloads versions through the registry so that each model serves what its version
policy selects (`app.repository.reloader` says when; this module says what and how).

Per model, the versions its policy selects that are not loaded yet are loaded newest first, in
a worker thread, warm-up included (`app.servable`); a version takes traffic only when it is
AVAILABLE. Versions that failed to load do not count for the policy (`latest: 1` with a corrupt
newest version keeps the previous one serving) and are not retried until their folder changes
or an explicit load asks for it. Only then are the versions the policy no longer selects, and
those whose folder disappeared, unloaded: the registry stops new leases and waits for in-flight
requests (bounded by `drain_timeout_s`) before closing the runner. A version whose folder
disappeared while nothing else of its model can serve keeps serving from memory until another
version loads or `unload` is requested. A model pinned by an explicit unload is left alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from app.metrics import ServiceMetrics
from app.registry import ModelRegistry, ModelVersion, VersionState
from app.repository.policy import VersionPolicy
from app.repository.scan import ModelDir, VersionDir

log = logging.getLogger(__name__)
BUSY_STATES = (VersionState.LOADING, VersionState.AVAILABLE)


class VersionManager:
    """What is loaded, per model, against what its policy selects on disk."""

    def __init__(
        self,
        registry: ModelRegistry,
        policy_for: Callable[[str], VersionPolicy],
        drain_timeout_s: float,
        metrics: ServiceMetrics | None,
    ) -> None:
        self.registry = registry
        self.policy_for = policy_for
        self.drain_timeout_s = drain_timeout_s
        self.metrics = metrics
        self.loaded_any = False  # a version became AVAILABLE since the owner last cleared it
        self.pinned: set[str] = set()  # unloaded by request: polling leaves them alone
        self.from_memory: dict[str, set[int]] = {}  # model -> versions whose folder is gone
        self._failed: dict[tuple[str, int], tuple[int, int]] = {}  # -> folder fingerprint

    async def reconcile(self, name: str, model: ModelDir | None) -> None:
        """Load what the policy selects on disk, then unload what it no longer does."""
        if name in self.pinned:
            return
        on_disk = model.versions if model is not None else ()
        self._forget_stale_failures(name, on_disk)
        policy = self.policy_for(name)
        while True:
            candidates = tuple(v for v in on_disk if (name, v.version) not in self._failed)
            wanted = policy.select(candidates)
            pending = [
                v for v in reversed(wanted) if self.state(name, v.version) not in BUSY_STATES
            ]
            if not pending:
                break
            for version_dir in pending:  # newest first: it serves as soon as it is ready
                await self._load(version_dir)
        keep = {v.version for v in wanted}
        present = {v.version for v in on_disk}
        from_memory: set[int] = set()
        if name in self.registry.model_names():
            # Nothing on disk can replace a version whose folder vanished: keep it serving.
            replaced = any(self.state(name, v) is VersionState.AVAILABLE for v in keep)
            for entry in self.registry.versions(name):
                if entry.state is not VersionState.AVAILABLE or entry.version in keep:
                    continue
                if entry.version not in present and not replaced:
                    if entry.version not in self.from_memory.get(name, set()):
                        log.warning(
                            "%s version %d: its folder was removed; it keeps serving from memory",
                            name,
                            entry.version,
                            extra={
                                "event": "serving_from_memory",
                                "model": name,
                                "version": entry.version,
                            },
                        )
                    from_memory.add(entry.version)
                    continue
                await self.unload(
                    entry,
                    "version folder removed"
                    if entry.version not in present
                    else f"beyond the version policy ({policy.as_config()})",
                )
        if from_memory:
            self.from_memory[name] = from_memory
        else:
            self.from_memory.pop(name, None)

    async def pin(self, name: str, why: str) -> None:
        """Keep `name` unloaded until an explicit load, unloading (draining) what serves."""
        self.pinned.add(name)
        self.from_memory.pop(name, None)
        if name in self.registry.model_names():
            for entry in self.registry.versions(name):
                await self.unload(entry, why)

    def lift_pin(self, name: str) -> None:
        """An explicit load: polling follows the model again and failed versions are retried."""
        self.pinned.discard(name)
        for key in [key for key in self._failed if key[0] == name]:
            del self._failed[key]

    async def rebuild_runners(self, name: str) -> None:
        """New runners for the serving versions of `name` (its batching options changed)."""
        for entry in self.registry.versions(name):
            if entry.state is VersionState.AVAILABLE:
                log.info(
                    "%s version %d: new batching options %s",
                    name,
                    entry.version,
                    self.registry.batching_for(name),
                    extra={"event": "batching_changed", "model": name, "version": entry.version},
                )
                await self.registry.rebuild_runner(name, entry.version, self.drain_timeout_s)

    def state(self, name: str, version: int) -> VersionState | None:
        if name not in self.registry.model_names():
            return None
        for entry in self.registry.versions(name):
            if entry.version == version:
                return entry.state
        return None

    async def _load(self, version_dir: VersionDir) -> None:
        name, version = version_dir.name, version_dir.version
        log.info(
            "loading %s version %d",
            name,
            version,
            extra={"event": "model_loading", "model": name, "version": version},
        )
        entry = await self.registry.load_version(version_dir)
        if entry.state is VersionState.AVAILABLE:
            self.loaded_any = True
            seconds = entry.servable.load_seconds if entry.servable is not None else 0.0
            if self.metrics is not None:
                self.metrics.load_time.labels(name).observe(seconds)
            log.info(
                "%s version %d is serving (loaded and warmed up in %.2f s)",
                name,
                version,
                seconds,
                extra={
                    "event": "model_loaded",
                    "model": name,
                    "version": version,
                    "load_seconds": seconds,
                },
            )
            return
        self._failed[(name, version)] = _folder_fingerprint(version_dir.path)
        if self.metrics is not None:
            self.metrics.load_failures.labels(name).inc()
        log.error(
            "%s version %d failed to load: %s",
            name,
            version,
            entry.error,
            extra={"event": "model_load_failed", "model": name, "version": version},
        )

    async def unload(self, entry: ModelVersion, why: str) -> None:
        if entry.state is not VersionState.AVAILABLE:
            return
        log.info(
            "unloading %s version %d: %s",
            entry.name,
            entry.version,
            why,
            extra={
                "event": "model_unloading",
                "model": entry.name,
                "version": entry.version,
                "reason": why,
            },
        )
        await self.registry.unload_version(entry.name, entry.version, self.drain_timeout_s)
        if self.metrics is not None:
            self.metrics.forget_version(entry.name, entry.version)

    def _forget_stale_failures(self, name: str, on_disk: tuple[VersionDir, ...]) -> None:
        """A failed version is retried once its folder changed (republished) or vanished."""
        current = {v.version: v for v in on_disk}
        for key in [key for key in self._failed if key[0] == name]:
            folder = current.get(key[1])
            if folder is None or _folder_fingerprint(folder.path) != self._failed[key]:
                del self._failed[key]


def _folder_fingerprint(path: Path) -> tuple[int, int]:
    """Inode and mtime of a version folder: a republished version gets a new one."""
    try:
        stat = os.stat(path)
    except OSError:
        return (0, 0)
    return (stat.st_ino, stat.st_mtime_ns)
