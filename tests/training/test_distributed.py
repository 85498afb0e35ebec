"""Distribution through TensorFlow's own strategies, on this CPU-only machine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.training.conftest import (
    CLI_TIMEOUT_S,
    REPO_ROOT,
    TINY_RUN,
    assert_succeeded,
    cli_env,
    run_cli,
)
from training import publish


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mirrored_strategy_over_two_logical_cpus_trains_and_publishes(tmp_path: Path) -> None:
    result = run_cli(
        "mnist",
        *TINY_RUN,
        "--repository",
        str(tmp_path),
        "--strategy",
        "mirrored",
        "--logical-cpu-devices",
        "2",
    )
    assert_succeeded(result)
    metadata = publish.read_metadata(tmp_path / "mnist" / "1")
    assert metadata["training"]["strategy"] == "mirrored"
    assert metadata["training"]["replicas"] == 2
    assert metadata["training"]["final_epoch"]["loss"] > 0


def test_two_worker_multi_worker_run_publishes_exactly_once(tmp_path: Path) -> None:
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "training",
                    "mnist",
                    *TINY_RUN,
                    "--repository",
                    str(tmp_path),
                    "--strategy",
                    "multi-worker",
                ],
                cwd=REPO_ROOT,
                env=cli_env(TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=CLI_TIMEOUT_S))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, f"{stdout}\n{stderr}"
    assert publish.list_versions(tmp_path / "mnist") == [1]
    assert not list((tmp_path / "mnist").glob(".tmp-*"))
    metadata = publish.read_metadata(tmp_path / "mnist" / "1")
    assert metadata["training"]["strategy"] == "multi-worker"
    assert metadata["training"]["replicas"] == 2
    chief_out, other_out = outputs[0][0], outputs[1][0]
    assert "published" in chief_out.splitlines()[-1]
    assert "not published (non-chief worker)" in other_out.splitlines()[-1]
