"""Schemathesis over the service's own `/openapi.json`, tokens configured: zero 5xx.

A real server on 127.0.0.1 with the three published models, an API token and an admin token;
the admin token goes with every request, so every documented route (model control included) is
reached. Bounded: the coverage phase (every boundary and negative case the schema defines, and
one unexpected method per route instead of six), a few examples per operation in the fuzzing
phase, deterministic generation: about 400 requests, 20 s of requests on two busy cores. Run in
CI: this is part of the proof that no request makes the server fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.repository.format import newest_version_dir
from tests.live_server import REPO_ROOT, LiveServer, live_server
from tests.security.conftest import ADMIN_HEADERS, ADMIN_TOKEN, API_HEADERS, API_TOKEN

MODELS = ("mnist", "deskew", "ocr")
EXAMPLES_PER_OPERATION = 4
# 350 for the routes up to :predict; the six :classify/:regress routes added 64 more.
MAX_REQUESTS = 450
RUN_TIMEOUT_S = 240
# The coverage phase would also try six unexpected methods on every route (186 requests here,
# all 405): one is enough to check that path.
SCHEMATHESIS_CONFIG = '[phases.coverage]\nunexpected-methods = ["delete"]\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    repository = tmp_path_factory.mktemp("repository")
    for name in MODELS:
        source = REPO_ROOT / "models" / name
        newest = newest_version_dir(source)
        assert newest is not None, f"no published version under {source}"
        shutil.copytree(newest, repository / name / newest.name)
    args = [
        "--device",
        "cpu",
        "--poll-interval",
        "0",
        "--log-level",
        "warning",
        "--api-token",
        API_TOKEN,
        "--admin-token",
        ADMIN_TOKEN,
    ]
    # Live: the Schemathesis CLI is a process of its own that needs a URL.
    with live_server(
        repository, tmp_path_factory.mktemp("logs"), args, headers=API_HEADERS
    ) as running:
        yield running


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(server: LiveServer, tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: {ADMIN_HEADERS['Authorization']}",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-deterministic",
        "--seed",
        "2026",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(events),
        "--output-sanitize",
        "false",  # the events keep each request's Authorization
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"{output}\nserver log:\n{server.log()[-4000:]}"
    exchanges = _exchanges(events)
    statuses = [status for _, status in exchanges]
    assert 100 <= len(statuses) <= MAX_REQUESTS, (len(statuses), output)
    assert not [s for s in statuses if s >= 500], output
    assert 200 in statuses
    # The document declares the bearer scheme, so some requests test it with a wrong or missing
    # token: those, and only those, get 401.
    admin = ADMIN_HEADERS["Authorization"]
    assert all(
        (status == 401) == (authorization != admin)
        for authorization, status in exchanges
        if status == 401 or authorization != admin
    ), exchanges
    assert server.is_running()
    assert httpx.get(f"{server.url}/v2/health/live", timeout=5.0).status_code == 200
    assert "Traceback" not in server.log()


def _exchanges(events: Path) -> list[tuple[str | None, int]]:
    """(Authorization sent, status answered) of every request the run recorded."""
    exchanges: list[tuple[str | None, int]] = []
    for line in events.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished") if line.strip() else None
        if not finished:
            continue
        for interaction in (finished["recorder"].get("interactions") or {}).values():
            status = (interaction.get("response") or {}).get("status_code")
            headers = interaction["request"].get("headers") or {}
            sent = headers.get("Authorization") or headers.get("authorization")
            if isinstance(status, int):
                exchanges.append((sent[0] if isinstance(sent, list) else sent, status))
    return exchanges
