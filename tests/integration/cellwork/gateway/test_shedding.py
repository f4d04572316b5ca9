"""Shedding at the HTTP edge behind the real server: requests over the ceiling, or arriving
while CPU-bound work saturates the loop, get 503 overloaded with Retry-After at once,
probes never; a slow dependency at 200 requests/s sheds nothing; a service's Overloaded
becomes the same answer at the edge."""

import asyncio
import time

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cellwork.gateway import HttpServer, edge_middleware, install_error_handlers, probe_routes
from cellwork.gateway.shedding import EdgeLimits
from cellwork.rpc.client import connect_client
from cellwork.testing import start_service
from cellwork.testing.driver import Answer, OpenLoopDriver
from cellwork.testing.echo import create_service, echo_stub
from cellwork.testing.httpload import LoadClient
from cellwork.testing.v1 import echo_pb2
from tests.waiting import wait_until

LIMIT = 4


def in_flight(metrics_text: str) -> float:
    lines = [ln for ln in metrics_text.splitlines() if ln.startswith("cellwork_http_in_flight ")]
    assert lines, "cellwork_http_in_flight not served"
    return float(lines[0].split()[-1])


@pytest.fixture
async def held_edge():
    """An edge whose ``/held`` answers once the test sets ``release``; a low ceiling."""
    release = asyncio.Event()

    async def held(_: Request) -> Response:
        await release.wait()
        return Response(b"{}", media_type="application/json")

    app = Starlette(
        routes=[Route("/held", held), *probe_routes()],
        middleware=edge_middleware(
            max_body_bytes=1000, call_timeout=30.0, limits=EdgeLimits(max_in_flight=LIMIT)
        ),
    )
    install_error_handlers(app)
    server = HttpServer(app, "127.0.0.1", 0, reuse_port=False)
    port = await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield http, release
    release.set()
    await server.close()


async def test_requests_over_the_ceiling_get_503_overloaded_at_once_and_probes_pass(held_edge):
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


def burn(seconds: float) -> None:
    """What a CPU-bound handler does to the loop."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_an_edge_whose_loop_is_saturated_sheds_and_serves_again_once_it_is_not():
    async def busy(_: Request) -> Response:
        burn(0.02)  # 20 ms of the loop a request: ~50 requests/s at most
        return Response(b"{}", media_type="application/json")

    app = Starlette(
        routes=[Route("/busy", busy), *probe_routes()],
        # The threshold is a setting; a low one here, because this test's client shares
        # the server's loop and takes turns with it, which caps the lag a burst can build.
        middleware=edge_middleware(
            max_body_bytes=1000, call_timeout=30.0, limits=EdgeLimits(max_lag=0.05)
        ),
    )
    install_error_handlers(app)
    server = HttpServer(app, "127.0.0.1", 0, reuse_port=False)
    port = await server.start()
    shed: list[httpx.Response] = []
    served = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def sheds_under_a_burst() -> bool:
                nonlocal served
                # 30 at once: 600 ms of CPU queued on a loop that has 20 ms a request.
                answers = await asyncio.gather(*(http.get("/busy") for _ in range(30)))
                served += sum(1 for a in answers if a.status_code == 200)
                shed.extend(a for a in answers if a.status_code == 503)
                return bool(shed)

            await wait_until(sheds_under_a_burst, "the saturated edge to shed")
            for answer in shed:
                assert answer.json()["error"]["code"] == "overloaded"
                assert answer.headers["retry-after"] == "1"
            assert served > 0  # it served what its loop could before it shed
            metrics = (await http.get("/metrics")).text  # probes pass
            lag = [ln for ln in metrics.splitlines() if ln.startswith("cellwork_event_loop_lag")]
            assert lag  # the loop's lag is served with the rest

            async def serves_again() -> bool:
                return (await http.get("/busy")).status_code == 200

            await wait_until(serves_again, "the edge to serve again once the burst is over")
    finally:
        await server.close()


FAST_PHASE, SLOW_PHASE = 3.0, 8.0


async def test_a_slow_dependency_at_200_requests_a_second_sheds_nothing(echo_client):
    async def relay(request: Request) -> Response:
        delay_ms = int(request.query_params["ms"])
        await echo_client.call("Echo", echo_pb2.EchoRequest(delay_ms=delay_ms), timeout=5.0)
        return Response(b"{}", media_type="application/json")

    app = Starlette(
        routes=[Route("/relay", relay)],
        middleware=edge_middleware(max_body_bytes=1000, call_timeout=5.0),
    )
    install_error_handlers(app)
    server = HttpServer(app, "127.0.0.1", 0, reuse_port=False)
    port = await server.start()
    try:
        # httpx would cost more CPU than the edge it drives: the load client is light.
        async with LoadClient(f"http://127.0.0.1:{port}", connections=400, timeout=30) as http:

            async def one(index: int) -> Answer:
                # The dependency slows from 5 to 300 ms: 60 requests in flight at 200/s.
                ms = 5 if driver.elapsed() < FAST_PHASE else 300
                status, body = await http.get(f"/relay?ms={ms}")
                code = orjson.loads(body)["error"]["code"] if status != 200 else ""
                return Answer("relay", status, detail=code)

            driver = OpenLoopDriver(200, FAST_PHASE + SLOW_PHASE, one)
            drive = await driver.run()
    finally:
        await server.close()
    failed = drive.failed("relay", (200,))
    assert len(drive.of("relay")) >= 200 * (FAST_PHASE + SLOW_PHASE) - 1
    assert drive.dropped == 0
    assert failed == [], drive.summary()
    assert drive.of("relay", after=FAST_PHASE + 1.0)  # the slow phase ran
