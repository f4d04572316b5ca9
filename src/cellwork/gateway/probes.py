"""The probe routes every HTTP service serves: ``/healthz``, ``/readyz``, ``/metrics``.

    GET /healthz   200 ``{"status": "ok"}`` while the process answers (liveness)
    GET /readyz    200 ``{"ready": true, "parts": {...}, "degraded": [...]}`` when every
                   part the readiness check reports is true, else 503 (Kubernetes and
                   the nginx edge stop sending requests)
    GET /metrics   the Prometheus text format of the registry

Readiness is about whether the instance can serve its requests at all (started,
not draining, an instance of each upstream known). A degraded dependency (NATS
down, the registry unreachable) is not a reason to take an instance out of
rotation while it serves from what it last knew (static stability): it is named
under ``"degraded"`` and the answer stays 200. Taking every instance out when a
shared dependency blinks would turn a partial failure into a full one.

They are plain Starlette routes (``TemplateRoute``, so the edge's metrics label them),
left out of a FastAPI app's OpenAPI document: they are for the platform, not the API.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from cellwork.gateway.routing import TemplateRoute

ReadinessCheck = Callable[[], Mapping[str, bool] | Awaitable[Mapping[str, bool]]]
"""Reports whether each part a service needs is usable, by name (``{"feed": True}``);
plain or async. It runs on every ``/readyz``, so it should only read state."""

DependencyCheck = Callable[[], Mapping[str, bool]]
"""Reports whether each infrastructure dependency is usable, by name
(``{"nats": False}``); those false are named as degraded and fail nothing. Reads
state only."""

_JSON = "application/json"


def probe_routes(
    ready: ReadinessCheck | None = None,
    *,
    dependencies: DependencyCheck | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> list[BaseRoute]:
    """The routes ``/healthz``, ``/readyz`` (ready when every part of ``ready()`` is
    true; always, without a check; ``dependencies()`` false are listed as degraded)
    and ``/metrics`` (``registry``, by default the process's), for
    ``Starlette(routes=...)`` or a FastAPI app's ``router.routes``."""

    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(_: Request) -> Response:
        reported = ready() if ready is not None else {}
        parts = dict(await reported if inspect.isawaitable(reported) else reported)
        is_ready = all(parts.values())
        usable = dependencies() if dependencies is not None else {}
        degraded = sorted(name for name, up in usable.items() if not up)
        return Response(
            orjson.dumps({"ready": is_ready, "parts": parts, "degraded": degraded}),
            200 if is_ready else 503,
            media_type=_JSON,
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        TemplateRoute("/healthz", healthz, methods=["GET"]),
        TemplateRoute("/readyz", readyz, methods=["GET"]),
        TemplateRoute("/metrics", metrics, methods=["GET"]),
    ]
