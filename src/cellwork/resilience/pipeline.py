"""The stages every outgoing call passes, as data: ``PIPELINE``, between fixed ends.

    fallback (fixed, outer)   Client.call: the caller's ``fallback=`` answers the
                              final error, when it is the callee's (DEGRADABLE)
    DeadlineStage             what is left of the caller's deadline, less a margin
    RetryStage                another attempt, on another endpoint, when the rules
                              of ``retry.decide_retry`` allow it
    BreakerStage              the circuit to the target service: rejects at once
                              when open; counts each attempt's outcome
    LimitStage                at most ``max_in_flight`` attempts in flight to the
                              target; one more is refused at once
    attempt (fixed, inner)    Client._attempt: balancer pick, the stub's call,
                              ejection and latency bookkeeping, metrics

So a retry is made outside the breaker and the limit: each attempt is counted by
the breaker and holds a slot of the limit, while a call the breaker or the limit
refuses (``Unavailable``, ``Overloaded``, raised here without an attempt) is never
retried and never counted by the stages inside. The fallback sees the error the
call ends with, after every retry. The order is DESIGN.md's: deadline, retry,
breaker, concurrency limit, fallback.

``build_chain`` folds the stages around the attempt once, when a client is made or
takes a new policy (as Starlette's ``build_middleware_stack``); a call then pays for
one awaited ``__call__`` per stage. Each stage copies what it needs of the policy
when built; the state that outlives a policy (budget, breaker, limit, the
balancer's ejections) lives in ``Resilience``, shared by the chains built over time.

Between stages an attempt's failure travels as ``AttemptFailed`` (its status,
details, trailers, kind and endpoint), which the client turns into the domain error
(``cellwork.errors``) at the end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import grpc

from cellwork.errors import (
    CellworkError,
    DeadlineExceeded,
    Overloaded,
    Unavailable,
    error_for_status,
)
from cellwork.observability.metrics import ResilienceMetrics
from cellwork.resilience.breaker import REJECTED, CircuitBreaker, Outcome
from cellwork.resilience.limit import ConcurrencyLimit
from cellwork.resilience.policy import CallPolicy
from cellwork.resilience.retry import STOP_BUDGET, FailureKind, decide_retry
from cellwork.resilience.retry_budget import RetryBudget

if TYPE_CHECKING:  # cellwork.rpc imports this module: no import back at run time
    from cellwork.rpc.context import CallContext


class Call:
    """One call as the stages see it: what to send, and what happened so far."""

    __slots__ = (
        "attempt",
        "deadline",
        "idempotent",
        "metadata",
        "method",
        "now",
        "parent",
        "request",
        "timeout",
        "tried",
    )

    def __init__(
        self,
        method: str,
        request: Any,
        timeout: float | None,
        idempotent: bool,
        metadata: tuple[tuple[str, str], ...],
        parent: CallContext | None,
    ) -> None:
        self.method = method
        self.request = request
        self.timeout = timeout  # None: the policy's
        self.idempotent = idempotent
        self.metadata = metadata
        self.parent = parent  # the call being handled, whose deadline caps this one's
        self.deadline = 0.0  # monotonic; set by DeadlineStage
        self.now = 0.0  # monotonic, as of the last stage that read the clock
        self.attempt = 0  # attempts made so far
        self.tried: Sequence[Any] = ()  # endpoints whose attempt failed


class AttemptFailed(Exception):
    """An attempt ended with a status other than OK (internal to the pipeline)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailers: Any,
        kind: FailureKind,
        outcome: Outcome,
        endpoint: Any,
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.trailers = trailers
        self.kind = kind
        self.outcome = outcome  # what the breaker counts it as
        self.endpoint = endpoint

    def error(self) -> CellworkError:
        """The domain error the caller gets for this failure."""
        return error_for_status(self.code, self.details or self.code.name, self.trailers)


Next = Callable[[Call], Awaitable[Any]]

_SUCCESS = Outcome.SUCCESS  # a module constant: an enum member read costs ~75 ns


@dataclass(slots=True, eq=False)
class Resilience:
    """What the stages share across calls and policies: one per client."""

    service: str
    policy: CallPolicy
    budget: RetryBudget
    breaker: CircuitBreaker
    limit: ConcurrencyLimit
    metrics: ResilienceMetrics
    has_untried: Callable[[Collection[Any]], bool]


