"""The edge's middleware, in the order a request meets it:

    HttpMetrics      count and time every request by route template (outermost, so
                     it sees every answer, a 413 and a 503 overloaded included)
    LoadShedding     while the event loop is saturated (its lag past 150 ms) or 1,000
                     requests are in flight, requests get 503 overloaded with
                     Retry-After at once, before anything else runs (shedding.py);
                     probes pass
    RequestContext   the request becomes a root call context: request id, deadline
    BodyLimit        bodies over the limit get 413 payload_too_large, unread

``edge_middleware(...)`` returns that list for ``Starlette(middleware=...)`` or
``FastAPI(middleware=...)``, which wrap an app so that the first entry is the
outermost; an application appends its own layers after it, and
``install_error_handlers`` puts its catch-all innermost of all. (``add_middleware``
adds the other way round, each call outside the previous ones, so a chain built with
it reads backwards.)
"""

from __future__ import annotations

import re
import time

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cellwork.errors import PayloadTooLarge
from cellwork.gateway.errors import error_response
from cellwork.gateway.shedding import EDGE_LIMITS, EdgeLimits, LoadShedding
from cellwork.observability.metrics import http_metrics
from cellwork.rpc.context import reset_current_call, root_context, set_current_call


def edge_middleware(
    *,
    max_body_bytes: int,
    call_timeout: float,
    limits: EdgeLimits | None = EDGE_LIMITS,
) -> list[Middleware]:
    """The edge's middleware, outermost first: HttpMetrics, LoadShedding (on event-loop
    lag and a ceiling of requests in flight, as ``limits`` says; None leaves it out),
    RequestContext (a deadline of ``call_timeout`` seconds per request), BodyLimit
    (``max_body_bytes``)."""
    shedding = [] if limits is None else [Middleware(LoadShedding, limits=limits)]
    return [
        Middleware(HttpMetrics),
        *shedding,
        Middleware(RequestContext, timeout=call_timeout),
        Middleware(BodyLimit, max_bytes=max_body_bytes),
    ]


class HttpMetrics:
    """ASGI middleware: count and time every HTTP request by its route template.

    Labels stay bounded: the template (``/v1/items/{item_id}``), never the raw path;
    unmatched paths share the label ``unmatched``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._metrics = http_metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self._metrics.observe((template,), (scope["method"], str(status)), elapsed)


_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    """ASGI middleware: each HTTP request becomes a root call context.

    The client's ``X-Request-Id`` (when well-formed) becomes the request id of
    every gRPC call made for it, and is echoed back; the whole request shares one
    deadline of ``timeout`` seconds, passed on to every hop.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _REQUEST_ID.match(value):
                given = value.decode()
                break
        ctx = root_context(self.timeout, given)
        token = set_current_call(ctx)
        header = (b"x-request-id", ctx.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_current_call(token)


class BodyLimit:
    """ASGI middleware: requests with bodies over ``max_bytes`` get 413, unread."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._too_large(scope, receive, send)
                    return
        chunked = any(
            name == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in scope["headers"]
        )
        if not chunked:  # a declared length was checked above; the server enforces it
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read the body here, up to the limit, and hand the
        # app what was read; over the limit is 413 before the app sees a byte.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                # Read (and drop) a bounded rest, so the client is not cut off mid-send
                # and sees the 413 instead of a reset connection.
                more = message.get("more_body", False)
                while more and size <= 16 * self.max_bytes:
                    message = await receive()
                    size += len(message.get("body", b""))
                    more = message["type"] == "http.request" and message.get("more_body", False)
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            PayloadTooLarge(f"request body is over {self.max_bytes} bytes"),
            {"Connection": "close"},
        )
        await response(scope, receive, send)
