"""The server-side chain every RPC passes through.

The chain is data with fixed ends, in the order a call meets it:

    boundary (fixed, outer)   refuses a call whose deadline passed before it was served
                              (DEADLINE_EXCEEDED, no handler runs); call context from
                              metadata and deadline, metrics, logs, domain errors ->
                              gRPC status and, on a failed call, the error trailer
                              (cellwork.errors); an Unavailable worded as gRPC words
                              a failed connection (a dependency's, passed on) is
                              answered "a dependency is unavailable", the words logged
    limit (fixed)             the method's adaptive concurrency limit (rpc/shedding.py):
                              a call over it is refused at once with RESOURCE_EXHAUSTED
                              (Overloaded), never queued
    *layers                   the service's own (auth, ...), in list order
    handler (fixed, inner)    the servicer method

The limit sits right inside the boundary so that a shed call costs as little as
possible and is still counted, timed and answered with the error trailer like every
other call, and so that nothing a service adds runs for work that will be refused.

Cancellation reaches the handler: grpc.aio cancels the call's task when the client
cancels or its deadline expires, so the handler sees CancelledError at its next await
(tests/integration/cellwork/rpc/test_interceptors.py holds it); the boundary counts it as
CANCELLED and the limit stage frees its slot.

Refusals for load (RESOURCE_EXHAUSTED, expired deadlines) are counted and timed but not
logged one by one: they come by the thousand exactly when the server is busiest.

Wrapped handlers are built once per method and cached, so a call pays for one
dictionary lookup, not for rebuilding the chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio

from cellwork.errors import CellworkError, DeadlineExceeded, error_trailers
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import RpcMetrics, code_name, server_metrics
from cellwork.observability.tracing import TraceContext, continue_trace, new_trace
from cellwork.resilience.adaptive import ConcurrencyLimiter, LimitSettings
from cellwork.resilience.retry import transport_wording
from cellwork.rpc.context import (
    CALLER_HEADER,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    USER_AGENT_HEADER,
    CallContext,
    caller_from_user_agent,
    deadline_from_remaining,
    reset_current_call,
    set_current_call,
)
from cellwork.rpc.shedding import SERVER_LIMITS, Handler, limit_stage, shed_metrics

Layer = Callable[[Handler], Handler]

_log = get_logger("cellwork.rpc.server")

if TYPE_CHECKING:
    _Interceptor = aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = aio.ServerInterceptor


def _short_method(full: str) -> str:
    """``/pkg.Service/Method`` -> ``Service/Method`` (bounded, readable label)."""
    service, _, method = full.rpartition("/")
    return f"{service.rpartition('.')[2]}/{method}"


def _call_context(context: aio.ServicerContext[Any, Any], remaining: float | None) -> CallContext:
    request_id = ""
    trace: TraceContext | None = None
    caller = ""
    user_agent = ""
    for key, value in context.invocation_metadata() or ():
        if key == TRACEPARENT_HEADER:
            trace = continue_trace(str(value))
        elif key == USER_AGENT_HEADER:
            user_agent = str(value)
        elif key == REQUEST_ID_HEADER:
            request_id = str(value)[:128]
        elif key == CALLER_HEADER:
            caller = str(value)[:128]
    if not caller and user_agent:
        caller = caller_from_user_agent(user_agent)
    if trace is None:
        trace = new_trace()
    return CallContext(
        request_id or trace.trace_id,  # a root call's request id is its trace id
        trace,
        caller,
        deadline_from_remaining(remaining),
    )


_EXPIRED = DeadlineExceeded("the deadline passed before the call was served")
_EXPIRED_TRAILERS = error_trailers(_EXPIRED)
# Codes the boundary does not log call by call (counted and timed all the same): a
# client that gave up, and refusals for load.
_QUIET_CODES = frozenset({"OK", "CANCELLED", "RESOURCE_EXHAUSTED"})
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEPENDENCY_UNAVAILABLE = "a dependency is unavailable"
"""The message of an Unavailable a handler raised in gRPC's transport words (its
dependency's failure, passed on); the words themselves go to ``rpc.served``."""


