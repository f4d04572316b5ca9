"""The gateway's app: the edge's layers, the error answers, the routes, the probes."""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from cellwork.gateway import (
    DependencyCheck,
    ReadinessCheck,
    edge_middleware,
    install_error_handlers,
    probe_routes,
)
from learnfeed.gateway.access import Access


class Routes(Protocol):
    def router(self) -> APIRouter: ...


def build_app(
    access: Access,
    routes: list[Routes],
    serving: list[BaseRoute],
    ready: ReadinessCheck,
    *,
    dependencies: DependencyCheck | None = None,
    max_body_bytes: int,
    request_timeout: float,
) -> FastAPI:
    """The FastAPI app: ``serving`` routes first (plain Starlette routes that serve what
    a router only documents), then every router and the probes; the edge's layers in the
    order a request meets them; every error answered from cellwork's error table.
    ``/readyz`` fails on ``ready`` and names what ``dependencies`` says is degraded."""
    app = FastAPI(
        title="learnfeed",
        version="1",
        description="The personalized learning feed. Errors are "
        '`{"error": {"code": "...", "message": "..."}}`.',
        middleware=edge_middleware(max_body_bytes=max_body_bytes, call_timeout=request_timeout),
        routes=[*serving, *probe_routes(ready, dependencies=dependencies)],
    )
    app.state.access = access
    install_error_handlers(app)
    for part in routes:
        app.include_router(part.router())
    return app
