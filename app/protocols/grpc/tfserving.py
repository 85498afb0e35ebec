"""`tensorflow.serving.PredictionService` and `ModelService`: TensorFlow Serving's gRPC API.

The messages are tensorflow-serving-api's generated modules. `Predict` takes the model by name
and version, `version_label` or neither (the newest ready version), the `serving_default`
signature (or none named), any subset of outputs (`output_filter`). `GetModelMetadata` answers
the `signature_def` field with a `SignatureDefMap`, as TF Serving does. `Classify`, `Regress`
and `MultiInference` need classification/regression signatures, which the models served here
do not have: UNIMPLEMENTED, saying so. `HandleReloadConfigRequest` is UNIMPLEMENTED too: the
repository config file (`config.yaml`, re-read when it changes) is how this server is told.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from app.dataplane import ModelMetadata, VersionStatus
from app.errors import InvalidInput
from app.protocols.grpc.calls import Call, FrontEnd, model_label, rpc
from app.protocols.grpc.status import Unimplemented
from app.protocols.grpc.tensor_proto import fill_tensor, tensor_to_array
from app.protocols.tfserving import PREDICT_METHOD, TF_DATATYPES
from app.registry import VersionState
from app.security.tokens import Access
from app.servable import SERVING_SIGNATURE, TensorSpec

PROTOCOL = "grpc_tfserving"
SIGNATURE_DEF_FIELD = "signature_def"
_STATES = {
    state: get_model_status_pb2.ModelVersionStatus.State.Value(state.value)
    for state in VersionState
}
_ERROR_CODE_UNKNOWN = 2  # tensorflow.error.Code.UNKNOWN, what a failed load reports


def model_spec(spec: Any) -> tuple[str, int | None, str | None]:
    """Name, version (None: newest ready) and label of a `ModelSpec`."""
    if not spec.name:
        raise InvalidInput("model_spec.name is required")
    version = None
    if spec.HasField("version"):
        version = spec.version.value
        if version <= 0:
            raise InvalidInput(f"model version must be a positive integer, got {version}")
    return spec.name, version, spec.version_label or None


def _check_signature(name: str) -> None:
    if name and name != SERVING_SIGNATURE:
        raise InvalidInput(
            f"serving signature name {name[:80]!r} not found; this model has {SERVING_SIGNATURE!r}"
        )


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, front: FrontEnd) -> None:
        self.front = front

    @rpc(Access.API, PROTOCOL)
    async def Predict(self, request: Any, call: Call) -> Any:
        front = self.front
        plane = front.dataplane
        name, version, label = model_spec(request.model_spec)
        model_label(call, name)
        _check_signature(request.model_spec.signature_name)
        outputs = tuple(request.output_filter) or None
        if outputs is not None and len(set(outputs)) != len(outputs):
            raise InvalidInput("output_filter names an output more than once")
        if request.ByteSize() > front.inline_parse_bytes:  # big typed lists: off the loop
            inputs = await asyncio.to_thread(_decode_inputs, request, plane.limits)
        else:
            inputs = _decode_inputs(request, plane.limits)
        result = await plane.infer(
            name, inputs, version=version, label=label, outputs=outputs, timeout_s=call.timeout_s
        )
        call.served(name, result.model_version)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = result.model_version
        response.model_spec.signature_name = SERVING_SIGNATURE
        for key in outputs if outputs is not None else result.outputs:
            fill_tensor(response.outputs[key], result.outputs[key])
        return response

    @rpc(Access.API, PROTOCOL)
    async def GetModelMetadata(self, request: Any, call: Call) -> Any:
        name, version, label = model_spec(request.model_spec)
        model_label(call, name)
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidInput(
                "GetModelMetadataRequest must name at least one metadata_field "
                f"({SIGNATURE_DEF_FIELD!r})"
            )
        for field in fields:
            if field != SIGNATURE_DEF_FIELD:
                raise InvalidInput(
                    f"metadata field {field[:80]!r} is not supported; the one "
                    f"supported is {SIGNATURE_DEF_FIELD!r}"
                )
        metadata = self.front.dataplane.model_metadata(name, version, label)
        call.served(name, metadata.version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = metadata.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(_signature_def_map(metadata))
        return response

    @rpc(Access.API, PROTOCOL)
    async def Classify(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_no_signature("Classify", "classification"))

    @rpc(Access.API, PROTOCOL)
    async def Regress(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_no_signature("Regress", "regression"))

    @rpc(Access.API, PROTOCOL)
    async def MultiInference(self, request: Any, call: Call) -> Any:
        raise Unimplemented(_no_signature("MultiInference", "classification or regression"))


def _no_signature(method: str, kind: str) -> str:
    return (
        f"{method} needs a {kind} signature; the models served here have only the "
        f"predict signature {SERVING_SIGNATURE!r}: use Predict"
    )


def _decode_inputs(request: Any, limits: Any) -> dict[str, Any]:
    counts: list[int] = []
    return {
        key: tensor_to_array(key, tensor, limits, counts) for key, tensor in request.inputs.items()
    }


def _tensor_info(spec: TensorSpec, tensor_name: str) -> meta_graph_pb2.TensorInfo:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in spec.shape_with_minus_one]
    )
    dtype = types_pb2.DataType.Value(TF_DATATYPES.get(spec.tf_dtype, "DT_INVALID"))
    return meta_graph_pb2.TensorInfo(name=tensor_name, dtype=dtype, tensor_shape=shape)


def _signature_def_map(metadata: ModelMetadata) -> get_model_metadata_pb2.SignatureDefMap:
    """The `serving_default` signature with the tensor names TF Serving shows (as on /v1)."""
    signature = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for key, spec in metadata.inputs.items():
        signature.inputs[key].CopyFrom(_tensor_info(spec, f"{SERVING_SIGNATURE}_{key}:0"))
    for index, (key, spec) in enumerate(metadata.outputs.items()):
        signature.outputs[key].CopyFrom(_tensor_info(spec, f"StatefulPartitionedCall:{index}"))
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature_map.signature_def[SERVING_SIGNATURE].CopyFrom(signature)
    return signature_map


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, front: FrontEnd) -> None:
        self.front = front

    @rpc(Access.API, PROTOCOL)
    async def GetModelStatus(self, request: Any, call: Call) -> Any:
        name, version, label = model_spec(request.model_spec)
        model_label(call, name)
        plane = self.front.dataplane
        if label is not None:
            version = plane.registry.resolve(name, version, label).version
        statuses = plane.model_status(name, version)
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[_version_status(status) for status in statuses]
        )

    @rpc(Access.ADMIN, PROTOCOL)
    async def HandleReloadConfigRequest(self, request: Any, call: Call) -> Any:
        raise Unimplemented(
            "reloading a model config over gRPC is not supported: edit the "
            "repository config file (config.yaml), which the server re-reads "
            "when it changes, or use the v2 repository extension"
        )


def _version_status(status: VersionStatus) -> get_model_status_pb2.ModelVersionStatus:
    entry = get_model_status_pb2.ModelVersionStatus(
        version=status.version, state=_STATES[status.state]
    )
    if status.error:
        entry.status.error_code = _ERROR_CODE_UNKNOWN
        entry.status.error_message = status.error
    return entry
