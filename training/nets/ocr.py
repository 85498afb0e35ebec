"""`ocr`: a CTC recognizer for handwritten digit strings (MNIST digits composed into strips).

Network: Conv2D blocks shrink a `[28, W]` strip to `[7, W/4]`, where residual blocks widen what
each column sees; the width axis then becomes time (one step per 4 columns, `TIME_STRIDE`), a
per-step `TimeDistributed(Dense)` mixes the column's features, two bidirectional GRUs read the
sequence both ways, and a softmax gives, per step, the probability of each digit and of the CTC
blank (`BLANK_INDEX`, the last class, which is what `tf.nn.ctc_greedy_decoder` and
`tf.nn.ctc_beam_search_decoder` assume).

Only the inference graph is exported, and it decodes (see `OcrServing`). Training uses the CTC
loss as a layer (`CTCLoss`) inside a training-only model with the label inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from training import figures, strip_batches
from training.nets.common import KerasInference, conv_bn, run_signature
from training.recipe import MnistSplit, TrainConfig
from training.strips import (
    HELDOUT_STYLE,
    MAX_DIGITS,
    STRIP_HEIGHT,
    compose_strips,
)

CHARSET = "0123456789"
BLANK_INDEX = len(CHARSET)  # 10: the CTC blank is the last class
NUM_CLASSES = len(CHARSET) + 1
TIME_STRIDE = 4  # two 2x2 max-pools: one time step per 4 columns, T = ceil(W / 4)
PAD_VALUE = 0.0  # MNIST background; padding on the right with it must not change the text
CONV_CHANNELS = (32, 64, 96)
# Residual 3x3 blocks after the last pool widen each step's view: one block adds 8 columns (two
# at the [7, W/4] scale), so two take it from 18 to 34 columns, a whole digit and the edges of
# both neighbours, which overlapping digits need. At a sixteenth of the pixels they cost little:
# this network (with the wider channels, 0.48 M parameters against 0.23 M) took about 0.2 s per
# training batch of 32 strips on the 2 cores, the earlier one 0.13 s.
RESIDUAL_BLOCKS = 2
# Measured and left out (evaluate's handwritten string accuracy; version 2's chain of runs read
# 0.833, 0.903, 0.918, 0.927, 0.926): one step per 2 columns instead of 4 (second pool 2x1), one
# 20-epoch run from version 2: 0.922, overlapping 0.74 against 0.77; a second conv at the
# [14, W/2] scale, the same chain from scratch: 0.858, 0.912, 0.926, 0.927, level with this
# network after four runs, for more CPU (11.9-12.5 against 10.1-11.3 CPU minutes a run) and more
# serving compute. Neither pays. Two independently trained readers, each string read by the one
# more confident of it: 0.946 (three: 0.948) at two (three) times the serving compute; averaging
# their per-step probabilities instead: 0.77, since independent CTC models align differently.
# Rescoring the candidates of three readers by the sum of their CTC log-likelihoods: 0.947.
# `mnist`'s convolutions as the trunk (32, 32 | 64, 64 | 128, then these residual blocks; 0.70 M
# parameters), started from version 2 of `mnist`, the same chain: 0.911, 0.920, 0.919, at 9.3-9.6
# min a run. Transfer from the classifier starts far higher (0.833 for this network's first
# run) but levels off at the same place: the plateau is the 4,500 training digits, not the net.
STEP_UNITS = 128
GRU_UNITS = 64
DEFAULT_STEPS_PER_EPOCH = 60
# Each training batch holds strips of similar length (longest - LENGTH_SPREAD .. longest digits):
# a batch is as wide as its widest strip, so mixing 1 and 8 digits would spend half the compute on
# padding. Narrow and wide batches both occur, and the right margins still pad every strip.
LENGTH_SPREAD = 3
HELDOUT_STRIPS = 500
HELDOUT_SEED = 20261125  # fixed: every version is measured on the same held-out strips
EVAL_CHUNK = 100
FIGURE_STRIPS = 8  # held-out strips shown on the dashboard (about 0.5 kB of PNG each)
FIGURE_MARGIN = 4
CONFIDENCE_DOC = {
    "greedy": "probability of the decoded string: the CTC likelihood of the text, summed over "
    "every alignment of it to the time steps (at least the best path's probability)",
    "beam_search": "probability the beam search assigns to the decoded string (top path)",
}


@keras.saving.register_keras_serializable(package="kerasserve")
class CTCLoss(keras.layers.Layer):
    """CTC loss with the `ctc_batch_cost` contract, as a layer of the training model.

    Inputs `[y_true, y_pred, input_length, label_length]`: `y_true` int `(samples, max_len)`
    (values past `label_length` are ignored), `y_pred` softmax probabilities
    `(samples, T, C)` with the blank as class `C - 1`, `input_length` and `label_length`
    int `(samples, 1)`. Returns the per-sample negative log-likelihood `(samples, 1)` and adds
    its mean to the model's losses, so the training model compiles without a `loss=`.
    """

    def __init__(self, epsilon: float = 1e-7, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: Any) -> None:
        labels_shape, probabilities_shape = input_shape[0], input_shape[1]
        if len(labels_shape) != 2 or len(probabilities_shape) != 3:
            raise ValueError(
                "CTCLoss expects y_true (samples, max_len) and "
                f"y_pred (samples, T, C); got {labels_shape}, {probabilities_shape}"
            )
        super().build(input_shape)

    def call(self, inputs: list[Any]) -> Any:
        y_true, y_pred, input_length, label_length = inputs
        labels = tf.cast(y_true, tf.int32)
        label_length = tf.cast(tf.reshape(label_length, [-1]), tf.int32)
        # Values past a label's length may be padding such as -1: make them a valid class id.
        positions = tf.range(tf.shape(labels)[1])[tf.newaxis, :]
        labels = tf.where(positions < label_length[:, tf.newaxis], labels, 0)
        log_probabilities = tf.math.log(tf.cast(y_pred, tf.float32) + self.epsilon)
        loss = tf.nn.ctc_loss(
            labels=labels,
            logits=log_probabilities,
            label_length=label_length,
            logit_length=tf.cast(tf.reshape(input_length, [-1]), tf.int32),
            logits_time_major=False,
            blank_index=-1,
        )
        per_sample = loss[:, tf.newaxis]
        self.add_loss(tf.reduce_mean(per_sample))
        return per_sample

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0][0], 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kerasserve")
class FoldingTimeDistributed(keras.layers.TimeDistributed):
    """`TimeDistributed` that folds time into the batch axis, correct for a variable time axis.

    Keras 3's `TimeDistributed.call` maps over `arange(shape[0])` of the *untransposed*
    input when the time axis is unknown, i.e. over the batch size instead of the time steps:
    a batch of 2 gave 2 time steps, and a time axis shorter than the batch failed (the team's
    pitfalls note saw it in exported graphs; here it broke training with a static batch too).
    Reshaping `[N, T, ...]` to `[N * T, ...]`, applying the layer and reshaping back is the
    same per-step computation with the same weights, and traces with N and T both unknown.
    """

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if mask is not None:
            return super().call(inputs, training=training, mask=mask)
        shape = keras.ops.shape(inputs)
        folded = keras.ops.reshape(inputs, (-1, *inputs.shape[2:]))
        kwargs = {"training": training} if self.layer._call_has_training_arg else {}
        outputs = self.layer.call(folded, **kwargs)
        return keras.ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))


def probabilities_graph(image: Any) -> Any:
    """The network from the `image` input to the per-step `probabilities` (functional API)."""
    first, second, third = CONV_CHANNELS
    x = layers.MaxPooling2D(2, padding="same")(conv_bn(image, first))
    x = layers.MaxPooling2D(2, padding="same")(conv_bn(x, second))
    x = conv_bn(x, third)
    for index in range(RESIDUAL_BLOCKS):
        x = layers.Add(name=f"residual{index + 1}")([x, conv_bn(x, third)])
    # [N, 7, T, C] -> [N, T, 7, C] -> [N, T, 7 * C]: the width axis becomes time.
    x = layers.Permute((2, 1, 3), name="width_to_time")(x)
    x = layers.Reshape((-1, (STRIP_HEIGHT // TIME_STRIDE) * third), name="step_features")(x)
    x = FoldingTimeDistributed(layers.Dense(STEP_UNITS, activation="relu"), name="step_dense")(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Bidirectional(layers.GRU(GRU_UNITS, return_sequences=True), name="bigru1")(x)
    x = layers.Bidirectional(layers.GRU(GRU_UNITS, return_sequences=True), name="bigru2")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)


def inference_model(training_model: keras.Model) -> keras.Model:
    """`image` -> `probabilities`, sharing the training model's layers and weights."""
    return keras.Model(
        training_model.get_layer("image").output,
        training_model.get_layer("probabilities").output,
        name="ocr_inference",
    )


