"""`tensorflow.serving.PredictionService` and `ModelService`: TensorFlow Serving's gRPC API.

The messages are tensorflow-serving-api's generated modules. `Predict` takes the model by name
and version, `version_label` or neither (the newest ready version), any signature of the
version (`serving_default` when none is named), any subset of outputs (`output_filter`).
`GetModelMetadata` answers the `signature_def` field with a `SignatureDefMap` of every
signature, as TF Serving does. `Classify` and `Regress` run `tf.Example`s through a
classification or regression signature (`app.examples`). `MultiInference` is UNIMPLEMENTED
(several signatures over one set of examples: call Classify and Regress), and so is
`HandleReloadConfigRequest`: the repository config file (`config.yaml`, re-read when it
changes) is how this server is told.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from app.dataplane import ModelMetadata, VersionStatus
from app.errors import InvalidInput
from app.protocols.grpc.calls import Call, FrontEnd, model_label, rpc
from app.protocols.grpc.status import Unimplemented
from app.protocols.grpc.tensor_proto import fill_tensor, tensor_to_array
from app.protocols.tfserving import TF_DATATYPES
from app.registry import VersionState
from app.security.tokens import Access
from app.servable import TensorSpec
from app.signatures import DEFAULT_SIGNATURE, Signature

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


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, front: FrontEnd) -> None:
        self.front = front

    @rpc(Access.API, PROTOCOL)
    async def Predict(self, request: Any, call: Call) -> Any:
        front = self.front
        plane = front.dataplane
        name, version, label = model_spec(request.model_spec)
        model_label(call, name)
        signature = request.model_spec.signature_name or None
        outputs = tuple(request.output_filter) or None
        if outputs is not None and len(set(outputs)) != len(outputs):
            raise InvalidInput("output_filter names an output more than once")
        if request.ByteSize() > front.inline_parse_bytes:  # big typed lists: off the loop
            inputs = await asyncio.to_thread(_decode_inputs, request, plane.limits)
        else:
            inputs = _decode_inputs(request, plane.limits)
        result = await plane.infer(
            name,
            inputs,
            version=version,
            label=label,
            outputs=outputs,
            timeout_s=call.timeout_s,
            signature=signature,
        )
        call.served(name, result.model_version)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = result.model_version
        response.model_spec.signature_name = signature or DEFAULT_SIGNATURE
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
        response = classification_pb2.ClassificationResponse()
        found = await self._examples_through(request, call, response, self.front.dataplane.classify)
        for row in range(found.rows):
            classes = response.result.classifications.add().classes
            for class_label, score in found.pairs(row):
                classes.add(label=class_label, score=float(score))
        return response

    @rpc(Access.API, PROTOCOL)
    async def Regress(self, request: Any, call: Call) -> Any:
        response = regression_pb2.RegressionResponse()
        values = await self._examples_through(request, call, response, self.front.dataplane.regress)
        for value in values.tolist():
            response.result.regressions.add(value=value)
        return response

    async def _examples_through(self, request: Any, call: Call, response: Any, method: Any) -> Any:
        """Run a Classify/Regress request's examples through `method` of the data plane and
        fill the response's model spec; what the method found (classifications or values)."""
        name, version, label = model_spec(request.model_spec)
        model_label(call, name)
        signature = request.model_spec.signature_name or None
        examples, context = _examples(request.input)
        result, found = await method(
            name,
            examples,
            context,
            version=version,
            label=label,
            signature=signature,
            timeout_s=call.timeout_s,
        )
        call.served(name, result.model_version)
        _answered_spec(response.model_spec, name, result.model_version, signature)
        return found

    @rpc(Access.API, PROTOCOL)
    async def MultiInference(self, request: Any, call: Call) -> Any:
        raise Unimplemented(
            "MultiInference is not supported: call Classify and Regress, or Predict"
        )


def _answered_spec(spec: Any, name: str, version: int, signature: str | None) -> None:
    spec.name = name
    spec.version.value = version
    spec.signature_name = signature or DEFAULT_SIGNATURE


def _examples(model_input: Any) -> tuple[list[Any], Any | None]:
    """The examples (and context) of a Classify/Regress `Input`."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return list(model_input.example_list.examples), None
    if kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        return list(with_context.examples), with_context.context
    raise InvalidInput("the request's input needs example_list or example_list_with_context")


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


def _signature_def(signature: Signature) -> meta_graph_pb2.SignatureDef:
    definition = meta_graph_pb2.SignatureDef(method_name=signature.method_name)
    for key, spec in signature.inputs.items():
        definition.inputs[key].CopyFrom(_tensor_info(spec, signature.input_tensor_names[key]))
    for key, spec in signature.outputs.items():
        definition.outputs[key].CopyFrom(_tensor_info(spec, signature.output_tensor_names[key]))
    return definition


def _signature_def_map(metadata: ModelMetadata) -> get_model_metadata_pb2.SignatureDefMap:
    """Every signature with the tensor names TF Serving shows (as on /v1)."""
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in metadata.signatures.items():
        signature_map.signature_def[key].CopyFrom(_signature_def(signature))
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
