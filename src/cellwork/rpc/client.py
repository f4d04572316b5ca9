"""The client side of a call: balancer pick, deadline, metadata, metrics, retries.

``Client.call`` is the one path every outgoing RPC takes, in this order:

    deadline     the requested timeout, capped by what the current call has left
    metadata     request id and trace context carried on (the caller's name
                 rides in the channels' user agent, set once per channel)
    pick         the balancer chooses an endpoint (p2c on in-flight x EWMA)
    attempt      the stub's method on that endpoint's channel
    report       latency or connection failure back to the balancer; metrics
    retry        UNAVAILABLE on another endpoint, within the deadline and the
                 retry budget: any call that never reached a server, and
                 idempotent calls for any UNAVAILABLE

Hand-written rather than grpc.aio client interceptors: those sit on one
channel, while retrying on *another* endpoint needs the balancer in the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
from grpc import aio

from cellwork.balancing.balancer import Balancer, Endpoint
from cellwork.balancing.stats import EjectionPolicy
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.errors import DeadlineExceeded, error_for_status
from cellwork.observability.metrics import RpcMetrics, client_metrics, code_name
from cellwork.observability.tracing import new_traceparent
from cellwork.resilience.retry_budget import RetryBudget
from cellwork.rpc.context import (
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    caller_user_agent,
    current_call,
    effective_timeout,
)

StubT = TypeVar("StubT")

_NOT_CONNECTED_HINTS = ("failed to connect", "connection refused", "connect failed")


def _never_reached_server(exc: aio.AioRpcError) -> bool:
    details = (exc.details() or "").lower()
    return any(hint in details for hint in _NOT_CONNECTED_HINTS)


class Client(Generic[StubT]):
    """Calls one service through its balancer; ``call("Method", request)``."""

    def __init__(
        self,
        balancer: Balancer[StubT],
        *,
        default_timeout: float = 5.0,
        max_attempts: int = 3,
        retry_budget: RetryBudget | None = None,
        metrics: RpcMetrics | None = None,
        on_close: Callable[[], Any] | None = None,
    ) -> None:
        self.balancer = balancer
        self.service = balancer.service
        self._default_timeout = default_timeout
        self._max_attempts = max(1, max_attempts)
        self._budget = retry_budget or RetryBudget(now=time.monotonic())
        self._metrics = metrics or client_metrics()
        self._on_close = on_close

    def has_endpoints(self) -> bool:
        """True when the registry lists at least one SERVING instance of the service."""
        return any(endpoint.serving for endpoint in self.balancer.endpoints)

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Any:
        """Call ``method`` (the stub attribute name) on one instance; return the response.

        ``timeout`` in seconds defaults to the client's; it is capped by the
        deadline of the call being handled. Raises the domain error matching
        the final status (``NotFound``, ``Unavailable``, ``DeadlineExceeded``...).
        """
        parent = current_call()
        budget = effective_timeout(timeout or self._default_timeout, parent)
        assert budget is not None  # a default timeout always applies
        if budget <= 0:
            raise DeadlineExceeded(f"no time left to call {self.service}/{method}")
        deadline = time.monotonic() + budget
        # Each header costs a few microseconds of CPU on both sides (bench/rpc.py),
        # so only traceparent always travels: the request id defaults to the trace
        # id and is sent only when it differs.
        if parent is not None:
            trace = parent.trace
            md: tuple[tuple[str, str], ...] = ((TRACEPARENT_HEADER, trace.child_traceparent()),)
            if parent.request_id != trace.trace_id:
                md += ((REQUEST_ID_HEADER, parent.request_id),)
        else:
            md = ((TRACEPARENT_HEADER, new_traceparent()),)
        if metadata:
            md += tuple(metadata)
        self._budget.record_request(time.monotonic())
        tried: list[Endpoint[StubT]] = []
        attempt = 0
        while True:
            attempt += 1
            endpoint = self.balancer.pick(tried)
            stats = endpoint.stats
            stats.in_flight += 1
            start = time.perf_counter()
            try:
                response = await getattr(endpoint.stub, method)(
                    request, timeout=deadline - time.monotonic(), metadata=md
                )
            except aio.AioRpcError as exc:
                elapsed = time.perf_counter() - start
                code = exc.code()
                unreached = code == grpc.StatusCode.UNAVAILABLE and _never_reached_server(exc)
                self.balancer.report(endpoint, elapsed, connected=not unreached)
                self._metrics.observe(self.service, method, code_name(code), elapsed)
                if self._should_retry(code, unreached, idempotent, attempt, deadline):
                    tried.append(endpoint)
                    continue
                raise error_for_status(
                    code, exc.details() or code_name(code), exc.trailing_metadata()
                ) from None
            finally:
                stats.in_flight -= 1
            elapsed = time.perf_counter() - start
            self.balancer.report(endpoint, elapsed, connected=True)
            self._metrics.observe(self.service, method, "OK", elapsed)
            return response

    def _should_retry(
        self,
        code: grpc.StatusCode,
        unreached: bool,
        idempotent: bool,
        attempt: int,
        deadline: float,
    ) -> bool:
        if code != grpc.StatusCode.UNAVAILABLE or not (unreached or idempotent):
            return False
        now = time.monotonic()
        if attempt >= self._max_attempts or now >= deadline:
            return False
        return self._budget.try_acquire(now)

    async def close(self) -> None:
        """Close the balancer's channels (and the watcher feeding it, if owned)."""
        if self._on_close is not None:
            await self._on_close()
        await self.balancer.close()


async def connect_client(
    registry: Registry,
    service: str,
    stub_factory: Callable[[aio.Channel], StubT],
    *,
    caller: str = "",
    policy: str = "p2c",
    ejection: EjectionPolicy | None = None,
    default_timeout: float = 5.0,
    max_attempts: int = 3,
) -> Client[StubT]:
    """Start a registry watcher for ``service`` and return a client balanced over it.

    ``caller`` names this side to the server (its logs show it): it is set as
    the channels' user agent, so it costs nothing per call.
    """
    watcher = RegistryWatcher(registry, service)
    options = (("grpc.primary_user_agent", caller_user_agent(caller)),) if caller else ()
    balancer: Balancer[StubT] = Balancer(
        service, stub_factory, policy=policy, ejection=ejection, channel_options=options
    )
    watcher.add_listener(balancer.update)
    await watcher.start()
    return Client(
        balancer,
        default_timeout=default_timeout,
        max_attempts=max_attempts,
        on_close=watcher.close,
    )
