"""Every row of the error table with its gRPC code and message, tokens, limits, deadlines,
cancellation, bad protobufs, health, reflection, metrics and request ids; the server stays up."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow_serving.apis import (
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.grpc.conftest import (
    ADMIN_METADATA,
    API_HEADERS,
    API_METADATA,
    MAX_BODY_BYTES,
    OCR_QUEUED_ROWS,
    GrpcServer,
    images,
    post_v2_json,
)

Metadata = Sequence[tuple[str, str]]


def infer_request(
    name: str,
    image: np.ndarray,
    input_name: str = "image",
    datatype: str = "FP32",
    version: str = "",
) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=name, model_version=version)
    request.inputs.add(name=input_name, datatype=datatype, shape=image.shape)
    request.raw_input_contents.append(image.tobytes())
    return request


def infer_error(
    server: GrpcServer, request: Any, metadata: Metadata = API_METADATA, timeout: float = 30
) -> grpc.RpcError:
    with server.channel() as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=metadata, timeout=timeout)
    return caught.value


def assert_server_up(server: GrpcServer) -> None:
    assert server.live.is_running()
    assert server.triton().is_server_live()


def mnist_image(rows: int = 1) -> np.ndarray:
    return images("mnist", rows=rows)


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            lambda: infer_request("mnist", mnist_image(), input_name="pixels"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expects inputs ['image'], got ['pixels']",
        ),
        (
            lambda: infer_request("mnist", np.zeros((1, 28, 27, 1), np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expects shape [-1, 28, 28, 1], got [1, 28, 27, 1]",
        ),
        (
            lambda: infer_request("mnist", mnist_image(), datatype="FP64"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs 6272 bytes",
        ),
        (
            lambda: infer_request("mnist", mnist_image(), version="abc"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model version must be a positive integer, got 'abc'",
        ),
        (
            lambda: infer_request("nope", mnist_image()),
            grpc.StatusCode.NOT_FOUND,
            "model 'nope' is not served here",
        ),
        (
            lambda: infer_request("mnist", mnist_image(), version="7"),
            grpc.StatusCode.NOT_FOUND,
            "model 'mnist' has no version 7",
        ),
        (
            lambda: infer_request("ocr", np.zeros((1, 28, 4096, 1), np.float32)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "takes at most 2048 there",
        ),
    ],
)
def test_error_rows(
    grpc_server: GrpcServer, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    error = infer_error(grpc_server, request_())
    assert error.code() == code, error.details()
    assert message in error.details()
    assert_server_up(grpc_server)


def test_messages_equal_the_http_messages(grpc_server: GrpcServer) -> None:
    image = np.zeros((1, 28, 27, 1), np.float32)
    error = infer_error(grpc_server, infer_request("mnist", image))
    http = post_v2_json(grpc_server, "mnist", image)
    assert http.status_code == 400
    assert http.json()["error"] == error.details()


def test_unknown_output_label_and_signature(grpc_server: GrpcServer) -> None:
    request = infer_request("mnist", mnist_image())
    request.outputs.add(name="logits")
    error = infer_error(grpc_server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown output 'logits'" in error.details()
    with grpc_server.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for spec, code, text in (
            (dict(version_label="nightly"), grpc.StatusCode.NOT_FOUND, "has no label 'nightly'"),
            (
                dict(signature_name="classify"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "serving signature name 'classify' not found",
            ),
        ):
            predict = predict_pb2.PredictRequest()
            predict.model_spec.name = "mnist"
            for key, value in spec.items():
                setattr(predict.model_spec, key, value)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(predict, metadata=API_METADATA, timeout=10)
            assert caught.value.code() == code and text in caught.value.details()


def test_message_over_the_body_limit_is_refused_by_the_runtime(grpc_server: GrpcServer) -> None:
    rows = MAX_BODY_BYTES // (28 * 28 * 4) + 1
    error = infer_error(grpc_server, infer_request("mnist", mnist_image(rows)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_server_up(grpc_server)


def test_bad_protobuf_is_refused(grpc_server: GrpcServer) -> None:
    with grpc_server.channel() as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff not a protobuf", metadata=API_METADATA, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "the request is not a valid inference.ModelInferRequest message"
    )
    with grpc_server.channel() as channel:  # the token is checked first, as on HTTP
        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert_server_up(grpc_server)


def test_tokens(grpc_server: GrpcServer) -> None:
    request = infer_request("mnist", mnist_image())
    missing = infer_error(grpc_server, request, metadata=())
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "needs a bearer token" in missing.details()
    wrong = infer_error(grpc_server, request, metadata=(("authorization", "Bearer nope"),))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc_server.channel() as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live  # open
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelReady(service_pb2.ModelReadyRequest(name="mnist"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:  # an API token is not an admin token
            stub.RepositoryIndex(
                service_pb2.RepositoryIndexRequest(), metadata=API_METADATA, timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        index = stub.RepositoryIndex(
            service_pb2.RepositoryIndexRequest(ready=True), metadata=ADMIN_METADATA, timeout=10
        )
        assert {"deskew", "mnist", "ocr"} <= {model.name for model in index.models}
        assert stub.ModelReady(
            service_pb2.ModelReadyRequest(name="mnist"), metadata=ADMIN_METADATA, timeout=10
        ).ready  # admin covers API
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            predict.Predict(predict_pb2.PredictRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unload_makes_the_model_unavailable_and_load_brings_it_back(
    grpc_server: GrpcServer,
) -> None:
    with grpc_server.channel() as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.RepositoryModelUnload(
            service_pb2.RepositoryModelUnloadRequest(model_name="deskew"),
            metadata=ADMIN_METADATA,
            timeout=60,
        )
        try:
            ready = stub.ModelReady(
                service_pb2.ModelReadyRequest(name="deskew"), metadata=API_METADATA, timeout=10
            )
            assert not ready.ready
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(
                    infer_request("deskew", mnist_image()), metadata=API_METADATA, timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "has no version ready" in caught.value.details()
        finally:
            stub.RepositoryModelLoad(
                service_pb2.RepositoryModelLoadRequest(model_name="deskew"),
                metadata=ADMIN_METADATA,
                timeout=120,
            )
        assert stub.ModelReady(
            service_pb2.ModelReadyRequest(name="deskew"), metadata=API_METADATA, timeout=10
        ).ready
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelLoad(
                service_pb2.RepositoryModelLoadRequest(model_name="nope"),
                metadata=ADMIN_METADATA,
                timeout=30,
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_unimplemented_methods_say_why(grpc_server: GrpcServer) -> None:
    with grpc_server.channel() as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = [
            (
                predict.MultiInference,
                inference_pb2.MultiInferenceRequest(),
                "call Classify and Regress",
            ),
            (
                model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest,
                model_management_pb2.ReloadConfigRequest(),
                "config.yaml",
            ),
            (
                service_pb2_grpc.GRPCInferenceServiceStub(channel).SystemSharedMemoryStatus,
                service_pb2.SystemSharedMemoryStatusRequest(),
                "shared-memory",
            ),
        ]
        for method, request, text in calls:
            with pytest.raises(grpc.RpcError) as caught:
                method(request, metadata=ADMIN_METADATA, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert text.lower() in caught.value.details().lower()


def _metric(server: GrpcServer, name: str, **labels: str) -> float:
    """The sum of the samples of `name` that carry every label given, from /metrics."""
    text = httpx.get(f"{server.url}/metrics", headers=API_HEADERS, timeout=10).text
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] == name and all(label in sample for label in wanted):
            total += float(value)
    return total


OCR_BATCHES = {"name": "kerasserve_batch_size_rows_count", "model": "ocr"}
OCR_QUEUE = {"name": "kerasserve_queue_depth_rows", "model": "ocr"}
OCR_BIG_ROWS = 16  # about 0.2 s on a quiet machine (one TF thread), more under load


def _ocr_request(rows: int, width: int = 2048) -> service_pb2.ModelInferRequest:
    request = infer_request(
        "ocr", images("ocr", rows=1).repeat(rows, 0)[:, :, :1, :].repeat(width, 2)
    )
    request.outputs.add(name="text")
    return request


def _wait_for_queue(server: GrpcServer, done: Callable[[float], bool]) -> bool:
    """Poll OCR's queue-depth gauge (rows) until `done(depth)` holds (at most 10 s); whether it
    did."""
    deadline = time.monotonic() + 10
    while not done(_metric(server, **OCR_QUEUE)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _wait_until_queued(server: GrpcServer, more_than: float) -> bool:
    return _wait_for_queue(server, lambda depth: depth > more_than)


def _wait_until_empty(server: GrpcServer) -> bool:
    return _wait_for_queue(server, lambda depth: depth == 0)


def _busy_ocr(stub: Any, server: GrpcServer) -> Any:
    """Start a call that keeps OCR's single inference thread busy, once it runs.

    Its 16 rows are the whole queue limit, so it first waits for the queue to be empty: on a
    fresh CI machine one row still queued from an earlier call got this call refused with
    RESOURCE_EXHAUSTED ("has 1 rows ... queued; the limits are 16 rows").
    """
    _wait_until_empty(server)
    future = stub.ModelInfer.future(_ocr_request(OCR_BIG_ROWS), metadata=API_METADATA, timeout=30)
    time.sleep(0.03)  # sent and arrived (3.6 MB) ...
    _wait_until_empty(server)  # ... and taken from the queue: running
    return future


def test_deadline_shorter_than_the_queue_wait_and_its_work_is_dropped(
    grpc_server: GrpcServer,
) -> None:
    """Calls that time out or are cancelled while they wait behind a running call never run.

    That needs the busy call still running when the second call is cancelled; on a machine
    whose cores are taken by other work it sometimes was not (then the cancelled call ran, as
    it should). Such an attempt is repeated, at most five times.
    """
    requests = "kerasserve_requests_total"
    with grpc_server.channel() as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            batches = _metric(grpc_server, **OCR_BATCHES)
            busy = _busy_ocr(stub, grpc_server)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(_ocr_request(1), metadata=API_METADATA, timeout=0.05)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            queued = _metric(grpc_server, **OCR_QUEUE)
            cancelled = stub.ModelInfer.future(_ocr_request(1), metadata=API_METADATA, timeout=30)
            # Cancel once the server has it queued: a fixed 30 ms sleep lost that race on a busy
            # machine (cancelled before the server saw the call, so no 499 was counted).
            seen = _wait_until_queued(grpc_server, more_than=queued)
            busy_running = not busy.done()
            cancelled.cancel()
            assert busy.result().outputs[0].name == "text"
            if seen and busy_running:
                break
        else:
            pytest.fail("the busy call never outlasted the calls queued behind it")
    time.sleep(0.3)
    # Only the busy call ran: the timed-out and the cancelled calls were dropped from the queue.
    assert _metric(grpc_server, **OCR_BATCHES) == batches + 1
    assert _metric(grpc_server, requests, protocol="grpc_kserve_v2", code="499") >= 1
    assert_server_up(grpc_server)


def test_full_queue_is_resource_exhausted(grpc_server: GrpcServer) -> None:
    """A call that finds the queue full is refused with RESOURCE_EXHAUSTED.

    The full queue is a moment: a busy call running and 16 rows queued behind it. On a shared CI
    machine the busy call sometimes finished before a third call arrived, which was then rightly
    admitted (two failed CI runs, one with a fixed sleep, one polling the queue depth), or the
    busy call's 3.6 MB reached the server after the 16 rows and it was refused. Every refusal of
    the three calls counts, and an attempt with none is repeated, at most five times; a queue
    that never refuses still fails.
    """
    refusals: list[grpc.RpcError] = []
    with grpc_server.channel() as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            calls = [
                _busy_ocr(stub, grpc_server),
                stub.ModelInfer.future(
                    _ocr_request(OCR_QUEUED_ROWS, width=28), metadata=API_METADATA, timeout=30
                ),
            ]
            if _wait_until_queued(grpc_server, more_than=OCR_QUEUED_ROWS - 1):
                probe = _ocr_request(1, width=28)
                calls.append(stub.ModelInfer.future(probe, metadata=API_METADATA, timeout=30))
            refusals = [error for call in calls if (error := call.exception()) is not None]
            if refusals:
                break
    assert refusals, "no call was refused while 16 rows were queued"
    for refusal in refusals:
        assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal
        assert "retry later" in refusal.details()


def test_health_service(grpc_server: GrpcServer) -> None:
    with grpc_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)  # no token: open like /v2/health
        for service in (
            "",
            "inference.GRPCInferenceService",
            "tensorflow.serving.PredictionService",
            "mnist",
        ):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_reflection_lists_the_services(grpc_server: GrpcServer) -> None:
    with grpc_server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in next(answers).list_services_response.service}
    assert {
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "grpc.health.v1.Health",
    } <= names


def test_metrics_by_protocol_and_request_ids(grpc_server: GrpcServer) -> None:
    with grpc_server.channel() as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(
            infer_request("mnist", mnist_image()),
            metadata=(*API_METADATA, ("x-request-id", "trace-me-42")),
            timeout=30,
        )
        assert ("x-request-id", "trace-me-42") in tuple(call.trailing_metadata())
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = "mnist"
        predict.inputs["image"].dtype = 1  # DT_FLOAT
        for size in (1, 28, 28, 1):
            predict.inputs["image"].tensor_shape.dim.add(size=size)
        predict.inputs["image"].float_val.append(0.5)  # one value fills the tensor
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            predict, metadata=API_METADATA, timeout=30
        )
    requests = "kerasserve_requests_total"
    for protocol in ("grpc_kserve_v2", "grpc_tfserving"):
        served = {"model": "mnist", "version": "1", "protocol": protocol, "code": "200"}
        assert _metric(grpc_server, requests, **served) >= 1
    latency = "kerasserve_request_duration_seconds_count"
    assert _metric(grpc_server, latency, model="mnist", protocol="grpc_tfserving") >= 1
    # Unknown model names never become label values.
    assert _metric(grpc_server, requests, model="nope") == 0
    assert _metric(grpc_server, requests, protocol="grpc_kserve_v2", code="404") >= 1
