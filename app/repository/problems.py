"""The faults the reloader knows of now, each reported once when it appears and once when it
clears: logged, counted in `kerasserve_repository_errors_total{kind}` and listed for the status
(`app.repository.status`) and the `kerasserve_repository_problems{kind}` gauge."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from app.metrics import ServiceMetrics
from app.redaction import public_text
from app.repository.scan import RepositoryProblem

log = logging.getLogger(__name__)
ProblemKey = tuple[str, str, str]


class ProblemLog:
    """Current faults by the source that found them (a pass, the scan, the config, ...).

    Each source replaces its own list on every report, so a fault clears when its source no
    longer finds it.
    """

    def __init__(self, metrics: ServiceMetrics | None) -> None:
        self.metrics = metrics
        self._problems: dict[str, dict[ProblemKey, RepositoryProblem]] = {}

    def report(self, source: str, problems: Iterable[RepositoryProblem]) -> None:
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

    def has(self, source: str) -> bool:
        """Whether `source` reported any fault that has not cleared."""
        return bool(self._problems.get(source))

    def log_failure(
        self, problem: RepositoryProblem, source: str, message: str, *args: object
    ) -> None:
        """The traceback of a failure the first time it happens; a debug line after that."""
        known = (problem.kind, problem.entry, problem.message) in self._problems.get(source, {})
        if known:
            log.debug(message, *args)
        else:
            log.exception(message, *args, extra={"event": problem.kind, "entry": problem.entry})

    def all(self) -> list[RepositoryProblem]:
        """Every fault known now, in a stable order."""
        found = [p for source in self._problems.values() for p in source.values()]
        return sorted(found, key=lambda p: (p.kind, p.entry, p.message))

    def counts(self) -> dict[str, int]:
        """Faults known now by kind (the `kerasserve_repository_problems` gauge)."""
        counts: dict[str, int] = {}
        for problem in self.all():
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        return counts


def one_line(exc: BaseException) -> str:
    """An exception as one line of text, for a problem's message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def failure(kind: str, entry: str, what: str, exc: BaseException, root: Path) -> RepositoryProblem:
    """A step that raised, as a problem whose message names no absolute path."""
    text = public_text(one_line(exc), root)
    return RepositoryProblem(kind, entry, None, f"{what} failed ({text}); retried at the next poll")
