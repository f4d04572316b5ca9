"""W3C trace context (``traceparent``) for calls that cross a process.

The header is one fixed-format line, so it is parsed here rather than pulling
the OpenTelemetry SDK into every hop; the ids are the same ones an OTel
exporter would use, so a collector can stitch spans later.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's place in a trace: trace id, this span's id, sampled flag."""

    trace_id: str
    span_id: str
    sampled: bool = True

    def to_traceparent(self) -> str:
        """Format as a ``traceparent`` header value."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def child(self) -> TraceContext:
        """Return a new span in the same trace."""
        return TraceContext(self.trace_id, new_span_id(), self.sampled)


def new_span_id() -> str:
    """Return a random non-zero 64-bit span id as 16 hex digits."""
    # Ids need to be unique, not secret: getrandbits is ~10x cheaper than os.urandom
    # (OpenTelemetry's SDK makes the same choice).
    return f"{random.getrandbits(64) or 1:016x}"


def new_trace() -> TraceContext:
    """Start a new trace with a random 128-bit trace id."""
    return TraceContext(f"{random.getrandbits(128) or 1:032x}", new_span_id())


def parse_traceparent(value: str | None) -> TraceContext | None:
    """Parse a ``traceparent`` header; None when missing or malformed (never raises)."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))
