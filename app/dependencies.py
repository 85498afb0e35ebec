"""How every route reaches the service's state: one accessor per object on `app.state`.

One adapter style for every protocol module: handlers are module-level functions, registered by
that module's `build_router()`. Documented routes take what they need as `Annotated` dependency
aliases (`dataplane: DataPlaneDep`). The inference routes (TF Serving predict, KServe v2 infer)
are plain Starlette routes taking the raw `Request`, because FastAPI's dependency solving costs
about 0.1 ms a request there (`app.protocols.hot_routes`); they call the same accessors
directly (`dataplane_of(request)`).

Everything lives on `app.state`, put there by `create_app`, so several apps with different
settings can exist in one process (tests) without module-level globals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.dataplane import DataPlane
from app.metrics import ServiceMetrics
from app.registry import ModelRegistry
from app.repository.reloader import RepositoryReloader
from app.settings import Settings
from app.tasks.decoding import DecodePool


# The accessors are `async def` on purpose: FastAPI runs plain-function dependencies in its
# thread pool, which costs a thread hop per request and makes health checks queue behind busy
# image decoding.
async def dataplane_dependency(request: Request) -> DataPlane:
    return dataplane_of(request)


def dataplane_of(request: Request) -> DataPlane:
    return request.app.state.dataplane


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


async def registry_dependency(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def reloader_dependency(request: Request) -> RepositoryReloader:
    return request.app.state.reloader


async def metrics_dependency(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def decode_pool_dependency(request: Request) -> DecodePool:
    return request.app.state.decode_pool


DataPlaneDep = Annotated[DataPlane, Depends(dataplane_dependency)]
RegistryDep = Annotated[ModelRegistry, Depends(registry_dependency)]
ReloaderDep = Annotated[RepositoryReloader, Depends(reloader_dependency)]
MetricsDep = Annotated[ServiceMetrics, Depends(metrics_dependency)]
DecodePoolDep = Annotated[DecodePool, Depends(decode_pool_dependency)]
