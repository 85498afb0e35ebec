"""FastAPI dependency aliases for route signatures (`dataplane: DataPlaneDep`).

Everything lives on `app.state`, put there by `create_app`, so several apps with different
settings can exist in one process (tests) without module-level globals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.dataplane import DataPlane


# `async def` on purpose: FastAPI runs plain-function dependencies in its thread pool, which
# costs a thread hop per request and makes health checks queue behind busy image decoding.
async def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