def time_steps(width: int) -> int:
    """`T` for an image `width` columns wide (the 'same'-padded pools round up)."""
    return math.ceil(width / TIME_STRIDE)


class OcrRecipe:
    """The `Recipe` for `ocr` (see `training.recipe`)."""

    name = "ocr"
    # Thirty epochs of 60 batches: about 6.5 minutes on the 2 cores with the evaluation.
    default_epochs = 30
    default_batch_size = 32

    def build_training_model(self, config: TrainConfig) -> keras.Model:
        image = keras.Input((STRIP_HEIGHT, None, 1), name="image")
        labels = keras.Input((MAX_DIGITS,), dtype="int32", name="labels")
        input_length = keras.Input((1,), dtype="int32", name="input_length")
        label_length = keras.Input((1,), dtype="int32", name="label_length")
        probabilities = probabilities_graph(image)
        loss = CTCLoss(name="ctc_loss")([labels, probabilities, input_length, label_length])
        model = keras.Model(
            inputs={
                "image": image,
                "labels": labels,
                "input_length": input_length,
                "label_length": label_length,
            },
            outputs=loss,
            name="ocr_training",
        )
        steps = config.epochs * (config.steps_per_epoch or DEFAULT_STEPS_PER_EPOCH)
        # Cosine decay to a small rate: the last epochs polish the per-digit accuracy that
        # whole-string accuracy compounds (0.98 per digit is only ~0.91 per 4.5-digit string).
        schedule = keras.optimizers.schedules.CosineDecay(
            3e-3, decay_steps=max(steps, 1), alpha=0.02
        )
        model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=5.0))
        return model

    def steps_per_epoch(self, split: MnistSplit, config: TrainConfig, global_batch: int) -> int:
        """Strips are generated, so an epoch is a fixed number of batches, not a data pass."""
        return DEFAULT_STEPS_PER_EPOCH

    def train_dataset(self, split: MnistSplit, config: TrainConfig, global_batch: int) -> Any:
        """An endless stream of new strips composed from `split.x_train` only.

        Nothing is ever repeated: with 4,500 digits, fresh layouts (lengths, gaps down to
        overlapping, jitter, margins, per-digit rotation and scale), picture degradations, the
        service's own framing and printed strings in the training typefaces are the
        augmentation (`training.strip_batches`). The driver bounds each epoch with
        `steps_per_epoch`.
        """
        signature = {
            "image": tf.TensorSpec((global_batch, STRIP_HEIGHT, None, 1), tf.float32),
            "labels": tf.TensorSpec((global_batch, MAX_DIGITS), tf.int32),
            "input_length": tf.TensorSpec((global_batch, 1), tf.int32),
            "label_length": tf.TensorSpec((global_batch, 1), tf.int32),
        }
        generate = _batch_generator(
            split.x_train, split.y_train, global_batch, np.random.default_rng(config.seed)
        )
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def export_module(self, model: keras.Model, config: TrainConfig) -> tf.Module:
        return OcrServing(model, beam_width=config.beam_width)

    def evaluate(self, serving_fn: Any, split: MnistSplit, config: TrainConfig) -> dict[str, float]:
        """Whole-string accuracy and character error rate on `HELDOUT_STRIPS` strips composed
        from held-out digits only, decoded by the exported serving function itself."""
        strips = compose_strips(
            split.x_heldout,
            split.y_heldout,
            HELDOUT_STRIPS,
            np.random.default_rng(HELDOUT_SEED),
            HELDOUT_STYLE,
        )
        texts = run_signature(serving_fn, strips.images, batch=EVAL_CHUNK)["text"]
        return string_metrics([text.decode("ascii") for text in texts], strips.texts())

    def heldout_figures(
        self, serving_fn: Any, split: MnistSplit, config: TrainConfig
    ) -> dict[str, Any]:
        """`FIGURE_STRIPS` strips composed like the metrics' held-out strips (held-out digits,
        held-out style, fixed seed), each cut to its ink plus a margin, as small PNGs with what
        is written and what the exported graph read."""
        strips = compose_strips(
            split.x_heldout,
            split.y_heldout,
            FIGURE_STRIPS,
            np.random.default_rng(HELDOUT_SEED),
            HELDOUT_STYLE,
        )
        shown = []
        for index, expected in enumerate(strips.texts()):
            last = int(strips.spans[index, strips.label_lengths[index] - 1, 1])
            width = min(strips.images.shape[2], max(STRIP_HEIGHT, last + FIGURE_MARGIN))
            image = strips.images[index : index + 1, :, :width]
            outputs = serving_fn(image=tf.constant(image, dtype=tf.float32))
            shown.append(
                {
                    "text": expected,
                    "reading": outputs["text"].numpy()[0].decode("ascii"),
                    "confidence": round(float(outputs["confidence"].numpy()[0]), 4),
                    "png": figures.png_base64(image[0, :, :, 0]),
                }
            )
        return {"heldout_strips": shown}

    def metadata(self, config: TrainConfig) -> dict[str, Any]:
        decoder = "beam_search" if config.beam_width > 0 else "greedy"
        return {
            "charset": CHARSET,
            "blank_index": BLANK_INDEX,
            "time_stride": TIME_STRIDE,
            "pad_value": PAD_VALUE,
            "decoder": {
                "type": decoder,
                "beam_width": config.beam_width,
                "confidence": CONFIDENCE_DOC[decoder],
            },
            "strips": {
                "height": STRIP_HEIGHT,
                "digits": [1, MAX_DIGITS],
                "heldout_strips": HELDOUT_STRIPS,
                "heldout_seed": HELDOUT_SEED,
            },
        }


