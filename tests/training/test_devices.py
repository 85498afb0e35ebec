"""Device options through the training CLI on this CPU-only machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import tensorflow as tf

from tests.training.conftest import TINY_RUN, TinyRuns
from training import cli, publish

pytestmark = pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")),
    reason="this machine has a GPU: these checks describe a machine without one",
)


def test_cpu_mode_hides_gpus_and_reports_memory_options(tiny_runs: TinyRuns) -> None:
    # The deskew tiny run was started with --device cpu --gpu-memory-growth
    # --gpu-memory-limit 512: accepted, and reported as such in the metadata.
    devices = publish.read_metadata(tiny_runs.repository / "deskew" / "1")["training"]["devices"]
    assert devices["mode"] == "cpu"
    assert not any("GPU" in name for name in devices["visible_devices"])
    assert devices["requested"]["gpu_memory_growth"] is True
    assert devices["requested"]["gpu_memory_limit_mb"] == 512
    # Read back from TensorFlow: no GPU, so nothing was applied to one.
    assert devices["gpu_memory_growth"] == {} and devices["gpu_memory_limit_mb"] == {}
    assert any("no GPU is present" in note for note in devices["notes"])


def test_asking_for_a_gpu_fails_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["mnist", *TINY_RUN, "--repository", str(tmp_path), "--device", "gpu"])
    assert status == 2
    error = capsys.readouterr().err
    assert "device 'gpu' was requested but TensorFlow sees no GPU" in error
    assert not (tmp_path / "mnist").exists()  # failed before any work


def test_non_positive_memory_limit_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["mnist", "--gpu-memory-limit", "0"])
    assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err
