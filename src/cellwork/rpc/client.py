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

Typed clients are generated from the ``.proto`` (``make proto`` writes
``x_client.py`` beside ``x_pb2.py``): ``FeedClient.get_feed(request) -> FeedPage``
calls ``invoke`` with the method's ``Method`` descriptor, which knows whether the
method is idempotent (``option idempotency_level`` in the ``.proto``).

Hand-written rather than grpc.aio client interceptors: those sit on one
channel, while retrying on *another* endpoint needs the balancer in the loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, overload

import grpc
from grpc import aio

from cellwork.balancing.balancer import Balancer, Endpoint
from cellwork.balancing.stats import EjectionPolicy
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.errors import (
    CellworkError,
    DeadlineExceeded,
    Internal,
    Overloaded,
    Unavailable,
    error_for_status,
)
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
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ClientT = TypeVar("ClientT", bound="Client[Any]")
Metadata = Sequence[tuple[str, str]]
Fallback = Callable[[CellworkError], Awaitable[ResponseT]]
"""What a caller answers instead when a call fails for a reason of the callee's
(unavailable, overloaded, too slow, broken): ``await fallback(error)`` returns a
response or raises."""

# The failures a fallback may stand in for: the callee's, never the caller's own
# (InvalidArgument, NotFound, PermissionDenied... are answers, not failures).
DEGRADABLE: tuple[type[CellworkError], ...] = (Unavailable, DeadlineExceeded, Overloaded, Internal)

_NOT_CONNECTED_HINTS = ("failed to connect", "connection refused", "connect failed")


def _never_reached_server(exc: aio.AioRpcError) -> bool:
    details = (exc.details() or "").lower()
    return any(hint in details for hint in _NOT_CONNECTED_HINTS)


@dataclass(frozen=True, slots=True)
class Method(Generic[RequestT, ResponseT]):
    """One unary RPC: its name on the stub, and whether repeating it is safe.

    Generated clients declare one per RPC, typed with its request and response.
    """

    name: str
    idempotent: bool = False


class Client(Generic[StubT]):
    """Calls one service through its balancer.

    ``await client.call("Method", request)`` works with any stub; a generated subclass
    (``FeedClient``) adds one typed method per RPC and knows which are idempotent.
    """

    IDEMPOTENT: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        balancer: Balancer[StubT],
        *,
        default_timeout: float = 5.0,
        max_attempts: int = 3,
        retry_budget: RetryBudget | None = None,
        metrics: RpcMetrics | None = None,
    ) -> None:
        self.balancer = balancer
        self.service = balancer.service
        self._default_timeout = default_timeout
        self._max_attempts = max(1, max_attempts)
        self._budget = retry_budget or RetryBudget(now=time.monotonic())
        self._metrics = metrics or client_metrics()
        self._on_close: list[Callable[[], Awaitable[None]]] = []

    def has_endpoints(self) -> bool:
        """True when the registry lists at least one SERVING instance of the service."""
        return any(endpoint.serving for endpoint in self.balancer.endpoints)

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        idempotent: bool | None = None,
        metadata: Metadata = (),
        fallback: Fallback[Any] | None = None,
    ) -> Any:
        """Call ``method`` (the stub attribute name) on one instance; return the response.

        ``timeout`` in seconds defaults to the client's; it is capped by the
        deadline of the call being handled. ``idempotent`` defaults to what the
        ``.proto`` declares (generated clients) or False. Raises the domain error
        matching the final status (``NotFound``, ``Unavailable``, ``DeadlineExceeded``...),
        and ValueError for a method the service does not have. With ``fallback``, a
        failure of the callee's (``DEGRADABLE``) returns ``await fallback(error)`` instead.
        """
        if fallback is None:
            return await self._call(method, request, timeout, idempotent, metadata)
        try:
            return await self._call(method, request, timeout, idempotent, metadata)
        except DEGRADABLE as exc:
            return await fallback(exc)

    async def _call(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        idempotent: bool | None,
        metadata: Metadata,
    ) -> Any:
        if idempotent is None:
            idempotent = method in self.IDEMPOTENT
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
                response = await _method_of(endpoint.stub, method, self.service)(
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

    async def invoke(
        self,
        method: Method[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
        fallback: Fallback[ResponseT] | None = None,
    ) -> ResponseT:
        """Call a declared method (a generated client's ``Method``); typed ``call``."""
        response: ResponseT = await self.call(
            method.name,
            request,
            timeout=timeout,
            idempotent=method.idempotent,
            metadata=metadata,
            fallback=fallback,
        )
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

    def on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``await hook()`` when the client closes (the watcher feeding it, say)."""
        self._on_close.append(hook)

    async def close(self) -> None:
        """Close the balancer's channels, after the hooks (the watcher feeding it)."""
        hooks, self._on_close = self._on_close, []
        for hook in hooks:
            await hook()
        await self.balancer.close()


def _method_of(stub: Any, method: str, service: str) -> Callable[..., Any]:
    try:
        bound: Callable[..., Any] = getattr(stub, method)
    except AttributeError:
        raise ValueError(f"the {service} client has no method {method!r}") from None
    return bound


@overload
def balanced_client(
    kind: type[ClientT],
    service: str,
    *,
    caller: str = "",
    policy: str = "p2c",
    ejection: EjectionPolicy | None = None,
    default_timeout: float = 5.0,
    max_attempts: int = 3,
) -> ClientT: ...


@overload
def balanced_client(
    kind: Callable[[aio.Channel], StubT],
    service: str,
    *,
    caller: str = "",
    policy: str = "p2c",
    ejection: EjectionPolicy | None = None,
    default_timeout: float = 5.0,
    max_attempts: int = 3,
) -> Client[StubT]: ...


def balanced_client(
    kind: Any,
    service: str,
    *,
    caller: str = "",
    policy: str = "p2c",
    ejection: EjectionPolicy | None = None,
    default_timeout: float = 5.0,
    max_attempts: int = 3,
) -> Any:
    """A client of ``service`` with an empty balancer: feed it the registry's live set
    (``client.balancer.update``, a watcher listener). No I/O.

    ``kind`` is a generated client class (``FeedClient``) or a stub class
    (``FeedStub``, giving an untyped ``Client``). ``caller`` names this side to the
    server (its logs show it): it is set as the channels' user agent, so it costs
    nothing per call.
    """
    is_client_class = isinstance(kind, type) and issubclass(kind, Client)
    factory = kind.stub_factory if is_client_class else kind
    options = (("grpc.primary_user_agent", caller_user_agent(caller)),) if caller else ()
    balancer: Balancer[Any] = Balancer(
        service, factory, policy=policy, ejection=ejection, channel_options=options
    )
    client_class = kind if is_client_class else Client
    return client_class(balancer, default_timeout=default_timeout, max_attempts=max_attempts)


@overload
async def connect_client(
    registry: Registry, service: str, kind: type[ClientT], **options: Any
) -> ClientT: ...


@overload
async def connect_client(
    registry: Registry, service: str, kind: Callable[[aio.Channel], StubT], **options: Any
) -> Client[StubT]: ...


async def connect_client(registry: Registry, service: str, kind: Any, **options: Any) -> Any:
    """A client of ``service`` with its own registry watcher, started now and closed
    with the client (outside a ``Service``, which owns its clients' watchers)."""
    client = balanced_client(kind, service, **options)
    watcher = RegistryWatcher(registry, service)
    watcher.add_listener(client.balancer.update)
    await watcher.start()
    client.on_close(watcher.close)
    return client
