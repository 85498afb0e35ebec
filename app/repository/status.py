"""What the repository endpoints and metrics read: the index of versions with their state and
why, the config in force with every known fault, and per-version snapshots for the scrape.

Client-facing texts name models, versions and repository-relative files, never absolute paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from app.metrics import VersionSnapshot
from app.registry import ModelRegistry, ModelVersion, VersionState
from app.repository.control_state import ControlState
from app.repository.labels import LabelKeeper
from app.repository.problems import ProblemLog
from app.repository.scan import RepositoryError, RepositoryScan, scan_repository_report
from app.repository.versions import VersionManager
from app.repository.watcher import ConfigWatcher

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


class RepositoryStatus:
    """Reads the reloader's parts; changes nothing."""

    def __init__(
        self,
        registry: ModelRegistry,
        config: ConfigWatcher,
        versions: VersionManager,
        labels: LabelKeeper,
        problems: ProblemLog,
        control: ControlState,
        poll_interval_s: float,
    ) -> None:
        self.registry = registry
        self.config = config
        self.versions = versions
        self.labels = labels
        self.problems = problems
        self.control = control
        self.poll_interval_s = poll_interval_s

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
        elif name in self.versions.pinned:
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
        config = self.config.config
        registered = set(self.registry.model_names())
        return {
            "path": self.config.name,
            "exists": self.config.path.is_file(),
            "error": self.config.absence or self.config.error,
            "problems": [
                {"kind": p.kind, "entry": p.entry, "message": p.message}
                for p in self.problems.all()
            ],
            "label_errors": {k: v for k, v in self.labels.errors.items() if v},
            "poll_interval_s": self.poll_interval_s,
            "unloaded_by_request": sorted(self.versions.pinned),
            "control_state": "shared" if self.control.shared else "process",
            "worker_pid": os.getpid(),
            "models": {
                name: {
                    "version_policy": self.versions.policy_for(name).as_config(),
                    "labels": self.registry.labels(name) if name in registered else {},
                    "configured_labels": config.model(name).labels,
                    "serving_versions": [
                        e.version
                        for e in self.registry.versions(name)
                        if e.state is VersionState.AVAILABLE
                    ]
                    if name in registered
                    else [],
                    "batching": config.model(name).batching,
                }
                for name in sorted(set(config.models) | registered)
            },
        }

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
