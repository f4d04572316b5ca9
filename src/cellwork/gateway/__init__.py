"""gateway kit: the HTTP edge. JWT auth, rate limits, aggregation with per-part deadlines,
JSON errors, body limits, and an HTTP server that shares its port between instances."""

from cellwork.gateway.aggregate import gather_parts
from cellwork.gateway.auth import Claims, JwtCodec, JwtKeys, bearer_token
from cellwork.gateway.errors import error_body, json_error
from cellwork.gateway.middleware import BodyLimit, HttpMetrics, RequestContext
from cellwork.gateway.ratelimit import TokenBucketLimiter
from cellwork.gateway.routing import TemplateRoute
from cellwork.gateway.server import HttpServer

__all__ = [
    "BodyLimit",
    "Claims",
    "HttpMetrics",
    "HttpServer",
    "JwtCodec",
    "JwtKeys",
    "RequestContext",
    "TemplateRoute",
    "TokenBucketLimiter",
    "bearer_token",
    "error_body",
    "gather_parts",
    "json_error",
]
