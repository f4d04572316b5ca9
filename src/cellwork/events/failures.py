"""What a consumer does with a failed message: tell poison from a blip. Pure logic.

A handler fails for one of two reasons, and they need opposite answers:

- **poison**: the message itself is wrong (it does not decode, it fails validation,
  or the handler says so by raising ``Poison``). Delivering it again cannot help, so
  it goes to the dead-letter stream at once, at its first delivery.
- **transient**: anything else (a dependency UNAVAILABLE or past its deadline, an
  open breaker, the handler's own timeout). Delivering it again is exactly what
  helps, so it is retried with back-off and jitter for as long as the message is
  younger than the consumer's ``retry_max_age``; only then is it dead-lettered, as
  ``transient_exhausted``.

The server never gives up on a message by itself (``max_deliver`` is unlimited):
this module is the only place that decides a message is dead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from google.protobuf.message import DecodeError
from pydantic import ValidationError

from cellwork.errors import InvalidArgument
from cellwork.resilience.backoff import backoff

FailureKind = Literal["poison", "transient"]
DeadLetterReason = Literal["poison", "transient_exhausted"]

# A message older than retry_max_age when it first fails (a backlog after a long
# outage) still gets this many deliveries before it is given up: with the default
# back-off (0.5 s doubling to 15 s, full jitter) that is about 45 s of retries, so a
# blip of a few seconds never dead-letters a backlog.
MIN_TRANSIENT_DELIVERIES = 10

# Failures of the message's content: decoding (protobuf, text, JSON) and validation.
_POISON_TYPES: tuple[type[BaseException], ...] = (
    DecodeError,
    UnicodeDecodeError,
    json.JSONDecodeError,
    ValidationError,
    InvalidArgument,
)


class Poison(Exception):
    """Raised by an event handler when the message cannot ever be handled (its content
    is wrong): it is dead-lettered at once instead of retried."""


def classify(error: BaseException) -> FailureKind:
    """``poison`` when ``error`` (or the error it was raised from) says the message's
    content is wrong; ``transient`` for anything else."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (Poison, *_POISON_TYPES)):
            return "poison"
        seen.add(id(current))
        current = current.__cause__
    return "transient"


@dataclass(frozen=True, slots=True)
class Retry:
    """Deliver the message again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Dead-letter the message, for ``reason``."""

    reason: DeadLetterReason


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how often a transiently failing message is tried again.

    ``max_age`` (seconds, measured from the message's stream timestamp) bounds the
    retrying; ``base`` and ``cap`` shape the back-off between deliveries.
    Raises ValueError for a non-positive ``max_age`` or a cap below the base.
    """

    max_age: float = 300.0
    base: float = 0.5
    cap: float = 15.0
    min_deliveries: int = MIN_TRANSIENT_DELIVERIES

    def __post_init__(self) -> None:
        if self.max_age <= 0:
            raise ValueError(f"retry max age must be > 0 seconds: {self.max_age}")
        if self.base < 0 or self.cap < self.base:
            raise ValueError("retry back-off needs 0 <= base <= cap")

    def decide(self, kind: FailureKind, *, age: float, deliveries: int) -> Retry | GiveUp:
        """What to do with a message that failed its ``deliveries``-th delivery, ``age``
        seconds after it was stored."""
        if kind == "poison":
            return GiveUp("poison")
        if age >= self.max_age and deliveries >= self.min_deliveries:
            return GiveUp("transient_exhausted")
        return Retry(backoff(deliveries, base=self.base, cap=self.cap))
