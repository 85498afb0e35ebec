"""What the model-control API decided, shared by every worker process of one server.

The control API (`POST /v2/repository/models/NAME/load|unload`) reaches one worker: the one
whose connection carried the request. So that the decision holds in every worker, it is not
kept in that worker's memory but in `ControlState`, which every worker's reloader reads at each
poll and applies (`app.repository.reloader`). Two facts are shared:

- `unloaded`: the models pinned unloaded by request (polling leaves them alone);
- `loads`: per model, how many explicit loads were asked for. A worker that sees the count go
  up does what the worker that took the request did: lift the pin and retry the versions that
  failed to load.

With one worker the state lives in memory (`MemoryControlState`). With a state directory
(`--state-dir`; `python -m app --workers N` makes a private one for its workers when none is
given) it is one small JSON file, `control-state.json` (`FileControlState`): replaced whole
(written to a temporary file, then `os.replace`), so a reader sees the old state or the new,
never half of one; every read-modify-write holds an exclusive `flock` on a lock file beside it,
so two workers taking control requests at once do not lose one of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
STATE_FILE = "control-state.json"
LOCK_FILE = ".control-state.lock"


class ControlStateError(RuntimeError):
    """The shared state cannot be written (the control request fails; nothing changed)."""


@dataclass(frozen=True)
class ControlSnapshot:
    """The shared decisions at one moment."""

    unloaded: frozenset[str] = frozenset()
    loads: dict[str, int] = field(default_factory=dict)

    def pinned(self, name: str) -> ControlSnapshot:
        return ControlSnapshot(self.unloaded | {name}, dict(self.loads))

    def load_requested(self, name: str) -> ControlSnapshot:
        loads = dict(self.loads)
        loads[name] = loads.get(name, 0) + 1
        return ControlSnapshot(self.unloaded - {name}, loads)

    def to_json(self) -> bytes:
        return json.dumps(
            {"unloaded": sorted(self.unloaded), "loads": dict(sorted(self.loads.items()))}
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ControlSnapshot:
        """Parse a state file; anything malformed counts as no decision (logged)."""
        try:
            raw = json.loads(data) if data.strip() else {}
            unloaded = raw.get("unloaded", [])
            loads = raw.get("loads", {})
            if not (
                isinstance(unloaded, list)
                and all(isinstance(n, str) for n in unloaded)
                and isinstance(loads, dict)
                and all(isinstance(k, str) and type(v) is int for k, v in loads.items())
            ):
                raise ValueError("unexpected structure")
        except (ValueError, AttributeError) as exc:
            log.error("the control state file cannot be read (%s); ignoring it", exc)
            return cls()
        return cls(frozenset(unloaded), dict(loads))


class ControlState(Protocol):
    """Where the control decisions live; `update` is atomic against every other worker."""

    shared: bool

    def read(self) -> ControlSnapshot: ...

    def update(self, change: Callable[[ControlSnapshot], ControlSnapshot]) -> ControlSnapshot: ...


class MemoryControlState:
    """One worker: the decisions in this process only."""

    shared = False

    def __init__(self) -> None:
        self._snapshot = ControlSnapshot()

    def read(self) -> ControlSnapshot:
        return self._snapshot

    def update(self, change: Callable[[ControlSnapshot], ControlSnapshot]) -> ControlSnapshot:
        self._snapshot = change(self._snapshot)
        return self._snapshot


class FileControlState:
    """Several workers (or replicas sharing a directory): the decisions in one JSON file."""

    shared = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self._lock_path = directory / LOCK_FILE
        self._cached: tuple[tuple[int, int, int], ControlSnapshot] | None = None

    def read(self) -> ControlSnapshot:
        """The state as written last; the file is parsed again only when it was replaced."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return ControlSnapshot()
        except OSError as exc:
            log.error("the control state file cannot be read (%s); ignoring it", exc)
            return ControlSnapshot()
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        try:
            snapshot = ControlSnapshot.from_json(self.path.read_bytes())
        except OSError as exc:
            log.error("the control state file cannot be read (%s); ignoring it", exc)
            return ControlSnapshot()
        self._cached = (key, snapshot)
        return snapshot

    def update(self, change: Callable[[ControlSnapshot], ControlSnapshot]) -> ControlSnapshot:
        """Read, change and replace the file while holding the lock (blocking: call it off the
        event loop). Raises `ControlStateError` when the directory is not writable."""
        try:
            with self._locked():
                snapshot = change(self.read())
                self._replace(snapshot.to_json())
        except OSError as exc:
            raise ControlStateError(
                f"the shared control state cannot be written ({exc.strerror or exc})"
            ) from exc
        return snapshot

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _replace(self, data: bytes) -> None:
        handle, staging = tempfile.mkstemp(prefix=".control-state-", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise


def control_state_for(directory: Path | None) -> ControlState:
    """A file in `directory` when one is given, else this process's memory."""
    return FileControlState(directory) if directory is not None else MemoryControlState()
