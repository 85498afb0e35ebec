"""Load a SavedModel's `serving_default` signature as a plain numpy-in, numpy-out function.

Why one helper: the unbatched baseline, PyTriton and MLServer must all run exactly the same
TensorFlow call, so that the benchmark compares the serving layers and nothing else. The peers
import this module from their own virtual environments (the benchmark puts the repository root on
their PYTHONPATH); it therefore depends on TensorFlow and numpy only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SignatureFunction = Callable[[np.ndarray], dict[str, np.ndarray]]


def load_signature(model_dir: str, input_name: str = "image") -> SignatureFunction:
    """Return `call(image) -> {output name: array}` for the model's serving signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    signature = loaded.signatures["serving_default"]

    def call(image: np.ndarray) -> dict[str, np.ndarray]:
        outputs = signature(**{input_name: tf.constant(image, dtype=tf.float32)})
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    call.keepalive = loaded  # type: ignore[attr-defined]  # the signature needs its object alive
    call(np.zeros((1, 28, 28, 1), np.float32))  # trace and warm once, like every server does
    return call
