"""Former home of the HTTP edge, now split by concept; kept only so existing imports
(``cellwork.service`` imports ``HttpServer`` from here) resolve. New code imports from
``cellwork.gateway`` (or ``server``, ``middleware``, ``errors``, ``routing``, ``probes``)."""

from cellwork.gateway.errors import error_body, json_error
from cellwork.gateway.middleware import BodyLimit, HttpMetrics, RequestContext
from cellwork.gateway.routing import TemplateRoute
from cellwork.gateway.server import HttpServer, PortTaken, bind_socket, check_siblings_only

__all__ = [
    "BodyLimit",
    "HttpMetrics",
    "HttpServer",
    "PortTaken",
    "RequestContext",
    "TemplateRoute",
    "bind_socket",
    "check_siblings_only",
    "error_body",
    "json_error",
]
