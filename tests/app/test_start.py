"""Starting the service: options and environment, device checks, start-up errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from app.__main__ import build_parser, parse_settings
from tests.live_server import REPO_ROOT, free_port, service_command

START_ERROR_TIMEOUT_S = 120


def test_help_documents_every_environment_variable() -> None:
    text = build_parser().format_help()
    for variable in (
        "HOST",
        "PORT",
        "MODEL_REPOSITORY",
        "WORKERS",
        "DEVICE",
        "GPU_MEMORY_GROWTH",
        "GPU_MEMORY_LIMIT",
        "LOG_DEVICE_PLACEMENT",
        "INTRA_OP_THREADS",
        "INTER_OP_THREADS",
        "MAX_BODY_BYTES",
        "LOG_LEVEL",
    ):
        assert f"KERASSERVE_{variable}" in text.replace("\n", "").replace(" ", ""), variable


def test_command_line_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERASSERVE_PORT", "9100")
    monkeypatch.setenv("KERASSERVE_DEVICE", "cpu")
    monkeypatch.setenv("KERASSERVE_GPU_MEMORY_LIMIT", "512")
    monkeypatch.setenv("KERASSERVE_BATCHING__MAX_BATCH_SIZE", "16")
    settings = parse_settings(["--port", "9200", "--gpu-memory-growth"])
    assert settings.port == 9200
    assert settings.device == "cpu"
    assert settings.gpu_memory_growth is True
    assert settings.batching.max_batch_size == 16
    options = settings.device_options()
    assert options.gpu_memory_limit_mb == 512 and options.gpu_memory_growth


def _start_and_expect_failure(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        service_command(Path(args[0]), free_port(), args[1:]),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=START_ERROR_TIMEOUT_S,
    )


def test_gpu_requested_without_a_gpu_is_a_clear_start_error(model_repository: Path) -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    result = _start_and_expect_failure([str(model_repository), "--device", "gpu"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: device 'gpu' was requested but TensorFlow sees no GPU" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_repository_is_a_clear_start_error(tmp_path: Path) -> None:
    result = _start_and_expect_failure([str(tmp_path / "absent"), "--device", "cpu"])
    assert result.returncode == 2
    assert "is not a directory" in result.stderr and "Traceback" not in result.stderr


def test_server_metadata_reports_cpu_mode(client: httpx.Client) -> None:
    body = client.get("/v2").json()
    assert body["name"] == "kerasserve"
    assert body["device"]["mode"] == "cpu"
    assert not any("GPU" in device for device in body["device"]["visible_devices"])
    assert "binary_tensor_data" in body["extensions"]


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_batching_timeout_that_is_not_a_positive_finite_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """nan compares false with everything: accepted once, it failed every request with a 500."""
    from pydantic import ValidationError

    monkeypatch.setenv("KERASSERVE_BATCHING__TIMEOUT_S", value)
    with pytest.raises(ValidationError, match="timeout_s must be (finite|positive)"):
        parse_settings([])
