"""SavedModels the signature tests build themselves (tf.Modules, saved by
`bench.standin_model.save_version`).

- `multi`: `serving_default` and two more signatures, one of them with string tensors;
- `typed`: int64 and string inputs, float32/float64/int64/string/`_bytes` outputs, and a
  signature on scalars;
- `half_plus_two`: TF Serving's test model rebuilt (y = 0.5 x + 2): `serving_default`, the
  `classify_x_to_y` and `regress_x_to_y` signatures TF Serving's REST tests call, the
  `regress_x2_to_y3` of its documentation (y = 0.5 x2 + 3), and two more of our own: one with
  `classes` and `scores` and one that reads a feature from the context.

TensorFlow 2 writes every signature's method as predict; the classify and regress ones are
recognised by their TF Serving tensor names (`inputs`; `classes`/`scores`; `outputs`).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from bench.standin_model import SERVE, save_version


def _float_feature(serialized: tf.Tensor, name: str) -> tf.Tensor:
    parsed = tf.io.parse_example(serialized, {name: tf.io.FixedLenFeature([1], tf.float32)})
    return parsed[name]


class Multi(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"total": tf.reduce_sum(x, axis=1), "doubled": 2.0 * x}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="x"),
            tf.TensorSpec([None], tf.float32, name="factor"),
        ]
    )
    def scale(self, x: tf.Tensor, factor: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scaled": x * factor[:, None]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def measure(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "length": tf.cast(tf.strings.length(text), tf.int64),
            "shout": tf.strings.upper(text),
        }


class Typed(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="ids"),
            tf.TensorSpec([None], tf.string, name="words"),
        ]
    )
    def serving_default(self, ids: tf.Tensor, words: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "next_id": ids + 1,
            "third": tf.cast(ids, tf.float32) / 3.0,
            "third64": tf.cast(ids, tf.float64) / 3.0,
            "greeting": tf.strings.join(["hello ", words]),
            "echo_bytes": words,
        }

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="x")])
    def scalar(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0}


class HalfPlusTwo(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)
        self.c = tf.Variable(3.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_x_to_y(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * _float_feature(inputs, "x") + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x_to_y(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * _float_feature(inputs, "x") + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x2_to_y3(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * _float_feature(inputs, "x2") + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_sign(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Two classes: the probability that y is positive, and its complement."""
        positive = tf.sigmoid(self.a * _float_feature(inputs, "x") + self.b)
        rows = tf.shape(positive)[0]
        labels = tf.constant([["negative", "positive"]])
        return {
            "classes": tf.tile(labels, [rows, 1]),
            "scores": tf.concat([1.0 - positive, positive], axis=1),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_with_offset(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """y = 0.5 x + 2 + offset, `offset` an int64 feature (sent in the context)."""
        parsed = tf.io.parse_example(
            inputs,
            {
                "x": tf.io.FixedLenFeature([1], tf.float32),
                "offset": tf.io.FixedLenFeature([1], tf.int64),
            },
        )
        return {"outputs": self.a * parsed["x"] + self.b + tf.cast(parsed["offset"], tf.float32)}


def _save(module: tf.Module, path: Path, names: tuple[str, ...]) -> Path:
    return save_version(module, path, {name: getattr(module, name) for name in names})


def export_all(repository: Path) -> Path:
    """The three models as version 1 of `multi`, `typed` and `half_plus_two`."""
    _save(Multi(), repository / "multi" / "1", (SERVE, "scale", "measure"))
    _save(Typed(), repository / "typed" / "1", (SERVE, "scalar"))
    _save(
        HalfPlusTwo(),
        repository / "half_plus_two" / "1",
        (
            SERVE,
            "classify_x_to_y",
            "regress_x_to_y",
            "regress_x2_to_y3",
            "classify_sign",
            "regress_with_offset",
        ),
    )
    return repository
