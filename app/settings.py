"""Service settings: one pydantic-settings class, read from `KERASSERVE_*` variables.

Nothing is parsed at import time: `python -m app` builds one `Settings` from the command line
and the environment, tests build their own, and both hand it to `app.main.create_app`. Command
line values win over the environment, which wins over the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.batching import BatchingOptions
from app.devices import DeviceMode, DeviceOptions

ENV_PREFIX = "KERASSERVE_"
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Everything the service can be told at start; see `python -m app --help`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore",
        protected_namespaces=(),
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    model_repository: Path = Path("models")
    workers: int = Field(default=1, ge=1)
    log_level: LogLevel = "info"
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    device: DeviceMode = "auto"
    gpu_memory_growth: bool = False
    gpu_memory_limit: int | None = Field(default=None, description="MB per GPU")
    log_device_placement: bool = False
    intra_op_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)

    # Defaults of every model's batching (the batcher's own dataclass, validated by pydantic);
    # environment form: KERASSERVE_BATCHING__MAX_BATCH_SIZE=32. enabled=false: unbatched runner.
    batching: BatchingOptions = BatchingOptions()
    drain_timeout_s: float = Field(default=10.0, ge=0)

    # Model lifecycle (issue 5, app.reloader): repository polling (0: off), the repository
    # config file (default <model_repository>/config.yaml), SIGTERM grace period, log format.
    poll_interval: float = Field(default=2.0, ge=0, description="seconds")
    repository_config: Path | None = None
    shutdown_grace: float = Field(default=30.0, ge=0, description="seconds")
    log_format: LogFormat = "text"

    def repository_config_path(self) -> Path:
        """The config file in force: the option, or `config.yaml` in the repository."""
        return self.repository_config or self.model_repository / "config.yaml"

    def device_options(self) -> DeviceOptions:
        """The subset `app.devices.configure_devices` needs (shared with training)."""
        return DeviceOptions(
            device=self.device,
            gpu_memory_growth=self.gpu_memory_growth,
            gpu_memory_limit_mb=self.gpu_memory_limit,
            log_device_placement=self.log_device_placement,
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
        )
