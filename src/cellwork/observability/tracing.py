"""W3C trace context (``traceparent``) for calls that cross a process.

The header is one fixed-format line, so it is parsed here rather than pulling
the OpenTelemetry SDK into every hop; the ids are the same ones an OTel
exporter would use, so a collector can stitch spans later.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# Version 00 only; lowercase hex only, as the spec requires. fullmatch on the raw
# value, then slices: this runs on every call a server takes (~0.2 us).
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACEPARENT_LENGTH = 55
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

    def child_traceparent(self) -> str:
        """The ``traceparent`` of a new child span, without building the child."""
        return f"00-{self.trace_id}-{new_span_id()}-{'01' if self.sampled else '00'}"


# Ids need to be unique, not secret: getrandbits is ~10x cheaper than os.urandom
# (OpenTelemetry's SDK makes the same choice), and bytes.hex a third of a format spec.
# These run on every call a client makes or a server takes, so they stay cheap.
_getrandbits = random.getrandbits


def new_span_id() -> str:
    """Return a random non-zero 64-bit span id as 16 hex digits."""
    return (_getrandbits(64) or 1).to_bytes(8, "big").hex()


def new_trace_id() -> str:
    """Return a random non-zero 128-bit trace id as 32 hex digits."""
    return (_getrandbits(128) or 1).to_bytes(16, "big").hex()


def new_trace() -> TraceContext:
    """Start a new trace: a random trace id and its root span."""
    return TraceContext(new_trace_id(), new_span_id())


def new_traceparent() -> str:
    """The ``traceparent`` of the root span of a new, sampled trace."""
    return f"00-{new_trace_id()}-{new_span_id()}-01"


def continue_trace(value: str | None) -> TraceContext | None:
    """This side's span in the trace a ``traceparent`` names (a child of the sender's).

    None when the header is missing or malformed, as ``parse_traceparent``.
    """
    parent = _traceparent_fields(value)
    if parent is None:
        return None
    return TraceContext(parent[0], new_span_id(), parent[2])


def parse_traceparent(value: str | None) -> TraceContext | None:
    """Parse a version-00 ``traceparent`` header; None when missing or malformed (never raises).

    As W3C Trace Context requires, ids must be lowercase hex and not all zeros;
    anything else is ignored and the callee starts a trace of its own.
    """
    fields = _traceparent_fields(value)
    return None if fields is None else TraceContext(*fields)


def _traceparent_fields(value: str | None) -> tuple[str, str, bool] | None:
    if not value:
        return None
    if len(value) != _TRACEPARENT_LENGTH:
        value = value.strip(" \t")  # optional whitespace around a header value
    if _TRACEPARENT.fullmatch(value) is None:
        return None
    trace_id, span_id = value[3:35], value[36:52]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, value[54] in "13579bdf"
