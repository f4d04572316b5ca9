"""Observability: metrics, structured logs, trace context."""

from cellwork.observability.logging import configure_logging, get_logger

__all__ = ["configure_logging", "get_logger"]
