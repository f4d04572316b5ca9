"""Prometheus metrics of an instance: names defined once, children cached.

Every metric is listed in README's metrics table. Labels are bounded: service,
method and status code names, never a user or request id.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

RPC_SERVER_REQUESTS = "cellwork_rpc_server_requests_total"
RPC_SERVER_DURATION = "cellwork_rpc_server_duration_seconds"
RPC_SERVER_IN_FLIGHT = "cellwork_rpc_server_in_flight"
RPC_CLIENT_REQUESTS = "cellwork_rpc_client_requests_total"
RPC_CLIENT_DURATION = "cellwork_rpc_client_duration_seconds"
RPC_CLIENT_RETRIES = "cellwork_rpc_client_retries_total"
BALANCER_EJECTIONS = "cellwork_balancer_ejections_total"
BALANCER_ENDPOINTS = "cellwork_balancer_endpoints"

# Buckets from 0.5 ms to 10 s: an in-cell hop is sub-millisecond, a slow one seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_CODE_NAMES = {code: code.name for code in grpc.StatusCode}


def code_name(code: grpc.StatusCode) -> str:
    """Return the upper-case name of a status code (``OK``, ``UNAVAILABLE``...)."""
    return _CODE_NAMES[code]


class RpcMetrics:
    """Request counters, duration histograms and in-flight gauges, one set per side.

    Label lookups cost microseconds, so children are cached per (service, method,
    code); ``observe`` is then two dictionary hits and two lock-protected adds.
    """

    def __init__(self, side: str, registry: CollectorRegistry = REGISTRY) -> None:
        if side not in ("server", "client"):
            raise ValueError(f"side must be server or client, not {side!r}")
        self._requests = Counter(
            f"cellwork_rpc_{side}_requests",
            f"RPCs handled ({side} side) by final status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            f"cellwork_rpc_{side}_duration_seconds",
            f"RPC duration ({side} side) in seconds.",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            f"cellwork_rpc_{side}_in_flight",
            f"RPCs in progress ({side} side).",
            ["service", "method"],
            registry=registry,
        )
        self._counter_children: dict[tuple[str, str, str], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._in_flight_children: dict[tuple[str, str], Gauge] = {}

    def in_flight(self, service: str, method: str) -> Gauge:
        """Return the in-flight gauge child for a method."""
        key = (service, method)
        child = self._in_flight_children.get(key)
        if child is None:
            child = self._in_flight_children[key] = self._in_flight.labels(service, method)
        return child

    def observe(self, service: str, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC and record its duration."""
        key = (service, method, code)
        counter = self._counter_children.get(key)
        if counter is None:
            counter = self._counter_children[key] = self._requests.labels(service, method, code)
        counter.inc()
        hkey = (service, method)
        hist = self._duration_children.get(hkey)
        if hist is None:
            hist = self._duration_children[hkey] = self._duration.labels(service, method)
        hist.observe(seconds)


_lock = threading.Lock()
_server_metrics: RpcMetrics | None = None
_client_metrics: RpcMetrics | None = None
_balancer_metrics: tuple[Counter, Gauge] | None = None


def server_metrics() -> RpcMetrics:
    """Return the process-wide server-side RPC metrics (created on first use)."""
    global _server_metrics
    with _lock:
        if _server_metrics is None:
            _server_metrics = RpcMetrics("server")
        return _server_metrics


def client_metrics() -> RpcMetrics:
    """Return the process-wide client-side RPC metrics (created on first use)."""
    global _client_metrics
    with _lock:
        if _client_metrics is None:
            _client_metrics = RpcMetrics("client")
        return _client_metrics


def balancer_metrics() -> tuple[Counter, Gauge]:
    """Return (ejections counter, endpoints gauge), labelled by service (and state)."""
    global _balancer_metrics
    with _lock:
        if _balancer_metrics is None:
            _balancer_metrics = (
                Counter(
                    "cellwork_balancer_ejections",
                    "Endpoints ejected after consecutive connection failures.",
                    ["service"],
                ),
                Gauge(
                    BALANCER_ENDPOINTS,
                    "Endpoints known to a client balancer, by state.",
                    ["service", "state"],
                ),
            )
        return _balancer_metrics


_http_metrics: tuple[Counter, Histogram] | None = None


def http_metrics() -> tuple[Counter, Histogram]:
    """Return (requests counter, duration histogram) of the HTTP edge, by route template."""
    global _http_metrics
    with _lock:
        if _http_metrics is None:
            _http_metrics = (
                Counter(
                    "cellwork_http_requests",
                    "HTTP requests answered, by route template, method and status.",
                    ["route", "method", "status"],
                ),
                Histogram(
                    "cellwork_http_duration_seconds",
                    "Time to answer an HTTP request, by route template.",
                    ["route"],
                    buckets=LATENCY_BUCKETS,
                ),
            )
        return _http_metrics


def start_metrics_server(host: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` from a daemon thread (0 picks a port: see ``server_port``).

    Stop it with ``server.shutdown()`` (blocks up to half a second: call it off the loop).
    """
    server, _thread = start_http_server(port, addr=host)
    return server
