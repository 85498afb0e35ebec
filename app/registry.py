"""Which model versions are loaded, their states, and which one a request gets.

name -> version -> `ModelVersion` (state, load error, servable, runner, in-flight count).
Every mutation runs on the event loop (loading itself runs in a thread and only its result is
stored here), so no locks are needed. Requests hold a *lease* on the version they use; unloading
first stops new leases, then waits for the held ones: that is what lets hot reload load
a new version in the background, switch the default to it (the newest available version is the
default, or a label picks one) and retire the old one without failing a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from app.batching import BatchingOptions
from app.batching.runners import (
    Runner,
    RunnerFactory,
    UnbatchedRunner,
    build_runner,
    signature_runner,
)
from app.errors import InvalidInput, NotFound, Unavailable
from app.heap import release_freed_memory
from app.keras_archive import KerasOptions
from app.redaction import public_text
from app.repository import RepositoryError, VersionDir, VersionPolicy
from app.servable import ModelLoadError, Servable
from app.warmup import WarmupLimits

log = logging.getLogger(__name__)
T = TypeVar("T")


class VersionState(StrEnum):
    """TF Serving's version states (`END` covers both unloaded and failed-to-load)."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(eq=False)
class ModelVersion:
    """One version's life: what status routes report and what a lease hands out."""

    name: str
    version: int
    path: Path
    state: VersionState = VersionState.START
    error: str | None = None
    servable: Servable | None = None
    runner: Runner | None = None
    #: Runs the signatures other than `serving_default` (`app.batching.runners.signature_runner`).
    signature_runner: UnbatchedRunner | None = None
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ready(self) -> bool:
        return self.state is VersionState.AVAILABLE

    def describe_state(self) -> str:
        """Why a version that is not ready cannot serve, in words for an error message."""
        if self.error:
            return f"failed to load: {self.error}"
        return {
            VersionState.START: "waiting to load",
            VersionState.LOADING: "loading",
            VersionState.UNLOADING: "unloading",
            VersionState.END: "unloaded",
        }.get(self.state, self.state.value.lower())


