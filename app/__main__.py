"""`python -m app`: parse the command line over the environment, then run uvicorn.

Every option has a `KERASSERVE_*` variable (shown in `--help`); the command line wins. With one
worker the app is built here, so a bad device request (`--device gpu` without a GPU) stops the
start with a one-line error and exit status 2. With several workers each worker builds its own
app from the environment, which is why the parsed options are exported to it first.

uvicorn's access log is off unless `--access-log` (or `KERASSERVE_ACCESS_LOG=true`) asks for it:
one formatted log line per request is a measurable share of a sub-millisecond request, and the
request metrics (and the debug-level request log of `app.observability`) already cover it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr, ValidationError

from app.batching import BatchingOptions
from app.settings import ENV_PREFIX, Settings

EXIT_START_ERROR = 2
# Batching defaults with their own flag (the others: KERASSERVE_BATCHING__* only).
_BATCHING_FLAGS = (
    ("--max-queued-bytes", "max_queued_bytes", "input bytes queued per model (429 above)"),
    (
        "--max-variable-dim",
        "max_variable_dim",
        "largest variable non-batch dimension of an "
        "input, e.g. the OCR width, on every protocol (413 above)",
    ),
)
ACCESS_LOG_ENV = "KERASSERVE_ACCESS_LOG"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def _env(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve the SavedModels of a model repository over the TensorFlow Serving "
        "REST API, KServe v2 and task endpoints.",
        epilog="Batching defaults: KERASSERVE_BATCHING__ENABLED, __MAX_BATCH_SIZE, "
        "__MAX_BATCH_DELAY_US, __MAX_QUEUED_ROWS, __MAX_QUEUED_BYTES, __TIMEOUT_S, "
        "__INFERENCE_THREADS, __MAX_VARIABLE_DIM.",
    )

    def option(flag: str, field: str, help_text: str, **kwargs: Any) -> None:
        default = defaults[field].default
        shown = (
            "none"
            if default in (None, ())
            else (str(default).lower() if isinstance(default, bool) else default)
        )
        parser.add_argument(
            flag,
            dest=field,
            default=None,
            help=f"{help_text} (env {_env(field)}, default {shown})",
            **kwargs,
        )

    option("--host", "host", "interface to listen on")
    option("--port", "port", "TCP port", type=int)
    option("--grpc-port", "grpc_port", "gRPC port, same host (0: no gRPC server)", type=int)
    option(
        "--grpc-max-concurrent-rpcs",
        "grpc_max_concurrent_rpcs",
        "gRPC calls served at once; more are refused (RESOURCE_EXHAUSTED)",
        type=int,
        metavar="N",
    )
    option(
        "--model-repository",
        "model_repository",
        "folder with <name>/<version>/ models",
        metavar="DIR",
    )
    option("--workers", "workers", "uvicorn worker processes", type=int, metavar="N")
    option("--device", "device", "where TensorFlow runs", choices=["auto", "cpu", "gpu"])
    option(
        "--gpu-memory-growth",
        "gpu_memory_growth",
        "allocate GPU memory as needed",
        action="store_const",
        const=True,
    )
    option("--gpu-memory-limit", "gpu_memory_limit", "cap per GPU in MB", type=int, metavar="MB")
    option(
        "--log-device-placement",
        "log_device_placement",
        "log the device of every op",
        action="store_const",
        const=True,
    )
    option(
        "--intra-op-threads",
        "intra_op_threads",
        "TensorFlow intra-op threads (0: TF decides)",
        type=int,
        metavar="N",
    )
    option(
        "--inter-op-threads",
        "inter_op_threads",
        "TensorFlow inter-op threads (0: TF decides)",
        type=int,
        metavar="N",
    )
    option(
        "--max-body-bytes",
        "max_body_bytes",
        "largest request body accepted (413 above)",
        type=int,
        metavar="BYTES",
    )
    option(
        "--max-tensor-rank",
        "max_tensor_rank",
        "most dimensions of an input tensor (400 above)",
        type=int,
        metavar="N",
    )
    option(
        "--max-tensor-elements",
        "max_tensor_elements",
        "most elements of one input tensor, as declared and as sent (413 above)",
        type=int,
        metavar="N",
    )
    option(
        "--max-request-elements",
        "max_request_elements",
        "most tensor elements of one request, all inputs together (413 above)",
        type=int,
        metavar="N",
    )
    option(
        "--inline-parse-bytes",
        "inline_parse_bytes",
        "larger JSON bodies are parsed off the event loop, in slices",
        type=int,
        metavar="BYTES",
    )
    option(
        "--max-image-bytes",
        "max_image_bytes",
        "largest picture file on /tasks (413 above)",
        type=int,
        metavar="BYTES",
    )
    option(
        "--max-image-pixels",
        "max_image_pixels",
        "most pixels of a picture, from its header (413 above)",
        type=int,
        metavar="N",
    )
    option(
        "--max-image-side",
        "max_image_side",
        "longest side of a picture in pixels (413 above)",
        type=int,
        metavar="N",
    )
    option(
        "--max-image-aspect",
        "max_image_aspect",
        "longer side / shorter side of a picture (413 above)",
        type=float,
        metavar="RATIO",
    )
    option(
        "--max-image-decode-bytes",
        "max_image_decode_bytes",
        "memory one picture's decode may take: pixels x bytes per pixel of its mode (413 above)",
        type=int,
        metavar="BYTES",
    )
    option(
        "--image-decode-threads",
        "image_decode_threads",
        "pictures decoded at once",
        type=int,
        metavar="N",
    )
    option(
        "--image-decode-queue",
        "image_decode_queue",
        "pictures waiting for a decode thread (429 above)",
        type=int,
        metavar="N",
    )
    batching_defaults = BatchingOptions()
    for flag, field, help_text in _BATCHING_FLAGS:
        parser.add_argument(
            flag,
            dest=f"batching.{field}",
            default=None,
            type=int,
            metavar="N",
            help=f"{help_text} (env {_env('batching__' + field)}, "
            f"default {getattr(batching_defaults, field)})",
        )
    option(
        "--log-level",
        "log_level",
        "log level",
        choices=["critical", "error", "warning", "info", "debug"],
    )
    option(
        "--log-format", "log_format", "text, or one JSON object per line", choices=["text", "json"]
    )
    option(
        "--poll-interval",
        "poll_interval",
        "seconds between repository scans (0: off)",
        type=float,
        metavar="S",
    )
    option(
        "--repository-config",
        "repository_config",
        "version policies, labels and batching per model (default: <repository>/config.yaml)",
        metavar="FILE",
    )
    option(
        "--state-dir",
        "state_dir",
        "directory where worker processes share model-control decisions (load/unload); "
        "replicas given the same one share them too (default: memory with one worker, a "
        "private directory per run with several)",
        metavar="DIR",
    )
    option(
        "--shutdown-grace",
        "shutdown_grace",
        "seconds in-flight requests get to finish after SIGTERM",
        type=float,
        metavar="S",
    )
    option(
        "--warmup-max-bytes",
        "warmup_max_bytes",
        "largest TF Serving warm-up file a version may ship (larger: the version fails to load)",
        type=int,
        metavar="BYTES",
    )
    option(
        "--warmup-max-records",
        "warmup_max_records",
        "most records in a warm-up file (more: the version fails to load)",
        type=int,
        metavar="N",
    )
    option(
        "--custom-objects-module",
        "custom_objects_modules",
        "Python module imported before a model.keras version loads (it registers custom layers "
        "and objects); repeatable",
        action="append",
        metavar="MODULE",
    )
    option(
        "--allow-unsafe-deserialization",
        "allow_unsafe_deserialization",
        "load model.keras archives holding Python bytecode (Lambda layers); only for trusted "
        "archives",
        action="store_const",
        const=True,
    )
    option(
        "--api-token",
        "api_tokens",
        "bearer token for inference, metadata, task and "
        "metrics routes; repeat for several (env: comma-separated; prefer a token file: "
        "command lines are visible to other users)",
        action="append",
        metavar="TOKEN",
    )
    option(
        "--admin-token",
        "admin_tokens",
        "bearer token for the model-control routes "
        "(/v2/repository/*), which answer 403 without one; repeatable",
        action="append",
        metavar="TOKEN",
    )
    option(
        "--api-token-file",
        "api_token_file",
        "file with API tokens, one per line (a mounted secret)",
        metavar="FILE",
    )
    option(
        "--admin-token-file",
        "admin_token_file",
        "file with admin tokens, one per line",
        metavar="FILE",
    )
    option(
        "--cors-origin",
        "cors_origins",
        "origin allowed to call the API from a browser (CORS); repeatable; none: no CORS headers",
        action="append",
        metavar="ORIGIN",
    )
    option(
        "--max-header-bytes",
        "max_header_bytes",
        "largest request line + headers accepted (431 above)",
        type=int,
        metavar="BYTES",
    )
    option(
        "--max-headers",
        "max_headers",
        "most request headers accepted (431 above)",
        type=int,
        metavar="N",
    )
    option(
        "--header-timeout",
        "header_timeout",
        "seconds a client gets to send a request's "
        "line and headers before the connection is closed",
        type=float,
        metavar="S",
    )
    option(
        "--max-connections",
        "max_connections",
        "open connections per worker process (503 and close above)",
        type=int,
        metavar="N",
    )
    parser.add_argument(
        "--access-log",
        dest="access_log",
        action="store_const",
        const=True,
        default=None,
        help=f"log every request with uvicorn's access log (env "
        f"{ACCESS_LOG_ENV}, default false: it costs time on "
        "every request)",
    )
    return parser


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[Settings, bool]:
    """Settings and the access-log switch: the environment, overridden by the command line."""
    arguments = vars(build_parser().parse_args(argv))
    access_log = arguments.pop("access_log")
    batching = {
        key.split(".", 1)[1]: arguments.pop(key)
        for key in list(arguments)
        if key.startswith("batching.")
    }
    batching = {key: value for key, value in batching.items() if value is not None}
    if batching:  # merged over KERASSERVE_BATCHING__* by pydantic-settings
        arguments["batching"] = batching
    if access_log is None:
        access_log = os.environ.get(ACCESS_LOG_ENV, "").strip().lower() in TRUE_WORDS
    settings = Settings(**{key: value for key, value in arguments.items() if value is not None})
    return settings, access_log


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the environment, overridden by whatever the command line gave."""
    return parse_arguments(argv)[0]


