"""The gRPC server: one `grpc.aio` server on the app's event loop, started and stopped by the
app's lifespan (`app.main`), serving the same data plane as HTTP.

Limits set here, before any handler runs:
- `grpc.max_receive_message_length` = the HTTP body limit (`max_body_bytes`): a larger message
  is refused by the gRPC runtime with RESOURCE_EXHAUSTED before it is parsed;
- `maximum_concurrent_rpcs` (`grpc_max_concurrent_rpcs`): calls over it are refused with
  RESOURCE_EXHAUSTED instead of queuing without bound;
- bytes that are not the method's request message are answered INVALID_ARGUMENT ("the request
  is not a valid inference.ModelInferRequest message") after the token check, never parsed
  further (grpcio alone would answer UNKNOWN, naming a Python exception class).

Port sharing: with one worker `SO_REUSEPORT` is off, so a second server on the same port fails
to start instead of silently taking half the connections. With several workers each worker
binds the port with `SO_REUSEPORT` and the kernel spreads *connections* over them; a gRPC
channel is one long-lived connection, so one client channel stays on one worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
from tritonclient.grpc import service_pb2

from app.protocols.grpc.calls import FrontEnd, lenient_deserializer
from app.protocols.grpc.health import HealthService
from app.protocols.grpc.kserve import InferenceService
from app.protocols.grpc.tfserving import ModelService, PredictionService

log = logging.getLogger(__name__)


def _service(module: Any, name: str) -> ServiceDescriptor:
    return module.DESCRIPTOR.services_by_name[name]


SERVICE_NAMES = (
    _service(service_pb2, "GRPCInferenceService").full_name,
    _service(prediction_service_pb2, "PredictionService").full_name,
    _service(model_service_pb2, "ModelService").full_name,
    _service(health_pb2, "Health").full_name,
)


_HANDLER_KINDS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """What the generated `add_*Servicer_to_server` does, from the service's descriptor, with
    one difference: bytes that are not the request message reach the handler as an
    `UndecodableRequest` (answered INVALID_ARGUMENT) instead of failing inside grpcio."""
    handlers = {}
    for method in service.methods:
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        make = _HANDLER_KINDS[method.client_streaming, method.server_streaming]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=(
                request_class.FromString
                if method.client_streaming
                else lenient_deserializer(request_class)
            ),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


class GrpcStartError(RuntimeError):
    """The port could not be bound (in use, or an address this host does not have)."""


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """The services on one port; `start` binds and serves, `stop` drains."""

    def __init__(
        self,
        front: FrontEnd,
        host: str,
        port: int,
        max_message_bytes: int,
        max_concurrent_rpcs: int,
        reuse_port: bool,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        for service, servicer in (
            (_service(service_pb2, "GRPCInferenceService"), InferenceService(front)),
            (_service(prediction_service_pb2, "PredictionService"), PredictionService(front)),
            (_service(model_service_pb2, "ModelService"), ModelService(front)),
            (_service(health_pb2, "Health"), HealthService(front, SERVICE_NAMES)),
        ):
            add_service(self._server, service, servicer)
        # Reflection lists the services and their message types (no data, no models): open.
        reflection.enable_server_reflection((*SERVICE_NAMES, reflection.SERVICE_NAME), self._server)

    async def start(self) -> int:
        """Bind and serve; returns the bound port. `GrpcStartError` when binding fails."""
        where = address(self.host, self.requested_port)
        try:
            port = self._server.add_insecure_port(where)
        except RuntimeError as exc:  # grpcio raises on a failed bind
            raise GrpcStartError(f"cannot listen for gRPC on {where}: {exc}") from exc
        if port == 0:  # older grpcio: 0 instead of an exception
            raise GrpcStartError(f"cannot listen for gRPC on {where}")
        await self._server.start()
        self.port = port
        log.info("gRPC on %s (KServe v2, TF Serving, health, reflection)", address(self.host, port))
        return port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, give running ones `grace_s` seconds, then cancel the rest."""
        await self._server.stop(grace_s)
