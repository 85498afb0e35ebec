"""`mnist`: a small Conv2D digit classifier.

The offline subset has only 4,500 training digits, so the pipeline degrades them the way
pictures do (`training.augment`: stroke width, wobble, slant, blur, resampling, noise, JPEG) and
adds small random shifts, rotations and zooms (in `tf.data`, not in the network, so the exported
graph holds no augmentation layers). Batch normalisation and global average pooling keep the
network at about 100k parameters: well under a megabyte on disk, and fast enough on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training import augment, figures
from training.data import finish_pipeline, to_model_input
from training.nets.common import (
    IMAGE_SIZE,
    KerasInference,
    conv_bn,
    image_spec,
    one_pass_steps,
    run_signature,
)
from training.recipe import MnistSplit, TrainConfig

CLASS_NAMES = [str(digit) for digit in range(10)]
GENERATOR_CHUNK = 512
# Pictures people send have other pens, blur and compression than MNIST's scans.
DEGRADATION = augment.Degradation(
    thicker=0.2,
    thinner=0.15,
    elastic=0.3,
    slant=0.2,
    max_shear=0.25,
    blur=0.2,
    resample=0.15,
    noise=0.15,
    jpeg=0.1,
    background=0.1,
)
# Share of each chunk left as MNIST drew it (the tf.data shifts, turns and zooms still apply):
# with every digit through `DEGRADATION` only about one in six came out unchanged. Measured
# (30 epochs from the earlier version 2, same seed, without and with this share): held-out
# digits 0.992 and 0.996, shifted and turned 0.992 and 0.994, and the thicker, thinner,
# blurred and enlarged variants no worse.
CLEAN_FRACTION = 0.4
# Measured and left out (the goal figure of `training.evaluate`, 4,000 shifted and turned
# held-out digits): six independent runs of this recipe read 0.992 to 0.9962, and averaging the
# probabilities of four of them 0.99675, at four times the serving compute. Knowledge
# distillation into one network of this size (label weight 0.1, softened teachers 0.9 at T=4,
# teachers run inside `tf.data` on each augmented batch, 45 epochs from scratch, 5.5 min)
# kept the cost but not the gain: 0.9935 from two teachers whose average read 0.99475, 0.9942
# from all four. The figure is set by a few ambiguous held-out digits, not by this recipe.


class MnistRecipe:
    name = "mnist"
    default_epochs = 15
    default_batch_size = 64

    def build_training_model(self, config: TrainConfig) -> Any:
        image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
        x = image
        for filters in (32, 64):
            x = conv_bn(x, filters)
            x = conv_bn(x, filters)
            x = layers.MaxPooling2D()(x)
        x = conv_bn(x, 128)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.3)(x)
        probabilities = layers.Dense(10, activation="softmax", name="probabilities")(x)
        model = keras.Model(image, probabilities, name="mnist")
        model.compile(
            optimizer=keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(
                    3e-3, decay_steps=max(1, config.epochs * (config.steps_per_epoch or 1))
                )
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def steps_per_epoch(self, split: MnistSplit, config: TrainConfig, global_batch: int) -> int:
        return one_pass_steps(len(split.y_train), global_batch)

    def train_dataset(self, split: MnistSplit, config: TrainConfig, global_batch: int) -> Any:
        augment = [
            layers.RandomRotation(0.04, fill_mode="constant", seed=config.seed),
            layers.RandomZoom(0.1, fill_mode="constant", seed=config.seed + 1),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=config.seed + 2),
        ]

        def augmented(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            for layer in augment:
                images = layer(images, training=True)
            return images, labels

        signature = (
            tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        )
        dataset = tf.data.Dataset.from_generator(
            lambda: degraded_digits(split, config.seed), output_signature=signature
        )
        dataset = finish_pipeline(dataset.unbatch(), global_batch, config.seed)
        return dataset.map(augmented, num_parallel_calls=tf.data.AUTOTUNE)

    def export_module(self, model: Any, config: TrainConfig) -> Any:
        return ClassifierServing(model, name="mnist_serving")

    def evaluate(self, serving_fn: Any, split: MnistSplit, config: TrainConfig) -> dict[str, float]:
        outputs = run_signature(serving_fn, to_model_input(split.x_heldout))
        accuracy = float((outputs["class_id"] == split.y_heldout).mean())
        return {"heldout_accuracy": accuracy}

    def heldout_figures(
        self, serving_fn: Any, split: MnistSplit, config: TrainConfig
    ) -> dict[str, Any]:
        """The confusion matrix on the held-out rows: `counts[true digit][predicted digit]`."""
        outputs = run_signature(serving_fn, to_model_input(split.x_heldout))
        return {
            "confusion_matrix": {
                "labels": CLASS_NAMES,
                "counts": figures.confusion_matrix(
                    split.y_heldout, outputs["class_id"], len(CLASS_NAMES)
                ),
            }
        }

    def metadata(self, config: TrainConfig) -> dict[str, Any]:
        return {"class_names": CLASS_NAMES}


def degraded_digits(split: MnistSplit, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless chunks of training digits (in random order), all but `CLEAN_FRACTION` of them
    with a random mix of stroke width, wobble, slant, blur, resampling, noise and compression
    (`DEGRADATION`)."""
    rng = np.random.default_rng(seed)
    images = split.x_train.astype(np.float32) / 255.0
    while True:
        rows = rng.integers(0, len(images), size=GENERATOR_CHUNK)
        chunk = images[rows]
        changed = rng.random(GENERATOR_CHUNK) >= CLEAN_FRACTION
        chunk[changed] = augment.degrade(chunk[changed], rng, DEGRADATION)
        yield chunk[..., np.newaxis], split.y_train[rows]


class ClassifierServing(KerasInference):
    """Inference graph only: probabilities and the arg-max class id."""

    @tf.function(input_signature=[image_spec()])
    def serving_default(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = tf.cast(self._infer(image), tf.float32)
        return {
            "probabilities": probabilities,
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }


RECIPE = MnistRecipe()
