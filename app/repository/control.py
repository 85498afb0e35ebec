"""Follows the model-control decisions shared between the worker processes of one server
(`app.repository.control_state`).

The worker that takes a control request records it there and acts at once; every other worker
reads the state at the start of each pass and does the same (unloads a newly pinned model,
lifts the pin and retries failed versions after a newer load), so a decision holds everywhere
within one poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.errors import Unavailable
from app.repository.control_state import ControlSnapshot, ControlState, ControlStateError
from app.repository.versions import VersionManager

log = logging.getLogger(__name__)


class ControlFollower:
    """Records this worker's control decisions and applies the other workers' ones."""

    def __init__(self, control: ControlState, versions: VersionManager) -> None:
        self.control = control
        self.versions = versions
        self._loads_applied: dict[str, int] = {}  # model -> explicit loads this worker followed

    async def record(self, change: Callable[[ControlSnapshot], ControlSnapshot]) -> ControlSnapshot:
        """Write a control decision to the shared state (off the loop: it takes a file lock)."""
        try:
            if not self.control.shared:
                return self.control.update(change)
            return await asyncio.to_thread(self.control.update, change)
        except ControlStateError as exc:
            raise Unavailable(str(exc)) from exc

    async def record_load(self, name: str) -> None:
        """An explicit load taken here: recorded, and the pin lifted in this worker."""
        snapshot = await self.record(lambda state: state.load_requested(name))
        self._loads_applied[name] = snapshot.loads.get(name, 0)
        self.versions.lift_pin(name)

    async def follow(self) -> set[str]:
        """Apply what other workers recorded since the last pass; the models with a newer
        explicit load (their pins lifted and failed versions forgotten)."""
        state = self.control.read()
        reloaded: set[str] = set()
        for name, count in state.loads.items():
            if count > self._loads_applied.get(name, 0):
                self._loads_applied[name] = count
                self.versions.lift_pin(name)
                reloaded.add(name)
                log.info(
                    "load of %s requested through another worker",
                    name,
                    extra={"event": "load_followed", "model": name},
                )
        pinned = self.versions.pinned
        for name in sorted(state.unloaded - pinned):
            await self.versions.pin(name, "unload requested through another worker")
        for name in pinned - state.unloaded:
            pinned.discard(name)  # the state was reset by hand
        return reloaded - state.unloaded
