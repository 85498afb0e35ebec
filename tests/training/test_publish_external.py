"""`python -m training publish`: models made outside the project, published into a repository.

The sources are built here (a SavedModel from a `tf.Module`); the CLI runs as a real subprocess,
and in the end-to-end cases the app (in-process, with its lifespan and polling running) watches
the repository while the CLI publishes into it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.standin_model import SERVE, save_version
from tests.in_process import in_process_sync
from tests.live_server import REPO_ROOT
from training.publish import PublishError
from training.publish_external import ExternalModel, publish_external

POLL_INTERVAL_S = 0.2


def run_publish(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", "publish", *map(str, args)],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def save_affine(target: Path, slope: float = 0.5, offset: float = 2.0, fail_on_zero=False) -> Path:
    """TF Serving's half_plus_two shape of model: y = slope * x + offset on float32 [N, 3]."""
    import tensorflow as tf

    class Affine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            if fail_on_zero:  # a model that cannot answer the generated (zero) input
                tf.debugging.assert_positive(x, message="x must be positive")
            return {"y": slope * x + offset}

    module = Affine()
    return save_version(module, target, {SERVE: module.serve})


def save_keras(target: Path, with_lambda: bool = False) -> Path:
    """A functional model with two named inputs and two named outputs, saved as a .keras file."""
    import keras

    keras.utils.set_random_seed(7)
    pixels = keras.Input((4,), name="pixels")
    scale = keras.Input((1,), name="scale")
    hidden = keras.layers.Dense(5, activation="relu")(keras.layers.Concatenate()([pixels, scale]))
    if with_lambda:
        hidden = keras.layers.Lambda(lambda t: t * 2.0)(hidden)
    score = keras.layers.Dense(1, name="score")(hidden)
    classes = keras.layers.Dense(3, activation="softmax", name="classes")(hidden)
    model = keras.Model({"pixels": pixels, "scale": scale}, {"score": score, "classes": classes})
    model.save(target)
    return target


@pytest.fixture(scope="module")
def affine_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_affine(tmp_path_factory.mktemp("source") / "affine")