def _env_value(value: Any) -> str:
    """A setting as its `KERASSERVE_*` variable reads: lists comma-separated, secrets in clear
    (the workers need the tokens; they go to the environment, never to a log)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, tuple | list):
        return ",".join(_env_value(item) for item in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _export(settings: Settings) -> None:
    """Hand the parsed options to worker processes, which read only the environment."""
    for key, value in settings.model_dump(exclude={"batching"}).items():
        if value is not None:
            os.environ[_env(key)] = _env_value(value)
    for field in dataclasses.fields(settings.batching):
        os.environ[_env("batching__" + field.name)] = _env_value(
            getattr(settings.batching, field.name)
        )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, access_log = parse_arguments(argv)
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_START_ERROR
    try:
        settings.token_guard()  # token files readable, tokens well-formed: fail before start
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START_ERROR
    if not settings.model_repository.is_dir():
        print(
            f"error: model repository {str(settings.model_repository)!r} is not a directory "
            f"(set --model-repository or {_env('model_repository')})",
            file=sys.stderr,
        )
        return EXIT_START_ERROR
    if settings.grpc_port and not port_is_free(settings.host, settings.grpc_port):
        print(
            f"error: cannot listen for gRPC on {settings.host}:{settings.grpc_port}: the "
            f"port is in use (set --grpc-port, or 0 for no gRPC)",
            file=sys.stderr,
        )
        return EXIT_START_ERROR
    # Imported only now: TensorFlow takes seconds to import, option errors should not wait.
    from app.devices import DeviceUnavailableError, configure_devices
    from app.main import create_app
    from app.serve import serve_one, serve_workers

    try:
        if settings.workers == 1:
            app = create_app(settings)
        elif settings.device == "gpu":
            configure_devices(settings.device_options())  # fail here, not in every worker
    except DeviceUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START_ERROR
    if settings.workers > 1:
        _export(settings)
        serve_workers(settings, access_log)
        return 0
    # Draining and the exit status belong to the app (`app.lifecycle`): this returns after
    # the drain, and the process exits 0.
    serve_one(app, settings, access_log)
    if app.state.grpc.error is not None:  # logged when it happened
        return EXIT_START_ERROR
    return 0


def port_is_free(host: str, port: int) -> bool:
    """Whether a plain bind of `host:port` works now (the gRPC server binds it later, from
    the app's lifespan, where a failure could not stop the start as clearly)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gRPC binds: connections of an earlier server in TIME_WAIT do not block the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
