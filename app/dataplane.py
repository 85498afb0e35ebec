"""What every protocol calls: health, metadata and inference, with no HTTP in sight.

Protocol adapters (TF Serving REST, KServe v2, the task endpoints) turn their wire format into
`dict[str, np.ndarray]`, call `DataPlane.infer`, and turn the `InferResult` back. Validation
against the signature lives here, once, so every protocol gives the same 400 messages and the
runners (batcher included) only ever see inputs of the right names, dtypes and shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.devices import DeviceReport
from app.errors import InvalidInput, Unavailable
from app.limits import DEFAULT_LIMITS, TensorLimits, check_variable_dims
from app.registry import ModelRegistry, VersionState
from app.servable import Servable, TensorSpec

SERVER_NAME = "kerasserve"
SERVER_VERSION = "0.1.0"
#: The key of an input value a protocol could not name (TF Serving's unnamed row and column
#: formats): `infer` names it under the request's lease, so the signature that names it is that
#: of the version that answers, whatever reloads in between.
UNNAMED_INPUT = ""


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

    def __init__(
        self,
        registry: ModelRegistry,
        device_report: DeviceReport | None,
        extensions: tuple[str, ...] = (),
        limits: TensorLimits = DEFAULT_LIMITS,
    ) -> None:
        self.registry = registry
        self.limits = limits  # tensor rank and sizes, shared by every transport
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
        entries = (
            [self.registry.get_version(name, version)]
            if version is not None
            else self.registry.versions(name)
        )
        return [VersionStatus(e.version, e.state, e.error) for e in entries]

    def model_ready(self, name: str, version: int | None = None) -> bool:
        """False while loading or after a failure; `NotFound` for unknown names/versions."""
        if version is not None:
            return self.registry.get_version(name, version).ready and not self.shutting_down
        return any(e.ready for e in self.registry.versions(name)) and not self.shutting_down

    def model_metadata(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ModelMetadata:
        entry = self.registry.resolve(name, version, label)
        servable = _loaded(entry.servable, name, entry.version)
        return ModelMetadata(
            name=name,
            version=entry.version,
            versions=[e.version for e in self.registry.versions(name) if e.ready],
            platform=servable.platform,
            inputs=servable.inputs,
            outputs=servable.outputs,
            metadata=servable.metadata,
        )

    # ---- inference ------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        version: int | None = None,
        label: str | None = None,
        *,
        outputs: Collection[str] | None = None,
        timeout_s: float | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> InferResult:
        """Validate `inputs` against the version's signature and run them through its runner.

        `outputs`: output names the caller will read; unknown ones are refused before anything
        is computed. `timeout_s`: the caller's own deadline (the model's `timeout_s` still
        applies when shorter). `client_gone`: returns when the caller has gone away (an HTTP
        disconnect); queued work is then dropped instead of computed for nobody.
        """
        if self.shutting_down:
            raise Unavailable("the server is shutting down")
        self.limits.check_arrays(inputs)
        async with self.registry.lease(name, version, label) as entry:
            servable = _loaded(entry.servable, name, entry.version)
            if UNNAMED_INPUT in inputs:
                inputs = name_the_only_input(servable, inputs)
            if outputs is not None:
                check_outputs(servable, outputs)
            checked = validate_inputs(
                servable, inputs, max_variable_dim=self.registry.batching_for(name).max_variable_dim
            )
            runner = entry.runner
            if runner is None:
                raise Unavailable(f"model {name!r} version {entry.version} is unloading")
            if timeout_s is None and client_gone is None:
                computed = await runner.submit(checked)
            else:
                computed = await runner.submit(
                    checked, timeout_s=timeout_s, client_gone=client_gone
                )
        return InferResult(model_name=name, model_version=entry.version, outputs=computed)


def _loaded(servable: Servable | None, name: str, version: int) -> Servable:
    if servable is None:
        raise Unavailable(f"model {name!r} version {version} is unloading")
    return servable


def name_the_only_input(servable: Servable, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Give an `UNNAMED_INPUT` the name of the model's only input (TF Serving's unnamed row and
    column formats); a model with several inputs needs them named."""
    names = list(servable.inputs)
    if len(names) != 1 or len(inputs) != 1:
        raise InvalidInput(
            f"model {servable.name!r} has inputs {names}: each value must be an "
            "object that names them"
        )
    return {names[0]: inputs[UNNAMED_INPUT]}


