"""A tiny `ocr` training run through the real command line: publish, metadata, exported graph."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests.training.conftest import TINY_RUN, assert_succeeded, run_cli
from training import publish


def test_tiny_ocr_run_publishes_a_decoding_version(tmp_path: Path) -> None:
    result = run_cli("ocr", *TINY_RUN, "--repository", str(tmp_path))
    assert_succeeded(result)
    version_dir = tmp_path / "ocr" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / publish.KERAS_WEIGHTS).is_file()

    metadata = publish.read_metadata(version_dir)
    assert metadata["name"] == "ocr" and metadata["version"] == 1
    assert (metadata["training"]["epochs"], metadata["training"]["steps_per_epoch"]) == (1, 3)
    assert metadata["charset"] == "0123456789" and metadata["blank_index"] == 10
    assert metadata["time_stride"] == 4 and metadata["pad_value"] == 0.0
    assert metadata["decoder"]["type"] == "greedy"
    assert set(metadata["metrics"]) == {"heldout_string_accuracy", "heldout_character_error_rate"}
    assert metadata["signature"] == {
        "inputs": {"image": {"dtype": "float32", "shape": [-1, 28, -1, 1]}},
        "outputs": {
            "text": {"dtype": "string", "shape": [-1]},
            "confidence": {"dtype": "float32", "shape": [-1]},
            "probabilities": {"dtype": "float32", "shape": [-1, -1, 11]},
        },
    }
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("ocr version 1:") and "heldout_string_accuracy=" in summary

    signature = publish.load_serving_function(version_dir)
    outputs = signature(image=tf.zeros([70, 28, 101, 1]))  # wider and larger than trained on
    assert outputs["text"].shape == (70,)
    assert outputs["probabilities"].shape == (70, math.ceil(101 / 4), 11)
    assert np.all(outputs["confidence"].numpy() > 0)
