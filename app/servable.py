"""One loaded model version: its serving signature, its tensor specs and a thread-safe predict.

This is the only module that calls TensorFlow on the request path. It uses the SavedModel's
`serving_default` concrete function directly (about 1 ms a call here, where Keras'
`model.predict` costs about 50 ms), so predict is synchronous and meant to run in a bounded
worker thread (`app.batching`), never on the event loop. A version folder with a
Keras archive instead (`model.keras`) is traced once at load time into the same kind of concrete
function (`app.keras_archive`); nothing after loading tells the two apart.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import InvalidInput
from app.gather_indices import gather_index_limits
from app.keras_archive import KerasLoadError, KerasOptions, load_keras_archive
from app.redaction import public_text
from app.repository import KERAS_ARCHIVE, check_version_files, read_metadata
from app.signatures import (
    DEFAULT_SIGNATURE,
    Signature,
    SignatureDef,
    build_signature,
    read_signature_defs,
)
from app.warmup import WarmupLimits, read_warmup_requests

log = logging.getLogger(__name__)

SERVING_SIGNATURE = DEFAULT_SIGNATURE
PLATFORMS = {"savedmodel": "tensorflow_savedmodel", "keras": "keras"}
STRING_DTYPE = np.dtype(object)
# Variable non-batch dimensions are warmed up with this size (the smallest OCR strip width).
WARMUP_VARIABLE_DIM = 28


class ModelLoadError(RuntimeError):
    """The version cannot be served (unreadable SavedModel, missing signature, bad spec)."""


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of the serving signature.

    `dtype` is the numpy dtype a caller passes or gets (`object` for strings, whose elements
    are `bytes`); `tf_dtype` is TensorFlow's name for it ("float32", "string", ...), which the
    protocol adapters map to their own type names. `shape` has `None` for variable dimensions,
    the batch dimension included. `index_limit`: an integer input that feeds an Embedding
    holds indices, each in `[0, index_limit)` (the data plane checks them; None: no bound known).
    """

    name: str
    dtype: np.dtype
    tf_dtype: str
    shape: tuple[int | None, ...]
    index_limit: int | None = None

    @property
    def is_string(self) -> bool:
        return self.tf_dtype == "string"

    @property
    def shape_with_minus_one(self) -> list[int]:
        """The shape as TF Serving and KServe print it, -1 for variable dimensions."""
        return [-1 if dim is None else dim for dim in self.shape]


def _spec_from_tf(name: str, tf_spec: Any) -> TensorSpec:
    if tf_spec.shape.rank is None:
        raise ModelLoadError(f"signature tensor {name!r} has an unknown rank; not supported")
    dtype = tf_spec.dtype
    numpy_dtype = STRING_DTYPE if dtype.name == "string" else np.dtype(dtype.as_numpy_dtype)
    return TensorSpec(
        name=name, dtype=numpy_dtype, tf_dtype=dtype.name, shape=tuple(tf_spec.shape.as_list())
    )


