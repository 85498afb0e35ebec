"""A signature is looked up in the version that answers: a reload between decoding a request
and running it cannot pair one version's signature with another's inputs or runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest
import tensorflow as tf

from app.batching import BatchingOptions
from app.dataplane import DataPlane
from app.errors import InvalidInput
from app.protocols.tfserving import decode_predict
from app.registry import ModelRegistry
from app.repository import VersionDir
from bench.standin_model import SERVE, save_version


def _export(target: Path, extra: str | None, factor: float) -> VersionDir:
    """`serving_default` (x + 1) and, if `extra` is given, a signature so named (x * factor)."""

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x + 1.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def other(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"z": x * factor}

    module = Model()
    signatures = {SERVE: module.serve}
    if extra is not None:
        signatures[extra] = module.other
    save_version(module, target, signatures)
    return VersionDir(target.parent.name, int(target.name), target)


def test_the_answering_version_resolves_the_signature(tmp_path: Path) -> None:
    async def scenario() -> None:
        registry = ModelRegistry(tmp_path, BatchingOptions(), warm_up=False)
        plane = DataPlane(registry, None)
        await registry.load_version(_export(tmp_path / "m" / "1", "triple", 3.0))
        _, inputs, signature = decode_predict(
            orjson.dumps({"signature_name": "triple", "instances": [1.0, 2.0]})
        )
        assert signature == "triple"
        first = await plane.infer("m", inputs, signature=signature)
        np.testing.assert_allclose(first.outputs["z"], [3.0, 6.0])
        # A reload lands here: version 2 has the signature with another factor...
        await registry.load_version(_export(tmp_path / "m" / "2", "triple", 30.0))
        second = await plane.infer("m", inputs, signature=signature)
        assert second.model_version == 2
        np.testing.assert_allclose(second.outputs["z"], [30.0, 60.0])
        # ...and version 3 has none: the answer names version 3's signatures, not a 500.
        await registry.load_version(_export(tmp_path / "m" / "3", None, 0.0))
        with pytest.raises(InvalidInput, match=r"has signatures \['serving_default'\]"):
            await plane.infer("m", inputs, signature=signature)
        # The older version still answers it when asked by number.
        pinned = await plane.infer("m", inputs, version=1, signature=signature)
        np.testing.assert_allclose(pinned.outputs["z"], [3.0, 6.0])
        await registry.close(1.0)

    asyncio.run(scenario())


def test_unloading_closes_the_signature_runner(tmp_path: Path) -> None:
    async def scenario() -> None:
        registry = ModelRegistry(tmp_path, BatchingOptions(), warm_up=False)
        entry = await registry.load_version(_export(tmp_path / "m" / "1", "triple", 3.0))
        assert entry.signature_runner is not None
        await registry.unload_version("m", 1, 1.0)
        assert entry.signature_runner is None and entry.runner is None
        only_default = await registry.load_version(_export(tmp_path / "n" / "1", None, 0.0))
        assert only_default.signature_runner is None  # no threads for a one-signature model
        await registry.close(1.0)

    asyncio.run(scenario())


def test_warm_up_calls_every_signature_once(tmp_path: Path) -> None:
    """The first request to a signature does not pay its set-up: warm-up called it already (a
    signature that counts its calls answers 2 to the first request)."""
    from app.servable import Servable

    class Counting(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = tf.Variable(0, dtype=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def count(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"calls": tf.fill(tf.shape(x), self.calls.assign_add(1))}

    module = Counting()
    path = save_version(
        module, tmp_path / "counting" / "1", {SERVE: module.serve, "count": module.count}
    )
    servable = Servable.load("counting", 1, path)
    assert servable.predict({"x": np.zeros(1, np.float32)}, "count")["calls"].tolist() == [2]


def test_index_inputs_of_any_signature_are_bounded(tmp_path: Path) -> None:
    """An integer input that feeds an Embedding is checked before TensorFlow in every signature
    of a Keras export, not only `serving_default` (-5 would silently read row 5)."""
    import keras

    ids = keras.Input(shape=(), dtype="int64", name="ids")
    table = keras.Model(ids, keras.layers.Embedding(10, 3)(ids))
    x = keras.Input(shape=(2,), name="x")
    dense = keras.Model(x, keras.layers.Dense(1)(x))
    archive = keras.export.ExportArchive()
    archive.track(table)
    archive.track(dense)
    archive.add_endpoint(
        "serving_default",
        lambda x: {"y": dense(x)},
        input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")],
    )
    archive.add_endpoint(
        "lookup",
        lambda ids: {"rows": table(ids)},
        input_signature=[tf.TensorSpec([None], tf.int64, name="ids")],
    )
    path = tmp_path / "table" / "1"
    archive.write_out(str(path), verbose=False)
    expected = table(np.array([9, 0])).numpy()

    async def scenario() -> None:
        registry = ModelRegistry(tmp_path, BatchingOptions(), warm_up=False)
        plane = DataPlane(registry, None)
        await registry.load_version(VersionDir("table", 1, path))
        good = await plane.infer("table", {"ids": np.array([9, 0])}, signature="lookup")
        np.testing.assert_allclose(good.outputs["rows"], expected, rtol=1e-6)
        for bad in (-5, 10):
            with pytest.raises(InvalidInput, match=rf"in \[0, 10\), got {bad}"):
                await plane.infer("table", {"ids": np.array([1, bad])}, signature="lookup")
        await registry.close(1.0)

    asyncio.run(scenario())
