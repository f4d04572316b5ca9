"""The edge's shedding layer in process: requests are refused on the loop's lag (a share past
the threshold, all from twice it) or at the ceiling of requests in flight, never for taking
long; a request holds its place for exactly its life; probes pass untouched."""

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cellwork.gateway import LoadShedding, install_error_handlers
from cellwork.gateway.shedding import EdgeLimits
from cellwork.resilience.loop_lag import LagSampler

LIMITS = EdgeLimits(max_lag=0.1, max_in_flight=3)


class Draws:
    """The random draws the layer makes, given in advance."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.made = 0

    def __call__(self) -> float:
        self.made += 1
        return self.values.pop(0)


def shedding_app(
    lag: LagSampler, draw: Draws | None = None
) -> tuple[Starlette, list[LoadShedding]]:
    layers: list[LoadShedding] = []

    async def ok(_: Request) -> Response:
        return Response(b"ok")

    async def crash(_: Request) -> Response:
        raise RuntimeError("boom")

    def layer(app):
        layers.append(LoadShedding(app, limits=LIMITS, lag=lag, draw=draw or Draws()))
        return layers[-1]

    app = Starlette(routes=[Route("/ok", ok), Route("/crash", crash)])
    install_error_handlers(app)
    app.add_middleware(layer)
    return app, layers


def edge(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://edge")


async def test_a_request_holds_its_place_for_its_life_even_when_it_fails() -> None:
    lag = LagSampler()
    app, layers = shedding_app(lag)
    async with edge(app) as http:
        assert (await http.get("/ok")).status_code == 200
        assert (await http.get("/crash")).status_code == 500
        assert (await http.get("/ok")).status_code == 200
    assert (layers[0].in_flight, layers[0].shed) == (0, 0)
    lag.stop()


async def test_a_saturated_loop_refuses_with_the_error_tables_answer_and_probes_pass() -> None:
    lag = LagSampler()
    app, layers = shedding_app(lag)
    async with edge(app) as http:
        await http.get("/ok")  # builds the middleware stack
        lag.lag.seconds = 0.2  # twice the threshold: everything is refused
        refused = await http.get("/ok")
        exempt = await http.get("/metrics")  # no route here: 404, but not shed
    assert refused.status_code == 503
    assert refused.json() == {
        "error": {"code": "overloaded", "message": "the server is overloaded"}
    }
    assert refused.headers["retry-after"] == "1"
    assert exempt.status_code == 404
    assert layers[0].shed == 1
    lag.stop()


@pytest.mark.parametrize(
    ("lag_seconds", "draws", "served"),
    [
        (0.0, (), [True] * 4),  # an idle loop: nothing drawn, everything served
        (0.1, (), [True] * 4),  # at the threshold: still all
        (0.15, (0.2, 0.7, 0.49, 0.5), [False, True, False, True]),  # half refused
        (0.19, (0.85, 0.95, 0.0, 0.89), [False, True, False, False]),  # 90 % refused
    ],
)
async def test_past_the_threshold_a_share_of_requests_is_refused(
    lag_seconds, draws, served
) -> None:
    lag = LagSampler()
    app, layers = shedding_app(lag, Draws(*draws))
    async with edge(app) as http:
        await http.get("/ok")
        lag.lag.seconds = lag_seconds
        answers = [await http.get("/ok") for _ in served]
    assert [a.status_code == 200 for a in answers] == served
    assert layers[0].shed == served.count(False)
    lag.stop()


async def test_at_the_ceiling_of_requests_in_flight_the_next_is_refused_whatever_the_lag():
    lag = LagSampler()
    app, layers = shedding_app(lag)
    async with edge(app) as http:
        await http.get("/ok")
        layers[0].in_flight = LIMITS.max_in_flight  # as many in flight elsewhere
        assert (await http.get("/ok")).status_code == 503
        layers[0].in_flight = LIMITS.max_in_flight - 1
        assert (await http.get("/ok")).status_code == 200
    lag.stop()


def test_limits_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        EdgeLimits(max_lag=0.0)
    with pytest.raises(ValueError):
        EdgeLimits(max_in_flight=0)
