"""gateway kit: the HTTP edge.

    auth         JWT with key ids and rotation, bearer tokens
    ratelimit    token buckets per key
    aggregate    concurrent parts with per-part deadlines, partial answers
    errors       every error answered from the error table; OpenAPI ``responses=``
    middleware   the edge's middleware, in the order a request meets it
    shedding     503 overloaded at once while the event loop lags, probes exempt
    routing      routes that name their template for metrics
    probes       /healthz, /readyz, /metrics
    server       uvicorn in the service's loop on a port shared between instances

An app is built from these in one place (its composition root):

    app = FastAPI(middleware=edge_middleware(max_body_bytes=65536, call_timeout=2.0),
                  routes=probe_routes(upstreams, dependencies=service.dependencies))
    install_error_handlers(app)
"""

from cellwork.gateway.aggregate import gather_parts
from cellwork.gateway.auth import Claims, JwtCodec, JwtKeys, bearer_token
from cellwork.gateway.errors import (
    ErrorBody,
    error_body,
    error_response,
    error_responses,
    install_error_handlers,
    json_error,
)
from cellwork.gateway.middleware import BodyLimit, HttpMetrics, RequestContext, edge_middleware
from cellwork.gateway.probes import DependencyCheck, ReadinessCheck, probe_routes
from cellwork.gateway.ratelimit import TokenBucketLimiter
from cellwork.gateway.routing import TemplateRoute
from cellwork.gateway.server import HttpServer, PortTaken
from cellwork.gateway.shedding import LoadShedding

__all__ = [
    "BodyLimit",
    "Claims",
    "DependencyCheck",
    "ErrorBody",
    "HttpMetrics",
    "HttpServer",
    "JwtCodec",
    "JwtKeys",
    "LoadShedding",
    "PortTaken",
    "ReadinessCheck",
    "RequestContext",
    "TemplateRoute",
    "TokenBucketLimiter",
    "bearer_token",
    "edge_middleware",
    "error_body",
    "error_response",
    "error_responses",
    "gather_parts",
    "install_error_handlers",
    "json_error",
    "probe_routes",
]
