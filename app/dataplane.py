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
from app.examples import Classifications, classifications, regressions, serialize
from app.limits import (
    DEFAULT_EXAMPLE_LIMITS,
    DEFAULT_LIMITS,
    ExampleLimits,
    TensorLimits,
    check_variable_dims,
)
from app.registry import ModelRegistry, VersionState
from app.servable import SERVING_SIGNATURE, Servable, TensorSpec
from app.signatures import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    EXAMPLES_INPUT,
    REGRESS_METHOD,
    Signature,
    choose,
)

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
    inputs: dict[str, TensorSpec]  # of `serving_default`
    outputs: dict[str, TensorSpec]
    metadata: dict[str, Any]
    #: every signature the version serves, `serving_default` first
    signatures: dict[str, Signature]


class DataPlane:
    """Transport-independent service operations over one `ModelRegistry`."""

    def __init__(
        self,
        registry: ModelRegistry,
        device_report: DeviceReport | None,
        extensions: tuple[str, ...] = (),
        limits: TensorLimits = DEFAULT_LIMITS,
        example_limits: ExampleLimits = DEFAULT_EXAMPLE_LIMITS,
    ) -> None:
        self.registry = registry
        self.limits = limits  # tensor rank and sizes, shared by every transport
        self.example_limits = example_limits  # classify/regress tf.Examples
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
            signatures=dict(servable.signatures),
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
        signature: str | None = None,
        method: str | None = None,
    ) -> InferResult:
        """Validate `inputs` against the version's signature and run them through its runner.

        `signature`: the signature to run (None or "": `serving_default`); an unknown name is a
        400 listing the version's signatures. `method`: the TF Serving method the caller needs
        the signature to have (classify, regress); another is a 400. Both are looked up in the
        version the lease holds, which is the version that answers.

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
            chosen = None
            if signature or method is not None:
                chosen = choose(servable.signatures, name, signature, method)
                if chosen.name == SERVING_SIGNATURE:
                    chosen = None  # the default signature's own (batched) path
            if UNNAMED_INPUT in inputs:
                inputs = name_the_only_input(servable, inputs, chosen)
            if outputs is not None:
                check_outputs(servable, outputs, chosen)
            checked = validate_inputs(
                servable,
                inputs,
                max_variable_dim=self.registry.batching_for(name).max_variable_dim,
                signature=chosen,
            )
            if chosen is not None:
                if entry.signature_runner is None:
                    raise Unavailable(f"model {name!r} version {entry.version} is unloading")
                computed = await entry.signature_runner.submit(
                    checked, timeout_s=timeout_s, client_gone=client_gone, signature=chosen.name
                )
            else:
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

    async def classify(
        self,
        name: str,
        examples: list[Any],
        context: Any | None = None,
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[InferResult, Classifications]:
        """TF Serving's Classify: `tf.train.Example`s (merged with `context`) through a
        classification signature; the labels and scores per example."""
        result = await self._run_examples(
            name,
            examples,
            context,
            version,
            label,
            signature,
            CLASSIFY_METHOD,
            timeout_s,
            client_gone,
        )
        found = classifications(signature or DEFAULT_SIGNATURE, result.outputs, len(examples))
        return result, found

    async def regress(
        self,
        name: str,
        examples: list[Any],
        context: Any | None = None,
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout_s: float | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[InferResult, np.ndarray]:
        """TF Serving's Regress: like `classify`, one float32 value per example."""
        result = await self._run_examples(
            name,
            examples,
            context,
            version,
            label,
            signature,
            REGRESS_METHOD,
            timeout_s,
            client_gone,
        )
        return result, regressions(signature or DEFAULT_SIGNATURE, result.outputs, len(examples))

    async def _run_examples(
        self,
        name: str,
        examples: list[Any],
        context: Any | None,
        version: int | None,
        label: str | None,
        signature: str | None,
        method: str,
        timeout_s: float | None,
        client_gone: Callable[[], Awaitable[object]] | None,
    ) -> InferResult:
        serialized = serialize(examples, context, self.example_limits)
        return await self.infer(
            name,
            {EXAMPLES_INPUT: serialized},
            version,
            label,
            timeout_s=timeout_s,
            client_gone=client_gone,
            signature=signature,
            method=method,
        )


def _loaded(servable: Servable | None, name: str, version: int) -> Servable:
    if servable is None:
        raise Unavailable(f"model {name!r} version {version} is unloading")
    return servable


def _specs(servable: Servable, signature: Signature | None) -> Signature | Servable:
    return servable if signature is None else signature


def name_the_only_input(
    servable: Servable, inputs: dict[str, np.ndarray], signature: Signature | None = None
) -> dict[str, np.ndarray]:
    """Give an `UNNAMED_INPUT` the name of the signature's only input (TF Serving's unnamed row
    and column formats); a signature with several inputs needs them named."""
    names = list(_specs(servable, signature).inputs)
    if len(names) != 1 or len(inputs) != 1:
        raise InvalidInput(
            f"model {servable.name!r} has inputs {names}: each value must be an "
            "object that names them"
        )
    return {names[0]: inputs[UNNAMED_INPUT]}


def check_outputs(
    servable: Servable, names: Collection[str], signature: Signature | None = None
) -> None:
    """Requested outputs must be outputs of the signature (and so at most as many)."""
    known = _specs(servable, signature).outputs
    unknown = [n for n in names if n not in known]
    if unknown:
        where = "" if signature is None else f" signature {signature.name!r}"
        raise InvalidInput(
            f"unknown output {str(unknown[0])[:80]!r}; model {servable.name!r}{where} "
            f"has outputs {sorted(known)}"
        )
    if len(set(names)) != len(names):
        raise InvalidInput("an output is requested more than once")


def validate_inputs(
    servable: Servable,
    inputs: dict[str, np.ndarray],
    max_variable_dim: int | None = None,
    signature: Signature | None = None,
) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes against the signature (`serving_default` unless given);
    cast to the signature's dtypes.

    Numbers are cast when numpy calls it a same-kind cast (ints to floats: JSON has no float32;
    floats to ints is refused). All inputs must share the batch size, which must not be zero.
    Variable non-batch dimensions (the OCR width) are at most `max_variable_dim` (413 above).
    Shapes are checked before the cast, which may copy.
    """
    model = f"model {servable.name!r}"
    if signature is not None:
        model += f" signature {signature.name!r}"
    specs = _specs(servable, signature).inputs
    expected, given = set(specs), set(inputs)
    if expected != given:
        raise InvalidInput(f"{model} expects inputs {sorted(expected)}, got {sorted(given)}")
    checked: dict[str, np.ndarray] = {}
    batch: int | None = None
    for key, spec in specs.items():
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
    here because the graph wraps a negative index around to row `index_limit + i` (a silently
    wrong answer) and answers one past the end with an opaque error."""
    if not array.size or spec.index_limit is None:
        return
    low, high = array.min(), array.max()
    if low < 0 or high >= spec.index_limit:
        bad = low if low < 0 else high
        raise InvalidInput(
            f"{model} input {spec.name!r} indexes the rows of a table of {spec.index_limit} "
            f"(an Embedding): "
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
