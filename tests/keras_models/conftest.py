"""Keras 3 archives made by the tests, a repository of them, and in-process servers over it.

Every model here is built and saved (`<repository>/<name>/1/model.keras`) by the fixtures
themselves. The Keras object that was saved stays in memory as the reference: answers over
every protocol are compared with its own call on the same inputs. Custom layers live in modules
written to `tmp_path`; after saving, their registration is removed from Keras and the module
from `sys.modules`, so only the server's own import (`custom_objects_modules`) can bring the
layer back.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.standin_model import SERVE, save_version

CUSTOM_MODULE = "kerasserve_test_custom_layers"
ORPHAN_MODULE = "kerasserve_test_orphan_layers"
EMBEDDING_ROWS = 10
EXPORTED = "exported"
MODULE = "module"
MODULE_ROWS = 7

_LAYER_SOURCE = """
import keras


@keras.saving.register_keras_serializable(package="{package}")
class {cls}(keras.layers.Layer):
    def __init__(self, offset=1.5, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, x):
        return x * 2.0 + self.offset

    def get_config(self):
        return {{**super().get_config(), "offset": self.offset}}
"""


@dataclass
class KerasRepository:
    """The repository folder, the reference models by name, and the custom-layer module path."""

    path: Path
    models: dict[str, Any]
    module_dir: Path

    def reference(self, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What Keras itself answers, by output name (the server's names for the outputs)."""
        model = self.models[name]
        structure = getattr(model, "_inputs_struct", None)
        given: Any = inputs if isinstance(structure, dict) else next(iter(inputs.values()))
        result = model(given, training=False)
        names = OUTPUT_NAMES[name]
        flat = list(result.values()) if isinstance(result, dict) else result
        if not isinstance(flat, list | tuple):
            flat = [flat]
        return {n: np.asarray(t) for n, t in zip(names, flat, strict=True)}


# The output names the server derives (dict keys, else the name of the layer that made it).
OUTPUT_NAMES = {
    "pair": ["score", "total"],
    "custom": ["shifted"],
    "embed": ["logits"],
    "lam": ["doubled"],
}


def _save(model: Any, repository: Path, name: str, version: int = 1) -> None:
    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")


def _layer_module(folder: Path, module: str, package: str, cls: str) -> Any:
    (folder / f"{module}.py").write_text(
        textwrap.dedent(_LAYER_SOURCE.format(package=package, cls=cls))
    )
    sys.path.insert(0, str(folder))
    try:
        __import__(module)
    finally:
        sys.path.remove(str(folder))
    return sys.modules[module]


def _forget(module: str, registered: str) -> None:
    """Undo the module's import and its Keras registration (what a fresh server has)."""
    import keras

    keras.saving.get_custom_objects().pop(registered, None)
    sys.modules.pop(module, None)


def build_pair() -> Any:
    import keras

    features = keras.Input((3,), name="features")
    bias = keras.Input((1,), name="bias")
    hidden = keras.layers.Concatenate()([features, bias])
    score = keras.layers.Dense(2, name="score")(hidden)
    total = keras.layers.Dense(1, name="total")(hidden)
    return keras.Model({"features": features, "bias": bias}, [score, total])


def build_embed() -> Any:
    import keras

    tokens = keras.Input((4,), dtype="int64", name="tokens")
    vectors = keras.layers.Embedding(EMBEDDING_ROWS, 3)(tokens)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(vectors))
    return keras.Model(tokens, logits)


def build_lambda() -> Any:
    import keras

    x = keras.Input((2,), name="x")
    return keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="doubled")(x))


def _save_module(path: Path) -> None:
    """A SavedModel written by plain TensorFlow: `ids` gather rows of a variable (TensorFlow's
    ResourceGather, not Keras'), `amount` must not be negative (a value TensorFlow refuses)."""
    import tensorflow as tf

    class Lookup(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.Variable(
                tf.reshape(tf.range(MODULE_ROWS * 2, dtype=tf.float32), [-1, 2])
            )

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="ids"),
                tf.TensorSpec([None], tf.float32, name="amount"),
            ]
        )
        def serve(self, ids: Any, amount: Any) -> dict[str, Any]:
            tf.debugging.assert_non_negative(amount, message="amount must not be negative")
            return {"rows": tf.gather(self.table, ids), "doubled": amount * 2.0}

    module = Lookup()
    save_version(module, path, {SERVE: module.serve})


@pytest.fixture(scope="session")
def keras_repository(tmp_path_factory: pytest.TempPathFactory) -> KerasRepository:
    """pair (two inputs, two outputs), custom (registered layer), embed (Embedding), lam
    (Lambda), orphan (a layer nobody registers at serving time) and exported (embed as a
    SavedModel written by Keras' `model.export`)."""
    import keras

    repository = tmp_path_factory.mktemp("keras-repository")
    modules = tmp_path_factory.mktemp("keras-modules")
    keras.utils.set_random_seed(3)
    models: dict[str, Any] = {"pair": build_pair(), "embed": build_embed(), "lam": build_lambda()}

    custom = _layer_module(modules, CUSTOM_MODULE, "kerasserve_tests", "Offset")
    x = keras.Input((2,), name="x")
    models["custom"] = keras.Model(x, custom.Offset(name="shifted")(x))
    orphan = _layer_module(modules, ORPHAN_MODULE, "kerasserve_orphans", "NobodyRegistersMe")
    orphan_model = keras.Model(x, orphan.NobodyRegistersMe(name="lost")(x))
    for name, model in models.items():
        _save(model, repository, name)
    _save(orphan_model, repository, "orphan")
    models["embed"].export(str(repository / EXPORTED / "1"), verbose=False)
    _save_module(repository / MODULE / "1")
    _forget(CUSTOM_MODULE, "kerasserve_tests>Offset")
    _forget(ORPHAN_MODULE, "kerasserve_orphans>NobodyRegistersMe")
    return KerasRepository(repository, models, modules)


@pytest.fixture(scope="session")
def module_path(keras_repository: KerasRepository) -> Iterator[Path]:
    """The custom-layer modules importable by name (the server imports them itself)."""
    sys.path.insert(0, str(keras_repository.module_dir))
    yield keras_repository.module_dir
    sys.path.remove(str(keras_repository.module_dir))
