"""gRPC through the model lifecycle: a hot reload under gRPC load, SIGTERM with calls in
flight, and a gRPC port that is already taken."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.grpc.conftest import (
    API_METADATA,
    RELOADED,
    GrpcServer,
    images,
    make_repository,
    wait_for_grpc,
)
from tests.live_server import REPO_ROOT, free_port, live_server, service_command

LOAD_SECONDS_AFTER_SWITCH = 1.0
SWITCH_TIMEOUT_S = 60.0


def _request(name: str, rows: int = 1) -> service_pb2.ModelInferRequest:
    image = images("mnist", rows=rows)
    request = service_pb2.ModelInferRequest(model_name=name)
    request.inputs.add(name="image", datatype="FP32", shape=image.shape)
    request.raw_input_contents.append(image.tobytes())
    return request


def test_hot_reload_under_grpc_load_fails_no_call(grpc_server: GrpcServer) -> None:
    """Publish version 2 of a model while four clients call it: every call succeeds, and the
    answers move from version 1 to version 2."""
    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with grpc_server.channel() as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.ModelInfer(
                        _request(RELOADED), metadata=API_METADATA, timeout=30
                    )
                    versions.append(response.model_version)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        model = grpc_server.repository / RELOADED
        staging = model / ".tmp-2"
        shutil.copytree(model / "1", staging)
        staging.rename(model / "2")  # published the way the training job does
        deadline = time.monotonic() + SWITCH_TIMEOUT_S
        while "2" not in versions[-20:] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(LOAD_SECONDS_AFTER_SWITCH)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert versions[0] == "1" and versions[-1] == "2", (versions[:3], versions[-3:])
    assert len(versions) > 20


def test_sigterm_finishes_calls_in_flight_and_exits_zero(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "models")
    (repository / "config.yaml").unlink()  # the default queue, which takes all three calls
    grpc_port = free_port()
    args = [
        "--device",
        "cpu",
        "--grpc-port",
        str(grpc_port),
        "--shutdown-grace",
        "20",
        "--log-level",
        "debug",
        "--log-format",
        "json",
    ]
    # Live: a gRPC port, and the drain on SIGTERM of a real process.
    with live_server(repository, tmp_path, args) as live:
        wait_for_grpc(f"127.0.0.1:{grpc_port}", 60, live)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            image = np.zeros((16, 28, 2048, 1), np.float32)  # a few tenths of a second each
            request = service_pb2.ModelInferRequest(model_name="ocr")
            request.inputs.add(name="image", datatype="FP32", shape=image.shape)
            request.raw_input_contents.append(image.tobytes())
            stub.ModelInfer(_request("mnist"), metadata=(("x-request-id", "log-me-7"),), timeout=30)
            in_flight = [stub.ModelInfer.future(request, timeout=60) for _ in range(3)]
            time.sleep(0.5)  # all three in the batcher (about 1.2 s of work in all)
            live.process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in in_flight]  # none is cut off
        assert all(a.outputs[0].name for a in answers)
        assert live.process.wait(timeout=30) == 0, live.log()[-3000:]
    assert "drained" in live.log()
    # The request log line of a gRPC call carries the client's request id (JSON logs).
    lines = [json.loads(line) for line in live.log().splitlines() if '"log-me-7"' in line]
    assert any(
        line.get("protocol") == "grpc_kserve_v2"
        and line.get("status") == 200
        and line.get("model") == "mnist"
        for line in lines
    ), lines


def test_a_taken_grpc_port_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            service_command(REPO_ROOT / "models", free_port(), ["--grpc-port", str(port)]),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert completed.returncode == 2
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in completed.stderr
