"""A Keras 3 archive (`<version>/model.keras`) turned, once at load time, into a serving function.

The archive is read with Keras (`safe_mode` on unless the operator allows Python bytecode), and
the model's call is traced into one TensorFlow concrete function whose keyword arguments and
result keys are the model's own input and output names (nested structures flattened to names).
From then on `app.servable.Servable` treats it exactly like a SavedModel's `serving_default`:
the request path calls the traced graph, never `model.predict` (about 50 ms a call here against
under 1 ms for the graph).

Loading also reads the Keras graph for which integer inputs feed an `Embedding` directly, so the
data plane can refuse an index outside `[0, input_dim)` before TensorFlow sees it: the traced
`Embedding` wraps a negative index around numpy-style (row `input_dim + i`, a silently wrong
answer), and one past the end is an opaque graph error.
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNSAFE_OPTION = "--allow-unsafe-deserialization (KERASSERVE_ALLOW_UNSAFE_DESERIALIZATION=true)"
MODULES_OPTION = "--custom-objects-module (KERASSERVE_CUSTOM_OBJECTS_MODULES)"
_MISSING_OBJECT = re.compile(r"Could not locate (class|function) '([^']+)'")
_REGISTERED_NAME = re.compile(r"'registered_name': '([^']+)'")
# Keras deserialization keeps process-wide state (the safe-mode scope, object registration and
# layer name counters): one archive at a time, while versions may load in parallel threads.
_KERAS_LOAD_LOCK = threading.Lock()


class KerasLoadError(RuntimeError):
    """The archive cannot be served; the message says why in words an operator can act on."""


@dataclass(frozen=True)
class KerasOptions:
    """What loading a `.keras` archive may do: modules imported first (they register custom
    layers and objects), and whether Python bytecode (a `Lambda`'s function) may be loaded."""

    custom_objects_modules: tuple[str, ...] = ()
    allow_unsafe_deserialization: bool = False


@dataclass(frozen=True)
class KerasServing:
    """A loaded archive: the model (it owns the variables), the traced function and, per input
    name, the exclusive upper bound of the indices it may hold (inputs feeding an Embedding)."""

    model: Any
    function: Any
    index_limits: dict[str, int]


def load_keras_archive(path: Path, options: KerasOptions) -> KerasServing:
    """Load `path` (a `model.keras` file) and trace its serving function; `KerasLoadError`."""
    import keras

    for module in options.custom_objects_modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any error of the operator's module is a load error
            raise KerasLoadError(
                f"custom objects module {module!r} cannot be imported: {type(exc).__name__}: {exc}"
            ) from exc
    with _KERAS_LOAD_LOCK:
        try:
            model = keras.saving.load_model(
                str(path), compile=False, safe_mode=not options.allow_unsafe_deserialization
            )
        except Exception as exc:
            raise KerasLoadError(_load_failure(exc)) from exc
        return _serving(model)


def _serving(model: Any) -> KerasServing:
    """Trace the loaded model's call into its serving function (under the load lock: tracing
    calls the model's layers, which read the same process-wide Keras state)."""
    import keras
    import tensorflow as tf

    if not isinstance(model, keras.Model) or not _has_graph(model):
        raise KerasLoadError(
            f"the archive holds a {type(model).__name__} without declared inputs (a subclassed "
            "model); only Functional and Sequential models can be served from model.keras: "
            "export a SavedModel for this one"
        )
    input_names = _leaf_names(_structure(model, "inputs"), model.inputs, "input")
    output_names = _leaf_names(_structure(model, "outputs"), model.outputs, "output")
    structure = _structure(model, "inputs")
    leaves = keras.tree.flatten(structure)

    def serve(**named: Any) -> dict[str, Any]:
        flat = [named[input_names[id(leaf)]] for leaf in leaves]
        result = model(keras.tree.pack_sequence_as(structure, flat), training=False)
        return dict(zip(output_names.values(), keras.tree.flatten(result), strict=True))

    specs = {
        input_names[id(leaf)]: tf.TensorSpec(leaf.shape, leaf.dtype, name=_placeholder(name))
        for leaf, name in zip(leaves, input_names.values(), strict=True)
    }
    try:
        function = tf.function(serve).get_concrete_function(**specs)
    except Exception as exc:
        raise KerasLoadError(
            f"the model cannot be traced into a serving function: {type(exc).__name__}: "
            f"{_first_line(str(exc))}"
        ) from exc
    limits = {
        input_names[id(tensor)]: limit
        for tensor, limit in zip(model.inputs, _embedding_limits(model), strict=True)
        if limit is not None and tf.as_dtype(tensor.dtype).is_integer
    }
    return KerasServing(model=model, function=function, index_limits=limits)


def _has_graph(model: Any) -> bool:
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        return False


def _structure(model: Any, which: str) -> Any:
    """The model's (possibly nested) inputs or outputs; Sequential keeps only the flat list."""
    structure = getattr(model, f"_{which}_struct", None)
    if structure is not None:
        return structure
    tensors = getattr(model, which)
    return tensors[0] if len(tensors) == 1 else list(tensors)


def _leaf_names(structure: Any, tensors: list[Any], kind: str) -> dict[int, str]:
    """id(leaf) -> name, in flattening order: dict keys along the path (joined with '/'), else
    the tensor's own name (an Input's name, or the name of the layer that made an output)."""
    import keras

    names: dict[int, str] = {}
    for index, (path, leaf) in enumerate(keras.tree.flatten_with_path(structure)):
        if path and all(isinstance(part, str) for part in path):
            name = "/".join(path)
        elif kind == "input":
            name = leaf.name
        else:
            history = getattr(leaf, "_keras_history", None)
            name = history.operation.name if history is not None else f"output_{index}"
        if name in names.values():
            name = f"{kind}_{index}"
        names[id(leaf)] = name
    if len(names) != len(tensors):
        raise KerasLoadError(f"the model's {kind}s are not distinct tensors; cannot name them")
    return names


def _placeholder(name: str) -> str:
    """A graph-safe placeholder name for an input (the keyword argument keeps the real name)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return cleaned if re.match(r"[A-Za-z0-9.]", cleaned) else f"input_{cleaned}"


def _embedding_limits(model: Any) -> list[int | None]:
    """Per model input (flattened order): the smallest `input_dim` of the Embeddings it feeds
    directly, following nested Functional and Sequential models; None when it feeds none."""
    import keras

    position = {id(tensor): index for index, tensor in enumerate(model.inputs)}
    limits: list[int | None] = [None] * len(model.inputs)

    def note(index: int, limit: int | None) -> None:
        if limit is not None:
            current = limits[index]
            limits[index] = limit if current is None else min(current, limit)

    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            fed = list(getattr(node, "input_tensors", []))
            for slot, tensor in enumerate(fed):
                index = position.get(id(tensor))
                if index is None:
                    continue
                if isinstance(layer, keras.layers.Embedding) and slot == 0:
                    note(index, int(layer.input_dim))
                elif isinstance(layer, keras.Model) and _has_graph(layer):
                    inner = _embedding_limits(layer)
                    if len(inner) == len(fed):
                        note(index, inner[slot])
    return limits


def _load_failure(exc: BaseException) -> str:
    """Keras' loading error in words that say what to do."""
    text = str(exc)
    missing = _MISSING_OBJECT.search(text)
    if missing:
        kind, name = missing.groups()
        registered = _REGISTERED_NAME.search(text[missing.end() :])
        known_as = f" (registered as {registered.group(1)!r})" if registered else ""
        return (
            f"the model needs the custom {kind} {name!r}{known_as}, which no imported module "
            f"registers: name the module that defines it with {MODULES_OPTION}"
        )
    if "unsafe_deserialization" in text or "safe_mode=False" in text:
        return (
            "the archive holds Python bytecode (a Lambda layer or a lambda function), which safe "
            f"loading refuses: start the server with {UNSAFE_OPTION} only if you trust its source"
        )
    return f"{type(exc).__name__}: {_first_line(text)}"


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
