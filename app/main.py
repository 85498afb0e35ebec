"""`create_app(settings)`: the FastAPI application, its routers, error handling and lifespan.

The lifespan starts loading the repository in the background and returns at once, so liveness
answers while models load; readiness turns true only when every selected version has loaded and
warmed up (or failed, which its status reports). Errors become `{"error": "..."}` in one place:
`ServingError` with its own status, request validation as 400, unknown routes as 404, anything
else as a 500 whose traceback goes to the log and never to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app import web
from app.batching import BatchingOptions
from app.batching.runners import Runner, build_runner
from app.body_limit import BodySizeLimitMiddleware
from app.dataplane import SERVER_NAME, SERVER_VERSION, DataPlane
from app.devices import DeviceReport, configure_devices, gpu_memory_in_use
from app.errors import ServingError
from app.lifecycle import Lifecycle
from app.logging_setup import configure_logging
from app.metrics import ServiceMetrics
from app.observability import RequestObserver, use_log_format
from app.protocols import kserve_v2, prometheus, repository_control, tfserving, training_info
from app.protocols.common import json_response
from app.protocols.grpc.lifecycle import GrpcLifecycle
from app.protocols.hot_routes import hoist_inference_routes
from app.registry import ModelRegistry
from app.repository.control_state import control_state_for
from app.repository.reloader import RepositoryReloader
from app.security.http import AccessMiddleware, document_bearer_tokens
from app.servable import Servable
from app.settings import Settings
from app.tasks import routes as tasks
from app.tasks.decoding import DecodePool
from app.warmup import WarmupLimits

log = logging.getLogger(__name__)

# KServe v2 extensions this server implements (reported by `GET /v2`).
KSERVE_EXTENSIONS = ("binary_tensor_data", "model_repository")


def create_app(
    settings: Settings | None = None, device_report: DeviceReport | None = None
) -> FastAPI:
    """Build the service for `settings` (default: from `KERASSERVE_*` variables).

    Device options are applied here, before anything loads a model; pass `device_report` when
    the caller already applied them. Raises `app.devices.DeviceUnavailableError` when the
    requested device does not exist.
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    use_log_format(settings.log_format)
    token_guard = settings.token_guard()  # token files read once, before anything loads
    log.info(
        "access: API routes %s; model control %s",
        "need a token" if token_guard.api_required else "open (no API token configured)",
        "needs an admin token" if token_guard.admin_enabled else "off (no admin token configured)",
    )
    report = device_report or configure_devices(settings.device_options())
    service_metrics = ServiceMetrics()

    def runner_with_metrics(servable: Servable, options: BatchingOptions) -> Runner:
        return build_runner(
            servable, options, service_metrics.batch_observer(servable.name, servable.version)
        )

    registry = ModelRegistry(
        settings.model_repository,
        settings.batching,
        runner_factory=runner_with_metrics,
        warmup_limits=WarmupLimits(settings.warmup_max_bytes, settings.warmup_max_records),
        keras_options=settings.keras_options(),
    )
    dataplane = DataPlane(
        registry, report, extensions=KSERVE_EXTENSIONS, limits=settings.tensor_limits()
    )
    lifecycle = Lifecycle(dataplane, registry, settings.shutdown_grace)
    reloader = RepositoryReloader(
        registry,
        settings.repository_config_path(),
        settings.poll_interval,
        settings.drain_timeout_s,
        service_metrics,
        control=control_state_for(settings.state_dir),
        on_loaded=lifecycle.after_load,
    )
    service_metrics.state.watch(
        reloader.status.version_snapshots, gpu_memory_in_use if report.mode == "gpu" else None
    )

    # The gRPC front end on the same data plane (started in the background: see its module).
    grpc_front = GrpcLifecycle(settings, dataplane, token_guard, service_metrics, reloader)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # SIGTERM/SIGINT drain this worker (app.lifecycle), however many workers there are.
        lifecycle.take_over_signals()
        # Initial load, then polling (app.repository.reloader); readiness turns true after the
        # first.
        loading = asyncio.create_task(reloader.run(), name="repository-reloader")
        grpc_front.start()
        try:
            yield
        finally:
            dataplane.shutting_down = True
            await grpc_front.stop(settings.shutdown_grace)
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            lifecycle.exit_if_loads_running()
            await registry.close(settings.drain_timeout_s)

    app = FastAPI(
        title="kerasserve",
        version=SERVER_VERSION,
        lifespan=lifespan,
        description="Keras/TensorFlow SavedModels over the TensorFlow Serving REST "
        "API, the KServe v2 protocol and task endpoints.",
    )
    app.state.settings = settings
    app.state.dataplane = dataplane
    app.state.registry = registry
    app.state.reloader = reloader
    app.state.metrics = service_metrics
    app.state.decode_pool = DecodePool(
        settings.image_limits(), settings.image_decode_threads, settings.image_decode_queue
    )
    app.state.token_guard = token_guard
    app.state.grpc = grpc_front
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    # Tokens before anything reads a body; inside the observer, so 401/403 are counted.
    app.add_middleware(AccessMiddleware, guard=token_guard, cors_origins=settings.cors_origins)
    app.add_middleware(
        RequestObserver,
        metrics=service_metrics,  # outermost: sees everything
        is_known_model=lambda name: name in registry.model_names(),
    )
    install_error_handlers(app)
    for router in (
        tfserving.build_router(),
        kserve_v2.build_router(),
        repository_control.build_router(),
        prometheus.build_router(),
        tasks.build_router(),
        training_info.build_router(),
    ):
        app.include_router(router)
    web.install(app)  # GET / and /web/...: the playground and dashboard page
    hoist_inference_routes(app)
    document_bearer_tokens(app)
    log.info("%s %s: model repository %s", SERVER_NAME, SERVER_VERSION, settings.model_repository)
    return app


def create_app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` (several workers): settings from `KERASSERVE_*` only."""
    return create_app(Settings())


def install_error_handlers(app: FastAPI) -> None:
    """The one mapping from exceptions to `{"error": ...}` responses."""

    @app.exception_handler(ServingError)
    async def serving_error(_: Request, exc: ServingError) -> Response:
        return json_response(
            {"error": exc.message}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(_: Request, exc: ClientDisconnect) -> Response:
        # The client left before its body was read: no one reads this; not a server error.
        return json_response({"error": "the client disconnected"}, status_code=499)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return json_response({"error": f"invalid request: {problems}"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return json_response(
            {"error": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"error": "internal server error"}, status_code=500)
