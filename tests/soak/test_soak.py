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

from bench.soak import Run, memory_growth

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
            "10",
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
    assert len(summary["versions_published"]) >= 3  # one retires a version: the growth baseline
    assert summary["rss_mib"]["growth"] < 50


def _cycles(leak_per_version_mib: float) -> Run:
    """Sixty one-second samples with a version published every 10 s: 25 MiB a loaded version,
    a third one loaded in the second before each publish from version 3 on (the oldest retires
    as it becomes available), and what each published version leaves behind."""
    run = Run()
    for second in range(60):
        published = second // 10  # versions 2, 3, ... published at 10 s, 20 s, ...
        loaded = min(1 + published, 2) + (1 if second >= 19 and second % 10 == 9 else 0)
        run.memory.append((float(second), 800 + 25 * loaded + leak_per_version_mib * published))
    run.published = [(10.0 * k, 1 + k) for k in range(1, 6)]
    return run


def test_memory_growth_ignores_the_working_set_of_a_reload_and_catches_a_leak() -> None:
    steady = memory_growth(_cycles(0.0))
    assert steady["since_s"] == 20.0  # version 3, the first publish that retires one
    assert steady["baseline"] == 875.0 and steady["growth"] == 0.0
    assert memory_growth(_cycles(15.0))["growth"] == 60.0  # versions 3 to 6 after the baseline
    short = Run(memory=[(12.0, 800.0), (13.0, 830.0)], published=[(12.5, 2)])
    assert memory_growth(short)["growth"] == 30.0  # no retirement yet: the older measure
