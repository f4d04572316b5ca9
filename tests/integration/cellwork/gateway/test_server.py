"""The HTTP edge's server: a shared port is shared with siblings only; drain finishes requests."""

import asyncio
import os
import subprocess
import sys

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cellwork.gateway import HttpServer, PortTaken
from cellwork.testing import free_port
from tests.waiting import BOUND, wait_until

# Another process listening on the port; it holds it until the test kills it.
LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("ready", flush=True); time.sleep(60)
"""


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", hello)])


def listener(port: int, **env: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTEN, str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def cell_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLWORK_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CELLWORK_SERVICE", "gateway")
    return {"CELLWORK_STATE_DIR": str(tmp_path), "CELLWORK_SERVICE": "gateway"}


async def test_a_port_held_by_another_cell_is_refused(cell_env) -> None:
    port = free_port()
    other = listener(port, CELLWORK_STATE_DIR="/elsewhere", CELLWORK_SERVICE="gateway")
    try:
        with pytest.raises(PortTaken, match=str(other.pid)):
            await HttpServer(APP, "127.0.0.1", port).start()
    finally:
        other.kill()
        other.wait()


async def test_a_sibling_instance_shares_the_port(cell_env) -> None:
    port = free_port()
    sibling = listener(port, **cell_env)
    server = HttpServer(APP, "127.0.0.1", port)
    try:
        assert await server.start() == port
    finally:
        await server.close()
        sibling.kill()
        sibling.wait()


async def test_drain_finishes_the_request_in_flight_and_refuses_new_ones(cell_env) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: Request) -> PlainTextResponse:
        arrived.set()
        await release.wait()
        return PlainTextResponse("done")

    server = HttpServer(Starlette(routes=[Route("/", held)]), "127.0.0.1", 0)
    port = await server.start()

    async def refused() -> bool:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        writer.close()
        await writer.wait_closed()
        return False

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND) as client:
        in_flight = asyncio.create_task(client.get("/"))
        await asyncio.wait_for(arrived.wait(), BOUND)
        # Drain for far longer than the test may take: it must end when the request does.
        draining = asyncio.create_task(server.drain(10 * BOUND))
        await wait_until(refused, "new connections to be refused")
        assert not in_flight.done()  # still held, though nothing new is let in
        release.set()
        assert (await in_flight).text == "done"
        await asyncio.wait_for(draining, BOUND)
        with pytest.raises(httpx.ConnectError):
            await client.get("/")
