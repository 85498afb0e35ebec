"""Which published versions of a model are served: TF Serving's `model_version_policy`.

The repository config (`app.repository.config`) parses it per model; the version manager
(`app.repository.versions`) applies it to each scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from app.repository.scan import VersionDir


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve, as in TF Serving's `model_version_policy`.

    `latest` keeps the newest `count`, `all` keeps every version, `specific` keeps `versions`.
    """

    kind: Literal["latest", "all", "specific"] = "latest"
    count: int = 1
    versions: frozenset[int] = field(default_factory=frozenset)

    def select(self, available: tuple[VersionDir, ...]) -> list[VersionDir]:
        """The versions out of `available` (oldest first) that this policy serves."""
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            return [v for v in available if v.version in self.versions]
        return list(available[-self.count :]) if self.count > 0 else []

    def as_config(self) -> object:
        """The policy as the repository config writes it (for logs and the status)."""
        if self.kind == "all":
            return "all"
        if self.kind == "specific":
            return {"specific": sorted(self.versions)}
        return {"latest": self.count}
