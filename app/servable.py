"""One loaded model version: its serving signature, its tensor specs and a thread-safe predict.

This is the only module that calls TensorFlow on the request path. It uses the SavedModel's
`serving_default` concrete function directly (about 1 ms a call here, where Keras'
`model.predict` costs about 50 ms), so predict is synchronous and meant to run in a bounded
worker thread (`app.runners`, `app.batching`), never on the event loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import InvalidInput
from app.repository import check_version_files, read_metadata
from app.warmup import WarmupLimits, read_warmup_requests

log = logging.getLogger(__name__)

SERVING_SIGNATURE = "serving_default"
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
    the batch dimension included.
    """

    name: str
    dtype: np.dtype
    tf_dtype: str
    shape: tuple[int | None, ...]

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
    """A loaded version. Build it with `Servable.load`; `predict` may be called from any thread."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        metadata: dict[str, Any],
        saved_model: Any,
        function: Any,
        warmup_limits: WarmupLimits | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.metadata = metadata
        self.warmup_limits = warmup_limits or WarmupLimits()
        # The loaded object owns the variables the function reads: keep it alive with it.
        self._saved_model = saved_model
        self._function = function
        _, keyword_specs = function.structured_input_signature
        self.inputs: dict[str, TensorSpec] = {
            key: _spec_from_tf(key, spec) for key, spec in sorted(keyword_specs.items())
        }
        outputs = function.structured_outputs
        if not isinstance(outputs, dict):
            raise ModelLoadError(f"{SERVING_SIGNATURE} must return a dict of named outputs")
        self.outputs: dict[str, TensorSpec] = {
            key: _spec_from_tf(key, spec) for key, spec in sorted(outputs.items())
        }
        if not self.inputs:
            raise ModelLoadError(f"{SERVING_SIGNATURE} takes no named inputs")
        self.load_seconds = 0.0

    @classmethod
    def load(
        cls,
        name: str,
        version: int,
        path: Path,
        warm_up: bool = True,
        warmup_limits: WarmupLimits | None = None,
    ) -> Servable:
        """Load the SavedModel at `path`, read its signature and (by default) warm it up.

        Every failure becomes a `ModelLoadError` whose message is what model status reports; it
        names the model and version (TensorFlow's own words may still carry a path: the
        registry rewrites those, `app.redaction`). The folder is checked first
        (`check_version_files`): TensorFlow would block for ever on a FIFO.
        """
        import tensorflow as tf

        started = time.perf_counter()
        try:
            check_version_files(path)
            metadata = read_metadata(path)
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
        servable = cls(
            name, version, path, metadata, saved_model, signatures[SERVING_SIGNATURE], warmup_limits
        )
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

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature on validated inputs; string outputs come back as `bytes` objects.

        A value the graph itself rejects (TensorFlow's InvalidArgumentError) is the caller's
        mistake: `InvalidInput`. Wrong names or shapes never get here (the data plane checks
        them), so anything else is a server bug and stays a 500.
        """
        import tensorflow as tf

        try:
            result = self._function(**inputs)
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidInput(
                f"model {self.name!r} version {self.version} rejected the input: {_first_line(exc)}"
            ) from exc
        return {key: value.numpy() for key, value in result.items()}

    def warm_up(self) -> None:
        """Replay the version's warm-up requests, so the first request does not pay set-up.

        The requests come from TF Serving's `assets.extra/tf_serving_warmup_requests` when the
        version ships one (`app.warmup`), else from generated inputs.
        """
        for inputs in read_warmup_requests(self.path, self.warmup_limits) or self.warmup_inputs():
            self.predict(inputs)

    def warmup_inputs(self) -> list[dict[str, np.ndarray]]:
        """Zero-filled inputs of batch sizes 1 and 2 matching the signature."""
        return [
            {
                key: np.zeros(
                    _concrete_shape(spec, batch),
                    dtype=spec.dtype if not spec.is_string else np.dtype("S1"),
                )
                for key, spec in self.inputs.items()
            }
            for batch in (1, 2)
        ]


def _concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    dims = [WARMUP_VARIABLE_DIM if dim is None else dim for dim in spec.shape]
    if spec.shape and spec.shape[0] is None:
        dims[0] = batch
    return tuple(dims)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
