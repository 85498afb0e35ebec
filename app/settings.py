"""Service settings: one pydantic-settings class, read from `KERASSERVE_*` variables.

Nothing is parsed at import time: `python -m app` builds one `Settings` from the command line
and the environment, tests build their own, and both hand it to `app.main.create_app`. Command
line values win over the environment, which wins over the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.batching import BatchingOptions
from app.devices import DeviceMode, DeviceOptions
from app.keras_archive import KerasOptions
from app.limits import ImageLimits, TensorLimits
from app.repository.config import DEFAULT_CONFIG_NAME
from app.security.tokens import TokenGuard

ENV_PREFIX = "KERASSERVE_"
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["text", "json"]
# Lists from the environment are comma-separated (`KERASSERVE_API_TOKENS=a,b`), not JSON.
CommaList = Annotated[tuple[str, ...], NoDecode]
SecretList = Annotated[tuple[SecretStr, ...], NoDecode]


class TokenFileError(ValueError):
    """A token file that cannot be read or holds no token (a start error, not a 500)."""


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def read_token_file(path: Path, allow_empty: bool = False) -> list[str]:
    """One token per line, as a mounted Kubernetes/Compose secret has it; blank lines and lines
    starting with `#` are skipped. A file without a token is an error unless `allow_empty`: an
    empty admin token file leaves model control off (closed), but an empty API token file would
    leave the API open, so it stops the start instead."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(
            f"cannot read token file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    tokens = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not tokens and not allow_empty:
        raise TokenFileError(f"token file {str(path)!r} holds no token")
    return tokens


class Settings(BaseSettings):
    """Everything the service can be told at start; see `python -m app --help`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        protected_namespaces=(),
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # gRPC (app.protocols.grpc): same host, its own port (Triton's 8001; 0: no gRPC server);
    # calls beyond the concurrency cap are refused (RESOURCE_EXHAUSTED), not queued.
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    grpc_max_concurrent_rpcs: int = Field(default=1024, ge=1)
    model_repository: Path = Path("models")
    workers: int = Field(default=1, ge=1)
    log_level: LogLevel = "info"
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Data limits (app.limits, app.tasks.images): tensors as declared and as sent, pictures
    # from their header, bodies parsed off the event loop above `inline_parse_bytes`.
    max_tensor_rank: int = Field(default=8, ge=1)
    max_tensor_elements: int = Field(default=1 << 24, ge=1)
    max_request_elements: int = Field(default=1 << 25, ge=1)
    inline_parse_bytes: int = Field(default=1 << 20, ge=0)
    max_image_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    max_image_side: int = Field(default=10_000, ge=28)
    max_image_aspect: float = Field(default=250.0, ge=1.0)
    max_image_decode_bytes: int = Field(default=128 * 1024 * 1024, ge=1024 * 1024)
    image_decode_threads: int = Field(default=2, ge=1)
    image_decode_queue: int = Field(default=8, ge=0)

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

    # Model lifecycle (app.repository.reloader): repository polling (0: off), the repository
    # config file (default <model_repository>/config.yaml), SIGTERM grace period, log format.
    poll_interval: float = Field(default=2.0, ge=0, description="seconds")
    repository_config: Path | None = None
    # Where the worker processes share the model-control API's decisions
    # (app.repository.control_state); none: in memory with one worker, a private directory per
    # run with several.
    state_dir: Path | None = None
    shutdown_grace: float = Field(default=30.0, ge=0, description="seconds")
    log_format: LogFormat = "text"
    # Bounds on a version's TF Serving warm-up file (app.warmup): over them the version fails
    # to load with a message saying which.
    warmup_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    warmup_max_records: int = Field(default=1000, ge=1)
    # Keras archives (`model.keras` versions, app.keras_archive): modules imported before one
    # loads (they register custom layers and objects), and whether Python bytecode (a Lambda's
    # function) may be deserialized; off, Keras' safe mode refuses such an archive.
    custom_objects_modules: CommaList = ()
    allow_unsafe_deserialization: bool = False

    # Access (app.security): bearer tokens for the API routes and for the admin routes, given
    # directly (repeatable flag, comma-separated variable) or as files of one token per line.
    # Without an admin token the admin routes answer 403. CORS is off unless origins are given.
    api_tokens: SecretList = ()
    admin_tokens: SecretList = ()
    api_token_file: Path | None = None
    admin_token_file: Path | None = None
    cors_origins: CommaList = ()

    # HTTP-stack limits (app.security.http_limits), enforced before the app sees a request:
    # request line + headers in bytes and count (431), the time to receive them (connection
    # closed), open connections per process (503 to the ones over the cap).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    header_timeout: float = Field(default=10.0, gt=0, description="seconds")
    max_connections: int = Field(default=1024, ge=1)

    @field_validator(
        "api_tokens", "admin_tokens", "cors_origins", "custom_objects_modules", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    def token_guard(self) -> TokenGuard:
        """The guard for the configured tokens; reads the token files (TokenFileError)."""
        api = [token.get_secret_value() for token in self.api_tokens]
        admin = [token.get_secret_value() for token in self.admin_tokens]
        if self.api_token_file is not None:
            api += read_token_file(self.api_token_file)
        if self.admin_token_file is not None:
            admin += read_token_file(self.admin_token_file, allow_empty=True)
        return TokenGuard(api_tokens=api, admin_tokens=admin)

    def keras_options(self) -> KerasOptions:
        """How `model.keras` versions are loaded (`app.keras_archive`)."""
        return KerasOptions(
            custom_objects_modules=self.custom_objects_modules,
            allow_unsafe_deserialization=self.allow_unsafe_deserialization,
        )

    def tensor_limits(self) -> TensorLimits:
        """The tensor bounds every transport applies (`app.limits`)."""
        return TensorLimits(
            max_rank=self.max_tensor_rank,
            max_tensor_elements=self.max_tensor_elements,
            max_request_elements=self.max_request_elements,
        )

    def image_limits(self) -> ImageLimits:
        """The bounds on uploaded pictures (`app.tasks.images`)."""
        return ImageLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            max_side=self.max_image_side,
            max_aspect=self.max_image_aspect,
            max_decode_bytes=self.max_image_decode_bytes,
        )

    def repository_config_path(self) -> Path:
        """The config file in force: the option, or `config.yaml` in the repository."""
        return self.repository_config or self.model_repository / DEFAULT_CONFIG_NAME

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
