"""The HTTP edge's server: a shared port is shared with siblings only; drain finishes requests."""

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cellwork.gateway import HttpServer, PortTaken
from cellwork.testing import free_port

LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("ready", flush=True); time.sleep(60)
"""


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("s", "0")))
    return PlainTextResponse("done")


APP = Starlette(routes=[Route("/", slow)])


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
    arrived = asyncio.Event()

    async def slow_after_arrival(request: Request) -> PlainTextResponse:
        arrived.set()
        return await slow(request)

    server = HttpServer(Starlette(routes=[Route("/", slow_after_arrival)]), "127.0.0.1", 0)
    port = await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        in_flight = asyncio.create_task(client.get("/", params={"s": "0.5"}))
        await asyncio.wait_for(arrived.wait(), 10)
        started = time.monotonic()
        await server.drain(5)
        assert (await in_flight).text == "done"
        assert time.monotonic() - started < 3
        with pytest.raises(httpx.ConnectError):
            await client.get("/")
