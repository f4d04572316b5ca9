"""The server-side chain every RPC passes through.

The chain is data with fixed ends, in the order a call meets it:

    boundary (fixed, outer)   call context from metadata and deadline, metrics,
                              logs, domain errors -> gRPC status and, on a
                              failed call, the error trailer (cellwork.errors)
    *layers                   the service's own (bulkheads, auth, ...), in list order
    handler (fixed, inner)    the servicer method

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

from cellwork.errors import CellworkError, error_trailers
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import RpcMetrics, code_name, server_metrics
from cellwork.observability.tracing import TraceContext, continue_trace, new_trace
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

Handler = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
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


def _call_context(context: aio.ServicerContext[Any, Any]) -> CallContext:
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
        deadline_from_remaining(context.time_remaining()),
    )


class ServerChain(_Interceptor):
    """Wraps every unary-unary handler in the boundary and the given layers."""

    def __init__(
        self,
        service: str,
        layers: Sequence[Layer] = (),
        *,
        metrics: RpcMetrics | None = None,
        access_log: bool = False,
        slow_call_seconds: float = 1.0,
    ) -> None:
        self._service = service
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
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._boundary(_short_method(method), inner),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._cache[method] = wrapped
        return wrapped

    def _boundary(self, method: str, inner: Handler) -> Handler:
        service, metrics = self._service, self._metrics
        in_flight = metrics.in_flight(service, method)
        access_log, slow = self._access_log, self._slow

        async def boundary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            call = _call_context(context)
            token = set_current_call(call)
            in_flight.inc()
            start = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except CellworkError as exc:
                code = code_name(exc.code)
                # The public code rides in the trailer of failed calls only, so the
                # caller rebuilds the exact class (Overloaded, not just
                # RESOURCE_EXHAUSTED) and a successful call pays nothing for it.
                await context.abort(exc.code, exc.message, error_trailers(exc))
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
                if access_log or elapsed >= slow or (code != "OK" and code != "CANCELLED"):
                    _log.info(
                        "rpc.served",
                        method=method,
                        code=code,
                        duration_ms=round(elapsed * 1000, 3),
                        caller=call.caller,
                        request_id=call.request_id,
                        trace_id=call.trace.trace_id,
                    )

        return boundary
