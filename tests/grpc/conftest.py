"""A real `python -m app` with its gRPC port on 127.0.0.1, and the clients people already use.

One server for the module-spanning tests (free ports for HTTP and gRPC, API and admin tokens,
fast polling), over a temporary repository: version 1 of the committed models, a `config.yaml`
with a label and a deliberately small OCR queue (one inference thread, 16 queued rows) for the
queue and deadline rows, and a copy of mnist named `reloaded` that the hot-reload test publishes
into. Nothing here mocks TensorFlow, gRPC or HTTP.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.live_server import REPO_ROOT, LiveServer, free_port, live_server

MODELS = ("deskew", "mnist", "ocr")
RELOADED = "reloaded"
API_TOKEN = "grpc-tests-api-token"
ADMIN_TOKEN = "grpc-tests-admin-token"
API_METADATA = (("authorization", f"Bearer {API_TOKEN}"),)
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
API_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}
MAX_BODY_BYTES = 4 * 1024 * 1024
OCR_QUEUED_ROWS = 16
POLL_INTERVAL_S = 0.3
CONFIG = f"""
models:
  mnist:
    labels: {{stable: 1}}
  ocr:
    batching: {{max_batch_size: 16, inference_threads: 1, max_queued_rows: {OCR_QUEUED_ROWS}}}
"""
GRPC_START_TIMEOUT_S = 60.0


class GrpcServer:
    """The live server with its gRPC address."""

    def __init__(self, live: LiveServer, grpc_port: int, repository: Path) -> None:
        self.live = live
        self.url = live.url
        self.grpc_port = grpc_port
        self.address = f"127.0.0.1:{grpc_port}"
        self.repository = repository

    def triton(self) -> triton_grpc.InferenceServerClient:
        return triton_grpc.InferenceServerClient(self.address)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)


def wait_for_grpc(address: str, timeout_s: float, live: LiveServer | None = None) -> None:
    """Until ServerLive answers over gRPC (the server binds it in the background)."""
    deadline = time.monotonic() + timeout_s
    client = triton_grpc.InferenceServerClient(address)
    try:
        while True:
            try:
                if client.is_server_live(client_timeout=2.0):
                    return
            except Exception:  # not listening yet
                pass
            if live is not None and not live.is_running():
                raise RuntimeError(f"server exited:\n{live.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gRPC not up on {address} after {timeout_s} s")
            time.sleep(0.2)
    finally:
        client.close()


def make_repository(root: Path) -> Path:
    """Version 1 of each committed model, a copy of mnist as `reloaded`, the config file.

    Only version 1: the tests address it by number and label, and compare it with its own
    SavedModel (the committed repository also holds later versions)."""
    root.mkdir(parents=True)
    for name in MODELS:
        shutil.copytree(REPO_ROOT / "models" / name / "1", root / name / "1")
    shutil.copytree(REPO_ROOT / "models" / "mnist" / "1", root / RELOADED / "1")
    (root / "config.yaml").write_text(CONFIG)
    return root


@pytest.fixture(scope="session")
def grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    repository = make_repository(tmp_path_factory.mktemp("grpc") / "models")
    logs = tmp_path_factory.mktemp("grpc-logs")
    grpc_port = free_port()
    args = [
        "--device",
        "cpu",
        # One TensorFlow thread per op: the queue tests need a call that stays busy for a while
        # (16 OCR rows 2048 wide took 0.1 s with two threads on a quiet machine, 0.2 s with one).
        "--intra-op-threads",
        "1",
        "--grpc-port",
        str(grpc_port),
        "--api-token",
        API_TOKEN,
        "--admin-token",
        ADMIN_TOKEN,
        "--poll-interval",
        str(POLL_INTERVAL_S),
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
    ]
    # Live: gRPC clients and TF Serving's stubs connect to a port.
    with live_server(repository, logs, args, headers=API_HEADERS) as live:
        wait_for_grpc(f"127.0.0.1:{grpc_port}", GRPC_START_TIMEOUT_S, live)
        yield GrpcServer(live, grpc_port, repository)


@pytest.fixture(scope="session")
def saved_models() -> dict[str, Any]:
    """The committed SavedModels' serving signatures, loaded in this process."""
    import tensorflow as tf

    return {
        name: tf.saved_model.load(str(REPO_ROOT / "models" / name / "1")).signatures[
            "serving_default"
        ]
        for name in MODELS
    }


def in_process(saved_models: dict[str, Any], name: str, image: np.ndarray) -> dict[str, Any]:
    outputs = saved_models[name](image=image)
    return {key: value.numpy() for key, value in outputs.items()}


def images(name: str, rows: int = 2, seed: int = 0) -> np.ndarray:
    width = 84 if name == "ocr" else 28
    return np.random.default_rng(seed).random((rows, 28, width, 1), dtype=np.float32)


def post_v2_json(server: GrpcServer, name: str, image: np.ndarray) -> httpx.Response:
    """The same `image` over HTTP, as a v2 JSON request: what gRPC answers are compared with."""
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": list(image.shape),
                "datatype": "FP32",
                "data": image.ravel().tolist(),
            }
        ]
    }
    return httpx.post(
        f"{server.url}/v2/models/{name}/infer", json=body, headers=API_HEADERS, timeout=30
    )
