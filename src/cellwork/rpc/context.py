"""What travels with a call: request id, trace context, caller and deadline.

A server sets the current ``CallContext`` from the incoming metadata and
deadline; every client call made while handling it reads it back, so the
request id and trace carry on, and the callee never gets more time than the
caller had left.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from dataclasses import dataclass

from cellwork.observability.tracing import TraceContext, new_trace

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT_HEADER = "traceparent"
CALLER_HEADER = "x-cellwork-caller"
USER_AGENT_HEADER = "user-agent"

# The caller's name travels as the first product of the channel's user agent
# ("feed grpc-python-asyncio/1.85 grpc-c/..."): gRPC sends that header on every
# call anyway and HPACK indexes it, so naming the caller costs nothing per call,
# where an extra header costs a few microseconds on both sides. Any gRPC client
# can do the same (grpc-go: WithUserAgent, grpc-java: userAgent). CALLER_HEADER
# is still honoured, and wins, for clients that cannot set their user agent.
_NOT_A_CALLER = re.compile(r"[^A-Za-z0-9._-]+")

# gRPC reports "no deadline" as a huge remaining time; anything above a day is none.
_NO_DEADLINE = 86_400.0


@dataclass(frozen=True, slots=True)
class CallContext:
    """The context of the call being handled (or of a new root call)."""

    request_id: str
    trace: TraceContext
    caller: str = ""
    deadline: float | None = None  # time.monotonic() at which the call expires

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative); None without one."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "cellwork_call", default=None
)


def current_call() -> CallContext | None:
    """Return the context of the call being handled, if any."""
    return _current.get()


def set_current_call(ctx: CallContext | None) -> contextvars.Token[CallContext | None]:
    """Make ``ctx`` the current call context; returns a token for ``reset_current_call``."""
    return _current.set(ctx)


def reset_current_call(token: contextvars.Token[CallContext | None]) -> None:
    """Restore the call context that was current before ``set_current_call``."""
    _current.reset(token)


def caller_user_agent(caller: str) -> str:
    """The ``grpc.primary_user_agent`` channel option that names ``caller`` on every call.

    Characters outside ``[A-Za-z0-9._-]`` become ``-`` and the name is cut at 64, so
    it stays one ASCII token (gRPC refuses non-ASCII metadata values outright).
    """
    return _NOT_A_CALLER.sub("-", caller)[:64]


@functools.lru_cache(maxsize=256)  # a cell has a handful of distinct user agents
def caller_from_user_agent(user_agent: str) -> str:
    """The caller named by a user agent, or "" for a client that names none.

    The first token is the caller unless it carries a version: a gRPC library's
    own product (``grpc-python-asyncio/1.85``, ``grpc-go/1.60``) always does.
    """
    first = user_agent.split(" ", 1)[0]
    if "/" in first:
        return ""
    return first[:64]


def root_context(timeout: float | None = None, request_id: str | None = None) -> CallContext:
    """A context for a call that starts here (no incoming call to inherit from).

    Without a ``request_id`` (an edge passes the client's ``X-Request-Id``) the
    request id is the trace id, so one header carries both.
    """
    deadline = time.monotonic() + timeout if timeout is not None else None
    trace = new_trace()
    return CallContext(request_id or trace.trace_id, trace, "", deadline)


def effective_timeout(requested: float | None, parent: CallContext | None) -> float | None:
    """The timeout to give an outgoing call: the requested one, capped by what is left.

    A call made with 300 ms left passes on at most 300 ms (less the time spent
    since). Returns None only when neither side has a limit.
    """
    remaining = parent.time_remaining() if parent is not None else None
    if remaining is None:
        return requested
    if requested is None:
        return remaining
    return min(requested, remaining)


def deadline_from_remaining(remaining: float | None) -> float | None:
    """Turn gRPC's ``time_remaining()`` into an absolute monotonic deadline."""
    if remaining is None or remaining > _NO_DEADLINE:
        return None
    return time.monotonic() + remaining
