"""A tiny `ocr` training run through the real command line: publish, metadata, exported graph."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.live_server import REPO_ROOT
from tests.training.conftest import TINY_RUN, TinyRuns, assert_succeeded, run_cli
from training import publish


def test_tiny_ocr_run_publishes_a_decoding_version(tiny_runs: TinyRuns) -> None:
    version_dir = tiny_runs.repository / "ocr" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert not (version_dir / "keras").exists()

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
    summary = tiny_runs.stdout["ocr"].strip().splitlines()[-1]
    assert summary.startswith("ocr version 1:") and "heldout_string_accuracy=" in summary

    signature = publish.load_serving_function(version_dir)
    outputs = signature(image=tf.zeros([70, 28, 101, 1]))  # wider and larger than trained on
    assert outputs["text"].shape == (70,)
    assert outputs["probabilities"].shape == (70, math.ceil(101 / 4), 11)
    assert np.all(outputs["confidence"].numpy() > 0)


def test_a_beam_search_run_through_the_cli_is_served(tmp_path: Path) -> None:
    """`--beam-width 4` from the command line, then the published version over HTTP: the task
    endpoint reads a picture, and v2 answers what TensorFlow answers for the same strip."""
    import asyncio

    from tests.in_process import in_process

    result = run_cli("ocr", *TINY_RUN, "--beam-width", "4", "--repository", str(tmp_path))
    assert_succeeded(result)
    version_dir = tmp_path / "ocr" / "1"
    decoder = publish.read_metadata(version_dir)["decoder"]
    assert (decoder["type"], decoder["beam_width"]) == ("beam_search", 4)
    strip = np.random.default_rng(3).random((1, 28, 84, 1), dtype=np.float32)
    expected = publish.load_serving_function(version_dir)(image=tf.constant(strip))

    async def served() -> tuple[dict, dict]:
        async with in_process(tmp_path) as client:
            picture = (REPO_ROOT / "examples" / "digits-11745.png").read_bytes()
            task = await client.post(
                "/tasks/read-digits", content=picture, headers={"Content-Type": "image/png"}
            )
            body = {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "FP32",
                        "shape": [1, 28, 84, 1],
                        "data": strip.ravel().tolist(),
                    }
                ]
            }
            infer = await client.post("/v2/models/ocr/infer", json=body)
            assert task.status_code == 200 and infer.status_code == 200, (task.text, infer.text)
            return task.json(), infer.json()

    task, infer = asyncio.run(served())
    assert set(task["text"]) <= set("0123456789") and 0.0 <= task["confidence"] <= 1.0
    outputs = {output["name"]: output["data"] for output in infer["outputs"]}
    assert outputs["text"] == [expected["text"].numpy()[0].decode()]
    assert outputs["confidence"] == pytest.approx(expected["confidence"].numpy().tolist(), abs=1e-5)
