"""The edge's middleware list: the documented order, and each layer where a request meets it."""

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cellwork.gateway import (
    BodyLimit,
    HttpMetrics,
    LoadShedding,
    RequestContext,
    TemplateRoute,
    edge_middleware,
    install_error_handlers,
)
from cellwork.gateway.shedding import EDGE_LIMITS
from cellwork.observability.metrics import http_metrics
from cellwork.rpc.context import current_call


async def seen(request: Request) -> Response:
    call = current_call()
    assert call is not None
    remaining = call.time_remaining()
    body = await request.body()
    return Response(f"{call.request_id} {remaining:.1f} {len(body)}".encode())


def edge_app(max_body_bytes: int = 10) -> Starlette:
    app = Starlette(
        routes=[
            TemplateRoute("/edge-order/{name}", seen, methods=["POST"]),
            Route("/edge-order-plain", seen, methods=["POST"]),
        ],
        middleware=edge_middleware(max_body_bytes=max_body_bytes, call_timeout=2.0),
    )
    install_error_handlers(app)
    return app


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


def test_the_edge_middleware_is_metrics_then_shedding_then_request_context_then_body_limit():
    layers = edge_middleware(max_body_bytes=123, call_timeout=0.5)
    assert [layer.cls for layer in layers] == [
        HttpMetrics,
        LoadShedding,
        RequestContext,
        BodyLimit,
    ]
    assert layers[1].kwargs == {"limits": EDGE_LIMITS}
    assert layers[2].kwargs == {"timeout": 0.5}
    assert layers[3].kwargs == {"max_bytes": 123}


def test_an_edge_without_limits_has_no_shedding_layer() -> None:
    layers = edge_middleware(max_body_bytes=123, call_timeout=0.5, limits=None)
    assert [layer.cls for layer in layers] == [HttpMetrics, RequestContext, BodyLimit]


async def test_a_request_within_the_limit_reaches_the_route_with_its_call_context() -> None:
    async with client(edge_app()) as http:
        r = await http.post("/edge-order/a", content=b"12345", headers={"x-request-id": "r-1"})
    request_id, remaining, size = r.text.split()
    assert (request_id, size) == ("r-1", "5")
    assert 0 < float(remaining) <= 2.0
    assert r.headers["x-request-id"] == "r-1"


async def test_a_body_over_the_limit_is_answered_inside_metrics_and_request_context() -> None:
    metrics = http_metrics()
    before = metrics.requests_total(("unmatched",), ("POST", "413"))
    async with client(edge_app()) as http:
        r = await http.post("/edge-order/a", content=b"x" * 11, headers={"x-request-id": "r-2"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert r.headers["connection"] == "close"
    assert r.headers["x-request-id"] == "r-2"  # RequestContext met it before BodyLimit
    # HttpMetrics met it first of all; the route was never reached, so no template
    assert metrics.requests_total(("unmatched",), ("POST", "413")) == before + 1


async def test_metrics_label_a_template_route_by_its_template() -> None:
    metrics = http_metrics()
    before = metrics.requests_total(("/edge-order/{name}",), ("POST", "200"))
    async with client(edge_app()) as http:
        await http.post("/edge-order/one", content=b"")
        await http.post("/edge-order/two", content=b"")
    assert metrics.requests_total(("/edge-order/{name}",), ("POST", "200")) == before + 2


async def test_a_malformed_request_id_is_replaced_by_the_trace_id() -> None:
    async with client(edge_app()) as http:
        r = await http.post("/edge-order/a", content=b"", headers={"x-request-id": "bad id!"})
    assert r.headers["x-request-id"] != "bad id!"
    assert len(r.headers["x-request-id"]) == 32
