"""Applies the config's version labels. A label that points at a version that is not loaded is
refused: it keeps its previous (still loaded) target, or is absent, and the error is reported."""

from __future__ import annotations

import logging

from app.registry import ModelRegistry, VersionState
from app.repository.config import RepositoryConfig

log = logging.getLogger(__name__)


class LabelKeeper:
    """Sets the configured labels whose versions are loaded; remembers the refused ones."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.errors: dict[str, list[str]] = {}  # model -> why its labels were refused

    def apply(self, name: str, config: RepositoryConfig) -> None:
        current = self.registry.labels(name)
        labels: dict[str, int] = {}
        errors: list[str] = []
        for label, version in config.model(name).labels.items():
            if self._available(name, version):
                labels[label] = version
                continue
            errors.append(
                f"label {label!r} of model {name!r} points at version {version}, "
                "which is not loaded; refused"
            )
            previous = current.get(label)
            if previous is not None and previous != version and self._available(name, previous):
                labels[label] = previous
        if labels != current:
            log.info(
                "labels of %s: %s",
                name,
                labels,
                extra={"event": "labels_changed", "model": name, "labels": labels},
            )
            self.registry.set_labels(name, labels)
        if errors != self.errors.get(name, []):
            for error in errors:
                log.error("%s", error, extra={"event": "label_refused", "model": name})
        self.errors[name] = errors

    def _available(self, name: str, version: int) -> bool:
        if name not in self.registry.model_names():
            return False
        return any(
            e.version == version and e.state is VersionState.AVAILABLE
            for e in self.registry.versions(name)
        )
