"""Whether a failed attempt is made again, and after how long. Pure logic.

``decide_retry`` holds every rule of the retry stage, in the order it checks them:

1. A call that never reached a server (connection refused, failed to connect) is
   retried whatever the method: the server did nothing. No back-off: another
   endpoint can take it now.
2. Beyond that, only idempotent methods (``idempotency_level = IDEMPOTENT`` or
   ``NO_SIDE_EFFECTS`` in the ``.proto``), and only on UNAVAILABLE or a connection
   reset. grpc.aio reports a server killed or a connection reset mid-call as
   UNAVAILABLE with details ``Stream removed (Socket closed)`` or ``Stream removed
   (recvmsg:Connection reset by peer (104))`` (seen in tests that kill a server
   mid-call); older versions said UNKNOWN ``Stream removed``, so the details decide,
   unless the answer carries cellwork's error trailer: then a server answered, and
   the wording is a dependency's, passed on (``failure_kind``).
3. A server's ``grpc-retry-pushback-ms`` trailer, as gRPC's retry design (A6)
   defines it: a non-negative integer is the wait, exactly; anything else (negative,
   malformed) means do not retry.
4. At most ``max_attempts`` attempts, always to another endpoint: none left, stop.
5. Full-jitter back-off between attempts (as ``backoff``: 25 ms doubling to 250 ms by
   default), never past the deadline: a wait that leaves less than
   ``min_attempt_seconds`` for the attempt stops the call instead.
6. Last, a token of the retry budget, so that a refused retry spends none.

Own code rather than tenacity or stamina: those retry a callable in place, while a
retry here goes to another endpoint chosen by the balancer, under a budget shared by
every call of the client, and its decision must be testable without waiting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import grpc

from cellwork.errors import ERROR_TRAILER
from cellwork.resilience.backoff import backoff_ceiling
from cellwork.resilience.policy import RetryPolicy
from cellwork.resilience.retry_budget import RetryBudget

PUSHBACK_TRAILER = "grpc-retry-pushback-ms"

_NOT_CONNECTED_HINTS = ("failed to connect", "connection refused", "connect failed")
_RESET_HINTS = ("stream removed", "connection reset", "socket closed")


class FailureKind(IntEnum):
    """How an attempt failed, as far as retrying cares."""

    NOT_CONNECTED = 0  # never reached a server
    RESET = 1  # reached one, and the connection broke before the answer
    ANSWER = 2  # the server answered with this status


def failure_kind(
    code: grpc.StatusCode, details: str | None, trailers: Iterable[Any] | None = None
) -> FailureKind:
    """Tell a failed attempt's kind from its status, details and trailing metadata.

    An answer carrying the error trailer (``cellwork.errors.ERROR_TRAILER``) came from a
    cellwork server's boundary: it reached a server, so it is an ANSWER whatever its
    details say. A middle service passing on its own dependency's failure may word it
    as gRPC does ("failed to connect to all addresses"); read from the details alone,
    that would eject the healthy middle instance at once, retry a call that did reach
    it whatever the method, and hide it from the breaker.
    """
    if code is grpc.StatusCode.OK:
        return FailureKind.ANSWER
    for key, _ in trailers or ():
        if key == ERROR_TRAILER:
            return FailureKind.ANSWER
    return _kind_of_details(code, (details or "").lower())


def _kind_of_details(code: grpc.StatusCode, text: str) -> FailureKind:
    if code is grpc.StatusCode.UNAVAILABLE and any(h in text for h in _NOT_CONNECTED_HINTS):
        return FailureKind.NOT_CONNECTED
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN) and any(
        h in text for h in _RESET_HINTS
    ):
        return FailureKind.RESET
    return FailureKind.ANSWER


def transport_wording(details: str) -> bool:
    """True when ``details`` of an UNAVAILABLE read as gRPC's own words for a connection
    that failed or broke (what ``failure_kind`` tells apart without a trailer). A server
    must not answer its own Unavailable in those words: a caller without the trailer
    would blame the server for its dependency."""
    return _kind_of_details(grpc.StatusCode.UNAVAILABLE, details.lower()) is not (
        FailureKind.ANSWER
    )


REFUSES_RETRY = -1.0
"""``pushback_seconds`` for a trailer that forbids a retry (negative or malformed)."""


def pushback_seconds(trailers: Iterable[Any] | None) -> float | None:
    """The server's retry pushback in seconds; None without one, ``REFUSES_RETRY`` for
    a value that is not a non-negative integer (A6: then the client does not retry)."""
    for key, value in trailers or ():
        if key != PUSHBACK_TRAILER:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        text = text.strip()
        if not text.isdigit() or not text.isascii():
            return REFUSES_RETRY
        return int(text) / 1000.0
    return None


@dataclass(frozen=True, slots=True)
class RetryVerdict:
    """Retry or not, why (a bounded label), and how long to wait first (seconds)."""

    retry: bool
    reason: str
    wait: float = 0.0


STOP_STATUS = RetryVerdict(False, "status")
STOP_NOT_IDEMPOTENT = RetryVerdict(False, "not_idempotent")
STOP_PUSHBACK = RetryVerdict(False, "pushback")
STOP_MAX_ATTEMPTS = RetryVerdict(False, "max_attempts")
STOP_NO_OTHER_ENDPOINT = RetryVerdict(False, "no_other_endpoint")
STOP_DEADLINE = RetryVerdict(False, "deadline")
STOP_BUDGET = RetryVerdict(False, "budget")

RETRY_REASONS = ("not_connected", "connection_reset", "unavailable")
"""The reasons a retry is made: the label values of the retries counter."""


def decide_retry(
    *,
    code: grpc.StatusCode,
    kind: FailureKind,
    trailers: Iterable[Any] | None,
    idempotent: bool,
    attempt: int,
    others_left: bool,
    now: float,
    deadline: float,
    policy: RetryPolicy,
    budget: RetryBudget,
    draw: float,
) -> RetryVerdict:
    """Decide about attempt number ``attempt`` (1-based), which just failed.

    ``others_left``: an endpoint not tried yet serves. ``deadline``: the call's, in the
    clock of ``now``. ``draw`` in [0, 1) picks the jitter. Takes a budget token only
    when every other rule allows the retry.
    """
    if kind is FailureKind.NOT_CONNECTED:
        reason, pushback = "not_connected", None
    elif not idempotent:
        return STOP_NOT_IDEMPOTENT
    elif kind is FailureKind.RESET or code is grpc.StatusCode.UNAVAILABLE:
        reason = "connection_reset" if kind is FailureKind.RESET else "unavailable"
        pushback = pushback_seconds(trailers)
        if pushback is not None and pushback < 0:
            return STOP_PUSHBACK
    else:
        return STOP_STATUS
    if attempt >= policy.max_attempts:
        return STOP_MAX_ATTEMPTS
    if not others_left:
        return STOP_NO_OTHER_ENDPOINT
    if pushback is not None:
        wait = pushback
    elif kind is FailureKind.NOT_CONNECTED:
        wait = 0.0
    else:
        wait = draw * backoff_ceiling(attempt, base=policy.backoff_base, cap=policy.backoff_max)
    if now + wait + policy.min_attempt_seconds > deadline:
        return STOP_DEADLINE
    if not budget.try_acquire(now):
        return STOP_BUDGET
    return RetryVerdict(True, reason, wait)
