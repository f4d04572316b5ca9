"""The HTTP edge's server and its fixed outer layers.

``HttpServer`` runs an ASGI app on uvicorn (uvloop, httptools) in the service's
own event loop, with the shared lifecycle (start / drain / close). Its socket is
bound with SO_REUSEPORT so several instances of the gateway (or push) share one
port and the kernel spreads connections over them. ``BodyLimit`` answers 413 for
bodies over the limit before the app reads them; ``json_error`` renders the one
error shape of the public contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Generator
from typing import Any

import orjson
import psutil
import uvicorn
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import http_metrics
from cellwork.rpc.context import reset_current_call, root_context, set_current_call

_log = get_logger("cellwork.gateway.http")


def error_body(code: str, message: str) -> bytes:
    """The contract's error document: ``{"error": {"code": ..., "message": ...}}``."""
    return orjson.dumps({"error": {"code": code, "message": message}})


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An error response in the contract's shape."""
    return Response(
        error_body(code, message), status, headers=headers, media_type="application/json"
    )


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
        response = json_error(
            413,
            "payload_too_large",
            f"request body is over {self.max_bytes} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


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


class TemplateRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's routes do, so
    HttpMetrics labels its requests by template instead of ``unmatched``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match != Match.NONE:
            child["route"] = self
        return match, child


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service's runtime owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class PortTaken(RuntimeError):
    """The port is served by a process that is not a sibling instance of this service."""


def _owner(pid: int) -> tuple[str, str] | None:
    try:
        env = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return None
    return env.get("CELLWORK_STATE_DIR", ""), env.get("CELLWORK_SERVICE", "")


def check_siblings_only(port: int) -> None:
    """Refuse a shared port already served by anything but this service's own instances.

    SO_REUSEPORT lets any process of the same user join a port silently; a second
    cell (or another program) on 8080 would take half the connections. Siblings are
    processes with the same ``CELLWORK_STATE_DIR`` and ``CELLWORK_SERVICE``.
    """
    if port == 0:
        return
    ours = (os.environ.get("CELLWORK_STATE_DIR", ""), os.environ.get("CELLWORK_SERVICE", ""))
    try:
        connections = psutil.net_connections("tcp")
    except (psutil.Error, OSError):
        return  # cannot see other processes' sockets here: bind decides
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or getattr(conn.laddr, "port", None) != port:
            continue
        if conn.pid is None or conn.pid == os.getpid():
            continue
        if _owner(conn.pid) != ours:
            raise PortTaken(f"port {port} is already served by pid {conn.pid}, not of this cell")


def bind_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A listening TCP socket; SO_REUSEPORT lets sibling instances bind the same port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    """Serves an ASGI app on uvicorn inside the running loop."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        reuse_port: bool = True,
        ws_max_size: int = 65536,
        ws_ping_interval: float | None = 20.0,
        graceful_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.host, self.port = host, port
        self._reuse_port = reuse_port
        self._config = uvicorn.Config(
            app,
            lifespan="off",
            http="httptools",
            ws="websockets-sansio",
            log_config=None,
            log_level=logging.WARNING,
            access_log=False,
            ws_max_size=ws_max_size,
            ws_ping_interval=ws_ping_interval,
            timeout_graceful_shutdown=int(graceful_timeout),
            server_header=False,
            **options,
        )
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and serve; returns the port (useful when asked for port 0)."""
        if self._reuse_port:
            await asyncio.to_thread(check_siblings_only, self.port)
        sock = bind_socket(self.host, self.port, self._reuse_port)
        self.port = int(sock.getsockname()[1])
        self._server = _EmbeddedServer(self._config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("HTTP server stopped during start")
            await asyncio.sleep(0.01)
        _log.info("http.serving", host=self.host, port=self.port)
        return self.port

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout`` s), close."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            _log.warning("http.drain_timeout", port=self.port)
        await self.close()

    async def close(self) -> None:
        """Stop at once."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)
        self._server = None
        self._task = None


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