class OcrServing(KerasInference):
    """The exported inference graph: `image` -> `text`, `confidence`, `probabilities`.

    `image` float32 `[N, 28, W, 1]` with N and W free; `probabilities` float32 `[N, T, 11]`
    with `T = ceil(W / TIME_STRIDE)`; `text` the decoded digits (string `[N]`); `confidence`
    float32 `[N]`, see `CONFIDENCE_DOC`. Greedy decoding unless `beam_width > 0`. Only the
    inference half of the training model is traced: the CTC loss and label inputs stay behind.
    """

    def __init__(self, training_model: keras.Model, beam_width: int = 0) -> None:
        super().__init__(inference_model(training_model), name="ocr_serving")
        self.beam_width = int(beam_width)
        self.serving_default = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, STRIP_HEIGHT, None, 1], tf.float32, name="image")
            ],
        )

    def _serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self._infer(image)
        text, confidence = ctc_decode(probabilities, self.beam_width)
        return {"text": text, "confidence": confidence, "probabilities": probabilities}


def ctc_decode(probabilities: tf.Tensor, beam_width: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode per-step probabilities `[N, T, C]` (blank last) into strings and confidences."""
    log_probabilities = tf.math.log(probabilities + 1e-12)
    time_major = tf.transpose(log_probabilities, [1, 0, 2])
    shape = tf.shape(probabilities)
    lengths = tf.fill([shape[0]], shape[1])
    if beam_width > 0:
        decoded, path_log_probability = tf.nn.ctc_beam_search_decoder(
            time_major, lengths, beam_width=beam_width, top_paths=1
        )
        confidence = tf.exp(path_log_probability[:, 0])
    else:
        decoded, _ = tf.nn.ctc_greedy_decoder(time_major, lengths, merge_repeated=True)
        # The probability of the decoded string itself, summed over every alignment that spells
        # it (the CTC likelihood), not only over the best path: on the 900 held-out handwritten
        # strips of `training.evaluate` it told version 2's right readings from its wrong ones
        # with an AUROC of 0.91, against 0.80 for the best path's probability (which also falls
        # with every step of a longer strip).
        labels = tf.RaggedTensor.from_sparse(tf.cast(decoded[0], tf.int32))
        # Dense labels with one spare column: the sparse form refuses an empty reading.
        dense_labels = tf.pad(labels.to_tensor(0), [[0, 0], [0, 1]])
        string_log_probability = -tf.nn.ctc_loss(
            labels=dense_labels,
            logits=time_major,
            label_length=tf.cast(labels.row_lengths(), tf.int32),
            logit_length=lengths,
            logits_time_major=True,
            blank_index=-1,
        )
        confidence = tf.minimum(tf.exp(string_log_probability), 1.0)
    classes = tf.RaggedTensor.from_sparse(decoded[0])
    characters = tf.gather(tf.constant(list(CHARSET)), classes)
    text = tf.strings.reduce_join(characters, axis=1)
    return text, tf.cast(confidence, tf.float32)


def string_metrics(predicted: list[str], expected: list[str]) -> dict[str, float]:
    """Whole-string accuracy and character error rate (edit distance / reference length)."""
    if len(predicted) != len(expected) or not expected:
        raise ValueError("need as many predictions as references, at least one")
    exact = sum(p == e for p, e in zip(predicted, expected, strict=True))
    errors = sum(edit_distance(p, e) for p, e in zip(predicted, expected, strict=True))
    return {
        "heldout_string_accuracy": exact / len(expected),
        "heldout_character_error_rate": errors / sum(len(e) for e in expected),
    }


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def _batch_generator(
    digits: np.ndarray, labels: np.ndarray, batch: int, rng: np.random.Generator
) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A generator factory for `from_generator`: training batches of new strips, forever
    (`training.strip_batches`: handwritten and printed, degraded, mostly framed as served)."""

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for images, padded, lengths in strip_batches.batches(
            digits, labels, batch, rng, LENGTH_SPREAD
        ):
            yield {
                "image": images[..., np.newaxis],
                "labels": padded,
                "input_length": np.full((batch, 1), time_steps(images.shape[2]), dtype=np.int32),
                "label_length": lengths[:, np.newaxis],
            }

    return generate


RECIPE = OcrRecipe()
