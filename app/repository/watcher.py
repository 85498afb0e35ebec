"""Watches the repository config file and reads the repository: what should be loaded.

`ConfigWatcher` re-reads the config file when its mtime or size changed. A bad file is refused
whole: the previous config stays, the error is logged and shown by `GET /v2/repository/config`.
A file that is missing or empty (0 bytes) while a config read from it is in force is taken for a
save in progress (editors replace the file by a rename, or truncate it and write it again): the
previous config stays for `grace_s` (the larger of 5 s and three polls), and only a file still
missing after that resets every model to the defaults.

`scan` reads the repository (directory listings only) and reports its unusable entries.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from app.batching import BatchingOptions
from app.metrics import ServiceMetrics
from app.redaction import public_text
from app.registry import ModelRegistry
from app.repository.config import (
    FileFingerprint,
    RepositoryConfig,
    RepositoryConfigError,
    load_repository_config,
)
from app.repository.problems import ProblemLog, one_line
from app.repository.scan import (
    RepositoryError,
    RepositoryProblem,
    RepositoryScan,
    scan_repository_report,
)

log = logging.getLogger(__name__)
# How long a config file that vanished (or became empty) keeps its config in force: an editor's
# rename-replace takes milliseconds, a Kubernetes ConfigMap swap is atomic; 5 s (or three polls,
# when polling is slower) covers a slow network filesystem and still resets a deleted file soon.
CONFIG_GRACE_S = 5.0
CONFIG_GRACE_POLLS = 3


def scan(root: Path, problems: ProblemLog) -> RepositoryScan | None:
    """The repository as it is now, its unusable entries reported; `None` when the root itself
    cannot be read (reported too: nothing should change on such a pass)."""
    try:
        found = scan_repository_report(root)
    except RepositoryError as exc:
        problems.report(
            "scan",
            [RepositoryProblem("scan_failed", "<repository>", None, public_text(str(exc), root))],
        )
        return None
    problems.report("scan", found.problems)
    return found


class ConfigWatcher:
    """The repository config in force, re-read when its file changes (module docstring)."""

    def __init__(
        self,
        path: Path,
        shown_as: str,
        registry: ModelRegistry,
        poll_interval_s: float,
        problems: ProblemLog,
        metrics: ServiceMetrics | None,
    ) -> None:
        self.path = path
        self.name = shown_as  # repository-relative: what clients read
        self.root = registry.repository
        self.default_batching = registry.default_batching
        self.grace_s = max(CONFIG_GRACE_S, CONFIG_GRACE_POLLS * poll_interval_s)
        self.problems = problems
        self.metrics = metrics
        self.config = RepositoryConfig()
        self.error: str | None = None
        self.absence: str | None = None  # set while a vanished file is within its grace
        self.batching_overrides: dict[str, BatchingOptions] = {}
        self._fingerprint: FileFingerprint | None = None
        self._checked = False
        self._from_file = False  # the config in force was read from a non-empty file
        self._absent_since: float | None = None

    def refresh(self) -> set[str] | None:
        """Re-read the file if it changed. `None`: nothing new was read; else the models whose
        batching options changed (empty on the first read: nothing is loaded yet).

        Never raises: a file that cannot be used leaves the config in force and is reported.
        """
        try:
            return self._read()
        except Exception as exc:  # a bug here must not stop the pass either
            log.exception("reading the repository config failed")
            self.error = f"{self.name}: cannot be used ({public_text(one_line(exc), self.root)})"
            self.problems.report(
                "config", [RepositoryProblem("config_invalid", self.name, None, self.error)]
            )
            return None

    def _read(self) -> set[str] | None:
        fingerprint = FileFingerprint.of(self.path)
        if self._absent(fingerprint):
            return None
        if self._checked and fingerprint == self._fingerprint:
            return None
        first_read = not self._checked
        self._checked = True
        self._fingerprint = fingerprint
        try:
            config = load_repository_config(self.path, self.name)
        except RepositoryConfigError as exc:
            self.error = public_text(str(exc), self.root)
            if self.metrics is not None:
                self.metrics.config_reloads.labels("error").inc()
            log.error(
                "repository config %s refused, the previous one stays in force: %s",
                self.path,
                exc,
                extra={"event": "config_refused"},
            )
            self.problems.report(
                "config", [RepositoryProblem("config_invalid", self.name, None, self.error)]
            )
            return None
        previous, self.config = self.config, config
        self.error = None
        self._from_file = fingerprint is not None and fingerprint.size > 0
        self.problems.report("config", [])
        overrides = {
            name: model.batching_options(self.default_batching)
            for name, model in config.models.items()
        }
        self.batching_overrides = {
            name: options for name, options in overrides.items() if options is not None
        }
        if self.metrics is not None:
            self.metrics.config_reloads.labels("ok").inc()
        log.info(
            "repository config %s: %d models configured",
            "read" if fingerprint else "absent (defaults)",
            len(config.models),
            extra={"event": "config_loaded", "path": str(self.path)},
        )
        if first_read:  # nothing is loaded yet: every load will use these options
            return set()
        return {
            name
            for name in set(previous.models) | set(config.models)
            if previous.model(name).batching != config.model(name).batching
        }

    def _absent(self, fingerprint: FileFingerprint | None) -> bool:
        """True while a vanished or emptied config file is within its grace period.

        Missing or 0 bytes after a config read from the file was in force: keep that config
        for `grace_s`, reported as a `config_missing` problem; after it, the file is read as it
        is (missing or empty: every default). Anything else ends the grace.
        """
        if not (fingerprint is None or fingerprint.size == 0) or not self._from_file:
            if self._absent_since is not None:
                log.info("repository config %s is back", self.path, extra={"event": "config_back"})
            self._absent_since = None
            self.absence = None
            if self.problems.has("config_missing"):
                self.problems.report("config_missing", [])
            return False
        now = time.monotonic()
        if self._absent_since is None:
            self._absent_since = now
            log.warning(
                "repository config %s is missing or empty; the previous config stays "
                "in force for up to %.1f s",
                self.path,
                self.grace_s,
                extra={"event": "config_missing"},
            )
        if now - self._absent_since < self.grace_s:
            self.absence = (
                f"{self.name} is missing or empty (a save in "
                "progress?); the previous config stays in force for up to "
                f"{self.grace_s:g} s"
            )
            self.problems.report(
                "config_missing",
                [RepositoryProblem("config_missing", self.name, None, self.absence)],
            )
            return True
        log.warning(
            "repository config %s has been missing or empty for %.1f s: the defaults "
            "are in force now",
            self.path,
            now - self._absent_since,
            extra={"event": "config_reset"},
        )
        self._absent_since = None
        self.absence = None
        self._from_file = False
        self.problems.report("config_missing", [])
        return False
