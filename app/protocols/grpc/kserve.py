"""`inference.GRPCInferenceService`: KServe v2 / Open Inference Protocol over gRPC.

The service definition is Triton's `grpc_service.proto` as tritonclient ships it (the v2 protocol
plus Triton's extensions). Implemented: health, metadata, inference (a `signature_name` string
parameter runs another signature than `serving_default`; `ModelMetadataResponse` has no field for
the list of signatures, which TF Serving's `GetModelMetadata` on the same port gives), the model
configuration (what perf_analyzer reads) and the model repository extension (admin token).
Shared memory, statistics, tracing, log settings and streaming answer UNIMPLEMENTED with the
reason.

Access levels are those of the HTTP routes: server live/ready are open (`/v2/health/*`), the
repository extension needs the admin token (`/v2/repository/*`), everything else an API token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from app.dataplane import ModelMetadata
from app.errors import InvalidInput, Unavailable
from app.protocols.common import parse_version
from app.protocols.grpc.calls import Call, FrontEnd, model_label, rpc
from app.protocols.grpc.kserve_codec import decode_infer_request, encode_infer_response
from app.protocols.grpc.status import Unimplemented
from app.protocols.v2_codec import v2_datatype
from app.registry import VersionState
from app.security.tokens import Access
from app.servable import TensorSpec

PROTOCOL = "grpc_kserve_v2"
API = Access.API
ADMIN = Access.ADMIN
OPEN = Access.OPEN


def optional_version(text: str) -> int | None:
    """The `version` string of a v2 request: empty for the default version."""
    return parse_version(text) if text else None


def _tensor_metadata(specs: dict[str, TensorSpec]) -> list[Any]:
    return [
        service_pb2.ModelMetadataResponse.TensorMetadata(
            name=spec.name, datatype=v2_datatype(spec.tf_dtype), shape=spec.shape_with_minus_one
        )
        for spec in specs.values()
    ]


def _metadata_response(metadata: ModelMetadata) -> service_pb2.ModelMetadataResponse:
    return service_pb2.ModelMetadataResponse(
        name=metadata.name,
        versions=[str(v) for v in metadata.versions],
        platform=metadata.platform,
        inputs=_tensor_metadata(metadata.inputs),
        outputs=_tensor_metadata(metadata.outputs),
    )


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The v2 service over one `FrontEnd` (data plane, guard, metrics, reloader)."""

    def __init__(self, front: FrontEnd) -> None:
        self.front = front

    # ---- health and metadata --------------------------------------------------------------

    @rpc(OPEN, PROTOCOL)
    async def ServerLive(self, request: Any, call: Call) -> Any:
        return service_pb2.ServerLiveResponse(live=self.front.dataplane.live())

    @rpc(OPEN, PROTOCOL)
    async def ServerReady(self, request: Any, call: Call) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.front.dataplane.ready())

    @rpc(API, PROTOCOL)
    async def ModelReady(self, request: Any, call: Call) -> Any:
        model_label(call, request.name)
        ready = self.front.dataplane.model_ready(request.name, optional_version(request.version))
        return service_pb2.ModelReadyResponse(ready=ready)

    @rpc(API, PROTOCOL)
    async def ServerMetadata(self, request: Any, call: Call) -> Any:
        metadata = self.front.dataplane.server_metadata()
        return service_pb2.ServerMetadataResponse(
            name=metadata["name"], version=metadata["version"], extensions=metadata["extensions"]
        )

    @rpc(API, PROTOCOL)
    async def ModelMetadata(self, request: Any, call: Call) -> Any:
        model_label(call, request.name)
        metadata = self.front.dataplane.model_metadata(
            request.name, optional_version(request.version)
        )
        return _metadata_response(metadata)

    @rpc(API, PROTOCOL)
    async def ModelConfig(self, request: Any, call: Call) -> Any:
        """Triton's model configuration, as far as it describes this server's models: the
        batch dimension as `max_batch_size` and the inputs and outputs without it."""
        model_label(call, request.name)
        plane = self.front.dataplane
        metadata = plane.model_metadata(request.name, optional_version(request.version))
        batching = plane.registry.batching_for(request.name)
        batched = all(
            spec.shape and spec.shape[0] is None
            for spec in (*metadata.inputs.values(), *metadata.outputs.values())
        )
        config = model_config_pb2.ModelConfig(
            name=metadata.name,
            platform=metadata.platform,
            max_batch_size=batching.max_batch_size if batched else 0,
        )
        for specs, add in (
            (metadata.inputs, config.input.add),
            (metadata.outputs, config.output.add),
        ):
            for spec in specs.values():
                dims = spec.shape_with_minus_one[1:] if batched else spec.shape_with_minus_one
                add(
                    name=spec.name,
                    data_type=model_config_pb2.DataType.Value(
                        "TYPE_" + ("STRING" if spec.is_string else v2_datatype(spec.tf_dtype))
                    ),
                    dims=dims,
                )
        return service_pb2.ModelConfigResponse(config=config)

    # ---- inference ------------------------------------------------------------------------

    @rpc(API, PROTOCOL)
    async def ModelInfer(self, request: Any, call: Call) -> Any:
        front = self.front
        plane = front.dataplane
        name = request.model_name
        model_label(call, name)
        version = optional_version(request.model_version)
        if request.ByteSize() > front.inline_parse_bytes:  # big typed lists: off the loop
            decoded = await asyncio.to_thread(decode_infer_request, request, plane.limits)
        else:
            decoded = decode_infer_request(request, plane.limits)
        timeout_s = call.timeout_s
        if decoded.timeout_s is not None:
            timeout_s = (
                decoded.timeout_s if timeout_s is None else min(timeout_s, decoded.timeout_s)
            )
        result = await plane.infer(
            name,
            decoded.inputs,
            version=version,
            outputs=decoded.outputs,
            timeout_s=timeout_s,
            signature=decoded.signature,
        )
        call.served(name, result.model_version)
        return encode_infer_response(
            result.model_name, result.model_version, request.id, result.outputs, decoded
        )

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "streaming inference is not supported: use ModelInfer"
        )

    @rpc(API, PROTOCOL)
    async def ModelStatistics(self, request: Any, call: Call) -> Any:
        raise Unimplemented(
            "model statistics are not kept here: the Prometheus metrics at "
            "GET /metrics on the HTTP port have the counts and latencies"
        )

    # ---- model repository extension (admin) -----------------------------------------------

    @rpc(ADMIN, PROTOCOL)
    async def RepositoryIndex(self, request: Any, call: Call) -> Any:
        _one_repository(request.repository_name)
        return service_pb2.RepositoryIndexResponse(
            models=[
                service_pb2.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=str(e.version), state=e.state, reason=e.reason
                )
                for e in self.front.reloader.index()
                if not request.ready or e.state == "READY"
            ]
        )

    @rpc(ADMIN, PROTOCOL)
    async def RepositoryModelLoad(self, request: Any, call: Call) -> Any:
        _one_repository(request.repository_name)
        if request.parameters:
            raise InvalidInput(
                "load parameters (a config or files in the request) are not "
                "supported: the model is loaded from the repository folder"
            )
        versions = await self.front.reloader.load_model(request.model_name)
        if not any(e.state is VersionState.AVAILABLE for e in versions):
            errors = "; ".join(f"version {e.version}: {e.error}" for e in versions if e.error)
            raise Unavailable(
                f"model {request.model_name!r} could not be loaded: {errors or 'no version'}"
            )
        return service_pb2.RepositoryModelLoadResponse()

    @rpc(ADMIN, PROTOCOL)
    async def RepositoryModelUnload(self, request: Any, call: Call) -> Any:
        _one_repository(request.repository_name)
        await self.front.reloader.unload_model(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    # ---- Triton extensions this server does not have ----------------------------------------

    @rpc(API, PROTOCOL)
    async def SystemSharedMemoryStatus(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_NO_SHARED_MEMORY)

    @rpc(API, PROTOCOL)
    async def SystemSharedMemoryRegister(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_NO_SHARED_MEMORY)

    @rpc(API, PROTOCOL)
    async def SystemSharedMemoryUnregister(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_NO_SHARED_MEMORY)

    @rpc(API, PROTOCOL)
    async def CudaSharedMemoryStatus(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_NO_SHARED_MEMORY)

    @rpc(API, PROTOCOL)
    async def CudaSharedMemoryRegister(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_NO_SHARED_MEMORY)

    @rpc(API, PROTOCOL)
    async def CudaSharedMemoryUnregister(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_NO_SHARED_MEMORY)

    @rpc(ADMIN, PROTOCOL)
    async def TraceSetting(self, request: Any, call: Call) -> Any:
        raise Unimplemented("tracing is not supported; logs carry the x-request-id metadata")

    @rpc(ADMIN, PROTOCOL)
    async def LogSettings(self, request: Any, call: Call) -> Any:
        raise Unimplemented("log settings are start options here (--log-level, --log-format)")


_NO_SHARED_MEMORY = (
    "shared-memory tensors are not supported: send the data in the request (raw_input_contents)"
)


def _one_repository(name: str) -> None:
    """The server has one repository; Triton's clients send an empty name."""
    if name:
        raise InvalidInput(
            f"this server has one model repository; leave repository_name empty (got {name[:80]!r})"
        )
