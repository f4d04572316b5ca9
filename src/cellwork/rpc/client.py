"""The client side of a call: the one path of every outgoing RPC.

``Client.call`` runs a call through its resilience pipeline, the stages as data
(``cellwork.resilience.pipeline.PIPELINE``) between two fixed ends, in this order:

    fallback     (fixed, outer) the final error, when it is the callee's
                 (``DEGRADABLE``: unavailable, overloaded, too slow, broken), is
                 answered by the caller's ``fallback=`` if it declared one
    deadline     the timeout asked for (or the policy's, 5 s), capped by what the
                 call being handled has left less a margin (5 ms); none left:
                 DeadlineExceeded at once, nothing sent
    retry        a failed attempt is made again on another endpoint: any attempt
                 that never reached a server; beyond that only idempotent methods,
                 on UNAVAILABLE or a connection reset, with full-jitter back-off
                 (25 -> 250 ms) or the server's ``grpc-retry-pushback-ms``, at most
                 3 attempts, never past the deadline, inside the retry budget
                 (20 % of calls + 10/s)
    breaker      the circuit to the target service: open (>= 50 % of >= 20
                 attempts in 10 s failed), it refuses at once with Unavailable for
                 5 s, then lets 3 probes through; each attempt is counted
    limit        at most 1000 attempts in flight to the target; one more is
                 refused at once as Overloaded
    attempt      (fixed, inner) the balancer picks an endpoint (p2c on in-flight x
                 latency, ejected endpoints left out), metadata (request id, trace
                 context; the caller's name rides in the channels' user agent), the
                 stub's method, then the outcome back to the balancer (latency;
                 a failed answer or a shed as a penalty that never lowers the
                 estimate; ejection after 5 failed answers or a refused connection)
                 and metrics

Every figure above is a field of ``CallPolicy`` (``cellwork.resilience.policy``);
``Client.apply(policy)`` swaps it on a live client, keeping the breaker, budget and
ejection state. README's *Resilience* section has the same list.

Typed clients are generated from the ``.proto`` (``make proto`` writes
``x_client.py`` beside ``x_pb2.py``): ``FeedClient.get_feed(request) -> FeedPage``
calls ``invoke`` with the method's ``Method`` descriptor, which knows whether the
method is idempotent (``option idempotency_level`` in the ``.proto``).

Hand-written rather than grpc.aio client interceptors: those sit on one
channel, while retrying on *another* endpoint needs the balancer in the loop.
The common case, a closed circuit and one successful attempt, allocates one
``Call`` and the metadata tuple, and awaits one coroutine per stage.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, overload

import grpc
from grpc import aio

from cellwork.balancing.balancer import Balancer
from cellwork.balancing.stats import FAILED_ANSWERS, EjectionPolicy
from cellwork.discovery.registry import Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.errors import (
    CellworkError,
    DeadlineExceeded,
    Internal,
    Overloaded,
    Unavailable,
)
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import (
    RpcMetrics,
    client_metrics,
    code_name,
    resilience_metrics,
)
from cellwork.observability.tracing import new_traceparent
from cellwork.resilience.breaker import BreakerState, CircuitBreaker, outcome_of
from cellwork.resilience.limit import ConcurrencyLimit
from cellwork.resilience.pipeline import (
    PIPELINE,
    AttemptFailed,
    Call,
    Resilience,
    build_chain,
)
from cellwork.resilience.policy import CallPolicy
from cellwork.resilience.retry import FailureKind, failure_kind
from cellwork.resilience.retry_budget import RetryBudget
from cellwork.rpc.context import (
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    caller_user_agent,
    current_call,
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

_log = get_logger("cellwork.resilience")
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass(frozen=True, slots=True)
class Method(Generic[RequestT, ResponseT]):
    """One unary RPC: its name on the stub, and whether repeating it is safe.

    Generated clients declare one per RPC, typed with its request and response.
    """

    name: str
    idempotent: bool = False


class Client(Generic[StubT]):
    """Calls one service through its balancer and the resilience pipeline.

    ``await client.call("Method", request)`` works with any stub; a generated subclass
    (``FeedClient``) adds one typed method per RPC and knows which are idempotent.
    ``policy`` defaults to ``CallPolicy()`` with the balancer's ejection policy;
    ``retry_budget`` to one made from the policy.
    """

    IDEMPOTENT: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        balancer: Balancer[StubT],
        *,
        policy: CallPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        metrics: RpcMetrics | None = None,
    ) -> None:
        # Without a policy, the balancer's own ejection policy stands.
        policy = policy or CallPolicy(ejection=balancer.ejection)
        now = time.monotonic()
        self.balancer = balancer
        self.service = balancer.service
        self._metrics = metrics or client_metrics()
        self._resilience = Resilience(
            service=self.service,
            policy=policy,
            budget=retry_budget
            or RetryBudget(
                ratio=policy.retry.budget_ratio,
                min_per_second=policy.retry.budget_min_per_second,
                now=now,
            ),
            breaker=CircuitBreaker(policy.breaker, now=now, on_transition=self._breaker_changed),
            limit=ConcurrencyLimit(policy.max_in_flight),
            metrics=resilience_metrics(),
            has_untried=balancer.has_untried,
        )
        balancer.configure(policy.ejection)
        self._chain = build_chain(PIPELINE, self._attempt, self._resilience)
        self._on_close: list[Callable[[], Awaitable[None]]] = []
        self._gauges = _Gauges(self.service, balancer, self._resilience.breaker)
        self._resilience.metrics.clients.add(self._gauges)

    @property
    def policy(self) -> CallPolicy:
        """The policy calls run under now."""
        return self._resilience.policy

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker of the target service."""
        return self._resilience.breaker

    def apply(self, policy: CallPolicy) -> None:
        """Run the calls made from now on under ``policy``.

        The breaker keeps its state (and its window's counts unless the window's
        length changed), the budget its tokens, the balancer its ejections (which end
        when they were due to). Calls in flight keep the timeouts and retry rules they
        began with.
        """
        parts = self._resilience
        parts.budget.reconfigure(policy.retry.budget_ratio, policy.retry.budget_min_per_second)
        parts.breaker.reconfigure(policy.breaker, time.monotonic())
        parts.limit.limit = policy.max_in_flight
        self.balancer.configure(policy.ejection)
        parts.policy = policy
        self._chain = build_chain(PIPELINE, self._attempt, parts)

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

        ``timeout`` in seconds defaults to the policy's; it is capped by the deadline
        of the call being handled. ``idempotent`` defaults to what the ``.proto``
        declares (generated clients) or False. Raises the domain error matching the
        final status (``NotFound``, ``Unavailable``, ``DeadlineExceeded``...), or the
        pipeline's own (``Unavailable`` while the circuit is open, ``Overloaded`` past
        the concurrency limit), and ValueError for a method the service does not have.
        With ``fallback``, a failure of the callee's (``DEGRADABLE``) returns
        ``await fallback(error)`` instead.
        """
        if idempotent is None:
            idempotent = method in self.IDEMPOTENT
        parent = current_call()
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
        try:
            return await self._chain(Call(method, request, timeout, idempotent, md, parent))
        except AttemptFailed as failed:
            error = failed.error()
        except DEGRADABLE as refused:  # the pipeline's own: no time left, open, limit
            if fallback is None:
                raise
            return await fallback(refused)
        if fallback is None or not isinstance(error, DEGRADABLE):
            raise error
        return await fallback(error)

    async def _attempt(self, call: Call) -> Any:
        """The inner end of the pipeline: one attempt on one endpoint."""
        endpoint = self.balancer.pick(call.tried)
        bound = _method_of(endpoint.stub, call.method, self.service)
        stats = endpoint.stats
        call.attempt += 1
        start = time.monotonic()
        stats.begin(start)
        try:
            response = await bound(
                call.request, timeout=call.deadline - start, metadata=call.metadata
            )
        except aio.AioRpcError as exc:
            end = call.now = time.monotonic()
            stats.end(start)
            code = exc.code()
            details = exc.details() or ""
            trailers = exc.trailing_metadata()
            kind = failure_kind(code, details, trailers)
            reached = kind is not FailureKind.NOT_CONNECTED
            if not reached or code in FAILED_ANSWERS:
                self.balancer.report_failure(endpoint, end - start, end, refused=not reached)
            elif code is _RESOURCE_EXHAUSTED:
                self.balancer.report_shed(endpoint, end - start, end)
            else:
                self.balancer.report_answer(endpoint, end - start, end)
            self._metrics.observe(self.service, call.method, code_name(code), end - start)
            raise AttemptFailed(
                code,
                details,
                trailers,
                kind,
                outcome_of(code, reached=reached),
                endpoint,
            ) from None
        except BaseException:
            stats.end(start)
            raise
        end = call.now = time.monotonic()
        stats.end(start)
        self.balancer.report_answer(endpoint, end - start, end)
        self._metrics.observe(self.service, call.method, "OK", end - start)
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

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        self._resilience.metrics.transitions.labels(self.service, new.name.lower()).inc()
        if new is BreakerState.OPEN:
            calls, failures = self._resilience.breaker.window()
            _log.warning(
                "breaker.opened",
                service=self.service,
                was=old.name.lower(),
                calls=calls,
                failures=failures,
                seconds=self._resilience.breaker.policy.open_seconds,
            )
        elif new is BreakerState.CLOSED:
            _log.info("breaker.closed", service=self.service)

    def on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``await hook()`` when the client closes (the watcher feeding it, say)."""
        self._on_close.append(hook)

    async def close(self) -> None:
        """Close the balancer's channels, after the hooks (the watcher feeding it)."""
        self._resilience.metrics.clients.discard(self._gauges)
        hooks, self._on_close = self._on_close, []
        for hook in hooks:
            await hook()
        await self.balancer.close()


