"""Structured JSON logs: one event name per line, fields not sentences."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure_logging(level: str = "info", *, pretty: bool = False, **static: Any) -> None:
    """Send JSON events to stderr at ``level`` or above, each carrying ``static`` fields.

    ``static`` is typically service and instance; per-call fields (request id,
    trace id) are passed where the event is logged. ``pretty`` renders aligned
    console lines instead of JSON, for a person watching a terminal.
    """
    threshold = _LEVELS.get(level.lower(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**static)


def get_logger(name: str) -> Any:
    """Return a lazily configured structlog logger whose events carry ``component=name``."""
    return structlog.get_logger(component=name)
