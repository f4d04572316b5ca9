"""Client-side load balancing: one channel per endpoint of a service.

The balancer follows the registry's live set (``update`` is a watcher
listener): a new SERVING instance is a candidate on the next pick, a DRAINING
or NOT_SERVING one gets no new calls, and a vanished one has its channel
closed once its in-flight calls had time to finish. An instance restarted under
the same key and address (its ``started_at`` or ``pid`` changed) is a new endpoint,
with a new channel and fresh stats: an ejection of the old process does not keep the
new one out.

Outlier ejection, on answers as well as connections (``EjectionPolicy``): an
endpoint is ejected after ``consecutive_failures`` failed answers in a row
(UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED: 5 by default) or at once on a refused
connection, for ``base_seconds`` times the ejections in a row (30 s, 60 s...,
at most ``max_seconds``, 300 s) plus up to ``jitter`` more, so that endpoints
ejected together do not return together. An ejection that would leave more than
``max_ejected_fraction`` (half) of the serving endpoints ejected is not made:
a failure shared by most endpoints is the service's (its breaker's business), not
an outlier's, and ejecting them all would leave nothing to call.

Failed answers, refused connections and sheds (RESOURCE_EXHAUSTED) never make an
endpoint look cheaper: each is a penalty on its latency estimate (``stats.py``), not a
latency folded in. A shed neither ends nor adds to the failed answers in a row.

Panic mode: while fewer than ``panic_threshold`` (half) of the serving endpoints
are healthy (not ejected), which the cap above allows only after the serving set
shrank under the ejected ones, picks spread over every serving endpoint, ejected
or not, as Envoy does: the healthy few would take the whole load, and an ejected
endpoint may well answer. A retry excludes the endpoints its call tried.

``pick`` is on every call's path: it chooses from a candidate list kept ready
(rebuilt when the registry's set changes, on an ejection and when one ends), so a
call allocates nothing here.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from grpc import aio

from cellwork.balancing.policy import make_policy
from cellwork.balancing.stats import EjectionPolicy, EndpointStats, may_eject
from cellwork.discovery.instance import InstanceInfo, InstanceStatus
from cellwork.errors import NoEndpoints
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import balancer_metrics
from cellwork.resilience.tasks import stop_task

StubT = TypeVar("StubT")

# Seconds: the latency estimate of the first endpoint before its first answer.
_FIRST_ESTIMATE = 0.001
# Beyond 10 failed answers in a row the penalty is at its cap anyway (x 1024).
_MAX_DOUBLINGS = 10

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


def _replaced(old: InstanceInfo, new: InstanceInfo) -> bool:
    """Whether ``new`` is another endpoint than ``old`` under the same key: another
    address, or a process restarted at the same one (``started_at`` or ``pid`` changed;
    a Kubernetes container restarted in its pod keeps its IP and port). What was learnt
    of the old one, an ejection first of all, says nothing of the new one; and the old
    channel may be waiting out a reconnect back-off, failing calls meanwhile."""
    return new.address != old.address or new.started_at != old.started_at or new.pid != old.pid


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
        self._candidates: list[Endpoint[StubT]] = []  # what a pick chooses from
        self._recheck_at = math.inf  # when an ejection ends: the candidates change
        self._rng = random.random
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
        calls: dict[str, int] = {}  # of the instances replaced: their counter goes on
        for key in list(self._endpoints):
            old = self._endpoints[key]
            new = mine.get(key)
            if new is None or _replaced(old.info, new):
                del self._endpoints[key]
                self._close_later(old)
                calls[key] = old.stats.calls
        for key, info in mine.items():
            endpoint = self._endpoints.get(key)
            if endpoint is None:
                endpoint = self._endpoints[key] = self._open(key, info)
                endpoint.stats.calls = calls.get(key, 0)
            else:
                endpoint.info = info
        self._serving = [e for e in self._endpoints.values() if e.serving]
        self._refresh(time.monotonic())
        self._publish_gauges()
        self._changed.set()

    def _refresh(self, now: float) -> None:
        """Rebuild the candidates: the healthy serving endpoints, or all (panic mode)."""
        serving = self._serving
        healthy = [e for e in serving if e.stats.ejected_until <= now]
        panic = not healthy or len(healthy) < self.ejection.panic_threshold * len(serving)
        self._candidates = list(serving) if panic else healthy
        self._recheck_at = min(
            (e.stats.ejected_until for e in serving if e.stats.ejected_until > now),
            default=math.inf,
        )

    @property
    def panicking(self) -> bool:
        """True while picks spread over ejected endpoints too (few are healthy)."""
        now = time.monotonic()
        return any(e.stats.ejected_until > now for e in self._candidates)

    def configure(self, ejection: EjectionPolicy) -> None:
        """Take a new ejection policy; endpoints ejected now stay ejected as they were."""
        self.ejection = ejection
        self._refresh(time.monotonic())

    def _open(self, key: str, info: InstanceInfo) -> Endpoint[StubT]:
        now = time.monotonic()
        # The lowest estimate of the others, not their mean: one failing endpoint's
        # penalty (up to 5 s) would lift the mean, and an initial estimate does not
        # decay before the first answer, so the newcomer would lose every pick.
        known = [e.stats.latency(now) for e in self._endpoints.values()]
        stats = EndpointStats(initial_latency=min(known, default=_FIRST_ESTIMATE))
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
        """Choose an endpoint for one call, none of ``exclude`` if another serves;
        raises NoEndpoints when none serves."""
        now = time.monotonic()
        if now >= self._recheck_at:
            self._refresh(now)
        candidates = self._candidates
        if exclude:
            candidates = [e for e in candidates if e not in exclude] or [
                e for e in self._serving if e not in exclude
            ]
        if not candidates:
            if not self._serving:
                raise NoEndpoints(f"no serving instance of {self.service}")
            candidates = self._serving  # every one tried: the caller asked for one anyway
        return self._policy.choose(candidates, now)

    def has_untried(self, tried: Collection[Endpoint[StubT]]) -> bool:
        """True when a serving endpoint is not in ``tried``."""
        return any(e not in tried for e in self._serving)

    def report_answer(self, endpoint: Endpoint[StubT], seconds: float, now: float) -> None:
        """Record an answer that is no failure (any status but UNAVAILABLE, INTERNAL and
        DEADLINE_EXCEEDED): its latency, and the failures in a row end."""
        stats = endpoint.stats
        stats.observe(seconds, now)
        if stats.consecutive_failures or stats.consecutive_refusals or stats.ejections:
            stats.record_success(now, self.ejection)

    def report_shed(self, endpoint: Endpoint[StubT], seconds: float, now: float) -> None:
        """Record a refusal for load (RESOURCE_EXHAUSTED): a penalty on the latency
        estimate (``EndpointStats.penalize``), so that a shedding endpoint, however fast
        it refuses, gets fewer calls; the failures in a row neither end nor grow (the
        endpoint is busy, not broken)."""
        endpoint.stats.penalize(seconds, now)

    def report_failure(
        self, endpoint: Endpoint[StubT], seconds: float, now: float, *, refused: bool
    ) -> None:
        """Record a failed answer or a refused connection (``refused``): a penalty on the
        latency estimate, doubling per failed answer in a row (``EndpointStats.penalize``);
        eject the endpoint when the policy says so and the cap allows."""
        stats = endpoint.stats
        asks = stats.record_failure(self.ejection, refused=refused)
        in_a_row = 1 if refused else min(stats.consecutive_failures, _MAX_DOUBLINGS)
        stats.penalize(seconds, now, 2.0**in_a_row)
        if not asks or stats.is_ejected(now):
            return
        serving = self._serving
        if endpoint not in serving:
            return  # draining or gone: it gets no new calls anyway
        ejected = sum(1 for e in serving if e.stats.ejected_until > now)
        if not may_eject(ejected, len(serving), self.ejection):
            return
        seconds = stats.eject(now, self.ejection, self._rng())
        self._refresh(now)
        self._ejections.labels(self.service).inc()
        _log.warning(
            "balancer.ejected",
            service=self.service,
            endpoint=endpoint.key,
            address=endpoint.info.address,
            reason="refused" if refused else "failed_answers",
            ejections=stats.ejections,
            seconds=round(seconds, 3),
        )

    def endpoint_calls(self) -> list[tuple[str, int]]:
        """(instance id, attempts sent to it) of every endpoint known now."""
        return [(e.info.instance_id, e.stats.calls) for e in list(self._endpoints.values())]

    def ejected_endpoints(self, now: float) -> int:
        """Serving endpoints ejected at ``now``."""
        return sum(1 for e in list(self._serving) if e.stats.ejected_until > now)

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
        self._candidates = []
        for task in list(self._closing):
            await stop_task(task)
        for endpoint in endpoints:
            await endpoint.channel.close(grace=None)