class _Gauges:
    """What the metrics collector reads of a client at scrape time
    (``observability.metrics.ClientView``); held weakly there, by the client here."""

    __slots__ = ("__weakref__", "balancer", "breaker", "service")

    def __init__(self, service: str, balancer: Balancer[Any], breaker: CircuitBreaker) -> None:
        self.service = service
        self.balancer = balancer
        self.breaker = breaker

    def endpoint_calls(self) -> list[tuple[str, int]]:
        return self.balancer.endpoint_calls()

    def ejected_endpoints(self, now: float) -> int:
        return self.balancer.ejected_endpoints(now)

    def breaker_state(self, now: float) -> int:
        return int(self.breaker.state_at(now))


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
    policy: CallPolicy | None = None,
    balancing: str = "p2c",
    ejection: EjectionPolicy | None = None,
    default_timeout: float | None = None,
    max_attempts: int | None = None,
) -> ClientT: ...


@overload
def balanced_client(
    kind: Callable[[aio.Channel], StubT],
    service: str,
    *,
    caller: str = "",
    policy: CallPolicy | None = None,
    balancing: str = "p2c",
    ejection: EjectionPolicy | None = None,
    default_timeout: float | None = None,
    max_attempts: int | None = None,
) -> Client[StubT]: ...


def balanced_client(
    kind: Any,
    service: str,
    *,
    caller: str = "",
    policy: CallPolicy | None = None,
    balancing: str = "p2c",
    ejection: EjectionPolicy | None = None,
    default_timeout: float | None = None,
    max_attempts: int | None = None,
) -> Any:
    """A client of ``service`` with an empty balancer: feed it the registry's live set
    (``client.balancer.update``, a watcher listener). No I/O.

    ``kind`` is a generated client class (``FeedClient``) or a stub class
    (``FeedStub``, giving an untyped ``Client``). ``caller`` names this side to the
    server (its logs show it): it is set as the channels' user agent, so it costs
    nothing per call. ``policy`` holds every knob of the call pipeline (defaults:
    ``CallPolicy()``); ``ejection``, ``default_timeout`` and ``max_attempts``, when
    given, replace its fields of that name (``timeout`` for the default timeout).
    ``balancing`` is ``"p2c"`` or ``"round_robin"``.
    """
    policy = policy or CallPolicy()
    overrides: dict[str, Any] = {}
    if ejection is not None:
        overrides["ejection"] = ejection
    if default_timeout is not None:
        overrides["timeout"] = default_timeout
    if max_attempts is not None:
        overrides["retry"] = {**policy.retry.model_dump(), "max_attempts": max_attempts}
    if overrides:  # validated again: model_copy(update=...) would skip the bounds
        policy = CallPolicy.model_validate({**policy.model_dump(), **overrides})
    is_client_class = isinstance(kind, type) and issubclass(kind, Client)
    factory = kind.stub_factory if is_client_class else kind
    options = (("grpc.primary_user_agent", caller_user_agent(caller)),) if caller else ()
    balancer: Balancer[Any] = Balancer(
        service, factory, policy=balancing, ejection=policy.ejection, channel_options=options
    )
    client_class = kind if is_client_class else Client
    return client_class(balancer, policy=policy)


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