class ServerChain(_Interceptor):
    """Wraps every unary-unary handler in the boundary, the limit and the given layers.

    ``limits`` shapes each method's adaptive concurrency limit (None: no limit stage);
    ``limiters`` holds them by method (``Service/Method``) once a method was called.
    """

    def __init__(
        self,
        service: str,
        layers: Sequence[Layer] = (),
        *,
        metrics: RpcMetrics | None = None,
        access_log: bool = False,
        slow_call_seconds: float = 1.0,
        limits: LimitSettings | None = SERVER_LIMITS,
    ) -> None:
        self._service = service
        self._limits = limits
        self.limiters: dict[str, ConcurrencyLimiter] = {}
        self._layers = tuple(layers)
        self._metrics = metrics or server_metrics()
        self._access_log = access_log
        self._slow = slow_call_seconds
        self._cache: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or method.startswith("/grpc."):
            # Health, reflection and streaming methods pass through unwrapped.
            return handler
        inner = cast(Handler, handler.unary_unary)
        for layer in reversed(self._layers):
            inner = layer(inner)
        short = _short_method(method)
        if self._limits is not None:
            limiter = self.limiters[short] = ConcurrencyLimiter(self._limits, time.monotonic())
            inner = limit_stage(self._service, short, limiter, inner)
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._boundary(short, inner),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._cache[method] = wrapped
        return wrapped

    def _boundary(self, method: str, inner: Handler) -> Handler:
        service, metrics = self._service, self._metrics
        in_flight = metrics.in_flight(service, method)
        access_log, slow = self._access_log, self._slow
        refusal = shed_metrics().refusal.labels(service, method)
        expired, expired_trailers = _EXPIRED, _EXPIRED_TRAILERS

        async def boundary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0.0:
                # gRPC drops most such calls itself; one that was accepted while the
                # loop was busy must not start work nobody waits for.
                metrics.observe(service, method, "DEADLINE_EXCEEDED", 0.0)
                await context.abort(expired.code, expired.message, expired_trailers)
            call = _call_context(context, remaining)
            token = set_current_call(call)
            in_flight.inc()
            start = time.perf_counter()
            code = "OK"
            details = ""
            try:
                return await inner(request, context)
            except CellworkError as exc:
                code = code_name(exc.code)
                message = exc.message
                if exc.code is _UNAVAILABLE and transport_wording(message):
                    # A dependency's failure, passed on in gRPC's words ("failed to
                    # connect to all addresses"): the caller would read them as this
                    # server refusing its connection. The words go to the log.
                    details, message = message, DEPENDENCY_UNAVAILABLE
                # The public code rides in the trailer of failed calls only, so the
                # caller rebuilds the exact class (Overloaded, not just
                # RESOURCE_EXHAUSTED) and a successful call pays nothing for it.
                await context.abort(exc.code, message, error_trailers(exc))
            except aio.AbortError:
                code = code_name(context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception:
                code = "INTERNAL"
                _log.exception(
                    "rpc.unhandled_error",
                    method=method,
                    request_id=call.request_id,
                    trace_id=call.trace.trace_id,
                )
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                elapsed = time.perf_counter() - start
                in_flight.dec()
                metrics.observe(service, method, code, elapsed)
                reset_current_call(token)
                if code == "RESOURCE_EXHAUSTED":
                    refusal.observe(elapsed)
                if access_log or elapsed >= slow or code not in _QUIET_CODES:
                    _log.info(
                        "rpc.served",
                        method=method,
                        code=code,
                        duration_ms=round(elapsed * 1000, 3),
                        caller=call.caller,
                        request_id=call.request_id,
                        trace_id=call.trace.trace_id,
                        **({"details": details} if details else {}),
                    )

        return boundary
