"""Inference routes first: plain Starlette routes at the front of the app's route list.

Why: FastAPI matches a request against an included router lazily, per request,
candidate by candidate with its own bookkeeping: reaching the TF Serving predict route took
about 40 us and KServe v2's infer route 60 to 90 us (measured on the service's own route list),
against about 2 us for each plain route checked before them. The routes stay registered in
their routers as well, where OpenAPI documents them; these copies, with the same endpoints,
only win the match.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from app.protocols import kserve_v2, tfserving


def inference_routes() -> list[BaseRoute]:
    """Every POST route that runs a model, TF Serving's and KServe v2's."""
    routes: list[BaseRoute] = [
        Route(path, tfserving.predict, methods=["POST"], include_in_schema=False)
        for path in tfserving.PREDICT_PATHS
    ]
    routes += [
        Route("/v2" + path, kserve_v2.infer, methods=["POST"], include_in_schema=False)
        for path in (kserve_v2.INFER_PATH, kserve_v2.VERSION_INFER_PATH)
    ]
    return routes


def hoist_inference_routes(app: FastAPI) -> FastAPI:
    """Put `inference_routes()` at the front of `app`'s routes; returns `app`."""
    app.router.routes[:0] = inference_routes()
    return app