def check_outputs(servable: Servable, names: Collection[str]) -> None:
    """Requested outputs must be outputs of the model (and so at most as many)."""
    unknown = [n for n in names if n not in servable.outputs]
    if unknown:
        raise InvalidInput(
            f"unknown output {str(unknown[0])[:80]!r}; model {servable.name!r} "
            f"has outputs {sorted(servable.outputs)}"
        )
    if len(set(names)) != len(names):
        raise InvalidInput("an output is requested more than once")


def validate_inputs(
    servable: Servable, inputs: dict[str, np.ndarray], max_variable_dim: int | None = None
) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes against the signature; cast to the signature's dtypes.

    Numbers are cast when numpy calls it a same-kind cast (ints to floats: JSON has no float32;
    floats to ints is refused). All inputs must share the batch size, which must not be zero.
    Variable non-batch dimensions (the OCR width) are at most `max_variable_dim` (413 above).
    Shapes are checked before the cast, which may copy.
    """
    model = f"model {servable.name!r}"
    expected, given = set(servable.inputs), set(inputs)
    if expected != given:
        raise InvalidInput(f"{model} expects inputs {sorted(expected)}, got {sorted(given)}")
    checked: dict[str, np.ndarray] = {}
    batch: int | None = None
    for key, spec in servable.inputs.items():
        array = inputs[key]
        target = _cast_to(array, spec, model)  # dtype errors first, before any copy
        if array.ndim != len(spec.shape) or any(
            want is not None and want != got
            for want, got in zip(spec.shape, array.shape, strict=False)
        ):
            raise InvalidInput(
                f"{model} input {key!r} expects shape {spec.shape_with_minus_one}, "
                f"got {list(array.shape)}"
            )
        if max_variable_dim is not None:
            check_variable_dims(key, spec.shape, array.shape, max_variable_dim)
        if target is not None:
            array = array.astype(target)
        if spec.index_limit is not None:
            check_indices(model, spec, array)
        if array.ndim:
            if array.shape[0] == 0:
                raise InvalidInput(f"{model} input {key!r} has an empty batch (0 rows)")
            if batch is not None and array.shape[0] != batch:
                raise InvalidInput(
                    f"{model} inputs disagree on the batch size: "
                    f"{key!r} has {array.shape[0]} rows, others {batch}"
                )
            batch = array.shape[0]
        checked[key] = array
    return checked


def check_indices(model: str, spec: TensorSpec, array: np.ndarray) -> None:
    """An input that feeds an Embedding holds row indices: each in `[0, index_limit)`, checked
    here because TensorFlow's answer to one outside is an opaque error, or on a CPU for a
    negative index, a silently wrong number."""
    if not array.size or spec.index_limit is None:
        return
    low, high = array.min(), array.max()
    if low < 0 or high >= spec.index_limit:
        bad = low if low < 0 else high
        raise InvalidInput(
            f"{model} input {spec.name!r} feeds an Embedding of {spec.index_limit} rows: "
            f"its values must be in [0, {spec.index_limit}), got {int(bad)}"
        )


def _cast_to(array: np.ndarray, spec: TensorSpec, model: str) -> np.dtype | None:
    """The dtype `array` must be cast to (None: as it is); `InvalidInput` if it cannot be."""
    if spec.is_string:
        if array.dtype.kind in "SUO":
            return None if array.dtype.kind == "O" else np.dtype(object)
    elif array.dtype == spec.dtype:
        return None
    elif array.dtype.kind in "biuf" and np.can_cast(array.dtype, spec.dtype, "same_kind"):
        return spec.dtype
    raise InvalidInput(
        f"{model} input {spec.name!r} expects dtype {spec.tf_dtype}, "
        f"got {_dtype_words(array.dtype)}"
    )


def _dtype_words(dtype: np.dtype) -> str:
    return {"S": "bytes", "U": "string", "O": "objects (strings, bytes or mixed values)"}.get(
        dtype.kind, dtype.name
    )
