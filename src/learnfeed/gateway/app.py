"""The gateway's app: the edge's layers, the error answers, the routes, the probes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.responses import Response

from cellwork import CellworkError
from cellwork.gateway import BodyLimit, HttpMetrics, RequestContext, TemplateRoute, json_error
from cellwork.observability import get_logger
from learnfeed.gateway.access import Access, RateLimited
from learnfeed.gateway.openapi import status_code_name
from learnfeed.gateway.render import JSON

_log = get_logger("learnfeed.gateway")


class Routes(Protocol):
    def router(self) -> APIRouter: ...


def build_app(
    access: Access,
    routes: list[Routes],
    serving: list[TemplateRoute],
    ready: Callable[[], Mapping[str, bool]],
    *,
    max_body_bytes: int,
    request_timeout: float,
) -> FastAPI:
    """The FastAPI app: ``serving`` routes first (plain Starlette routes that serve what
    a router only documents), then every router; the edge's layers in the order a
    request meets them."""
    app = FastAPI(
        title="learnfeed",
        version="1",
        description="The personalized learning feed. Errors are "
        '`{"error": {"code": "...", "message": "..."}}`.',
        middleware=[
            Middleware(HttpMetrics),
            Middleware(RequestContext, timeout=request_timeout),
            Middleware(BodyLimit, max_bytes=max_body_bytes),
        ],
    )
    app.state.access = access
    _install_error_answers(app)
    for part in routes:
        app.include_router(part.router())
    app.router.routes[:0] = serving

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        upstream = dict(ready())
        ok = all(upstream.values())
        return Response(
            orjson.dumps({"ready": ok, "upstreams": upstream}), 200 if ok else 503, media_type=JSON
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _install_error_answers(app: FastAPI) -> None:
    @app.exception_handler(CellworkError)
    async def domain_error(request: Request, exc: CellworkError) -> Response:
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return json_error(exc.http_status, exc.error_code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors: Any = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return json_error(400, "malformed_json", "request body is not valid JSON")
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return json_error(422, "validation_failed", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Keep the headers the status needs (Allow on a 405).
        return json_error(
            exc.status_code,
            status_code_name(exc.status_code),
            str(exc.detail),
            dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        _log.exception("gateway.unhandled", path=request.url.path)
        return json_error(500, "internal", "internal error")
