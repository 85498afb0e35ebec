"""People-facing task endpoints: pictures in, readable answers out (see `routes`)."""

from app.tasks.routes import build_router

__all__ = ["build_router"]
