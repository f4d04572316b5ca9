"""The edge's shedding layer in process: a slot is held for exactly the request's life, and
what is not an HTTP request to a limited path passes untouched."""

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cellwork.gateway import LoadShedding, install_error_handlers
from cellwork.resilience import LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shedding_app(clock: Clock, limit: int = 1) -> tuple[Starlette, list[LoadShedding]]:
    layers: list[LoadShedding] = []

    async def slow(_: Request) -> Response:
        clock.now += 0.25  # the request takes a quarter of a second on this clock
        return Response(b"ok")

    async def crash(_: Request) -> Response:
        raise RuntimeError("boom")

    def layer(app):
        fixed = LimitSettings(initial=limit, min_limit=limit, max_limit=limit, min_samples=1)
        layers.append(LoadShedding(app, limits=fixed, clock=clock))
        return layers[-1]

    app = Starlette(routes=[Route("/slow", slow), Route("/crash", crash)])
    install_error_handlers(app)
    app.add_middleware(layer)
    return app, layers


async def test_a_request_holds_its_slot_for_its_life_even_when_it_fails() -> None:
    clock = Clock()
    app, layers = shedding_app(clock)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
        assert (await http.get("/slow")).status_code == 200
        assert (await http.get("/crash")).status_code == 500
        assert (await http.get("/slow")).status_code == 200
    limiter = layers[0].limiter
    assert (limiter.in_flight, limiter.shed) == (0, 0)
    assert limiter.adaptive.short_rtt == pytest.approx(0.25)  # learnt on the clock given


async def test_a_full_edge_refuses_with_the_error_tables_answer() -> None:
    clock = Clock()
    app, layers = shedding_app(clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://edge"
    ) as http:
        await http.get("/slow")  # builds the middleware stack
        layers[0].limiter.in_flight = 1  # one request in flight elsewhere
        refused = await http.get("/slow")
        exempt = await http.get("/metrics")  # no route here: 404, but not shed
    assert refused.status_code == 503
    assert refused.json() == {
        "error": {"code": "overloaded", "message": "the server is at its concurrency limit"}
    }
    assert refused.headers["retry-after"] == "1"
    assert exempt.status_code == 404
    assert layers[0].limiter.shed == 1