class ModelRegistry:
    """All served models. `app.repository.reloader` decides what to load; `close()` at shutdown.

    Longer than our ~200-line rule on purpose: loading, unloading, runner rebuilds, resolution
    and leases all read and write the one table of versions, and the order between them (a
    lease taken before an unload drains it) is easiest to check where the table lives.
    """

    def __init__(
        self,
        repository: Path,
        batching: BatchingOptions,
        runner_factory: RunnerFactory = build_runner,
        policy: VersionPolicy | None = None,
        warm_up: bool = True,
        warmup_limits: WarmupLimits | None = None,
        keras_options: KerasOptions | None = None,
    ) -> None:
        self.repository = repository
        self.default_batching = batching
        self.batching_overrides: dict[str, BatchingOptions] = {}  # per model (repository config)
        self.default_policy = policy or VersionPolicy()
        self._runner_factory = runner_factory
        self._warm_up = warm_up
        self._warmup_limits = warmup_limits or WarmupLimits()
        self._keras_options = keras_options or KerasOptions()
        self._load_threads: set[threading.Thread] = set()
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self.initial_load_done = False

    # ---- loading -------------------------------------------------------------------------

    def _register(self, version_dir: VersionDir) -> ModelVersion:
        versions = self._models.setdefault(version_dir.name, {})
        entry = versions.get(version_dir.version)
        if entry is None or entry.state is VersionState.END:
            entry = ModelVersion(version_dir.name, version_dir.version, version_dir.path)
            versions[version_dir.version] = entry
        return entry

    async def load_version(self, version_dir: VersionDir) -> ModelVersion:
        """Load, warm up and start serving one version; on failure record why (never raise).

        The load runs in its own daemon thread, not the event loop's default executor: a load
        cannot be interrupted, and the default executor is joined when the loop closes, so a
        SIGTERM during a long initial load would wait for it (`app.lifecycle` exits without
        waiting; `loads_running` tells it when that is needed). The recorded error names the
        model and version, never a filesystem path (`app.redaction`); the log keeps the path.
        """
        entry = self._register(version_dir)
        if entry.state in (VersionState.LOADING, VersionState.AVAILABLE):
            return entry
        entry.state = VersionState.LOADING
        try:
            servable = await self._in_load_thread(
                f"load-{version_dir.name}-{version_dir.version}",
                Servable.load,
                version_dir.name,
                version_dir.version,
                version_dir.path,
                self._warm_up,
                self._warmup_limits,
                self._keras_options,
            )
            options = self.batching_for(version_dir.name)
            entry.runner = self._runner_factory(servable, options)
            entry.signature_runner = signature_runner(servable, options)
        except (ModelLoadError, RepositoryError) as exc:
            self._fail(entry, str(exc))
        except Exception as exc:  # a model must never take the server down with it
            log.exception("unexpected error loading %s version %d", entry.name, entry.version)
            self._fail(entry, f"{type(exc).__name__}: {exc}")
        else:
            entry.servable = servable
            entry.error = None
            entry.idle.set()
            entry.state = VersionState.AVAILABLE
        return entry

    def _fail(self, entry: ModelVersion, message: str) -> None:
        log.error(
            "%s version %d failed to load from %s: %s",
            entry.name,
            entry.version,
            entry.path,
            message,
        )
        entry.error = public_text(message, self.repository)
        entry.state = VersionState.END

    async def _in_load_thread(self, name: str, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` in a new daemon thread; the await ends when it returns or raises."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():  # the awaiting task was cancelled (shutdown)
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def work() -> None:
            try:
                result, error = function(*args), None
            except BaseException as exc:  # handed to the awaiting task, never lost
                result, error = None, exc
            finally:
                self._load_threads.discard(threading.current_thread())
            with contextlib.suppress(RuntimeError):  # a closed loop: the server has stopped
                loop.call_soon_threadsafe(settle, result, error)

        thread = threading.Thread(target=work, name=name, daemon=True)
        self._load_threads.add(thread)
        thread.start()
        return await future

    def loads_running(self) -> int:
        """Versions whose load thread is still working (at shutdown: what exiting abandons)."""
        return sum(1 for thread in list(self._load_threads) if thread.is_alive())

    async def unload_version(
        self, name: str, version: int, drain_timeout_s: float, release_memory: bool = True
    ) -> None:
        """Stop new leases, wait for the held ones (bounded), close the runner, drop the model
        (and, unless `release_memory` is false, collect it and trim the heap: `app.heap`)."""
        entry = self.get_version(name, version)
        if entry.state is not VersionState.AVAILABLE:
            return
        entry.state = VersionState.UNLOADING
        try:
            await asyncio.wait_for(entry.idle.wait(), timeout=drain_timeout_s)
        except TimeoutError:
            log.warning(
                "%s version %d unloads with %d requests still in flight",
                name,
                version,
                entry.in_flight,
            )
        try:
            for runner in (entry.runner, entry.signature_runner):
                if runner is not None:
                    await runner.close(drain_timeout_s)
        except Exception:  # the version is gone either way; never leave it UNLOADING
            log.exception("closing the runner of %s version %d failed", name, version)
        entry.runner = None
        entry.signature_runner = None
        entry.servable = None
        entry.state = VersionState.END
        log.info("unloaded %s version %d", name, version)
        if release_memory:
            await asyncio.to_thread(release_freed_memory)

    async def close(self, drain_timeout_s: float) -> None:
        """Unload everything (shutdown), draining each version for at most `drain_timeout_s`.

        No collection after these unloads: the process is ending, and one full collection per
        version took seconds on a busy machine (`app.heap`)."""
        await asyncio.gather(
            *(
                self.unload_version(entry.name, entry.version, drain_timeout_s, False)
                for versions in self._models.values()
                for entry in versions.values()
            )
        )

    async def rebuild_runner(self, name: str, version: int, drain_timeout_s: float) -> None:
        """Give a serving version a runner built with its current batching options.

        For repository config changes. The swap is one assignment: a request reads
        `entry.runner` and submits to it without yielding, so each request lands on the old or
        the new runner whole; the old one then drains what it was given and stops.
        """
        entry = self.get_version(name, version)
        if not entry.ready or entry.servable is None or entry.runner is None:
            return
        old, old_signatures = entry.runner, entry.signature_runner
        options = self.batching_for(name)
        entry.runner = self._runner_factory(entry.servable, options)
        entry.signature_runner = signature_runner(entry.servable, options)
        await old.close(drain_timeout_s)
        if old_signatures is not None:
            await old_signatures.close(drain_timeout_s)

    def batching_for(self, name: str) -> BatchingOptions:
        return self.batching_overrides.get(name, self.default_batching)

    def set_batching_overrides(self, overrides: dict[str, BatchingOptions]) -> None:
        """Per-model batching options from the repository config (versions loaded from now)."""
        self.batching_overrides = dict(overrides)

    def mark_initial_load_done(self) -> None:
        """The first pass over the repository is over: readiness may turn true."""
        self.initial_load_done = True

    # ---- lookup --------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelVersion]:
        """All known versions of `name`, oldest first; `NotFound` for an unknown model."""
        versions = self._models.get(name)
        if versions is None:
            raise NotFound(
                f"model {name!r} is not served here "
                f"(models: {', '.join(self.model_names()) or 'none'})"
            )
        return [versions[v] for v in sorted(versions)]

    def get_version(self, name: str, version: int) -> ModelVersion:
        """That exact version in whatever state; `NotFound` when it is not known."""
        for entry in self.versions(name):
            if entry.version == version:
                return entry
        known = ", ".join(str(e.version) for e in self.versions(name))
        raise NotFound(f"model {name!r} has no version {version} (versions: {known})")

    def labels(self, name: str) -> dict[str, int]:
        self.versions(name)
        return dict(self._labels.get(name, {}))

    def set_labels(self, name: str, labels: dict[str, int]) -> None:
        """Replace `name`'s labels (the repository config); refuses unloaded targets."""
        for label, version in labels.items():
            if not self.get_version(name, version).ready:
                raise InvalidInput(
                    f"label {label!r} of model {name!r} points at version "
                    f"{version}, which is not loaded"
                )
        self._labels[name] = dict(labels)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ModelVersion:
        """The ready version a request should use: the given one, the label's, or the newest.

        Unknown model, version or label: `NotFound`. Known but not ready: `Unavailable`.
        """
        if version is not None and label is not None:
            raise InvalidInput("give a version or a label, not both")
        if label is not None:
            labels = self._labels.get(name, {})
            self.versions(name)
            if label not in labels:
                raise NotFound(
                    f"model {name!r} has no label {label!r} "
                    f"(labels: {', '.join(sorted(labels)) or 'none'})"
                )
            version = labels[label]
        if version is not None:
            entry = self.get_version(name, version)
            if not entry.ready:
                raise Unavailable(
                    f"model {name!r} version {version} is not ready: {entry.describe_state()}"
                )
            return entry
        versions = self.versions(name)
        for entry in reversed(versions):
            if entry.ready:
                return entry
        newest = versions[-1]
        raise Unavailable(
            f"model {name!r} has no version ready: version {newest.version} "
            f"{newest.describe_state()}"
        )

    @asynccontextmanager
    async def lease(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> AsyncIterator[ModelVersion]:
        """Hold a ready version for one request; unloading waits until it is returned."""
        entry = self.resolve(name, version, label)
        entry.in_flight += 1
        entry.idle.clear()
        try:
            yield entry
        finally:
            entry.in_flight -= 1
            if entry.in_flight == 0:
                entry.idle.set()
