"""Stand-in models: one maker of version folders, and an untrained stand-in for `mnist`.

`save_version` is how the benchmark and the tests write a model of their own into a repository:
a `tf.Module`'s signatures saved as `<repository>/<name>/<version>`, with a `metadata.json` when
the model has one. The tests import it from here (the benchmark is where the stand-in lives).

Why the `mnist` stand-in: the benchmark measures serving cost, which depends on the graph's
shape and the signature contract (models/README.md), not on the weights. Until the training job
has published `models/mnist/1`, this lets the harness, the baselines and the peers be built and
smoke-tested against the classic Keras MNIST convnet (Conv2D 32, pool, Conv2D 64, pool, dropout,
Dense 10).

Usage: .venv/bin/python -m bench.standin_model /tmp/bench-standin/mnist/1
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app.repository.format import METADATA_FILE, NAME_KEY, VERSION_KEY

SERVE = "serving_default"


def save_version(
    module: Any,
    target: Path,
    signatures: Mapping[str, Callable[..., Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save `module` (a `tf.Module`) as the SavedModel in the version folder `target`.

    `signatures`: exported name -> the module's `tf.function` (default: its `serving_default`
    under that name). `metadata`: written to `metadata.json` after the name and version the
    folder says (`<name>/<version>`), which its own keys may override; none is written without.
    """
    import tensorflow as tf

    exported = dict(signatures) if signatures is not None else {SERVE: module.serving_default}
    target.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(target), signatures=exported)
    if metadata is not None:
        version = int(target.name) if target.name.isdigit() else 1
        written = {NAME_KEY: target.parent.name, VERSION_KEY: version, **metadata}
        (target / METADATA_FILE).write_text(json.dumps(written, indent=2))
    return target


def export_standin_mnist(target: Path) -> Path:
    """Build the convnet and save it with the repository's `serving_default` signature."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )

    class Servable(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")])
        def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            probabilities = self.model(image, training=False)
            return {
                "probabilities": probabilities,
                "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
            }

    servable = Servable()
    metadata = {
        "name": "mnist",
        "standin": True,
        "signature": {
            "inputs": {"image": {"dtype": "float32", "shape": [-1, 28, 28, 1]}},
            "outputs": {
                "probabilities": {"dtype": "float32", "shape": [-1, 10]},
                "class_id": {"dtype": "int64", "shape": [-1]},
            },
        },
        "class_names": [str(digit) for digit in range(10)],
    }
    return save_version(servable, target, {SERVE: servable.serve}, metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="version folder to create, e.g. /tmp/x/mnist/1")
    export_standin_mnist(parser.parse_args().target)


if __name__ == "__main__":
    main()
