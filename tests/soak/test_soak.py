"""The soak script, one minute of it: mixed and hostile traffic while versions are published.

`python -m bench.soak` runs ten minutes by hand; CI runs this one-minute cut of the same script
(a real server on 127.0.0.1, real HTTP clients, real publishing) and holds it to the same
verdict: no good request fails, every hostile one is a 4xx, memory stays flat.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_one_minute_soak_keeps_every_good_request_and_refuses_every_hostile_one(
    tmp_path: Path,
) -> None:
    out = tmp_path / "soak"
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--duration",
            "60",
            "--publish-every",
            "15",
            "--concurrency",
            "4",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert (out / "soak.png").stat().st_size > 10_000
    summary = json.loads((out / "soak.json").read_text())
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-2000:]
    assert summary["passed"], summary["checks"]
    assert summary["failed_good_count"] == 0
    assert summary["requests"]["good"] > 500
    assert summary["requests"]["hostile"] > 0
    assert all(
        400 <= int(status) < 500
        for counts in summary["hostile_statuses"].values()
        for status in counts
    )
    assert len(summary["versions_published"]) >= 2
    assert summary["rss_mib"]["growth"] < 50
