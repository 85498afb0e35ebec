"""Keeps the loaded versions in line with the repository, its config file and control requests.

Where each step lives: the config file and the scan in `app.repository.watcher`, loads and
unloads by version policy in `app.repository.versions`, labels in `app.repository.labels`, the
faults in `app.repository.problems`, what the endpoints read in `app.repository.status`.

`RepositoryReloader` owns every change to what is loaded after start: the initial load, the poll
loop (`poll_interval` seconds, 0 = off) and the model control API (`app.protocols.
repository_control`). One asyncio lock serialises them, so a control request never races a poll
pass. One pass (`reconcile`):

1. Re-read the config file when its mtime or size changed. A bad file is refused whole: the
   previous config stays, the error is logged and shown by `GET /v2/repository/config`. A file
   that is missing or empty (0 bytes) while a config read from it is in force is taken for a
   save in progress (editors replace the file by a rename, or truncate it and write it again):
   the previous config stays for `grace_s` (the larger of 5 s and three polls), and only
   a file still missing after that resets every model to the defaults.
2. Rescan the repository (cheap: directory listings only). A version is visible only once the
   training job's atomic rename has published it (see models/README.md), so nothing half
   written is ever loaded. Entries that cannot be read (a root-owned `lost+found`, a link loop)
   or are not folders (a FIFO named like a version) are reported and skipped; a model whose
   folder cannot be read is left exactly as it is until it can.
3. Per model, load the versions its policy selects that are not loaded yet, newest first, in a
   worker thread, warm-up included (`app.servable`); a version takes traffic only when it is
   AVAILABLE. Versions that failed to load do not count for the policy (`latest: 1` with a
   corrupt newest version keeps the previous one serving) and are not retried until their
   folder changes or an explicit load asks for it.
4. Only then unload the versions the policy no longer selects, and those whose folder
   disappeared: the registry stops new leases and waits for in-flight requests (bounded by
   `drain_timeout_s`) before closing the runner, so a switch never fails a request. A version
   whose folder disappeared while nothing else of its model can serve keeps serving from
   memory (the servable needs no file once loaded) and is reported as removed, until another
   version loads or `unload` is requested: a deleted folder never turns answers into 503s.
5. Apply the config's labels. A label that points at a version that is not loaded is refused:
   it keeps its previous (still loaded) target, or is absent, and the error is reported.
6. When a model's batching options changed, its serving versions get new runners (the old
   ones finish what they were given); versions loaded later use the new options anyway.

The rule between polling and the control API: an explicit `unload` pins the model unloaded;
polling leaves it alone until an explicit `load`, which lifts the pin, retries failed versions
and loads what the policy selects. Every other model follows the repository.

Control decisions are shared between the worker processes of one server
(`app.repository.control_state`, followed by `app.repository.control`): the worker that takes
a request records it there and acts at once; every other worker reads the state at the start
of each pass and does the same (unloads a newly pinned model, lifts the pin and retries failed
versions after a newer load), so a decision holds everywhere within one poll interval. With
polling off and a shared state, only the state is read, every `CONTROL_POLL_S`.

After every pass or control request that loaded a version, `on_loaded` runs (the app freezes the
heap there: `app.heap`); after the initial pass it runs even when nothing loaded.

Faults never stop the loop: each pass, each model and each label update is guarded, an
exception is logged with its traceback and reported, and the next poll tries again. Every
fault (an unusable entry, a refused or missing config, a failed pass, a version serving from
memory) is a `RepositoryProblem`: logged once when it appears and once when it clears, counted
in `kerasserve_repository_errors_total{kind}`, gauged in `kerasserve_repository_problems{kind}`
and listed by `GET /v2/repository/config` (and, for entries, `POST /v2/repository/index`).
Client-facing texts name models, versions and repository-relative files, never absolute paths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.errors import NotFound, Unavailable
from app.metrics import ServiceMetrics
from app.redaction import repository_name
from app.registry import ModelRegistry, ModelVersion
from app.repository.control import ControlFollower
from app.repository.control_state import ControlState, MemoryControlState
from app.repository.labels import LabelKeeper
from app.repository.policy import VersionPolicy
from app.repository.problems import ProblemLog, failure
from app.repository.scan import ModelDir, RepositoryProblem, RepositoryScan
from app.repository.status import SERVING_FROM_MEMORY, RepositoryStatus, VersionIndexEntry
from app.repository.versions import VersionManager
from app.repository.watcher import ConfigWatcher, scan

log = logging.getLogger(__name__)
# With polling off, how often a shared control state is read (control requests taken by
# another worker reach this one within this time).
CONTROL_POLL_S = 1.0

__all__ = ["CONTROL_POLL_S", "RepositoryReloader", "VersionIndexEntry"]


class RepositoryReloader:
    """Initial load, polling and model control over one `ModelRegistry`.

    It decides when; its parts do the work: `ConfigWatcher` (the config in force), `scan`
    (what is on disk), `VersionManager` (loads and unloads by policy), `LabelKeeper`,
    `ControlFollower` (the shared control decisions), `ProblemLog` and `RepositoryStatus`.
    Somewhat over 200 lines because every path that changes what is loaded (the initial load,
    each poll, following other workers, the control API) must take the one lock and run the
    steps in the order above; split over classes, that order would be in no single place.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        config_path: Path,
        poll_interval_s: float,
        drain_timeout_s: float,
        metrics: ServiceMetrics | None = None,
        control: ControlState | None = None,
        on_loaded: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.poll_interval_s = poll_interval_s
        self.on_loaded = on_loaded
        self.reports = ProblemLog(metrics)
        shown_as = repository_name(config_path, registry.repository)
        self.config = ConfigWatcher(
            config_path, shown_as, registry, poll_interval_s, self.reports, metrics
        )
        self.versions = VersionManager(registry, self._policy, drain_timeout_s, metrics)
        self.labels = LabelKeeper(registry)
        control = control or MemoryControlState()
        self.control = ControlFollower(control, self.versions)
        parts = (self.config, self.versions, self.labels, self.reports)
        self.status = RepositoryStatus(registry, *parts, control, poll_interval_s)
        self._lock = asyncio.Lock()
        if metrics is not None:
            metrics.state.watch_problems(self.reports.counts)

    # ---- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Initial load (readiness turns true after it), then poll until cancelled.

        Readiness turns true after the first pass even when it failed: the models that loaded
        serve, and the failure is reported and retried at the next poll.
        """
        await self._guarded_pass()
        self.registry.mark_initial_load_done()
        log.info(
            "initial load done",
            extra={"event": "initial_load_done", "models": self.snapshot_states()},
        )
        self.versions.loaded_any = True  # freeze once after start even if nothing loaded
        self._after_loads()
        if self.poll_interval_s > 0:
            while True:
                await asyncio.sleep(self.poll_interval_s)
                await self._guarded_pass()
                self._after_loads()
        elif self.control.control.shared:
            while True:
                await asyncio.sleep(CONTROL_POLL_S)
                await self._guarded_control_pass()

    async def _guarded_pass(self) -> None:
        """`reconcile`, with any exception logged and reported instead of ending the loop."""
        try:
            await self.reconcile()
        except Exception as exc:  # the loop must outlive any one bad pass
            problem = failure("pass_failed", "<repository>", "the repository pass", exc, self._root)
            self.reports.log_failure(
                problem, "pass", "repository pass failed; retrying in %.1f s", self.poll_interval_s
            )
            self.reports.report("pass", [problem])
        else:
            self.reports.report("pass", [])

    async def _guarded_control_pass(self) -> None:
        """Follow the shared control state alone (polling off): loads and unloads requested
        through other workers."""
        try:
            async with self._lock:
                for name in await self.control.follow():
                    found = self._scan()
                    if found is None or name in found.unreadable or name not in found.models:
                        continue
                    await self._reconcile_model(name, found.models[name])
                    self.labels.apply(name, self.config.config)
        except Exception:  # the loop must outlive any one bad pass
            log.exception("following the control state failed; retrying in %.1f s", CONTROL_POLL_S)
        self._after_loads()

    def _after_loads(self) -> None:
        if self.versions.loaded_any and self.on_loaded is not None:
            self.versions.loaded_any = False
            self.on_loaded()

    async def reconcile(self) -> None:
        """One pass: control state, config, scan, loads, unloads, labels (module docstring)."""
        async with self._lock:
            await self.control.follow()
            rebatched = self._refresh_config()
            found = self._scan()
            if found is None:  # the root itself cannot be read: change nothing, retry later
                return
            failures: list[RepositoryProblem] = []
            for name in sorted(set(found.models) | set(self.registry.model_names())):
                if name in found.unreadable:
                    continue  # its folder cannot be read now: leave it as it is
                await self._guarded(
                    failures,
                    name,
                    "loading and unloading",
                    self._reconcile_model(name, found.models.get(name)),
                )
            for name in self.registry.model_names():
                await self._guarded(failures, name, "applying labels", self._apply_labels(name))
            for name in sorted(rebatched & set(self.registry.model_names())):
                await self._guarded(
                    failures, name, "rebuilding runners", self.versions.rebuild_runners(name)
                )
            self.reports.report("models", failures)
            self.reports.report(
                "memory",
                [
                    RepositoryProblem("version_folder_removed", name, version, SERVING_FROM_MEMORY)
                    for name, versions in sorted(self.versions.from_memory.items())
                    for version in sorted(versions)
                ],
            )

    async def _guarded(
        self, failures: list[RepositoryProblem], name: str, step: str, work: Any
    ) -> None:
        """Await `work` for model `name`; an exception is logged and added to `failures`."""
        try:
            await work
        except Exception as exc:  # one model's fault must not stop the others
            problem = failure("model_pass_failed", name, step, exc, self._root)
            self.reports.log_failure(
                problem, "models", "%s of model %s failed; retried at the next poll", step, name
            )
            failures.append(problem)

    # ---- model control (v2 repository extension) -------------------------------------------

    async def load_model(self, name: str) -> list[ModelVersion]:
        """Lift an explicit unload, retry failed versions, load what the policy selects."""
        async with self._lock:
            rebatched = self._refresh_config()
            found = self._scan()
            if found is not None and name in found.unreadable:
                raise Unavailable(
                    f"model {name!r} cannot be loaded: its folder in the repository cannot be read"
                )
            model = found.models.get(name) if found is not None else None
            if model is None:
                raise NotFound(f"model {name!r} is not in the repository")
            await self.control.record_load(name)
            log.info("load of %s requested", name, extra={"event": "load_requested", "model": name})
            await self._reconcile_model(name, model)
            self.labels.apply(name, self.config.config)
            if name in rebatched:
                await self.versions.rebuild_runners(name)
            versions = self.registry.versions(name)
        self._after_loads()
        return versions

    async def unload_model(self, name: str) -> None:
        """Unload every version of `name` (draining each) and keep it unloaded until `load`."""
        async with self._lock:
            found = self._scan()
            if name not in self.registry.model_names() and (
                found is None or name not in found.models
            ):
                raise NotFound(f"model {name!r} is neither loaded nor in the repository")
            await self.control.record(lambda state: state.pinned(name))
            log.info(
                "unload of %s requested", name, extra={"event": "unload_requested", "model": name}
            )
            await self.versions.pin(name, "unload requested")

    # ---- steps of a pass (separate methods so a test can make one of them fail) -------------

    def _scan(self) -> RepositoryScan | None:
        return scan(self._root, self.reports)

    async def _reconcile_model(self, name: str, model: ModelDir | None) -> None:
        await self.versions.reconcile(name, model)

    async def _apply_labels(self, name: str) -> None:
        self.labels.apply(name, self.config.config)

    def _refresh_config(self) -> set[str]:
        """The config re-read if its file changed; the models whose batching options changed."""
        rebatched = self.config.refresh()
        if rebatched is None:
            return set()
        self.registry.set_batching_overrides(self.config.batching_overrides)
        return rebatched

    def _policy(self, name: str) -> VersionPolicy:
        return self.config.config.model(name).policy or self.registry.default_policy

    @property
    def _root(self) -> Path:
        return self.registry.repository

    # ---- status (app.repository.status) ---------------------------------------------------

    def index(self) -> list[VersionIndexEntry]:
        return self.status.index()

    def problems(self) -> list[RepositoryProblem]:
        return self.reports.all()

    def snapshot_states(self) -> dict[str, dict[int, str]]:
        return self.status.snapshot_states()
