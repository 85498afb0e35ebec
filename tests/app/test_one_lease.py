"""One version per request: the signature that names a TF Serving input is the answering one's.

TF Serving's unnamed formats (`{"instances": [...]}` for a one-input model) need the model's
input name. It used to be looked up before `infer` took its lease, so a reload in between could
name the input after one version and run another: a 400 for a request that was right. Now the
body is decoded without any model lookup and the name is given under the lease.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest
import tensorflow as tf

from app.batching import BatchingOptions
from app.dataplane import UNNAMED_INPUT, DataPlane
from app.errors import InvalidInput
from app.protocols.tfserving import decode_predict
from app.registry import ModelRegistry
from app.repository import VersionDir
from bench.standin_model import SERVE, save_version


def _export_sum_model(target: Path, input_names: tuple[str, ...]) -> VersionDir:
    """A SavedModel whose `serving_default` sums its inputs' rows, with these input names."""

    class Summer(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name=name) for name in input_names
            ]
        )
        def serve(self, *tensors: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"total": tf.add_n([tf.reduce_sum(t, axis=1) for t in tensors])}

    module = Summer()
    save_version(module, target, {SERVE: module.serve})
    return VersionDir(target.parent.name, int(target.name), target)


def test_a_reload_between_decoding_and_inference_cannot_mismatch_the_input_name(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        registry = ModelRegistry(tmp_path, BatchingOptions(), warm_up=False)
        plane = DataPlane(registry, None)
        await registry.load_version(_export_sum_model(tmp_path / "m" / "1", ("a",)))
        body = orjson.dumps({"instances": [[1.0, 2.0, 3.0]]})
        has_rows, inputs, _ = decode_predict(body)
        assert has_rows and list(inputs) == [UNNAMED_INPUT]
        # The reload lands here: version 2 calls its only input "b".
        await registry.load_version(_export_sum_model(tmp_path / "m" / "2", ("b",)))
        result = await plane.infer("m", inputs)
        assert result.model_version == 2
        np.testing.assert_allclose(result.outputs["total"], [6.0])
        await registry.close(1.0)

    asyncio.run(scenario())


def test_an_unnamed_value_for_a_model_with_several_inputs_is_a_clear_400(tmp_path: Path) -> None:
    async def scenario() -> None:
        registry = ModelRegistry(tmp_path, BatchingOptions(), warm_up=False)
        plane = DataPlane(registry, None)
        await registry.load_version(_export_sum_model(tmp_path / "m" / "1", ("a", "b")))
        _, inputs, _ = decode_predict(orjson.dumps({"inputs": [[1.0, 2.0, 3.0]]}))
        with pytest.raises(
            InvalidInput,
            match=r"has inputs \['a', 'b'\]: each value must be an "
            "object that names them",
        ):
            await plane.infer("m", inputs)
        await registry.close(1.0)

    asyncio.run(scenario())
