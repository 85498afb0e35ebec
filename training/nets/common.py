"""Pieces the 28x28 image recipes (`mnist`, `deskew`) share: the input spec and batched evaluation.

Evaluation always goes through the exported serving function, so the metrics in metadata.json
describe exactly the graph the server will run, not the Keras training model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

IMAGE_SIZE = 28
EVAL_BATCH = 250


def image_spec() -> Any:
    """`image` float32 `[N, 28, 28, 1]`: the named input of both image signatures."""
    return tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32, name="image")


def run_signature(
    serving_fn: Callable[..., dict[str, Any]], images: np.ndarray, batch: int = EVAL_BATCH
) -> dict[str, np.ndarray]:
    """Call `serving_fn(image=...)` in batches and concatenate each named output."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch):
        outputs = serving_fn(image=tf.constant(images[start : start + batch], dtype=tf.float32))
        for name, value in outputs.items():
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def one_pass_steps(train_rows: int, global_batch: int) -> int:
    """Steps that show the model about one pass over the training rows."""
    return max(1, train_rows // global_batch)


def conv_bn(x: Any, filters: int) -> Any:
    """3x3 convolution, batch normalisation, ReLU: the block both small CNNs stack."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


class KerasInference(tf.Module):
    """Base of the exported modules: tracks the model's variables but not the model itself.

    Tracking the Keras model would drag its optimizer (Adam's two slots per weight, three times
    the size) into the SavedModel; the server needs only the weights and the forward pass.
    """

    def __init__(self, model: keras.Model, name: str) -> None:
        super().__init__(name=name)
        self.model_variables = list(model.variables)
        self._infer = functools.partial(model, training=False)  # plain callable: not tracked
