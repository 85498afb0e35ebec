"""Bounded subprocess calls for the deployment tests: every command has a timeout and its output
is kept, so a failure says what ran, for how long, and what it printed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class CommandFailed(RuntimeError):
    """A command exited non-zero or ran past its timeout."""


@dataclass(frozen=True)
class Finished:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self, tail: int = 3000) -> str:
        return (
            f"$ {' '.join(self.args)}\n(exit {self.returncode} after {self.seconds:.1f}s)\n"
            f"--- stdout (tail) ---\n{self.stdout[-tail:]}\n"
            f"--- stderr (tail) ---\n{self.stderr[-tail:]}"
        )


def run(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    input_bytes: bytes | None = None,
) -> Finished:
    """Run `args` to completion within `timeout` seconds; raise `CommandFailed` when `check`."""
    started = time.monotonic()
    try:
        completed = subprocess.run(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(
            f"timed out after {timeout:.0f}s: {' '.join(args)}\n"
            f"{_text(exc.stdout)[-2000:]}\n{_text(exc.stderr)[-2000:]}"
        ) from exc
    finished = Finished(
        tuple(args),
        completed.returncode,
        _text(completed.stdout),
        _text(completed.stderr),
        time.monotonic() - started,
    )
    if check and finished.returncode != 0:
        raise CommandFailed(finished.describe())
    return finished


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")
