"""`grpc.health.v1.Health`, answered from the data plane's own readiness (Kubernetes probes).

- service "" or any service this port serves: SERVING once the initial load finished and until
  shutdown begins (the same rule as `GET /v2/health/ready`), NOT_SERVING otherwise;
- a model name: SERVING while some version of it can answer (`/v2/models/{name}/ready`);
- anything else: NOT_FOUND, as the health protocol asks.

Open to everyone like the HTTP health routes. `Watch` re-checks every `WATCH_INTERVAL_S` and
sends changes; it ends at shutdown, so a watching client never holds the drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.errors import NotFound
from app.protocols.grpc.calls import Call, FrontEnd, UndecodableRequest, rpc
from app.security.tokens import Access

PROTOCOL = "grpc_health"
WATCH_INTERVAL_S = 1.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self, front: FrontEnd, services: Collection[str]) -> None:
        self.front = front
        self.services = frozenset(services)

    def status(self, service: str) -> int | None:
        """The serving status of `service`; None when it is neither a service nor a model."""
        plane = self.front.dataplane
        if not service or service in self.services:
            return SERVING if plane.ready() else NOT_SERVING
        if service in plane.registry.model_names():
            return SERVING if plane.model_ready(service) else NOT_SERVING
        return None

    @rpc(Access.OPEN, PROTOCOL)
    async def Check(self, request: Any, call: Call) -> Any:
        status = self.status(request.service)
        if status is None:
            raise NotFound(
                f"unknown service {request.service[:80]!r}: ask for '' (the server), "
                "a gRPC service name or a model name"
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, UndecodableRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error().message)
        last: int | None = -1
        while True:
            status = self.status(request.service)
            current = SERVICE_UNKNOWN if status is None else status
            if current != last:
                yield health_pb2.HealthCheckResponse(status=current)
                last = current
            if self.front.dataplane.shutting_down:
                return
            await asyncio.sleep(WATCH_INTERVAL_S)
