"""Client-side load balancing: one channel per endpoint of a service.

The balancer follows the registry's live set (``update`` is a watcher
listener): a new SERVING instance is a candidate on the next pick, a DRAINING
or NOT_SERVING one gets no new calls, and a vanished one has its channel
closed once its in-flight calls had time to finish. Endpoints that fail to
connect ``EjectionPolicy.consecutive_failures`` times in a row are ejected for
a doubling back-off; if every serving endpoint is ejected, the picker uses
them anyway (panic mode) rather than fail a call it might complete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from grpc import aio

from cellwork.balancing.policy import make_policy
from cellwork.balancing.stats import EjectionPolicy, EndpointStats
from cellwork.discovery.instance import InstanceInfo, InstanceStatus
from cellwork.errors import NoEndpoints
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import balancer_metrics
from cellwork.resilience.tasks import stop_task

StubT = TypeVar("StubT")

_log = get_logger("cellwork.balancing")

DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.enable_retries", 0),  # retries are the client's, across endpoints
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


@dataclass(eq=False, slots=True)
class Endpoint(Generic[StubT]):
    """One instance as the client sees it: its record, channel, stub and stats."""

    key: str
    info: InstanceInfo
    channel: aio.Channel
    stub: StubT
    stats: EndpointStats = field(default_factory=EndpointStats)

    @property
    def serving(self) -> bool:
        return self.info.status is InstanceStatus.SERVING


class Balancer(Generic[StubT]):
    """Picks an endpoint of one service for each call."""

    def __init__(
        self,
        service: str,
        stub_factory: Callable[[aio.Channel], StubT],
        *,
        policy: str = "p2c",
        ejection: EjectionPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        close_grace: float = 5.0,
    ) -> None:
        self.service = service
        self._stub_factory = stub_factory
        self._policy = make_policy(policy)
        self.ejection = ejection or EjectionPolicy()
        self._options = [*DEFAULT_CHANNEL_OPTIONS, *channel_options]
        self._close_grace = close_grace
        self._endpoints: dict[str, Endpoint[StubT]] = {}
        self._serving: list[Endpoint[StubT]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._ejections, self._gauge = balancer_metrics()
        self._changed = asyncio.Event()

    @property
    def endpoints(self) -> list[Endpoint[StubT]]:
        """Every known endpoint, serving or not."""
        return list(self._endpoints.values())

    def update(self, snapshot: dict[str, InstanceInfo]) -> None:
        """Adopt the registry's live set (entries of other services are ignored)."""
        mine = {k: v for k, v in snapshot.items() if v.service == self.service}
        for key in list(self._endpoints):
            old = self._endpoints[key]
            new = mine.get(key)
            if new is None or new.address != old.info.address:
                del self._endpoints[key]
                self._close_later(old)
        for key, info in mine.items():
            endpoint = self._endpoints.get(key)
            if endpoint is None:
                self._endpoints[key] = self._open(key, info)
            else:
                endpoint.info = info
        self._serving = [e for e in self._endpoints.values() if e.serving]
        self._publish_gauges()
        self._changed.set()

    def _open(self, key: str, info: InstanceInfo) -> Endpoint[StubT]:
        now = time.monotonic()
        known = [e.stats.latency(now) for e in self._endpoints.values()]
        stats = EndpointStats(initial_latency=sum(known) / len(known) if known else 0.001)
        channel = aio.insecure_channel(info.address, options=self._options)
        # Connect now, so the first call does not pay for the handshake.
        channel.get_state(try_to_connect=True)
        return Endpoint(key, info, channel, self._stub_factory(channel), stats)

    def _close_later(self, endpoint: Endpoint[StubT]) -> None:
        async def close() -> None:
            await endpoint.channel.close(grace=self._close_grace)

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def pick(self, exclude: Collection[Endpoint[StubT]] = ()) -> Endpoint[StubT]:
        """Choose an endpoint for one call; raises NoEndpoints when none serves."""
        now = time.monotonic()
        serving = self._serving
        candidates = [e for e in serving if e.stats.ejected_until <= now and e not in exclude]
        if not candidates:
            # Panic mode: every serving endpoint is ejected or already tried.
            candidates = [e for e in serving if e not in exclude] or list(serving)
            if not candidates:
                raise NoEndpoints(f"no serving instance of {self.service}")
        return self._policy.choose(candidates, now)

    def report(self, endpoint: Endpoint[StubT], seconds: float, *, connected: bool) -> None:
        """Record a finished call: its latency, or a failure to connect."""
        if connected:
            endpoint.stats.observe(seconds, time.monotonic())
            endpoint.stats.record_success()
        elif endpoint.stats.record_failure(time.monotonic(), self.ejection):
            self._ejections.labels(self.service).inc()
            _log.warning(
                "balancer.ejected",
                service=self.service,
                endpoint=endpoint.key,
                address=endpoint.info.address,
                seconds=round(endpoint.stats.ejected_until - time.monotonic(), 3),
            )

    async def wait_for_endpoints(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` endpoints are serving."""
        async with asyncio.timeout(timeout):
            while len(self._serving) < count:
                self._changed.clear()
                await self._changed.wait()

    def _publish_gauges(self) -> None:
        counts = {status.value: 0 for status in InstanceStatus}
        for endpoint in self._endpoints.values():
            counts[endpoint.info.status.value] += 1
        for state, n in counts.items():
            self._gauge.labels(self.service, state).set(n)

    async def close(self) -> None:
        """Close every channel now."""
        endpoints, self._endpoints, self._serving = list(self._endpoints.values()), {}, []
        for task in list(self._closing):
            await stop_task(task)
        for endpoint in endpoints:
            await endpoint.channel.close(grace=None)
