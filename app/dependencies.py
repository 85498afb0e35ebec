"""FastAPI dependency aliases for route signatures (`dataplane: DataPlaneDep`).

Everything lives on `app.state`, put there by `create_app`, so several apps with different
settings can exist in one process (tests) without module-level globals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.dataplane import DataPlane
from app.settings import Settings


def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
