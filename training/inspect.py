"""`python -m training inspect models/<name>/<version>`: what a published version contains.

Prints the serving signature as the SavedModel itself declares it (not as metadata claims), the
layer summary of the Keras training model rebuilt from the recipe with the version's weights
(restored as `--init-from` restores them, so a version that cannot start a training run says so),
per-variable weight statistics of the SavedModel, and the metadata. Useful before promoting a
version, and to check that a fine-tuned version really changed its weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training import publish, warm_start
from training.recipe import TrainConfig


def describe_version(version_dir: Path) -> str:
    """The whole report as text (the CLI prints it)."""
    version_dir = publish.require_version_dir(version_dir)
    import tensorflow as tf

    metadata = publish.read_metadata(version_dir)
    loaded = tf.saved_model.load(str(version_dir))
    sections = [
        f"== {metadata.get('name')} version {metadata.get('version')} ({version_dir})",
        "== signature serving_default",
        _signature_text(loaded.signatures[publish.SIGNATURE_NAME]),
        "== layers (Keras training model)",
        _layer_summary(metadata, version_dir),
        "== weights (SavedModel variables)",
        weight_statistics(loaded.signatures[publish.SIGNATURE_NAME].variables),
        "== metadata.json",
        json.dumps(metadata, indent=2),
    ]
    return "\n".join(sections)


def _signature_text(serving_fn: Any) -> str:
    spec = publish.signature_spec(serving_fn)
    return "\n".join(
        f"  {direction[:-1]:6} {name}: {tensor['dtype']} {tensor['shape']}"
        for direction, tensors in spec.items()
        for name, tensor in tensors.items()
    )


def _layer_summary(metadata: dict[str, Any], version_dir: Path) -> str:
    from training.fit import load_recipe

    training = metadata.get("training", {})
    config = TrainConfig(
        epochs=int(training.get("epochs", 1)),
        batch_size=int(training.get("batch_size", 32)),
        steps_per_epoch=training.get("steps_per_epoch"),
        beam_width=int(training.get("beam_width", 0)),
    )
    recipe = load_recipe(str(metadata["name"]))
    model = recipe.build_training_model(config)
    warm_start.restore(recipe, model, config, warm_start.locate(version_dir))
    lines: list[str] = []
    model.summary(print_fn=lambda line, *_, **__: lines.append(line), line_length=120)
    return "\n".join(lines)


def weight_statistics(variables: Any) -> str:
    """One line per variable: shape, mean, std, min, max; then the parameter count."""
    rows = []
    total = 0
    for variable in sorted(variables, key=lambda v: v.name):
        values = np.asarray(variable.numpy(), dtype=np.float64)
        total += values.size
        shape = str(list(values.shape))
        rows.append(
            f"  {variable.name:60} {shape:16} "
            f"mean={values.mean():+.4f} std={values.std():.4f} "
            f"min={values.min():+.4f} max={values.max():+.4f}"
        )
    rows.append(f"  total parameters: {total:,}")
    return "\n".join(rows)
