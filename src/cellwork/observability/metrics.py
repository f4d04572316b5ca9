"""Prometheus metrics of an instance: names defined once, cheap to record.

Every metric is listed in README's metrics table. Labels are bounded: service,
method and status code names, never a user or request id.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from cellwork.observability.requests import InFlight, RequestMetrics

# The names every cellwork instance registers: the constructors below take them from
# here, and tests/unit/test_readme.py reads them to hold README's table to the code.
RPC_SERVER_REQUESTS = "cellwork_rpc_server_requests_total"
RPC_SERVER_DURATION = "cellwork_rpc_server_duration_seconds"
RPC_SERVER_IN_FLIGHT = "cellwork_rpc_server_in_flight"
RPC_CLIENT_REQUESTS = "cellwork_rpc_client_requests_total"
RPC_CLIENT_DURATION = "cellwork_rpc_client_duration_seconds"
BALANCER_EJECTIONS = "cellwork_balancer_ejections_total"
BALANCER_ENDPOINTS = "cellwork_balancer_endpoints"
BALANCER_EJECTED = "cellwork_balancer_ejected_endpoints"
RPC_ENDPOINT_CALLS = "cellwork_rpc_endpoint_calls_total"
RPC_CLIENT_RETRIES = "cellwork_rpc_client_retries_total"
RPC_CLIENT_BUDGET_EXHAUSTED = "cellwork_rpc_client_retry_budget_exhausted_total"
RPC_CLIENT_REJECTED = "cellwork_rpc_client_rejected_total"
BREAKER_STATE = "cellwork_breaker_state"
BREAKER_TRANSITIONS = "cellwork_breaker_transitions_total"
HTTP_REQUESTS = "cellwork_http_requests_total"
HTTP_DURATION = "cellwork_http_duration_seconds"
OUTBOX_PENDING = "cellwork_outbox_pending"
OUTBOX_OLDEST = "cellwork_outbox_oldest_seconds"
REGISTRY_HELD_ENDPOINTS = "cellwork_registry_held_endpoints"
DEPENDENCY_UP = "cellwork_dependency_up"
EVENTS_HANDLED = "cellwork_events_handled_total"
EVENTS_FAILED = "cellwork_events_failed_total"
EVENTS_DEAD_LETTERED = "cellwork_events_dead_lettered_total"
EVENTS_HANDLER_DURATION = "cellwork_events_handler_duration_seconds"

# Each side of RPC's names, by side: what RpcMetrics looks up. The client side has no
# in-flight gauge (an empty name registers none): the client counts calls in flight per
# endpoint for its balancer, and nothing would ever set a per-method gauge.
_RPC_REQUESTS = {"server": RPC_SERVER_REQUESTS, "client": RPC_CLIENT_REQUESTS}
_RPC_DURATION = {"server": RPC_SERVER_DURATION, "client": RPC_CLIENT_DURATION}
_RPC_IN_FLIGHT = {"server": RPC_SERVER_IN_FLIGHT, "client": ""}

# Buckets from 0.5 ms to 10 s: an in-cell hop is sub-millisecond, a slow one seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_CODE_NAMES = {code: code.name for code in grpc.StatusCode}


def code_name(code: grpc.StatusCode) -> str:
    """Return the upper-case name of a status code (``OK``, ``UNAVAILABLE``...)."""
    return _CODE_NAMES[code]


class RpcMetrics:
    """Request counters and duration histograms of one side of RPC (and server in-flight).

    Recorded through ``RequestMetrics`` (a collector): an observation costs well
    under a microsecond, where prometheus-client's labelled children cost several.
    """

    def __init__(self, side: str, registry: CollectorRegistry = REGISTRY) -> None:
        if side not in _RPC_REQUESTS:
            raise ValueError(f"side must be server or client, not {side!r}")
        self._metrics = RequestMetrics(
            requests=_RPC_REQUESTS[side],
            requests_help=f"RPCs handled ({side} side) by final status code.",
            duration=_RPC_DURATION[side],
            duration_help=f"RPC duration ({side} side) in seconds.",
            in_flight=_RPC_IN_FLIGHT[side],
            in_flight_help=f"RPCs in progress ({side} side).",
            labels=("service", "method"),
            outcome_labels=("code",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def in_flight(self, service: str, method: str) -> InFlight:
        """Return the in-flight count of a method (``inc()`` / ``dec()``); scraped on the
        server side only."""
        return self._metrics.in_flight((service, method))

    def observe(self, service: str, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC and record its duration."""
        self._metrics.observe((service, method), (code,), seconds)

    def count(self, service: str, method: str, code: str) -> int:
        """How many RPCs of a method finished with ``code``."""
        return self._metrics.requests_total((service, method), (code,))


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
                    BALANCER_EJECTIONS,
                    "Endpoints ejected after a refused connection or consecutive failed answers.",
                    ["service"],
                ),
                Gauge(
                    BALANCER_ENDPOINTS,
                    "Endpoints known to a client balancer, by state.",
                    ["service", "state"],
                ),
            )
        return _balancer_metrics


