"""Observability: metrics, structured logs, trace context."""
