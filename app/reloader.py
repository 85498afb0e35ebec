"""Keeps the loaded versions in line with the repository, its config file and control requests.

`RepositoryReloader` owns every change to what is loaded after start: the initial load, the poll
loop (`poll_interval` seconds, 0 = off) and the model control API (`app.protocols.
repository_control`). One asyncio lock serialises them, so a control request never races a poll
pass. One pass (`reconcile`):

1. Re-read the config file when its mtime or size changed. A bad file is refused whole: the
   previous config stays, the error is logged and shown by `GET /v2/repository/config`. A file
   that is missing or empty (0 bytes) while a config read from it is in force is taken for a
   save in progress (editors replace the file by a rename, or truncate it and write it again):
   the previous config stays for `config_grace_s` (the larger of 5 s and three polls), and only
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

Control decisions are shared between the worker processes of one server (`app.control_state`):
the worker that takes a request records it there and acts at once; every other worker reads
the state at the start of each pass and does the same (unloads a newly pinned model, lifts the
pin and retries failed versions after a newer load), so a decision holds everywhere within one
poll interval. With polling off and a shared state, only the state is read, every
`CONTROL_POLL_S`.

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
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.control_state import ControlSnapshot, ControlState, ControlStateError, MemoryControlState
from app.errors import NotFound, Unavailable
from app.metrics import ServiceMetrics, VersionSnapshot
from app.redaction import public_text, repository_name
from app.registry import ModelRegistry, ModelVersion, VersionState
from app.repository import (
    ModelDir,
    RepositoryError,
    RepositoryProblem,
    RepositoryScan,
    VersionDir,
    VersionPolicy,
    scan_repository_report,
)
from app.repository_config import (
    FileFingerprint,
    RepositoryConfig,
    RepositoryConfigError,
    load_repository_config,
)

log = logging.getLogger(__name__)
BUSY_STATES = (VersionState.LOADING, VersionState.AVAILABLE)
# How long a config file that vanished (or became empty) keeps its config in force: an editor's
# rename-replace takes milliseconds, a Kubernetes ConfigMap swap is atomic; 5 s (or three polls,
# when polling is slower) covers a slow network filesystem and still resets a deleted file soon.
CONFIG_GRACE_S = 5.0
CONFIG_GRACE_POLLS = 3
# With polling off, how often a shared control state is read (control requests taken by
# another worker reach this one within this time).
CONTROL_POLL_S = 1.0
SERVING_FROM_MEMORY = (
    "version folder removed from the repository; still serving from memory "
    "until another version loads or the model is unloaded"
)


@dataclass(frozen=True)
class VersionIndexEntry:
    """One line of the repository index (Triton's fields)."""

    name: str
    version: int | None  # None: a repository entry that is not a model version
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str


class RepositoryReloader:
    """Initial load, polling and model control over one `ModelRegistry`."""

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
        self.control = control or MemoryControlState()
        self.on_loaded = on_loaded
        self._loaded_since_hook = False
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
        self._unloaded_by_request: set[str] = set()  # the pins this worker has applied
        self._loads_applied: dict[str, int] = {}  # model -> explicit loads this worker followed
        self._lock = asyncio.Lock()
        self._default_batching = registry.default_batching
        self._default_policy = registry.default_policy
        self.config_name = repository_name(config_path, registry.repository)
        self.config_grace_s = max(CONFIG_GRACE_S, CONFIG_GRACE_POLLS * poll_interval_s)
        self._config_from_file = False  # the config in force was read from a non-empty file
        self._config_absent_since: float | None = None
        self._config_absence: str | None = None
        self._problems: dict[str, dict[tuple[str, str, str], RepositoryProblem]] = {}
        self._from_memory: dict[str, set[int]] = {}  # model -> versions whose folder is gone
        if metrics is not None:
            metrics.state.watch_problems(self.problem_counts)

    # ---- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Initial load (readiness turns true after it), then poll until cancelled.

        Readiness turns true after the first pass even when it failed: the models that loaded
        serve, and the failure is reported and retried at the next poll.
        """
        await self._guarded_pass()
        self.registry.initial_load_done = True
        log.info(
            "initial load done",
            extra={"event": "initial_load_done", "models": self.snapshot_states()},
        )
        self._loaded_since_hook = True  # freeze once after start even if nothing loaded
        self._after_loads()
        if self.poll_interval_s > 0:
            while True:
                await asyncio.sleep(self.poll_interval_s)
                await self._guarded_pass()
                self._after_loads()
        elif self.control.shared:
            while True:
                await asyncio.sleep(CONTROL_POLL_S)
                await self._guarded_control_pass()

    async def _guarded_pass(self) -> None:
        """`reconcile`, with any exception logged and reported instead of ending the loop."""
        try:
            await self.reconcile()
        except Exception as exc:  # the loop must outlive any one bad pass
            problem = RepositoryProblem(
                "pass_failed",
                "<repository>",
                None,
                f"the repository pass failed ({public_text(_one_line(exc), self._root)}); "
                "retried at the next poll",
            )
            self._log_failure(
                problem, "pass", "repository pass failed; retrying in %.1f s", self.poll_interval_s
            )
            self._report("pass", [problem])
        else:
            self._report("pass", [])

    async def _guarded_control_pass(self) -> None:
        """Follow the shared control state alone (polling off): loads and unloads requested
        through other workers."""
        try:
            async with self._lock:
                for name in await self._follow_control():
                    scan = self._scan()
                    if scan is None or name in scan.unreadable or name not in scan.models:
                        continue
                    await self._reconcile_model(name, scan.models[name])
                    self._apply_labels(name)
        except Exception:  # the loop must outlive any one bad pass
            log.exception("following the control state failed; retrying in %.1f s", CONTROL_POLL_S)
        self._after_loads()

    def _after_loads(self) -> None:
        if self._loaded_since_hook and self.on_loaded is not None:
            self._loaded_since_hook = False
            self.on_loaded()

    async def reconcile(self) -> None:
        """One pass: control state, config, scan, loads, unloads, labels (module docstring)."""
        async with self._lock:
            await self._follow_control()
            rebatched = self._refresh_config()
            scan = self._scan()
            if scan is None:  # the root itself cannot be read: change nothing, retry later
                return
            failures: list[RepositoryProblem] = []
            for name in sorted(set(scan.models) | set(self.registry.model_names())):
                if name in scan.unreadable:
                    continue  # its folder cannot be read now: leave it as it is
                await self._guarded(
                    failures,
                    name,
                    "loading and unloading",
                    self._reconcile_model(name, scan.models.get(name)),
                )
            for name in self.registry.model_names():
                await self._guarded(
                    failures, name, "applying labels", _completed(self._apply_labels, name)
                )
            for name in sorted(rebatched & set(self.registry.model_names())):
                await self._guarded(
                    failures, name, "rebuilding runners", self._rebuild_runners(name)
                )
            self._report("models", failures)
            self._report(
                "memory",
                [
                    RepositoryProblem("version_folder_removed", name, version, SERVING_FROM_MEMORY)
                    for name, versions in sorted(self._from_memory.items())
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
            problem = RepositoryProblem(
                "model_pass_failed",
                name,
                None,
                f"{step} failed ({public_text(_one_line(exc), self._root)}); retried at the "
                "next poll",
            )
            self._log_failure(
                problem, "models", "%s of model %s failed; retried at the next poll", step, name
            )
            failures.append(problem)

    def _log_failure(
        self, problem: RepositoryProblem, source: str, message: str, *args: object
    ) -> None:
        """The traceback of a failure the first time it happens; a debug line after that."""
        known = (problem.kind, problem.entry, problem.message) in self._problems.get(source, {})
        if known:
            log.debug(message, *args)
        else:
            log.exception(message, *args, extra={"event": problem.kind, "entry": problem.entry})

    # ---- model control (v2 repository extension) -------------------------------------------

    async def load_model(self, name: str) -> list[ModelVersion]:
        """Lift an explicit unload, retry failed versions, load what the policy selects."""
        async with self._lock:
            rebatched = self._refresh_config()
            scan = self._scan()
            if scan is not None and name in scan.unreadable:
                raise Unavailable(
                    f"model {name!r} cannot be loaded: its folder in the repository cannot be read"
                )
            model = scan.models.get(name) if scan is not None else None
            if model is None:
                raise NotFound(f"model {name!r} is not in the repository")
            snapshot = await self._record(lambda state: state.load_requested(name))
            self._loads_applied[name] = snapshot.loads.get(name, 0)
            self._lift_pin(name)
            log.info("load of %s requested", name, extra={"event": "load_requested", "model": name})
            await self._reconcile_model(name, model)
            self._apply_labels(name)
            if name in rebatched:
                await self._rebuild_runners(name)
            versions = self.registry.versions(name)
        self._after_loads()
        return versions

    async def unload_model(self, name: str) -> None:
        """Unload every version of `name` (draining each) and keep it unloaded until `load`."""
        async with self._lock:
            scan = self._scan()
            if name not in self.registry.model_names() and (
                scan is None or name not in scan.models
            ):
                raise NotFound(f"model {name!r} is neither loaded nor in the repository")
            await self._record(lambda state: state.pinned(name))
            log.info(
                "unload of %s requested", name, extra={"event": "unload_requested", "model": name}
            )
            await self._pin(name, "unload requested")

    # ---- the shared control state ----------------------------------------------------------

    async def _record(
        self, change: Callable[[ControlSnapshot], ControlSnapshot]
    ) -> ControlSnapshot:
        """Write a control decision to the shared state (off the loop: it takes a file lock)."""
        try:
            if not self.control.shared:
                return self.control.update(change)
            return await asyncio.to_thread(self.control.update, change)
        except ControlStateError as exc:
            raise Unavailable(str(exc)) from exc

    async def _follow_control(self) -> set[str]:
        """Apply what other workers recorded since the last pass; the models with a newer
        explicit load (their pins lifted and failed versions forgotten)."""
        state = self.control.read()
        reloaded: set[str] = set()
        for name, count in state.loads.items():
            if count > self._loads_applied.get(name, 0):
                self._loads_applied[name] = count
                self._lift_pin(name)
                reloaded.add(name)
                log.info(
                    "load of %s requested through another worker",
                    name,
                    extra={"event": "load_followed", "model": name},
                )
        for name in sorted(state.unloaded - self._unloaded_by_request):
            await self._pin(name, "unload requested through another worker")
        for name in self._unloaded_by_request - state.unloaded:
            self._unloaded_by_request.discard(name)  # the state was reset by hand
        return reloaded - state.unloaded

    def _lift_pin(self, name: str) -> None:
        self._unloaded_by_request.discard(name)
        for key in [key for key in self._failed if key[0] == name]:
            del self._failed[key]

    async def _pin(self, name: str, why: str) -> None:
        """Keep `name` unloaded until an explicit load, unloading (draining) what serves."""
        self._unloaded_by_request.add(name)
        self._from_memory.pop(name, None)
        if name in self.registry.model_names():
            for entry in self.registry.versions(name):
                await self._unload(entry, why)

    def index(self) -> list[VersionIndexEntry]:
        """Every version on disk or known to the registry, with its state and why; then the
        repository entries that cannot be used (a model-level entry has no version)."""
        try:
            scan = scan_repository_report(self.registry.repository)
        except RepositoryError:
            scan = RepositoryScan({})
        models = scan.models
        entries: list[VersionIndexEntry] = []
        for name in sorted(set(models) | set(self.registry.model_names())):
            known = (
                {e.version: e for e in self.registry.versions(name)}
                if name in self.registry.model_names()
                else {}
            )
            on_disk = {v.version for v in models[name].versions} if name in models else set()
            if name in scan.unreadable:
                on_disk = set(known)  # unknown: do not call loaded versions removed
            for version in sorted(on_disk | set(known)):
                entries.append(
                    self._index_entry(name, version, known.get(version), version in on_disk)
                )
        entries.extend(
            VersionIndexEntry(p.model, p.version, "UNAVAILABLE", p.message) for p in scan.problems
        )
        return entries

    def _index_entry(
        self, name: str, version: int, entry: ModelVersion | None, on_disk: bool
    ) -> VersionIndexEntry:
        state, reason = "UNAVAILABLE", ""
        if entry is not None and entry.state is VersionState.AVAILABLE:
            state = "READY"
            if not on_disk:
                reason = SERVING_FROM_MEMORY
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
        """The config file in force and what is wrong with it, for `GET /v2/repository/config`.

        `path` is the file's repository-relative name (its name alone when it lives elsewhere);
        `problems` lists every fault the reloader currently knows of. `worker_pid` names the
        worker process that answered and `serving_versions` what it serves: with several
        workers, each answers for itself (`control_state`: `shared` or `process`).
        """
        return {
            "path": self.config_name,
            "exists": self.config_path.is_file(),
            "error": self._config_absence or self.config_error,
            "problems": [
                {"kind": p.kind, "entry": p.entry, "message": p.message} for p in self.problems()
            ],
            "label_errors": {k: v for k, v in self.label_errors.items() if v},
            "poll_interval_s": self.poll_interval_s,
            "unloaded_by_request": sorted(self._unloaded_by_request),
            "control_state": "shared" if self.control.shared else "process",
            "worker_pid": os.getpid(),
            "models": {
                name: {
                    "version_policy": _describe_policy(self._policy(name)),
                    "labels": self.registry.labels(name)
                    if name in self.registry.model_names()
                    else {},
                    "configured_labels": self.config.model(name).labels,
                    "serving_versions": [
                        e.version
                        for e in self.registry.versions(name)
                        if e.state is VersionState.AVAILABLE
                    ]
                    if name in self.registry.model_names()
                    else [],
                    "batching": self.config.model(name).batching,
                }
                for name in sorted(set(self.config.models) | set(self.registry.model_names()))
            },
        }

    def problems(self) -> list[RepositoryProblem]:
        """Every fault known now, in a stable order."""
        found = [p for source in self._problems.values() for p in source.values()]
        return sorted(found, key=lambda p: (p.kind, p.entry, p.message))

    def problem_counts(self) -> dict[str, int]:
        """Faults known now by kind (the `kerasserve_repository_problems` gauge)."""
        counts: dict[str, int] = {}
        for problem in self.problems():
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        return counts

    def _report(self, source: str, problems: Iterable[RepositoryProblem]) -> None:
        """Replace the faults `source` found; log and count the new ones, log the cleared."""
        current = {(p.kind, p.entry, p.message): p for p in problems}
        previous = self._problems.get(source, {})
        for key, problem in current.items():
            if key in previous:
                continue
            log.error(
                "repository problem (%s) %s: %s",
                problem.kind,
                problem.entry,
                problem.message,
                extra={"event": "repository_problem", "kind": problem.kind, "entry": problem.entry},
            )
            if self.metrics is not None:
                self.metrics.repository_errors.labels(problem.kind).inc()
        for key, problem in previous.items():
            if key not in current:
                log.info(
                    "repository problem (%s) %s cleared",
                    problem.kind,
                    problem.entry,
                    extra={
                        "event": "repository_problem_cleared",
                        "kind": problem.kind,
                        "entry": problem.entry,
                    },
                )
        self._problems[source] = current

    @property
    def _root(self) -> Path:
        return self.registry.repository

    def snapshot_states(self) -> dict[str, dict[int, str]]:
        return {
            name: {e.version: e.state.value for e in self.registry.versions(name)}
            for name in self.registry.model_names()
        }

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
            pending = [
                v for v in reversed(wanted) if self._state(name, v.version) not in BUSY_STATES
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
            replaced = any(self._state(name, v) is VersionState.AVAILABLE for v in keep)
            for entry in self.registry.versions(name):
                if entry.state is not VersionState.AVAILABLE or entry.version in keep:
                    continue
                if entry.version not in present and not replaced:
                    if entry.version not in self._from_memory.get(name, set()):
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
                await self._unload(
                    entry,
                    "version folder removed"
                    if entry.version not in present
                    else f"beyond the version policy ({_describe_policy(policy)})",
                )
        if from_memory:
            self._from_memory[name] = from_memory
        else:
            self._from_memory.pop(name, None)

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
            self._loaded_since_hook = True
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

    async def _unload(self, entry: ModelVersion, why: str) -> None:
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
                log.info(
                    "%s version %d: new batching options %s",
                    name,
                    entry.version,
                    self.registry.batching_for(name),
                    extra={"event": "batching_changed", "model": name, "version": entry.version},
                )
                await self.registry.rebuild_runner(name, entry.version, self.drain_timeout_s)

    def _refresh_config(self) -> set[str]:
        """Re-read the config file if it changed; the models whose batching options changed.

        Never raises: a file that cannot be used leaves the config in force and is reported.
        """
        try:
            return self._read_config()
        except Exception as exc:  # a bug here must not stop the pass either
            log.exception("reading the repository config failed")
            self.config_error = (
                f"{self.config_name}: cannot be used ({public_text(_one_line(exc), self._root)})"
            )
            self._report(
                "config",
                [RepositoryProblem("config_invalid", self.config_name, None, self.config_error)],
            )
            return set()

    def _read_config(self) -> set[str]:
        fingerprint = FileFingerprint.of(self.config_path)
        if self._config_absent(fingerprint):
            return set()
        if self._config_checked and fingerprint == self._config_fingerprint:
            return set()
        first_read = not self._config_checked
        self._config_checked = True
        self._config_fingerprint = fingerprint
        try:
            config = load_repository_config(self.config_path, self.config_name)
        except RepositoryConfigError as exc:
            self.config_error = public_text(str(exc), self._root)
            if self.metrics is not None:
                self.metrics.config_reloads.labels("error").inc()
            log.error(
                "repository config %s refused, the previous one stays in force: %s",
                self.config_path,
                exc,
                extra={"event": "config_refused"},
            )
            self._report(
                "config",
                [RepositoryProblem("config_invalid", self.config_name, None, self.config_error)],
            )
            return set()
        previous, self.config = self.config, config
        self.config_error = None
        self._config_from_file = fingerprint is not None and fingerprint.size > 0
        self._report("config", [])
        overrides = {
            name: model.batching_options(self._default_batching)
            for name, model in config.models.items()
        }
        self.registry.batching_overrides = {
            name: options for name, options in overrides.items() if options is not None
        }
        if self.metrics is not None:
            self.metrics.config_reloads.labels("ok").inc()
        log.info(
            "repository config %s: %d models configured",
            "read" if fingerprint else "absent (defaults)",
            len(config.models),
            extra={"event": "config_loaded", "path": str(self.config_path)},
        )
        if first_read:  # nothing is loaded yet: every load will use these options
            return set()
        return {
            name
            for name in set(previous.models) | set(config.models)
            if previous.model(name).batching != config.model(name).batching
        }

    def _config_absent(self, fingerprint: FileFingerprint | None) -> bool:
        """True while a vanished or emptied config file is within its grace period.

        Missing or 0 bytes after a config read from the file was in force: keep that config
        for `config_grace_s`, reported as a `config_missing` problem; after it, the file is
        read as it is (missing or empty: every default). Anything else ends the grace.
        """
        if not (fingerprint is None or fingerprint.size == 0) or not self._config_from_file:
            if self._config_absent_since is not None:
                log.info(
                    "repository config %s is back", self.config_path, extra={"event": "config_back"}
                )
            self._config_absent_since = None
            self._config_absence = None
            if self._problems.get("config_missing"):
                self._report("config_missing", [])
            return False
        now = time.monotonic()
        if self._config_absent_since is None:
            self._config_absent_since = now
            log.warning(
                "repository config %s is missing or empty; the previous config stays "
                "in force for up to %.1f s",
                self.config_path,
                self.config_grace_s,
                extra={"event": "config_missing"},
            )
        if now - self._config_absent_since < self.config_grace_s:
            self._config_absence = (
                f"{self.config_name} is missing or empty (a save in "
                "progress?); the previous config stays in force for up to "
                f"{self.config_grace_s:g} s"
            )
            self._report(
                "config_missing",
                [RepositoryProblem("config_missing", self.config_name, None, self._config_absence)],
            )
            return True
        log.warning(
            "repository config %s has been missing or empty for %.1f s: the defaults "
            "are in force now",
            self.config_path,
            now - self._config_absent_since,
            extra={"event": "config_reset"},
        )
        self._config_absent_since = None
        self._config_absence = None
        self._config_from_file = False
        self._report("config_missing", [])
        return False

    def _apply_labels(self, name: str) -> None:
        """Set the configured labels whose versions are loaded; refuse and report the rest."""
        current = self.registry.labels(name)
        labels: dict[str, int] = {}
        errors: list[str] = []
        for label, version in self.config.model(name).labels.items():
            if self._state(name, version) is VersionState.AVAILABLE:
                labels[label] = version
                continue
            errors.append(
                f"label {label!r} of model {name!r} points at version {version}, "
                "which is not loaded; refused"
            )
            previous = current.get(label)
            if (
                previous is not None
                and previous != version
                and self._state(name, previous) is VersionState.AVAILABLE
            ):
                labels[label] = previous
        if labels != current:
            log.info(
                "labels of %s: %s",
                name,
                labels,
                extra={"event": "labels_changed", "model": name, "labels": labels},
            )
            self.registry.set_labels(name, labels)
        if errors != self.label_errors.get(name, []):
            for error in errors:
                log.error("%s", error, extra={"event": "label_refused", "model": name})
        self.label_errors[name] = errors

    # ---- repository ----------------------------------------------------------------------

    def _scan(self) -> RepositoryScan | None:
        """The repository as it is now, its unusable entries reported; `None` when the root
        itself cannot be read (reported too: nothing should change on such a pass)."""
        try:
            scan = scan_repository_report(self._root)
        except RepositoryError as exc:
            self._report(
                "scan",
                [
                    RepositoryProblem(
                        "scan_failed", "<repository>", None, public_text(str(exc), self._root)
                    )
                ],
            )
            return None
        self._report("scan", scan.problems)
        return scan


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


async def _completed(function: Any, *args: Any) -> None:
    """A synchronous call as an awaitable, for `_guarded`."""
    function(*args)


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
