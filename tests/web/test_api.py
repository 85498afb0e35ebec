"""What the page needs from the API, checked over HTTP: the page itself, the model input the
task endpoints return on request, and each version's training record."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np

from tests.live_server import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def png(path: Path) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (path.name, path.read_bytes(), "image/png")}


def test_page_and_its_files_are_served_with_a_strict_policy(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert '<script type="module" src="/web/app.js">' in page.text
    for name, kind in (
        ("app.js", "javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        answer = api.get(f"/web/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"], name
        assert answer.headers["x-content-type-options"] == "nosniff"
    # Nothing outside the static folder, and errors are the service's JSON errors.
    for path in ("/web/../main.py", "/web/%2e%2e/main.py", "/web/missing.js"):
        answer = api.get(path)
        assert answer.status_code == 404 and "error" in answer.json(), path
    # Every file the page loads comes from this server: no URL of another host in any of them.
    static = REPO_ROOT / "app" / "web" / "static"
    for source in static.iterdir():
        text = source.read_text(encoding="utf-8")
        assert (
            "http://" not in text.replace('"http://www.w3.org/2000/svg"', "")
            and "https://" not in text
        ), source.name


def test_default_task_answers_are_unchanged(api: httpx.Client) -> None:
    digit = api.post("/tasks/classify-digit", files=png(EXAMPLES / "digit-7.png")).json()
    assert set(digit) == {"digit", "probabilities", "model_version"}
    number = api.post("/tasks/read-digits", files=png(EXAMPLES / "digits-11745.png")).json()
    assert set(number) == {"text", "confidence", "model_version"}
    skew = api.post("/tasks/estimate-skew", files=png(EXAMPLES / "digit-7.png")).json()
    assert set(skew) == {"angle_degrees", "scale", "model_version"}


def test_include_input_returns_exactly_what_the_model_was_given(api: httpx.Client) -> None:
    answer = api.post(
        "/tasks/classify-digit?top_k=10&include_input=true", files=png(EXAMPLES / "digit-7.png")
    ).json()
    image = np.asarray(answer["model_input"], dtype=np.float32)
    assert image.shape == (28, 28) and image.min() == 0.0 and 0.9 < image.max() <= 1.0
    # The same values through v2 give the same probabilities: nothing was rounded away.
    version = answer["model_version"]
    inferred = api.post(
        f"/v2/models/mnist/versions/{version}/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, 28, 28, 1],
                    "data": image.ravel().tolist(),
                }
            ]
        },
    ).json()
    probabilities = next(o["data"] for o in inferred["outputs"] if o["name"] == "probabilities")
    by_digit = {entry["digit"]: entry["probability"] for entry in answer["probabilities"]}
    assert np.allclose([by_digit[d] for d in range(10)], probabilities, atol=1e-6)
    assert answer["digit"] == 7 == int(np.argmax(probabilities))

    skew = api.post(
        "/tasks/estimate-skew?include_input=true", files=png(EXAMPLES / "digit-7.png")
    ).json()
    assert np.asarray(skew["model_input"]).shape == (28, 28)


def test_read_digits_can_return_its_input_and_per_step_probabilities(api: httpx.Client) -> None:
    answer = api.post(
        "/tasks/read-digits?include_input=true&include_steps=true",
        files=png(EXAMPLES / "digits-11745.png"),
    ).json()
    strip = np.asarray(answer["model_input"])
    steps = np.asarray(answer["step_probabilities"])
    assert strip.shape[0] == 28 and strip.shape[1] >= 28
    assert steps.shape == (-(-strip.shape[1] // 4), 11)
    assert np.allclose(steps.sum(axis=1), 1.0, atol=1e-4)
    # Greedy decoding of the steps gives the text the endpoint answered.
    best = steps.argmax(axis=1)
    decoded = [int(c) for i, c in enumerate(best) if c != 10 and (i == 0 or c != best[i - 1])]
    assert "".join(map(str, decoded)) == answer["text"] == "11745"
    only_steps = api.post(
        "/tasks/read-digits?include_steps=true", files=png(EXAMPLES / "digits-11745.png")
    ).json()
    assert "model_input" not in only_steps and "step_probabilities" in only_steps


def test_training_record_of_a_version_trained_now(api: httpx.Client, web_repository: Path) -> None:
    record = api.get("/v2/models/mnist/versions/1/training")
    assert record.status_code == 200
    body = record.json()
    assert (body["name"], body["version"], body["state"]) == ("mnist", "1", "AVAILABLE")
    assert body["labels"] == ["canary"] and body["error"] is None
    metadata = body["metadata"]
    history = metadata["training"]["history"]
    assert set(history) == {"loss", "accuracy"} and all(len(v) == 2 for v in history.values())
    counts = np.asarray(metadata["figures"]["confusion_matrix"]["counts"])
    assert counts.shape == (10, 10) and counts.sum() == metadata["data"]["heldout_rows"] == 500
    assert str(web_repository) not in record.text and str(REPO_ROOT) not in record.text


def test_training_record_of_older_and_foreign_versions(api: httpx.Client) -> None:
    committed = api.get("/v2/models/mnist/versions/2/training").json()
    assert committed["labels"] == ["stable"]
    assert "history" not in committed["metadata"]["training"]  # trained before it was kept
    assert committed["metadata"]["metrics"]["heldout_accuracy"] > 0.98
    foreign = api.get("/v2/models/scaler/versions/1/training").json()
    assert foreign["metadata"] == {} and foreign["labels"] == []
    for path, status in (
        ("/v2/models/mnist/versions/9/training", 404),
        ("/v2/models/nothing/versions/1/training", 404),
        ("/v2/models/mnist/versions/x/training", 400),
    ):
        answer = api.get(path)
        assert answer.status_code == status and answer.json()["error"], path


def test_paths_in_metadata_never_reach_the_client(web_repository: Path, tmp_path: Path) -> None:
    """A version fine-tuned from local weights on a local npz records both paths; the route
    cuts them down to file names (checked on the function the route uses)."""
    from app.protocols.training_info import strip_paths

    recorded = json.loads((web_repository / "mnist" / "1" / "metadata.json").read_text())
    recorded["training"]["init_from"] = str(tmp_path / "models/mnist/3/keras/model.weights.h5")
    recorded["data"]["source"] = f"npz:{tmp_path}/mnist.npz"
    picture = "iVBORw0KGgo+/AAAA/2Fk/Zz=="  # base64 has slashes: data, not a path
    recorded["figures"]["heldout_strips"] = [{"text": "1", "png": picture}]
    cleaned = json.dumps(strip_paths(recorded))
    assert str(tmp_path) not in cleaned
    assert '"init_from": ".../model.weights.h5"' in cleaned
    assert '"source": "npz:.../mnist.npz"' in cleaned
    assert '"/device:CPU:0"' in cleaned  # TensorFlow device names are not paths
    assert json.loads(cleaned)["figures"]["heldout_strips"][0]["png"] == picture
    assert strip_paths(f"{picture} from {tmp_path}/x.png") == f"{picture} from .../x.png"
