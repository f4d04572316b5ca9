"""Shedding at the HTTP edge behind the real server: requests over the limit get 503
overloaded with Retry-After at once, probes never; a service's Overloaded becomes the
same answer at the edge."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cellwork.gateway import HttpServer, edge_middleware, install_error_handlers, probe_routes
from cellwork.resilience import LimitSettings
from cellwork.rpc.client import connect_client
from cellwork.testing import start_service
from cellwork.testing.echo import create_service, echo_stub
from cellwork.testing.v1 import echo_pb2
from tests.waiting import wait_until

LIMIT = 4


def in_flight(metrics_text: str) -> float:
    lines = [ln for ln in metrics_text.splitlines() if ln.startswith("cellwork_http_in_flight ")]
    assert lines, "cellwork_http_in_flight not served"
    return float(lines[0].split()[-1])


@pytest.fixture
async def held_edge():
    """An edge whose ``/held`` answers once the test sets ``release``; a fixed limit."""
    release = asyncio.Event()

    async def held(_: Request) -> Response:
        await release.wait()
        return Response(b"{}", media_type="application/json")

    fixed = LimitSettings(initial=LIMIT, min_limit=LIMIT, max_limit=LIMIT)
    app = Starlette(
        routes=[Route("/held", held), *probe_routes()],
        middleware=edge_middleware(max_body_bytes=1000, call_timeout=30.0, limits=fixed),
    )
    install_error_handlers(app)
    server = HttpServer(app, "127.0.0.1", 0, reuse_port=False)
    port = await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield http, release
    release.set()
    await server.close()


async def test_requests_over_the_limit_get_503_overloaded_at_once_and_probes_pass(held_edge):
    http, release = held_edge
    admitted = [asyncio.create_task(http.get("/held")) for _ in range(LIMIT)]

    async def all_admitted() -> bool:
        return in_flight((await http.get("/metrics")).text) == LIMIT

    await wait_until(all_admitted, "the limit to fill")
    refused = await asyncio.gather(*(http.get("/held") for _ in range(6)))
    for answer in refused:
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "overloaded"
        assert answer.headers["retry-after"] == "1"
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert (await http.get(probe)).status_code == 200
    metrics = (await http.get("/metrics")).text
    assert "cellwork_http_shed_total" in metrics
    assert "cellwork_http_concurrency_limit 4.0" in metrics

    release.set()
    assert [a.status_code for a in await asyncio.gather(*admitted)] == [200] * LIMIT
    assert (await http.get("/held")).status_code == 200  # a slot is free again


@pytest.fixture
async def echo_client(nats_server, registry):
    echo = await start_service(create_service, nats_server.url, instance_id="echo-edge")
    client = await connect_client(registry, "echo", echo_stub, caller="edge")
    await client.balancer.wait_for_endpoints(1)
    yield client
    await client.close()
    await echo.close()


async def test_a_services_overloaded_answer_becomes_503_with_retry_after_at_the_edge(
    echo_client,
):
    async def relay_overload(_: Request) -> Response:
        await echo_client.call("Fail", echo_pb2.EchoRequest(payload=b"Overloaded:2.5"))
        return Response(b"{}")

    app = Starlette(
        routes=[Route("/relay", relay_overload)],
        middleware=edge_middleware(max_body_bytes=1000, call_timeout=5.0),
    )
    install_error_handlers(app)
    server = HttpServer(app, "127.0.0.1", 0, reuse_port=False)
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            answer = await http.get("/relay")
    finally:
        await server.close()
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "overloaded"
    assert answer.headers["retry-after"] == "3"  # 2.5 s, in whole seconds rounded up
