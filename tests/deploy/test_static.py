"""Static checks of the deployment files: no engine, no cluster, a few seconds each.

Compose files through the real Compose v2 binary (`config`), the Dockerfile through hadolint,
the Kubernetes manifests through kubernetes-validate --strict against the bundled API schemas,
plus the cross-file facts those tools cannot see (probe paths, labels, claim names, TF_CONFIG).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import REPO_ROOT, tool
from tests.deploy.processes import Finished, run
from tests.deploy.readme import KUBECTL_PREFIX, VALIDATED_ONLY, documented_commands

KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
COMPOSE = REPO_ROOT / "docker-compose.yml"
COMPOSE_GPU = REPO_ROOT / "docker-compose.gpu.yml"
COMPOSE_TOKENS = REPO_ROOT / "docker-compose.tokens.yml"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"

COMPOSE_VARIANTS: dict[str, list[str]] = {
    "default": ["-f", str(COMPOSE)],
    "train": ["-f", str(COMPOSE), "--profile", "train"],
    "monitoring": ["-f", str(COMPOSE), "--profile", "monitoring"],
    "all-profiles": ["-f", str(COMPOSE), "--profile", "train", "--profile", "monitoring"],
    "gpu": ["-f", str(COMPOSE), "-f", str(COMPOSE_GPU)],
    "gpu-train": ["-f", str(COMPOSE), "-f", str(COMPOSE_GPU), "--profile", "train"],
    "tokens": ["-f", str(COMPOSE), "-f", str(COMPOSE_TOKENS), "--profile", "monitoring"],
}


def compose(*args: str, env: dict[str, str] | None = None, check: bool = True) -> Finished:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KERASSERVE_", "PIP_"))}
    return run(
        [str(tool("docker-compose")), *args],
        timeout=60,
        cwd=REPO_ROOT,
        env={**clean, **(env or {})},
        check=check,
    )


def compose_model(variant: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    shown = compose(*COMPOSE_VARIANTS[variant], "config", "--format", "json", env=env)
    return json.loads(shown.stdout)


def manifests(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES_DIR / name).read_text()) if doc]


def kubernetes_validate(*paths: Path) -> Finished:
    return run(
        [str(tool("kubernetes-validate")), "--strict", *map(str, paths)], timeout=120, check=False
    )


# ------------------------------------------------------------------------ compose


@pytest.mark.parametrize("variant", list(COMPOSE_VARIANTS))
def test_compose_config_is_valid(variant: str) -> None:
    assert compose(*COMPOSE_VARIANTS[variant], "config", "-q").returncode == 0


def test_compose_config_rejects_a_bad_file(tmp_path: Path) -> None:
    """The validator is not a no-op: a wrong type and an unknown key are refused."""
    bad = tmp_path / "compose.yml"
    bad.write_text(
        "services:\n  server:\n    image: x\n    restart: sometimes\n    healthchek: {}\n"
    )
    assert compose("-f", str(bad), "config", "-q", check=False).returncode != 0


def test_server_service_is_production_shaped() -> None:
    server = compose_model("default")["services"]["server"]
    assert server["image"] == "kerasserve:latest"
    assert server["restart"] == "unless-stopped"
    assert server["healthcheck"]["test"] == ["CMD", "python", "/opt/kerasserve/healthcheck.py"]
    assert [(p["target"], p["published"]) for p in server["ports"]] == [
        (8000, "8000"),
        (8001, "8001"),
    ]
    assert server["environment"]["KERASSERVE_GRPC_PORT"] == "8001"
    assert {"type": "volume", "source": "models", "target": "/models"}.items() <= server["volumes"][
        0
    ].items()
    limits = server["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and int(limits["memory"]) >= 2 * 1024**3
    assert server["environment"]["KERASSERVE_MODEL_REPOSITORY"] == "/models"
    assert float(server["environment"]["KERASSERVE_POLL_INTERVAL"]) > 0


def test_publish_address_is_configurable() -> None:
    server = compose_model("default", env={"KERASSERVE_PUBLISH": "127.0.0.1:18000"})
    port = server["services"]["server"]["ports"][0]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "18000", 8000)


def test_profiles_keep_trainer_and_prometheus_out_of_a_plain_up() -> None:
    assert set(compose_model("default")["services"]) == {"server"}
    model = compose_model("all-profiles")
    trainer, prometheus = model["services"]["trainer"], model["services"]["prometheus"]
    assert trainer["profiles"] == ["train"] and prometheus["profiles"] == ["monitoring"]
    assert trainer["entrypoint"] == ["python", "-m", "training"]
    assert trainer["image"] == model["services"]["server"]["image"]
    assert trainer["volumes"][0]["source"] == "models"
    assert trainer["volumes"][0]["target"] == "/models"
    assert prometheus["depends_on"]["server"]["condition"] == "service_healthy"


def test_compose_hands_tokens_over_as_files_and_model_control_starts_off() -> None:
    """Secrets, not environment values; the default admin file has no token (403, no setup)."""
    model = compose_model("default")
    server = model["services"]["server"]
    assert server["environment"]["KERASSERVE_ADMIN_TOKEN_FILE"] == "/run/secrets/admin_tokens"
    assert [s["source"] for s in server["secrets"]] == ["admin_tokens"]
    assert not [k for k in server["environment"] if k.endswith(("_TOKENS", "_TOKEN"))]
    default_file = Path(model["secrets"]["admin_tokens"]["file"])
    from app.settings import read_token_file

    assert default_file.is_file() and read_token_file(default_file, allow_empty=True) == []
    chosen = compose_model("default", env={"KERASSERVE_ADMIN_TOKENS_SECRET": "/run/x/admin"})
    assert chosen["secrets"]["admin_tokens"]["file"] == "/run/x/admin"


def test_tokens_override_requires_api_tokens_and_prometheus_sends_one() -> None:
    model = compose_model("tokens")
    server, prometheus = model["services"]["server"], model["services"]["prometheus"]
    assert server["environment"]["KERASSERVE_API_TOKEN_FILE"] == "/run/secrets/api_tokens"
    assert {s["source"] for s in server["secrets"]} == {"admin_tokens", "api_tokens"}
    assert {s["source"] for s in prometheus["secrets"]} == {"api_tokens"}
    assert server["healthcheck"]["test"] == ["CMD", "python", "/opt/kerasserve/healthcheck.py"]
    (config_mount,) = [
        v for v in prometheus["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml"
    ]
    config = yaml.safe_load(Path(config_mount["source"]).read_text())
    (job,) = config["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/api_tokens"
    assert job["metrics_path"] == "/metrics"


def test_prometheus_scrapes_the_server_metrics() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["server:8000"]


def test_gpu_override_reserves_a_gpu_and_sets_memory_options() -> None:
    model = compose_model("gpu-train")
    for name in ("server", "trainer"):
        service = model["services"][name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert service["image"] == "kerasserve:gpu"
        assert service["build"]["args"]["VARIANT"] == "gpu"
    server = model["services"]["server"]
    assert server["environment"]["KERASSERVE_GPU_MEMORY_GROWTH"] == "true"
    assert server["environment"]["KERASSERVE_DEVICE"] == "gpu"
    # The CPU limits of the base file survive the merge.
    assert "limits" in server["deploy"]["resources"]
    # The memory cap is passed through only when the user sets it.
    assert server["environment"].get("KERASSERVE_GPU_MEMORY_LIMIT") is None
    capped = compose_model("gpu", env={"KERASSERVE_GPU_MEMORY_LIMIT": "4096"})
    assert capped["services"]["server"]["environment"]["KERASSERVE_GPU_MEMORY_LIMIT"] == "4096"


# ------------------------------------------------------------------------ image


def test_hadolint_is_clean() -> None:
    linted = run(
        [
            str(tool("hadolint")),
            "--config",
            str(REPO_ROOT / ".hadolint.yaml"),
            str(REPO_ROOT / "Dockerfile"),
        ],
        timeout=60,
        check=False,
    )
    assert linted.returncode == 0, linted.describe()


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN cd /tmp && echo hi\nCMD python app.py\nCOPY a b c\n")
    linted = run(
        [str(tool("hadolint")), "--config", str(REPO_ROOT / ".hadolint.yaml"), str(bad)],
        timeout=60,
        check=False,
    )
    assert linted.returncode != 0


def test_dockerfile_has_the_required_shape() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:\S+", text)
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 4  # multi-stage
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert re.search(
        r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"/opt/kerasserve/healthcheck.py\"\]",
        text,
        re.MULTILINE,
    )
    assert 'ENTRYPOINT ["python", "-m", "app"]' in text
    assert "KERASSERVE_MODEL_REPOSITORY=/models" in text
    assert re.search(r"^COPY --chown=10001:0 models /models", text, re.MULTILINE)
    assert "tests" not in re.findall(r"^COPY (\S+)", text, re.MULTILINE)
    healthcheck = (REPO_ROOT / "deploy/docker/healthcheck.py").read_text()
    assert READY_PATH in healthcheck and "KERASSERVE_PORT" in healthcheck


def test_dockerignore_is_an_allow_list() -> None:
    lines = [
        line
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded first, then the build inputs allowed back"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "app", "training", "models", "deploy/docker"} <= allowed
    assert not allowed & {".venv", "tests", ".git", "bench", "deploy"}


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_image_requirements_install_exactly_one_tensorflow(variant: str) -> None:
    listed = run(
        [
            "python3",
            str(REPO_ROOT / "deploy/docker/requirements.py"),
            variant,
            str(REPO_ROOT / "pyproject.toml"),
        ],
        timeout=30,
    ).stdout.splitlines()
    names = [re.split(r"[\[~=<>;! ]", line, maxsplit=1)[0].lower() for line in listed]
    # One distribution of the `tensorflow` module, never `tensorflow-cpu` beside it (the
    # serving API's gRPC package requires `tensorflow` itself).
    assert "tensorflow-cpu" not in names
    assert names.count("tensorflow") == 1
    assert "tensorflow-serving-api" in names
    if variant == "cpu":
        assert not any(line.startswith("tensorflow[") for line in listed)
    else:
        assert any(line.startswith("tensorflow[and-cuda]") for line in listed)
    assert {"fastapi", "keras", "setuptools"} <= set(names)
    assert "mlxtend" in names, "the image runs the training CLI: the train extra belongs in it"


# ------------------------------------------------------------------------ kubernetes


def test_kubernetes_manifests_validate_strictly() -> None:
    files = sorted(KUBERNETES_DIR.glob("*.yaml"))
    assert len(files) >= 8
    validated = kubernetes_validate(*files)
    assert validated.returncode == 0, validated.describe()
    assert "passed for resource deployment/kerasserve " in validated.stdout + validated.stderr


def test_kubernetes_validate_strict_rejects_unknown_fields(tmp_path: Path) -> None:
    (service,) = manifests("service.yaml")
    service["spec"]["portz"] = service["spec"].pop("ports")
    bad = tmp_path / "service.yaml"
    bad.write_text(yaml.safe_dump(service))
    assert kubernetes_validate(bad).returncode != 0


def _containers(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec["containers"]}


def _probe_path(container: dict[str, Any], probe: str) -> str:
    return container[probe]["httpGet"]["path"]


@pytest.mark.parametrize(
    "name, image, gpu",
    [
        ("deployment.yaml", "kerasserve:latest", False),
        ("deployment-gpu.yaml", "kerasserve:gpu", True),
    ],
)
def test_deployments_probe_the_v2_health_routes(name: str, image: str, gpu: bool) -> None:
    (deployment,) = manifests(name)
    pod = deployment["spec"]["template"]["spec"]
    server = _containers(pod)["server"]
    assert server["image"] == image
    # Readiness over gRPC (grpc.health.v1 answers what /v2/health/ready answers), on the
    # container's gRPC port; liveness over HTTP.
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert server["readinessProbe"]["grpc"]["port"] == ports["grpc"] == 8001
    assert _probe_path(server, "livenessProbe") == LIVE_PATH
    resources = server["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]
    assert ("nvidia.com/gpu" in resources["limits"]) is gpu
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["KERASSERVE_MODEL_REPOSITORY"] == "/models"
    assert env["KERASSERVE_GRPC_PORT"] == "8001"
    assert env["KERASSERVE_DEVICE"] == ("gpu" if gpu else "cpu")
    if gpu:
        assert env["KERASSERVE_GPU_MEMORY_GROWTH"] == "true"
    _assert_tokens_from_the_secret(pod, server)
    assert pod["securityContext"]["runAsNonRoot"] is True
    (seed,) = pod["initContainers"]
    assert seed["command"][:2] == ["python", "/opt/kerasserve/seed_repository.py"]


def _assert_tokens_from_the_secret(pod: dict[str, Any], server: dict[str, Any]) -> None:
    """Token files from the kerasserve-tokens Secret, mounted read-only; no token values."""
    env = {e["name"]: e.get("value") for e in server["env"]}
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "kerasserve-tokens"
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    for variable, key in (
        ("KERASSERVE_API_TOKEN_FILE", "api-tokens"),
        ("KERASSERVE_ADMIN_TOKEN_FILE", "admin-tokens"),
    ):
        assert env[variable] == f"{mount['mountPath']}/{key}"
    assert not [name for name in env if name.endswith(("_TOKENS", "_TOKEN"))]


def test_inferenceservice_reads_tokens_from_the_secret() -> None:
    (service,) = manifests("inferenceservice.yaml")
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    _assert_tokens_from_the_secret(predictor, container)
    assert container["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == LIVE_PATH


def test_service_hpa_and_claims_point_at_what_exists() -> None:
    (deployment,) = manifests("deployment.yaml")
    (service,) = manifests("service.yaml")
    (hpa,) = manifests("hpa.yaml")
    (claim,) = manifests("models-pvc.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["ports"][1]["targetPort"] == "grpc"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for name in (
        "deployment.yaml",
        "deployment-gpu.yaml",
        "training-job.yaml",
        "training-multiworker.yaml",
        "inferenceservice.yaml",
    ):
        for document in manifests(name):
            spec = document["spec"]
            pod = spec.get("template", {}).get("spec") or spec.get("predictor")
            if pod is None:
                continue
            claims = [
                v["persistentVolumeClaim"]["claimName"]
                for v in pod["volumes"]
                if "persistentVolumeClaim" in v
            ]
            assert claims == [claim["metadata"]["name"]], name


def test_training_job_publishes_into_the_model_volume() -> None:
    (job,) = manifests("training-job.yaml")
    (train,) = job["spec"]["template"]["spec"]["containers"]
    assert train["command"] == ["python", "-m", "training"]
    assert train["args"][:3] == ["mnist", "--repository", "/models"]
    assert {"name": "models", "mountPath": "/models"} in train["volumeMounts"]


@pytest.mark.parametrize("index", [0, 1])
def test_multiworker_job_gives_each_worker_its_tf_config(index: int) -> None:
    service, job = manifests("training-multiworker.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 2
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    (worker,) = pod["containers"]
    script = worker["args"][0]
    assert "--strategy multi-worker" in script
    # Run the real shell script up to the training command, printing TF_CONFIG instead.
    exported, _ = script.split("&& exec python", 1)
    shown = subprocess.run(
        ["sh", "-c", exported + '&& printf %s "$TF_CONFIG"'],
        env={"JOB_COMPLETION_INDEX": str(index), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    tf_config = json.loads(shown.stdout)
    job_name, service_name = job["metadata"]["name"], service["metadata"]["name"]
    assert tf_config["task"] == {"type": "worker", "index": index}
    assert tf_config["cluster"]["worker"] == [
        f"{job_name}-{i}.{service_name}:{service['spec']['ports'][0]['port']}" for i in range(2)
    ]


def test_inferenceservice_is_a_v2_custom_predictor(tmp_path: Path) -> None:
    """The KServe CRD has no bundled schema: check its shape here, and validate its pod parts
    (containers, init containers, volumes, security context) strictly as a core Pod."""
    (isvc,) = manifests("inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])
    assert set(isvc["spec"]) == {"predictor"}
    predictor = isvc["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    port = container["ports"][0]["containerPort"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KERASSERVE_PORT"] == str(port)
    (grpc_port,) = [p["containerPort"] for p in container["ports"] if p.get("name") == "h2c"]
    assert env["KERASSERVE_GRPC_PORT"] == str(grpc_port)
    for probe, path in (("readinessProbe", READY_PATH), ("livenessProbe", LIVE_PATH)):
        assert container[probe]["httpGet"] == {"path": path, "port": port}
    pod_fields = {"containers", "initContainers", "volumes", "securityContext"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "isvc-predictor"},
        "spec": {k: v for k, v in predictor.items() if k in pod_fields},
    }
    assert set(predictor) - pod_fields == {"minReplicas", "maxReplicas"}
    as_pod = tmp_path / "predictor-pod.yaml"
    as_pod.write_text(yaml.safe_dump(pod))
    validated = kubernetes_validate(as_pod)
    assert validated.returncode == 0, validated.describe()


# ------------------------------------------------------------------------ README


def test_every_documented_command_is_run_or_validated() -> None:
    from tests.deploy.test_docker_real import SCENARIO_COMMANDS

    commands = documented_commands()
    assert commands, "the deployment section shows no commands"
    for command in commands:
        if command.startswith(KUBECTL_PREFIX):
            files = [Path(word) for word in shlex.split(command) if word.endswith(".yaml")]
            assert files and all((REPO_ROOT / f).parent == KUBERNETES_DIR for f in files)
            assert all((REPO_ROOT / f).is_file() for f in files), command
        else:
            assert command in SCENARIO_COMMANDS or command in VALIDATED_ONLY, command
    assert set(SCENARIO_COMMANDS) <= set(commands), "the real test runs undocumented commands"