class ClientView(Protocol):
    """What the client collector reads of a live client at scrape time (from the
    scrape's thread: reads only, of values the event loop writes whole)."""

    @property
    def service(self) -> str: ...

    def endpoint_calls(self) -> Sequence[tuple[str, int]]:
        """(instance id, attempts sent to it) for each endpoint the client knows."""
        ...

    def ejected_endpoints(self, now: float) -> int:
        """Serving endpoints ejected at ``now``."""
        ...

    def breaker_state(self, now: float) -> int:
        """The circuit's state at ``now``: 0 closed, 1 half-open, 2 open."""
        ...


class ClientCollector(Collector):
    """Per-endpoint call counts, ejected endpoints and breaker states of live clients,
    read when scraped.

    A call only adds one to an integer of its endpoint: a labelled prometheus-client
    counter would take a lock and ~0.7 us on every call. Reading at scrape time also
    drops an endpoint's series as soon as it leaves its balancer, and shows an open
    circuit turn half-open when its time is up, without a call to notice. Clients of
    the same service in one process add up (the breaker state: the highest).
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._lock = threading.Lock()
        self._clients: weakref.WeakSet[ClientView] = weakref.WeakSet()
        if registry is not None:
            registry.register(self)

    def add(self, client: ClientView) -> None:
        """Read ``client`` on every scrape until ``discard`` (or until it is collected)."""
        with self._lock:
            self._clients.add(client)

    def discard(self, client: ClientView) -> None:
        with self._lock:
            self._clients.discard(client)

    def _families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                RPC_ENDPOINT_CALLS,
                "RPC attempts a client sent to one endpoint (instance) of a service; the "
                "series goes when the endpoint leaves the client's balancer.",
                labels=["service", "endpoint"],
            ),
            GaugeMetricFamily(
                BALANCER_EJECTED,
                "Serving endpoints a client's balancer has ejected now.",
                labels=["service"],
            ),
            GaugeMetricFamily(
                BREAKER_STATE,
                "State of a client's circuit breaker to a service: 0 closed, 1 half-open, 2 open.",
                labels=["service"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            clients = list(self._clients)
        now = time.monotonic()
        calls: dict[tuple[str, str], int] = {}
        ejected: dict[str, int] = {}
        states: dict[str, int] = {}
        for client in clients:
            service = client.service
            for endpoint, count in client.endpoint_calls():
                calls[service, endpoint] = calls.get((service, endpoint), 0) + count
            ejected[service] = ejected.get(service, 0) + client.ejected_endpoints(now)
            states[service] = max(states.get(service, 0), client.breaker_state(now))
        calls_family, ejected_family, state_family = self._families()
        for (service, endpoint), count in calls.items():
            calls_family.add_metric([service, endpoint], count)
        for service, count in ejected.items():
            ejected_family.add_metric([service], count)
        for service, state in states.items():
            state_family.add_metric([service], state)
        yield calls_family
        yield ejected_family
        yield state_family


@dataclass(frozen=True, slots=True)
class ResilienceMetrics:
    """What a client's call pipeline records; counters move on rare events only."""

    retries: Counter  # service, reason (not_connected | connection_reset | unavailable)
    budget_exhausted: Counter  # service
    rejected: Counter  # service, reason (breaker_open | concurrency_limit)
    transitions: Counter  # service, state (the state entered)
    clients: ClientCollector


_resilience_metrics: ResilienceMetrics | None = None


