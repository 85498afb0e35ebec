"""How a Keras model's structure becomes the served signature, at the `Servable` level (no
transport): nested dict outputs, a nested Sequential feeding an Embedding, a Sequential model's
own names, and a subclassed model (refused, saying what to do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.servable import ModelLoadError, Servable

RNG = np.random.default_rng(17)


def _save(model: Any, repository: Path, name: str) -> Path:
    folder = repository / name / "1"
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    return folder


def test_nested_outputs_are_flattened_to_path_names(tmp_path: Path) -> None:
    import keras

    values = keras.Input((3,), name="values")
    hidden = keras.layers.Dense(4, name="hidden")(values)
    outputs = {
        "head": {
            "mean": keras.layers.Dense(1, name="m")(hidden),
            "spread": keras.layers.Dense(2, name="s")(hidden),
        },  # fmt: skip
        "raw": keras.layers.Dense(3, name="r")(hidden),
    }
    model = keras.Model(values, outputs)
    servable = Servable.load("nested", 1, _save(model, tmp_path, "nested"))
    assert sorted(servable.outputs) == ["head/mean", "head/spread", "raw"]
    assert servable.outputs["head/spread"].shape == (None, 2)
    x = RNG.random((5, 3), dtype=np.float32)
    got = servable.predict({"values": x})
    want = model(x, training=False)
    np.testing.assert_allclose(got["head/mean"], want["head"]["mean"], atol=1e-5)
    np.testing.assert_allclose(got["head/spread"], want["head"]["spread"], atol=1e-5)
    np.testing.assert_allclose(got["raw"], want["raw"], atol=1e-5)


def test_an_embedding_inside_a_nested_sequential_bounds_the_outer_input(tmp_path: Path) -> None:
    import keras

    inner = keras.Sequential(
        [keras.Input((3,), dtype="int32"), keras.layers.Embedding(7, 2), keras.layers.Flatten()]
    )
    ids = keras.Input((3,), dtype="int32", name="ids")
    scale = keras.Input((1,), name="scale")
    joined = keras.layers.Concatenate()([inner(ids), scale])
    model = keras.Model([ids, scale], keras.layers.Dense(1, name="out")(joined))
    servable = Servable.load("nested_embed", 1, _save(model, tmp_path, "nested_embed"))
    assert servable.inputs["ids"].index_limit == 7
    assert servable.inputs["scale"].index_limit is None
    ids_value = np.array([[0, 6, 3]], np.int32)
    scale_value = np.array([[0.5]], np.float32)
    got = servable.predict({"ids": ids_value, "scale": scale_value})
    want = model([ids_value, scale_value], training=False)
    np.testing.assert_allclose(got["out"], want, atol=1e-5)


def test_a_sequential_model_serves_under_its_own_names(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential(
        [keras.Input((4,), name="pixels"), keras.layers.Dense(2, name="scores")]
    )
    servable = Servable.load("seq", 1, _save(model, tmp_path, "seq"))
    assert list(servable.inputs) == ["pixels"] and list(servable.outputs) == ["scores"]
    assert servable.platform == "keras"
    x = RNG.random((2, 4), dtype=np.float32)
    np.testing.assert_allclose(servable.predict({"pixels": x})["scores"], model(x), atol=1e-5)


def test_a_subclassed_model_is_refused_with_what_to_do(tmp_path: Path) -> None:
    import keras

    @keras.saving.register_keras_serializable(package="kerasserve_structures")
    class Doubler(keras.Model):
        def call(self, x: Any) -> Any:
            return x * 2.0

    model = Doubler()
    model(np.zeros((1, 2), np.float32))
    with pytest.raises(ModelLoadError, match="subclassed.*export a SavedModel"):
        Servable.load("sub", 1, _save(model, tmp_path, "sub"))
