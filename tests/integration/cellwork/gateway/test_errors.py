"""The edge's error handling behind the real server: sockets closed with a code that says
whether to come back, and an unexpected error logged once (by the edge, not the server)."""

import logging

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from cellwork import errors
from cellwork.gateway import HttpServer, install_error_handlers


async def raise_named_after_accept(ws: WebSocket) -> None:
    await ws.accept()
    name = await ws.receive_text()
    error = getattr(errors, name, None)
    raise error("no") if error else RuntimeError("secret internals")


async def refuse_before_accept(ws: WebSocket) -> None:
    raise errors.Unauthenticated("missing access token")


async def crash(request: Request) -> Response:
    raise RuntimeError("secret internals")


@pytest.fixture
async def edge():
    app = Starlette(
        routes=[
            WebSocketRoute("/ws", raise_named_after_accept),
            WebSocketRoute("/refuse", refuse_before_accept),
            Route("/crash", crash),
        ]
    )
    install_error_handlers(app)
    server = HttpServer(app, "127.0.0.1", 0, reuse_port=False)
    port = await server.start()
    yield port
    await server.close()


@pytest.mark.parametrize(
    ("raised", "close_code"),
    [
        ("Unauthenticated", 1008),  # policy violation: do not come back as is
        ("ResourceExhausted", 1013),  # try again later
        ("Overloaded", 1013),
        ("Internal", 1011),
        ("a bug", 1011),  # unexpected: internal error
    ],
)
async def test_a_socket_route_that_raises_closes_with_a_code_for_its_class(
    edge, raised, close_code
) -> None:
    async with connect(f"ws://127.0.0.1:{edge}/ws", open_timeout=10) as ws:
        await ws.send(raised)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == close_code


async def test_a_socket_route_that_raises_before_accept_refuses_the_handshake(edge) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{edge}/refuse", open_timeout=10):
            pass
    assert refused.value.response.status_code == 403


async def test_an_unexpected_error_is_logged_by_the_edge_once_and_not_by_the_server(
    edge, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge}", timeout=10) as http:
            r = await http.get("/crash")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["http.unhandled_error"]
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR] == []