class Stage:
    """One stage: ``await stage(call)`` does its part around ``await self.next(call)``."""

    name: ClassVar[str]
    __slots__ = ("next", "parts")

    def __init__(self, next: Next, parts: Resilience) -> None:
        self.next = next
        self.parts = parts

    async def __call__(self, call: Call) -> Any:
        raise NotImplementedError


class DeadlineStage(Stage):
    """Gives the call the requested timeout (or the policy's), capped by what the call
    being handled has left less ``deadline_margin``; none left: DeadlineExceeded."""

    name = "deadline"
    __slots__ = ("_margin", "_timeout")

    def __init__(self, next: Next, parts: Resilience) -> None:
        super().__init__(next, parts)
        self._timeout = parts.policy.timeout
        self._margin = parts.policy.deadline_margin

    async def __call__(self, call: Call) -> Any:
        now = call.now = time.monotonic()
        budget = call.timeout or self._timeout
        parent = call.parent
        if parent is not None and parent.deadline is not None:
            left = parent.deadline - now - self._margin
            if left < budget:
                budget = left
        if budget <= 0:
            raise DeadlineExceeded(f"no time left to call {self.parts.service}/{call.method}")
        call.deadline = now + budget
        return await self.next(call)


class RetryStage(Stage):
    """Makes a failed attempt again while ``decide_retry`` allows, after its wait."""

    name = "retry"
    __slots__ = ("_policy",)

    def __init__(self, next: Next, parts: Resilience) -> None:
        super().__init__(next, parts)
        self._policy = parts.policy.retry

    async def __call__(self, call: Call) -> Any:
        parts = self.parts
        parts.budget.record_request(call.now)
        while True:
            try:
                return await self.next(call)
            except AttemptFailed as failed:
                now = time.monotonic()
                tried = call.tried = (*call.tried, failed.endpoint)
                verdict = decide_retry(
                    code=failed.code,
                    kind=failed.kind,
                    trailers=failed.trailers,
                    idempotent=call.idempotent,
                    attempt=call.attempt,
                    others_left=parts.has_untried(tried),
                    now=now,
                    deadline=call.deadline,
                    policy=self._policy,
                    budget=parts.budget,
                    draw=random.random(),
                )
                if not verdict.retry:
                    if verdict is STOP_BUDGET:
                        parts.metrics.budget_exhausted.labels(parts.service).inc()
                    raise
                parts.metrics.retries.labels(parts.service, verdict.reason).inc()
            if verdict.wait > 0:
                await asyncio.sleep(verdict.wait)
            call.now = time.monotonic()


class BreakerStage(Stage):
    """Rejects at once while the target's circuit is open; counts every attempt's end."""

    name = "breaker"
    __slots__ = ()

    async def __call__(self, call: Call) -> Any:
        parts = self.parts
        breaker = parts.breaker
        ticket = breaker.admit(call.now)
        if ticket == REJECTED:
            parts.metrics.rejected.labels(parts.service, "breaker_open").inc()
            raise Unavailable(
                f"circuit open to {parts.service}: too many of its calls failed",
                retry_after=breaker.retry_after(call.now),
            )
        try:
            response = await self.next(call)
        except AttemptFailed as failed:
            breaker.record(call.now, failed.outcome, ticket)
            raise
        except BaseException:
            breaker.record(call.now, Outcome.IGNORED, ticket)
            raise
        breaker.record(call.now, _SUCCESS, ticket)
        return response


class LimitStage(Stage):
    """Refuses an attempt at once, as Overloaded, past ``max_in_flight`` in flight."""

    name = "limit"
    __slots__ = ()

    async def __call__(self, call: Call) -> Any:
        parts = self.parts
        limit = parts.limit
        if not limit.try_acquire():
            parts.metrics.rejected.labels(parts.service, "concurrency_limit").inc()
            raise Overloaded(
                f"{limit.limit} calls to {parts.service} in flight already: this client's limit"
            )
        try:
            return await self.next(call)
        finally:
            limit.release()


PIPELINE: tuple[type[Stage], ...] = (DeadlineStage, RetryStage, BreakerStage, LimitStage)
"""The stages in the order a call meets them, outermost first."""


def build_chain(stages: Sequence[type[Stage]], attempt: Next, parts: Resilience) -> Next:
    """Fold ``stages`` (outermost first) around ``attempt``; returns the outermost."""
    chain = attempt
    for stage in reversed(stages):
        chain = stage(chain, parts)
    return chain
