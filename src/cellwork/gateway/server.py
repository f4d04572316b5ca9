"""The HTTP edge's server: uvicorn in the service's own loop, on a shared port.

``HttpServer`` runs an ASGI app on uvicorn (uvloop, httptools) in the service's
own event loop, with the shared lifecycle (start / drain / close). Its socket is
bound with SO_REUSEPORT so several instances of the gateway (or push) share one
port and the kernel spreads connections over them; ``check_siblings_only`` refuses
a port that something other than this service's own instances already serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Generator
from typing import Any

import psutil
import uvicorn
from starlette.types import ASGIApp

from cellwork.observability.logging import get_logger

_log = get_logger("cellwork.gateway.server")


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