class Servable:
    """A loaded version. Build it with `Servable.load`; `predict` may be called from any thread.

    Over ~200 lines because both loaders (SavedModel, Keras archive) live here: each builds the
    same object from its own format, and keeping them beside `predict` and the warm-up keeps
    what a loaded version guarantees (named specs, index limits, signatures) in one place.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        metadata: dict[str, Any],
        saved_model: Any,
        function: Any,
        warmup_limits: WarmupLimits | None = None,
        index_limits: dict[str, int] | None = None,
        platform: str = PLATFORMS["savedmodel"],
        other_functions: Mapping[str, Any] | None = None,
        signature_defs: Mapping[str, SignatureDef] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.metadata = metadata
        self.platform = platform
        self.warmup_limits = warmup_limits or WarmupLimits()
        # The loaded object owns the variables the function reads: keep it alive with it.
        self._saved_model = saved_model
        self._function = function
        _, keyword_specs = function.structured_input_signature
        limits = index_limits or {}
        self.inputs: dict[str, TensorSpec] = {
            key: dataclasses.replace(_spec_from_tf(key, spec), index_limit=limits.get(key))
            for key, spec in sorted(keyword_specs.items())
        }
        outputs = function.structured_outputs
        if not isinstance(outputs, dict):
            raise ModelLoadError(f"{SERVING_SIGNATURE} must return a dict of named outputs")
        self.outputs: dict[str, TensorSpec] = {
            key: _spec_from_tf(key, spec) for key, spec in sorted(outputs.items())
        }
        if not self.inputs:
            raise ModelLoadError(f"{SERVING_SIGNATURE} takes no named inputs")
        defs = signature_defs or {}
        self.signatures: dict[str, Signature] = {
            SERVING_SIGNATURE: build_signature(
                SERVING_SIGNATURE, self.inputs, self.outputs, defs.get(SERVING_SIGNATURE)
            )
        }
        self._functions: dict[str, Any] = {SERVING_SIGNATURE: function}
        for index, (key, other) in enumerate(sorted((other_functions or {}).items()), start=1):
            if key != SERVING_SIGNATURE:
                self._add_signature(key, other, defs.get(key), index)
        self.load_seconds = 0.0

    def _add_signature(
        self, key: str, function: Any, definition: SignatureDef | None, index: int
    ) -> None:
        """Serve one more signature; one this server cannot serve (positional or unknown-rank
        tensors, no dict of outputs) is left out with a warning, and the rest still load."""
        try:
            _, keyword_specs = function.structured_input_signature
            outputs = function.structured_outputs
            if not keyword_specs or not isinstance(outputs, dict):
                raise ModelLoadError("it needs named inputs and a dict of named outputs")
            limits = _saved_model_index_limits(self.name, self.version, {key: function}, key)
            inputs = {
                k: dataclasses.replace(_spec_from_tf(k, spec), index_limit=limits.get(k))
                for k, spec in sorted(keyword_specs.items())
            }
            output_specs = {k: _spec_from_tf(k, spec) for k, spec in sorted(outputs.items())}
        except ModelLoadError as exc:
            log.warning(
                "%s version %d: signature %r not served: %s", self.name, self.version, key, exc
            )
            return
        self.signatures[key] = build_signature(key, inputs, output_specs, definition, index)
        self._functions[key] = function

    @classmethod
    def load(
        cls,
        name: str,
        version: int,
        path: Path,
        warm_up: bool = True,
        warmup_limits: WarmupLimits | None = None,
        keras_options: KerasOptions | None = None,
    ) -> Servable:
        """Load the SavedModel (or Keras archive) at `path`, read its signature and (by default)
        warm it up.

        Every failure becomes a `ModelLoadError` whose message is what model status reports; it
        names the model and version (TensorFlow's own words may still carry a path: the
        registry rewrites those, `app.redaction`). The folder is checked first
        (`check_version_files`): TensorFlow would block for ever on a FIFO.
        """
        started = time.perf_counter()
        try:
            model_format = check_version_files(path)
            metadata = read_metadata(path)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load SavedModel of {name} version {version}: {_first_line(exc)}"
            ) from exc
        if model_format == "keras":
            servable = cls._from_keras(
                name, version, path, metadata, warmup_limits, keras_options or KerasOptions()
            )
        else:
            servable = cls._from_saved_model(name, version, path, metadata, warmup_limits)
        if warm_up:
            try:
                servable.warm_up()
            except Exception as exc:
                raise ModelLoadError(
                    f"warm-up of {name} version {version} failed: {_first_line(exc)}"
                ) from exc
        servable.load_seconds = time.perf_counter() - started
        log.info(
            "loaded %s version %d from %s in %.2f s", name, version, path, servable.load_seconds
        )
        return servable

    @classmethod
    def _from_saved_model(
        cls,
        name: str,
        version: int,
        path: Path,
        metadata: dict[str, Any],
        warmup_limits: WarmupLimits | None,
    ) -> Servable:
        import tensorflow as tf

        try:
            saved_model = tf.saved_model.load(str(path))
        except Exception as exc:  # TF raises many types for unreadable models
            raise ModelLoadError(
                f"cannot load SavedModel of {name} version {version}: {_first_line(exc)}"
            ) from exc
        signatures = getattr(saved_model, "signatures", {})
        if SERVING_SIGNATURE not in signatures:
            raise ModelLoadError(
                f"SavedModel of {name} version {version} has no "
                f"{SERVING_SIGNATURE!r} signature (it has {sorted(signatures)})"
            )
        return cls(
            name,
            version,
            path,
            metadata,
            saved_model,
            signatures[SERVING_SIGNATURE],
            warmup_limits,
            index_limits=_saved_model_index_limits(name, version, signatures),
            other_functions=dict(signatures),
            signature_defs=read_signature_defs(path),
        )

    @classmethod
    def _from_keras(
        cls,
        name: str,
        version: int,
        path: Path,
        metadata: dict[str, Any],
        warmup_limits: WarmupLimits | None,
        options: KerasOptions,
    ) -> Servable:
        try:
            loaded = load_keras_archive(path / KERAS_ARCHIVE, options)
        except KerasLoadError as exc:
            raise ModelLoadError(
                f"cannot load {KERAS_ARCHIVE} of {name} version {version}: {exc}"
            ) from exc
        return cls(
            name,
            version,
            path,
            metadata,
            loaded.model,
            loaded.function,
            warmup_limits,
            index_limits=loaded.index_limits,
            platform=PLATFORMS["keras"],
        )

    def predict(
        self, inputs: dict[str, np.ndarray], signature: str = SERVING_SIGNATURE
    ) -> dict[str, np.ndarray]:
        """Run a signature (`serving_default` unless named) on inputs validated against it;
        string outputs come back as `bytes` objects.

        A value the graph itself rejects (TensorFlow's InvalidArgumentError) is the caller's
        mistake: `InvalidInput`. Wrong names or shapes never get here (the data plane checks
        them), so anything else is a server bug and stays a 500.
        """
        import tensorflow as tf

        try:
            result = self._functions[signature](**inputs)
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidInput(
                f"model {self.name!r} version {self.version} rejected the input: "
                f"{tf_error_text(exc)}"
            ) from exc
        return {key: value.numpy() for key, value in result.items()}

    def warm_up(self) -> None:
        """Replay the version's warm-up requests, so the first request does not pay set-up.

        The requests come from TF Serving's `assets.extra/tf_serving_warmup_requests` when the
        version ships one (`app.warmup`), else from generated inputs.
        """
        for inputs in read_warmup_requests(self.path, self.warmup_limits) or self.warmup_inputs():
            self.predict(inputs)
        self._warm_up_other_signatures()

    def _warm_up_other_signatures(self) -> None:
        """One generated call to each signature besides `serving_default`: the first call of a
        restored signature sets it up (35 to 125 ms measured here on a busy machine, under 5 ms
        after), which no request should pay. Best effort: a classify or regress signature may
        refuse the empty examples it is given, and that must not fail the version's load."""
        for key, signature in self.signatures.items():
            if key == SERVING_SIGNATURE:
                continue
            try:
                self.predict(_zeros(signature.inputs, 1), key)
            except Exception as exc:  # the set-up happened; only this input was refused
                log.debug("%s version %d: warm-up of %r: %s", self.name, self.version, key, exc)

    def warmup_inputs(self) -> list[dict[str, np.ndarray]]:
        """Zero-filled inputs of batch sizes 1 and 2 matching the signature."""
        return [_zeros(self.inputs, batch) for batch in (1, 2)]


def _zeros(specs: Mapping[str, TensorSpec], batch: int) -> dict[str, np.ndarray]:
    return {
        key: np.zeros(
            _concrete_shape(spec, batch),
            dtype=spec.dtype if not spec.is_string else np.dtype("S1"),
        )
        for key, spec in specs.items()
    }


def _concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    dims = [WARMUP_VARIABLE_DIM if dim is None else dim for dim in spec.shape]
    if spec.shape and spec.shape[0] is None:
        dims[0] = batch
    return tuple(dims)


def _saved_model_index_limits(
    name: str, version: int, signatures: Any, key: str = SERVING_SIGNATURE
) -> dict[str, int]:
    """Integer inputs of signature `key` that index a variable's rows (`app.gather_indices`).
    Reading the graph is best effort: if it fails, the version serves without the check."""
    function = signatures[key]
    try:
        limits = gather_index_limits(function)
        _, keyword_specs = function.structured_input_signature
    except Exception:  # an unusual graph must not stop a model that TensorFlow loaded
        log.warning("%s version %d: index inputs not found in the graph", name, version)
        return {}
    return {
        key: limit
        for key, limit in limits.items()
        if key in keyword_specs and keyword_specs[key].dtype.is_integer
    }


# What TensorFlow wraps around the one line that says what was wrong with the values: the
# "Graph execution error:" heading, the Python stack the op was defined at (a loaded SavedModel
# says "<stack traces unavailable>" instead), the node name.
_TF_NOISE = re.compile(
    r"^(Graph execution error:|Detected at node |File \"|<stack traces unavailable>|\[\[|\{\{)"
)
_TF_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")
MAX_TF_ERROR_CHARS = 300


def tf_error_text(exc: BaseException) -> str:
    """The line of a TensorFlow runtime error that describes the values (`indices[0,1] = 12 is
    not in [0, 10)`), without the stack, node names or any filesystem path, and bounded."""
    text = str(getattr(exc, "message", "") or exc)
    lines = [_TF_OP_SUFFIX.sub("", line).strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not _TF_NOISE.match(line)]
    shown = public_text(useful[0] if useful else "TensorFlow refused the values")
    return shown if len(shown) <= MAX_TF_ERROR_CHARS else shown[:MAX_TF_ERROR_CHARS] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
