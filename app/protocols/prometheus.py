"""`GET /metrics`: the service's metrics in Prometheus' text format (`app.metrics` keeps them)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.dependencies import MetricsDep


async def scrape(metrics: MetricsDep) -> Response:
    """Every counter, histogram and gauge, read at scrape time."""
    return Response(content=metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def build_router() -> APIRouter:
    router = APIRouter(tags=["Observability"])
    router.add_api_route(
        "/metrics", scrape, methods=["GET"], summary="Prometheus metrics", response_class=Response
    )
    return router
