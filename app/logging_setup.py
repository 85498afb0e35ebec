"""Process-wide logging for the service (one format for our modules and uvicorn's)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send our log records to stderr at `level`; safe to call more than once."""
    numeric = logging.getLevelName(level.upper())
    root = logging.getLogger()
    if not any(getattr(h, "_kerasserve", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._kerasserve = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("app").setLevel(numeric)
    root.setLevel(min(numeric, logging.WARNING))
