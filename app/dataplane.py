"""What every protocol calls: health, metadata and inference, with no HTTP in sight.

Protocol adapters (TF Serving REST, KServe v2, the task endpoints) turn their wire format into
`dict[str, np.ndarray]`, call `DataPlane.infer`, and turn the `InferResult` back. Validation
against the signature lives here, once, so every protocol gives the same 400 messages and the
runners (batcher included) only ever see inputs of the right names, dtypes and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.devices import DeviceReport
from app.errors import InvalidInput, Unavailable
from app.registry import ModelRegistry, VersionState
from app.servable import Servable, TensorSpec

SERVER_NAME = "kerasserve"
SERVER_VERSION = "0.1.0"
PLATFORM = "tensorflow_savedmodel"


@dataclass(frozen=True)
class InferResult:
    model_name: str
    model_version: int
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class VersionStatus:
    """One version's state for status routes (`error` set when loading failed)."""

    version: int
    state: VersionState
    error: str | None


@dataclass(frozen=True)
class ModelMetadata:
    """A ready version's signature and training metadata, for the protocols to format."""

    name: str
    version: int
    versions: list[int]  # every ready version of the model
    platform: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    metadata: dict[str, Any]


class DataPlane:
    """Transport-independent service operations over one `ModelRegistry`."""

    def __init__(self, registry: ModelRegistry, device_report: DeviceReport | None,
                 extensions: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self.device_report = device_report
        self.extensions = list(extensions)
        self.shutting_down = False

    # ---- health and metadata ----------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Initial load (warm-up included) finished and not shutting down."""
        return self.registry.initial_load_done and not self.shutting_down

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": list(self.extensions),
            "device": self.device_report.as_dict() if self.device_report else None,
        }

    def model_names(self) -> list[str]:
        return self.registry.model_names()

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every known version of `name` (or just `version`): `NotFound` if unknown."""
        entries = ([self.registry.get_version(name, version)] if version is not None
                   else self.registry.versions(name))
        return [VersionStatus(e.version, e.state, e.error) for e in entries]

    def model_ready(self, name: str, version: int | None = None) -> bool:
        """False while loading or after a failure; `NotFound` for unknown names/versions."""
        if version is not None:
            return self.registry.get_version(name, version).ready and not self.shutting_down
        return (any(e.ready for e in self.registry.versions(name))
                and not self.shutting_down)

    def model_metadata(self, name: str, version: int | None = None,
                       label: str | None = None) -> ModelMetadata:
        entry = self.registry.resolve(name, version, label)
        servable = _loaded(entry.servable, name, entry.version)
        return ModelMetadata(
            name=name, version=entry.version,
            versions=[e.version for e in self.registry.versions(name) if e.ready],
            platform=PLATFORM, inputs=servable.inputs, outputs=servable.outputs,
            metadata=servable.metadata,
        )

    def input_specs(self, name: str, version: int | None = None,
                    label: str | None = None) -> dict[str, TensorSpec]:
        """The signature inputs of the version a request would get (cheap: no copying)."""
        entry = self.registry.resolve(name, version, label)
        return _loaded(entry.servable, name, entry.version).inputs

    # ---- inference ------------------------------------------------------------------------

    async def infer(self, name: str, inputs: dict[str, np.ndarray], version: int | None = None,
                    label: str | None = None) -> InferResult:
        """Validate `inputs` against the version's signature and run them through its runner."""
        if self.shutting_down:
            raise Unavailable("the server is shutting down")
        async with self.registry.lease(name, version, label) as entry:
            servable = _loaded(entry.servable, name, entry.version)
            checked = validate_inputs(servable, inputs)
            runner = entry.runner
            if runner is None:
                raise Unavailable(f"model {name!r} version {entry.version} is unloading")
            outputs = await runner.submit(checked)
        return InferResult(model_name=name, model_version=entry.version, outputs=outputs)


def _loaded(servable: Servable | None, name: str, version: int) -> Servable:
    if servable is None:
        raise Unavailable(f"model {name!r} version {version} is unloading")
    return servable


def validate_inputs(servable: Servable, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes against the signature; cast to the signature's dtypes.

    Numbers are cast when numpy calls it a same-kind cast (ints to floats: JSON has no float32;
    floats to ints is refused). All inputs must share the batch size, which must not be zero.
    """
    model = f"model {servable.name!r}"
    expected, given = set(servable.inputs), set(inputs)
    if expected != given:
        raise InvalidInput(f"{model} expects inputs {sorted(expected)}, got {sorted(given)}")
    checked: dict[str, np.ndarray] = {}
    batch: int | None = None
    for key, spec in servable.inputs.items():
        array = inputs[key]
        array = _cast(array, spec, model)
        if array.ndim != len(spec.shape) or any(
                want is not None and want != got for want, got in zip(spec.shape, array.shape,
                                                                       strict=False)):
            raise InvalidInput(f"{model} input {key!r} expects shape {spec.shape_with_minus_one}, "
                               f"got {list(array.shape)}")
        if array.ndim:
            if array.shape[0] == 0:
                raise InvalidInput(f"{model} input {key!r} has an empty batch (0 rows)")
            if batch is not None and array.shape[0] != batch:
                raise InvalidInput(f"{model} inputs disagree on the batch size: "
                                   f"{key!r} has {array.shape[0]} rows, others {batch}")
            batch = array.shape[0]
        checked[key] = array
    return checked


def _cast(array: np.ndarray, spec: TensorSpec, model: str) -> np.ndarray:
    if spec.is_string:
        if array.dtype.kind in "SUO":
            return array if array.dtype.kind == "O" else array.astype(object)
    elif array.dtype == spec.dtype:
        return array
    elif array.dtype.kind in "biuf" and np.can_cast(array.dtype, spec.dtype, "same_kind"):
        return array.astype(spec.dtype)
    raise InvalidInput(f"{model} input {spec.name!r} expects dtype {spec.tf_dtype}, "
                       f"got {_dtype_words(array.dtype)}")


def _dtype_words(dtype: np.dtype) -> str:
    return {"S": "bytes", "U": "string", "O": "objects (strings, bytes or mixed values)"}.get(
        dtype.kind, dtype.name)