def test_publishes_a_savedmodel_with_its_metadata_and_tells_the_client_what_to_send(
    affine_source: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    done = run_publish(
        affine_source, "--name", "affine", "--repository", repository, "--metadata", '{"team": "x"}'
    )
    assert done.returncode == 0, done.stderr
    version = repository / "affine" / "1"
    assert (version / "saved_model.pb").is_file()
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["name"] == "affine" and metadata["version"] == 1
    assert metadata["source"]["format"] == "saved_model"
    assert metadata["source"]["file"] == "affine"
    assert len(metadata["source"]["sha256"]) == 64
    assert metadata["user"] == {"team": "x"}
    assert metadata["signature"] == {
        "inputs": {"x": {"dtype": "float32", "shape": [-1, 3]}},
        "outputs": {"y": {"dtype": "float32", "shape": [-1, 3]}},
    }
    assert str(tmp_path) not in json.dumps(metadata)  # no host path in what the server shows
    assert "published affine version 1" in done.stdout
    assert "x: float32 [-1, 3]" in done.stdout
    assert '"datatype":"FP32","shape":[1,3],"data":[0.0,0.0,0.0]' in done.stdout
    # The next publish of the same source is version 2; nothing hidden is left behind.
    again = run_publish(affine_source, "--name", "affine", "--repository", repository)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (repository / "affine").iterdir()) == ["1", "2"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_a_model", "neither a .keras file nor a SavedModel folder"),
        (
            "fails_on_input",
            "failed on a generated input: model 'affine' version 1 rejected the input: "
            "assertion failed: [x must be positive.",
        ),
        ("lambda_layer", "--allow-unsafe-deserialization"),
        ("link_inside", "is not a regular file"),
        ("bad_name", "model name '../up' must be"),
        ("version_taken", "version 1 of 'affine' already exists"),
    ],
)
def test_refuses_what_it_cannot_serve_and_leaves_nothing_behind(
    case: str, message: str, affine_source: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    source, name, version = affine_source, "affine", None
    if case == "not_a_model":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "fails_on_input":
        source = save_affine(tmp_path / "picky", fail_on_zero=True)
    elif case == "lambda_layer":
        source = save_keras(tmp_path / "lambda.keras", with_lambda=True)
    elif case == "link_inside":
        source = tmp_path / "linked"
        shutil.copytree(affine_source, source)
        (source / "assets").mkdir(exist_ok=True)
        (source / "assets" / "passwd").symlink_to("/etc/passwd")
    elif case == "bad_name":
        name = "../up"
    elif case == "version_taken":
        (repository / "affine" / "1").mkdir(parents=True)
        version = 1
    request = ExternalModel(source=source, name=name, repository=repository, version=version)
    with pytest.raises(PublishError, match=re.escape(message)):
        publish_external(request)
    left = sorted(p.name for p in repository.rglob("*")) if repository.exists() else []
    assert left in ([], ["affine"], ["1", "affine"]), left


def test_the_cli_refuses_in_one_line_with_status_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = run_publish(tmp_path / "empty", "--name", "a", "--repository", tmp_path / "models")
    assert done.returncode == 2
    assert "error: " in done.stderr and "Traceback" not in done.stderr
    bad_metadata = run_publish(tmp_path, "--name", "a", "--metadata", "[1]")
    assert bad_metadata.returncode == 2
    assert "must be a JSON object" in bad_metadata.stderr


def test_a_polling_server_serves_the_published_version_without_a_restart(
    affine_source: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    with in_process_sync(repository, poll_interval=POLL_INTERVAL_S) as served:
        client = served.client
        assert client.get("/v2/models/affine/ready").status_code == 404
        first = run_publish(affine_source, "--name", "affine", "--repository", repository)
        assert first.returncode == 0, first.stderr
        assert infer_when_ready(client, "affine", "1") == pytest.approx([2.5, 3.0, 3.5])
        # A retrained model (another slope) becomes version 2 and answers in place of 1.
        retrained = save_affine(tmp_path / "retrained", slope=2.0, offset=0.0)
        second = run_publish(retrained, "--name", "affine", "--repository", repository)
        assert second.returncode == 0, second.stderr
        assert infer_when_ready(client, "affine", "2") == pytest.approx([2.0, 4.0, 6.0])
        assert client.get("/v2/health/live").status_code == 200


def test_a_published_keras_file_answers_as_keras_does(tmp_path: Path) -> None:
    import keras

    source = save_keras(tmp_path / "scorer.keras")
    repository = tmp_path / "models"
    repository.mkdir()
    rows = {
        "pixels": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4),
        "scale": np.array([[0.5], [2.0]], dtype=np.float32),
    }
    expected = keras.saving.load_model(source)(rows)
    with in_process_sync(repository, poll_interval=POLL_INTERVAL_S) as served:
        client = served.client
        done = run_publish(source, "--name", "scorer", "--repository", repository)
        assert done.returncode == 0, done.stderr
        assert (
            "pixels: float32 [-1, 4]" in done.stdout and "classes: float32 [-1, 3]" in done.stdout
        )
        assert (repository / "scorer" / "1" / "model.keras").is_file()
        wait_ready(client, "scorer", "1")
        body = {
            "inputs": [
                {"name": k, "datatype": "FP32", "shape": list(v.shape), "data": v.ravel().tolist()}
                for k, v in rows.items()
            ]
        }
        answer = client.post("/v2/models/scorer/infer", json=body)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: np.reshape(o["data"], o["shape"]) for o in answer.json()["outputs"]}
        assert sorted(outputs) == ["classes", "score"]
        for name, value in outputs.items():
            np.testing.assert_allclose(value, np.asarray(expected[name]), atol=1e-5)


def wait_ready(client: httpx.Client, name: str, version: str) -> None:
    deadline = time.monotonic() + 60
    while client.get(f"/v2/models/{name}/versions/{version}/ready").status_code != 200:
        assert time.monotonic() < deadline, f"{name} version {version} never became ready"
        time.sleep(0.2)


def infer_when_ready(client: httpx.Client, name: str, version: str) -> list[float]:
    """Wait (bounded) for `version` to be ready, then ask it for y at x = [1, 2, 3]."""
    wait_ready(client, name, version)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    answer = client.post(f"/v2/models/{name}/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == version
    (output,) = answer.json()["outputs"]
    return list(np.asarray(output["data"], dtype=np.float32))