def resilience_metrics() -> ResilienceMetrics:
    """Return the process-wide metrics of clients' call pipelines (created on first use)."""
    global _resilience_metrics
    with _lock:
        if _resilience_metrics is None:
            _resilience_metrics = ResilienceMetrics(
                retries=Counter(
                    RPC_CLIENT_RETRIES,
                    "Attempts a client made again after one failed, by reason.",
                    ["service", "reason"],
                ),
                budget_exhausted=Counter(
                    RPC_CLIENT_BUDGET_EXHAUSTED,
                    "Retries a client did not make because its retry budget was spent.",
                    ["service"],
                ),
                rejected=Counter(
                    RPC_CLIENT_REJECTED,
                    "Calls a client refused itself, with no attempt made, by reason.",
                    ["service", "reason"],
                ),
                transitions=Counter(
                    BREAKER_TRANSITIONS,
                    "Changes of state of a client's circuit breaker, by the state entered.",
                    ["service", "state"],
                ),
                clients=ClientCollector(),
            )
        return _resilience_metrics


_registry_held: Gauge | None = None
_dependency_up: Gauge | None = None


def registry_held_endpoints() -> Gauge:
    """Return the gauge of endpoints a registry watcher holds while the registry is
    unreachable (0 while it is healthy), labelled by what it watches."""
    global _registry_held
    with _lock:
        if _registry_held is None:
            _registry_held = Gauge(
                REGISTRY_HELD_ENDPOINTS,
                "Endpoints a registry watcher keeps from its last good view while the "
                "registry is unreachable (0 while it is reachable).",
                ["watch"],
            )
        return _registry_held


def dependency_up() -> Gauge:
    """Return the gauge of an instance's infrastructure dependencies: 1 up, 0 degraded."""
    global _dependency_up
    with _lock:
        if _dependency_up is None:
            _dependency_up = Gauge(
                DEPENDENCY_UP,
                "Whether an infrastructure dependency of the instance is usable (1) or "
                "degraded (0); the instance keeps serving either way.",
                ["dependency"],
            )
        return _dependency_up


_http_metrics: RequestMetrics | None = None
_outbox_metrics: tuple[Gauge, Gauge] | None = None


def http_metrics() -> RequestMetrics:
    """Return the HTTP edge's metrics: requests by route template, method and status."""
    global _http_metrics
    with _lock:
        if _http_metrics is None:
            _http_metrics = RequestMetrics(
                requests=HTTP_REQUESTS,
                requests_help="HTTP requests answered, by route template, method and status.",
                duration=HTTP_DURATION,
                duration_help="Time to answer an HTTP request, by route template.",
                labels=("route",),
                outcome_labels=("method", "status"),
                buckets=LATENCY_BUCKETS,
            )
        return _http_metrics


def outbox_metrics() -> tuple[Gauge, Gauge]:
    """Return (pending rows, age of the oldest in seconds) of outboxes, by service."""
    global _outbox_metrics
    with _lock:
        if _outbox_metrics is None:
            _outbox_metrics = (
                Gauge(OUTBOX_PENDING, "Outbox rows waiting to be relayed.", ["service"]),
                Gauge(
                    OUTBOX_OLDEST,
                    "Age in seconds of the oldest outbox row waiting (0 when none).",
                    ["service"],
                ),
            )
        return _outbox_metrics


# An event handler calls other services and may wait for them: up to its 30 s timeout.
HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class EventMetrics:
    """What durable consumers record, labelled by stream and durable (and why)."""

    handled: Counter  # stream, durable
    failed: Counter  # stream, durable, kind (poison | transient)
    dead_lettered: Counter  # stream, durable, reason (poison | transient_exhausted)
    duration: Histogram  # stream, durable


_event_metrics: EventMetrics | None = None


def event_metrics() -> EventMetrics:
    """Return the process-wide consumer metrics (created on first use)."""
    global _event_metrics
    with _lock:
        if _event_metrics is None:
            _event_metrics = EventMetrics(
                handled=Counter(
                    EVENTS_HANDLED, "Events a handler finished and acked.", ["stream", "durable"]
                ),
                failed=Counter(
                    EVENTS_FAILED,
                    "Event deliveries whose handler failed, by kind of failure.",
                    ["stream", "durable", "kind"],
                ),
                dead_lettered=Counter(
                    EVENTS_DEAD_LETTERED,
                    "Events moved to the dead-letter stream, by reason.",
                    ["stream", "durable", "reason"],
                ),
                duration=Histogram(
                    EVENTS_HANDLER_DURATION,
                    "Time an event handler ran, whatever its outcome.",
                    ["stream", "durable"],
                    buckets=HANDLER_BUCKETS,
                ),
            )
        return _event_metrics


def start_metrics_server(host: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` from a daemon thread (0 picks a port: see ``server_port``).

    Stop it with ``server.shutdown()`` (blocks up to half a second: call it off the loop).
    """
    server, _thread = start_http_server(port, addr=host)
    return server
